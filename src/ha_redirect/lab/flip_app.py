"""The "controller flip": the simplest failover an os-ken app can do.

A comparison for `ha-redirect-lab gaps`, not a strategy of the product:
it shares nothing with ha_redirect's policy.  The switch forwards with
NORMAL; when the primary's port goes down the app installs, per service
TCP port, one flow that rewrites clients' traffic for the primary to the
backup (destination MAC and IP) and one that rewrites the backup's replies
back (source IP; the MAC stays the backup's so that MAC learning never puts
the primary's MAC on the backup's port).  Nothing is per connection and
nothing waits for a barrier.  When the port comes back up both flows go.

Run it with the package's launcher and an INI file with a [flip] section:

    osken-manager --config-file flip.conf ha_redirect.lab.flip_app \\
        --ofp-listen-host 127.0.0.1 --ofp-tcp-listen-port 6653
"""

import logging

from os_ken.base import app_manager
from os_ken import cfg
from os_ken.controller import handler
from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3

LOG = logging.getLogger(__name__)

GROUP = 'flip'
COOKIE = 0x464c4950_00000000        # 'FLIP': every flow of this app
COOKIE_MASK = 0xffffffff_00000000
REWRITE_COOKIE = COOKIE | 1
PRIORITY_NORMAL = 0
PRIORITY_REWRITE = 1000
CONNECTED_LINE = 'switch connected: dpid='   # what the lab waits for

OPTS = [
    cfg.StrOpt('datapath_id', help='The switch (0x-prefixed hex).'),
    cfg.ListOpt('tcp_ports', default=[], help='The services\' TCP ports.'),
    cfg.StrOpt('primary_ip'), cfg.StrOpt('primary_mac'),
    cfg.IntOpt('primary_port'),
    cfg.StrOpt('backup_ip'), cfg.StrOpt('backup_mac'),
    cfg.IntOpt('backup_port'),
]
# os-ken loads the app's module before the launcher checks the files for
# unknown keys: the options must exist by then.
cfg.CONF.register_opts(OPTS, group=GROUP)


class FlipApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        conf = self.CONF[GROUP]
        self.datapath_id = int(conf.datapath_id, 0)
        self.tcp_ports = [int(p) for p in conf.tcp_ports]
        self.conf = conf
        self.flipped = False

    @handler.set_ev_cls(ofp_event.EventOFPSwitchFeatures,
                        handler.CONFIG_DISPATCHER)
    def on_features(self, ev):
        datapath = ev.msg.datapath
        if datapath.id != self.datapath_id:
            return
        parser, ofp = datapath.ofproto_parser, datapath.ofproto
        datapath.send_msg(parser.OFPFlowMod(
            datapath, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
            cookie=COOKIE, cookie_mask=COOKIE_MASK, out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY))
        datapath.send_msg(parser.OFPFlowMod(
            datapath, cookie=COOKIE, priority=PRIORITY_NORMAL,
            match=parser.OFPMatch(), instructions=[
                parser.OFPInstructionActions(
                    ofp.OFPIT_APPLY_ACTIONS,
                    [parser.OFPActionOutput(ofp.OFPP_NORMAL)])]))
        self.flipped = False
        LOG.info('%s%#x', CONNECTED_LINE, datapath.id)

    @handler.set_ev_cls(ofp_event.EventOFPPortStatus,
                        handler.MAIN_DISPATCHER)
    def on_port_status(self, ev):
        msg = ev.msg
        datapath = msg.datapath
        ofp = datapath.ofproto
        if (datapath.id != self.datapath_id
                or msg.desc.port_no != self.conf.primary_port):
            return
        down = (msg.reason == ofp.OFPPR_DELETE
                or msg.desc.state & ofp.OFPPS_LINK_DOWN
                or msg.desc.config & ofp.OFPPC_PORT_DOWN)
        if down and not self.flipped:
            self._send_rewrites(datapath)
            LOG.info('primary port %d down: flipped to the backup',
                     msg.desc.port_no)
        elif not down and self.flipped:
            self._delete_rewrites(datapath)
            LOG.info('primary port %d up: flipped back', msg.desc.port_no)
        self.flipped = bool(down)

    def _send_rewrites(self, datapath):
        parser, ofp = datapath.ofproto_parser, datapath.ofproto
        conf = self.conf
        for port in self.tcp_ports:
            to_backup = parser.OFPMatch(
                eth_type=0x0800, ip_proto=6, ipv4_dst=conf.primary_ip,
                tcp_dst=port)
            from_backup = parser.OFPMatch(
                in_port=conf.backup_port, eth_type=0x0800, ip_proto=6,
                ipv4_src=conf.backup_ip, tcp_src=port)
            self._add(datapath, to_backup, [
                parser.OFPActionSetField(eth_dst=conf.backup_mac),
                parser.OFPActionSetField(ipv4_dst=conf.backup_ip),
                parser.OFPActionOutput(conf.backup_port)])
            self._add(datapath, from_backup, [
                parser.OFPActionSetField(ipv4_src=conf.primary_ip),
                parser.OFPActionOutput(ofp.OFPP_NORMAL)])

    @staticmethod
    def _add(datapath, match, actions):
        parser, ofp = datapath.ofproto_parser, datapath.ofproto
        datapath.send_msg(parser.OFPFlowMod(
            datapath, cookie=REWRITE_COOKIE, priority=PRIORITY_REWRITE,
            match=match, instructions=[parser.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, actions)]))

    @staticmethod
    def _delete_rewrites(datapath):
        parser, ofp = datapath.ofproto_parser, datapath.ofproto
        datapath.send_msg(parser.OFPFlowMod(
            datapath, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
            cookie=REWRITE_COOKIE, cookie_mask=0xffffffff_ffffffff,
            out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
