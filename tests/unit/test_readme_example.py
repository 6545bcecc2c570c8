"""The README's embedding example works as printed."""

import pathlib
import re
import types

from os_ken.controller import ofp_event
from os_ken.lib.packet import ethernet
from os_ken.lib.packet import ipv4
from os_ken.lib.packet import packet
from os_ken.lib.packet import tcp
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from os_ken_fakes import RecordingDatapath

README = pathlib.Path(__file__).resolve().parents[2] / 'README.md'


def _example_module():
    text = README.read_text()
    code = re.search(r'<!-- embedding-example -->\s*```python\n(.*?)```',
                     text, re.S).group(1)
    module = types.ModuleType('readme_example')
    exec(compile(code, str(README), 'exec'), module.__dict__)
    return module


def _port(no, up=True):
    return parser.OFPPort(no, f'00:00:00:00:aa:{no:02x}', f'p{no}', 0,
                          0 if up else ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0, 0)


def _flow_outputs(datapath):
    """(table, output ports) of each flow the example added."""
    found = []
    for msg in datapath.unbundled():
        if isinstance(msg, parser.OFPFlowMod) and msg.command == ofp.OFPFC_ADD:
            ports = [a.port for i in msg.instructions
                     for a in getattr(i, 'actions', [])
                     if isinstance(a, parser.OFPActionOutput)]
            found.append((msg.table_id, ports))
    return found


def test_embedding_example_redirects_after_a_port_goes_down():
    example = _example_module()
    app = example.MyController()
    datapath = RecordingDatapath()
    reply = parser.OFPPortDescStatsReply(datapath)
    reply.flags, reply.body = 0, [_port(1), _port(2), _port(3)]
    app.on_ports(ofp_event.EventOFPPortDescStatsReply(reply))
    assert (1, [1]) in _flow_outputs(datapath)   # proactive: to the primary
    # The example leaves non-service traffic to its own app: no table-miss.
    assert not [m for m in datapath.flow_mods(ofp.OFPFC_ADD)
                if m.table_id == 0 and not m.match.to_jsondict()[
                    'OFPMatch']['oxm_fields']]
    datapath.sent.clear()
    status = parser.OFPPortStatus(datapath, reason=ofp.OFPPR_MODIFY,
                                  desc=_port(1, up=False))
    app.on_port_status(ofp_event.EventOFPPortStatus(status))
    assert (1, [2]) in _flow_outputs(datapath)   # now to the backup
    assert app.redirect.active_server('web').ip == '10.0.0.2'


def test_embedding_example_ignores_packets_it_does_not_serve():
    example = _example_module()
    app = example.MyController()
    datapath = RecordingDatapath()
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(src='00:00:00:00:00:03',
                                         dst='00:00:00:00:00:09'))
    frame.add_protocol(ipv4.ipv4(src='10.0.0.3', dst='10.0.0.9', proto=6))
    frame.add_protocol(tcp.tcp(src_port=1234, dst_port=22))
    frame.serialize()
    msg = parser.OFPPacketIn(datapath, buffer_id=ofp.OFP_NO_BUFFER,
                             total_len=len(frame.data),
                             reason=ofp.OFPR_NO_MATCH, table_id=0, cookie=0,
                             match=parser.OFPMatch(in_port=3),
                             data=bytes(frame.data))
    app.on_packet_in(ofp_event.EventOFPPacketIn(msg))
    assert datapath.sent == []
