"""Stand-ins for the os-ken runtime around real os-ken message classes."""

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser


class RecordingDatapath:
    ofproto = ofp
    ofproto_parser = parser

    def __init__(self, dpid=1):
        self.id = dpid
        self.xid = 100
        self.sent = []

    def set_xid(self, msg):
        self.xid += 1
        msg.set_xid(self.xid)

    def send_msg(self, msg):
        msg.serialize()   # what the real datapath does; raises if invalid
        self.sent.append(msg)

    def unbundled(self):
        """What was sent, with bundled changes in their place."""
        for m in self.sent:
            if isinstance(m, parser.ONFBundleAddMsg):
                yield m.message
            elif not isinstance(m, parser.ONFBundleCtrlMsg):
                yield m

    def flow_mods(self, command=None):
        return [m for m in self.unbundled()
                if isinstance(m, parser.OFPFlowMod)
                and (command is None or m.command == command)]
