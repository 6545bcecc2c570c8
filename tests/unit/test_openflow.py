"""ha_redirect.openflow against os-ken's real message classes.

Rendered messages are serialized to bytes and parsed back with os-ken's own
parsers (or, where os-ken has none, the OpenFlow wire layout), so the tests
check what a switch would receive. Where `ovs-ofctl` is installed, its
decoder also reads the bytes, which is how Open vSwitch will see them.
"""

import dataclasses
import shutil
import struct
import subprocess
import types

import pytest

from os_ken.lib.packet import arp
from os_ken.lib.packet import ether_types
from os_ken.lib.packet import ethernet
from os_ken.lib.packet import ipv4
from os_ken.lib.packet import packet as packet_lib
from os_ken.lib.packet import tcp
from os_ken.lib.packet import udp
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser
from os_ken.ofproto import ofproto_v1_4
from os_ken.ofproto import ofproto_v1_4_parser
from os_ken.ofproto import ofproto_v1_5
from os_ken.ofproto import ofproto_v1_5_parser

from ha_redirect import model
from ha_redirect import openflow
from ha_redirect.openflow import renderer

VERSIONS = {
    '1.3': (ofproto_v1_3, ofproto_v1_3_parser),
    '1.4': (ofproto_v1_4, ofproto_v1_4_parser),
    '1.5': (ofproto_v1_5, ofproto_v1_5_parser),
}
DPID = 0x1
COOKIE = 0x4841524400000000
IPV4 = model.ETH_TYPE_IPV4
TCP = model.IP_PROTO_TCP
ADD = model.FlowCommand.ADD


def datapath(version='1.3'):
    ofproto, parser = VERSIONS[version]
    return types.SimpleNamespace(id=DPID, ofproto=ofproto,
                                 ofproto_parser=parser)


def round_trip(dp, msg):
    """Serialize an os-ken message and parse the bytes back."""
    msg.set_xid(42)
    msg.serialize()
    buf = bytes(msg.buf)
    version, msg_type, msg_len, xid = ofproto_parser.header(buf)
    assert (version, msg_len, xid) == (dp.ofproto.OFP_VERSION, len(buf), 42)
    return ofproto_parser.msg(dp, version, msg_type, msg_len, xid, buf)


def render_one(dp, message):
    [msg] = openflow.to_ofp_messages(dp, message)
    return msg


def flow_mod(dp, message):
    return round_trip(dp, render_one(dp, message))


def apply_actions(parsed):
    [instruction] = [i for i in parsed.instructions
                     if isinstance(i, parsed.datapath.ofproto_parser
                                   .OFPInstructionActions)]
    assert instruction.type == parsed.datapath.ofproto.OFPIT_APPLY_ACTIONS
    return instruction.actions


def tcp_match(**fields):
    return model.Match(eth_type=IPV4, ip_proto=TCP, **fields)


REDIRECT = model.FlowMod(
    DPID, ADD, tcp_match(ipv4_src='10.0.0.9', ipv4_dst='10.0.0.1',
                         tcp_dst=5001, in_port=3),
    (model.SetField('ipv4_dst', '10.0.0.2'),
     model.SetField('eth_dst', '00:00:00:00:00:02'), model.Output(2),
     model.GotoTable(1)),
    table=0, priority=1100, cookie=COOKIE | 0x101, idle_timeout=30,
    hard_timeout=300, notify_removed=True)


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_add_round_trips_match_actions_and_flow_fields(version):
    dp = datapath(version)
    ofproto, parser = dp.ofproto, dp.ofproto_parser
    parsed = flow_mod(dp, REDIRECT)
    assert isinstance(parsed, parser.OFPFlowMod)
    assert parsed.command == ofproto.OFPFC_ADD
    assert (parsed.table_id, parsed.priority, parsed.cookie,
            parsed.idle_timeout, parsed.hard_timeout) == (
                0, 1100, COOKIE | 0x101, 30, 300)
    assert parsed.flags == ofproto.OFPFF_SEND_FLOW_REM
    assert dict(parsed.match.items()) == {
        'in_port': 3, 'eth_type': IPV4, 'ip_proto': TCP,
        'ipv4_src': '10.0.0.9', 'ipv4_dst': '10.0.0.1', 'tcp_dst': 5001}
    set_ip, set_mac, output = apply_actions(parsed)
    assert (set_ip.key, set_ip.value) == ('ipv4_dst', '10.0.0.2')
    assert (set_mac.key, set_mac.value) == ('eth_dst', '00:00:00:00:00:02')
    assert output.port == 2
    [goto] = [i for i in parsed.instructions
              if isinstance(i, parser.OFPInstructionGotoTable)]
    assert goto.table_id == 1


def test_flow_without_notify_has_no_flags_and_no_empty_instruction():
    dp = datapath()
    parsed = flow_mod(dp, model.FlowMod(DPID, ADD, model.Match(in_port=1)))
    assert parsed.flags == 0
    assert parsed.instructions == []  # no actions: drop


def test_special_ports():
    dp = datapath()
    ofproto = dp.ofproto
    parsed = flow_mod(dp, model.FlowMod(DPID, ADD, actions=(
        model.Output(model.SpecialPort.CONTROLLER),
        model.Output(model.SpecialPort.NORMAL),
        model.Output(model.SpecialPort.IN_PORT))))
    controller, normal, in_port = apply_actions(parsed)
    assert (controller.port, controller.max_len) == (
        ofproto.OFPP_CONTROLLER, ofproto.OFPCML_NO_BUFFER)
    assert normal.port == ofproto.OFPP_NORMAL
    assert in_port.port == ofproto.OFPP_IN_PORT


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_delete_by_cookie_mask_matches_any_port_and_group(version):
    dp = datapath(version)
    ofproto = dp.ofproto
    parsed = flow_mod(dp, model.FlowMod(
        DPID, model.FlowCommand.DELETE, tcp_match(tcp_dst=5001), table=1,
        cookie=COOKIE, cookie_mask=0xffffffff00000000))
    assert parsed.command == ofproto.OFPFC_DELETE
    assert (parsed.cookie, parsed.cookie_mask, parsed.table_id) == (
        COOKIE, 0xffffffff00000000, 1)
    assert (parsed.out_port, parsed.out_group) == (ofproto.OFPP_ANY,
                                                   ofproto.OFPG_ANY)
    assert parsed.instructions == []
    assert dict(parsed.match.items())['tcp_dst'] == 5001


@pytest.mark.parametrize('command, name', [
    (model.FlowCommand.DELETE_STRICT, 'OFPFC_DELETE_STRICT'),
    (model.FlowCommand.MODIFY_STRICT, 'OFPFC_MODIFY_STRICT'),
])
def test_strict_commands(command, name):
    dp = datapath()
    parsed = flow_mod(dp, model.FlowMod(
        DPID, command, model.Match(in_port=1), (model.Output(2),),
        priority=7, cookie=COOKIE | 1, cookie_mask=0xffffffffffffffff))
    assert parsed.command == getattr(dp.ofproto, name)
    assert (parsed.priority, parsed.cookie) == (7, COOKIE | 1)
    assert dict(parsed.match.items()) == {'in_port': 1}
    if command is model.FlowCommand.MODIFY_STRICT:
        assert [a.port for a in apply_actions(parsed)] == [2]


REVERSE_LEARN = model.Learn(
    table=1, priority=1101, cookie=COOKIE | 0x102, idle_timeout=30,
    fin_idle_timeout=2,
    match_values=(('eth_type', IPV4), ('ip_proto', TCP),
                  ('ipv4_src', '10.0.0.2'), ('eth_src', '00:00:00:00:00:02')),
    match_from=(('ipv4_dst', 'ipv4_src'), ('tcp_src', 'tcp_dst'),
                ('tcp_dst', 'tcp_src'), ('in_port', 'in_port')),
    set_values=(('ipv4_src', '10.0.0.1'), ('eth_src', '00:00:00:00:00:01'),
                ('tcp_src', 5001)),
    output_from='in_port')


def learn_flow(learn):
    return model.FlowMod(DPID, ADD, tcp_match(ipv4_dst='10.0.0.1'),
                         (learn, model.Output(2)), priority=1000,
                         cookie=COOKIE | 1)


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_learn_round_trips_specs(version):
    dp = datapath(version)
    parser = dp.ofproto_parser
    learn, output = apply_actions(flow_mod(dp, learn_flow(REVERSE_LEARN)))
    assert isinstance(learn, parser.NXActionLearn)
    assert (learn.table_id, learn.priority, learn.cookie, learn.idle_timeout,
            learn.fin_idle_timeout, learn.hard_timeout) == (
                1, 1101, COOKIE | 0x102, 30, 2, 0)
    specs = [(type(s).__name__, s.src, s.dst, s.n_bits) for s in learn.specs]
    assert specs == [
        ('NXFlowSpecMatch', 0x0800, ('eth_type_nxm', 0), 16),
        ('NXFlowSpecMatch', 6, ('ip_proto_nxm', 0), 8),
        ('NXFlowSpecMatch', 0x0a000002, ('ipv4_src_nxm', 0), 32),
        ('NXFlowSpecMatch', 0x000000000002, ('eth_src_nxm', 0), 48),
        ('NXFlowSpecMatch', ('ipv4_src_nxm', 0), ('ipv4_dst_nxm', 0), 32),
        ('NXFlowSpecMatch', ('tcp_dst_nxm', 0), ('tcp_src_nxm', 0), 16),
        ('NXFlowSpecMatch', ('tcp_src_nxm', 0), ('tcp_dst_nxm', 0), 16),
        ('NXFlowSpecMatch', ('in_port_nxm', 0), ('in_port_nxm', 0), 16),
        ('NXFlowSpecLoad', 0x0a000001, ('ipv4_src_nxm', 0), 32),
        ('NXFlowSpecLoad', 0x000000000001, ('eth_src_nxm', 0), 48),
        ('NXFlowSpecLoad', 5001, ('tcp_src_nxm', 0), 16),
        ('NXFlowSpecOutput', ('in_port_nxm', 0), '', 16),
    ]
    assert output.port == 2


def test_learn_to_fixed_port_goes_through_a_register():
    dp = datapath()
    learn = model.Learn(table=1, priority=5, cookie=1,
                        match_values=(('eth_type', IPV4),),
                        match_from=(('ipv4_dst', 'ipv4_src'),),
                        output_port=4)
    load, action, _output = apply_actions(flow_mod(dp, learn_flow(learn)))
    assert (load.key, load.value) == (openflow.LEARN_OUTPUT_REGISTER, 4)
    assert (action.specs[-1].src, action.specs[-1].n_bits) == (
        (openflow.LEARN_OUTPUT_REGISTER, 0), 32)


@pytest.mark.parametrize('learn, complaint', [
    (model.Learn(table=1, priority=1, cookie=1, output_from='in_port',
                 match_from=(('ipv4_dst', 'ipv4_src'),)),
     'ipv4_dst needs eth_type'),
    (model.Learn(table=1, priority=1, cookie=1,
                 match_values=(('eth_type', IPV4),),
                 set_values=(('tcp_src', 1),), output_from='in_port'),
     'tcp_src needs ip_proto'),
    (model.Learn(table=1, priority=1, cookie=1,
                 match_values=(('vlan_vid', 1),), output_from='in_port'),
     "field 'vlan_vid'"),
    (model.Learn(table=1, priority=1, cookie=1,
                 match_values=(('eth_type', IPV4),)),
     'exactly one of output_port and output_from'),
    (model.Learn(table=1, priority=1, cookie=1,
                 match_values=(('eth_type', IPV4), ('ip_proto', TCP)),
                 match_from=(('tcp_src', 'ipv4_src'),),
                 output_from='in_port'),
     'cannot copy ipv4_src'),
])
def test_learn_that_ovs_would_refuse_is_refused(learn, complaint):
    with pytest.raises(openflow.UnsupportedFlow, match=complaint):
        openflow.to_ofp_messages(datapath(), learn_flow(learn))


@pytest.mark.parametrize('message, complaint', [
    (model.FlowMod(DPID, ADD, model.Match(ipv4_dst='10.0.0.1')),
     'ipv4_dst needs eth_type=0x800'),
    (model.FlowMod(DPID, ADD, model.Match(eth_type=IPV4, tcp_dst=80)),
     'tcp_dst needs ip_proto=0x6'),
    (model.FlowMod(DPID, ADD, model.Match(eth_type=model.ETH_TYPE_ARP,
                                          ipv4_dst='10.0.0.1')),
     'the match has eth_type=0x806'),
    (model.FlowMod(DPID, ADD, model.Match(in_port=1),
                   (model.SetField('ipv4_dst', '10.0.0.2'),)),
     'set_field: ipv4_dst needs eth_type'),
    (model.FlowMod(DPID, ADD, actions=(model.GotoTable(1),
                                       model.GotoTable(2))),
     'more than one goto_table'),
])
def test_flows_that_ovs_would_refuse_are_refused(message, complaint):
    with pytest.raises(openflow.UnsupportedFlow, match=complaint):
        openflow.to_ofp_messages(datapath(), message)


def test_packet_out_of_nothing_is_refused():
    with pytest.raises(openflow.UnsupportedFlow, match='neither data nor'):
        openflow.to_ofp_messages(datapath(), model.PacketOut(
            DPID, (model.Output(2),)))


def test_refusal_names_the_flow():
    with pytest.raises(openflow.UnsupportedFlow,
                       match='cookie=0x4841524400000005'):
        openflow.to_ofp_messages(datapath(), model.FlowMod(
            DPID, ADD, model.Match(tcp_dst=1), cookie=COOKIE | 5))


def parse_packet_out(dp, msg):
    """(buffer_id, in_port, actions, data) of a serialized PacketOut.

    os-ken has no parser for PacketOut, so read the wire layout: OpenFlow
    1.3/1.4 carry in_port after buffer_id, 1.5 carries a match instead.
    """
    msg.serialize()
    buf = bytes(msg.buf)
    parser = dp.ofproto_parser
    if dp.ofproto.OFP_VERSION >= 0x06:
        buffer_id, actions_len = struct.unpack_from('!IH2x', buf, 8)
        match = parser.OFPMatch.parser(buf, 16)
        in_port = match['in_port']
        offset = 16 + match.length + (-match.length % 8)
    else:
        buffer_id, in_port, actions_len = struct.unpack_from(
            '!IIH6x', buf, 8)
        offset = 24
    actions = []
    end = offset + actions_len
    while offset < end:
        action = parser.OFPAction.parser(buf, offset)
        actions.append(action)
        offset += action.len
    return buffer_id, in_port, actions, buf[end:]


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_packet_out_with_data(version):
    dp = datapath(version)
    msg = render_one(dp, model.PacketOut(
        DPID, (model.SetField('eth_dst', '00:00:00:00:00:02'),
               model.Output(2)), in_port=3, data=b'frame'))
    buffer_id, in_port, actions, data = parse_packet_out(dp, msg)
    assert (buffer_id, in_port, data) == (dp.ofproto.OFP_NO_BUFFER, 3,
                                          b'frame')
    assert [type(a).__name__ for a in actions] == ['OFPActionSetField',
                                                   'OFPActionOutput']
    assert actions[1].port == 2


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_packet_out_of_a_buffered_packet_sends_no_data(version):
    dp = datapath(version)
    msg = render_one(dp, model.PacketOut(
        DPID, (model.Output(model.SpecialPort.NORMAL),), buffer_id=77,
        data=b'ignored'))
    buffer_id, in_port, actions, data = parse_packet_out(dp, msg)
    assert (buffer_id, in_port, data) == (77, dp.ofproto.OFPP_CONTROLLER,
                                          b'')
    assert actions[0].port == dp.ofproto.OFPP_NORMAL


def test_arp_reply_is_a_packet_out_of_a_real_arp_reply():
    dp = datapath()
    msg = render_one(dp, model.ArpReply(
        DPID, out_port=3, sender_mac='00:00:00:00:00:01',
        sender_ip='10.0.0.1', target_mac='00:00:00:00:00:09',
        target_ip='10.0.0.9'))
    _buffer_id, in_port, [output], data = parse_packet_out(dp, msg)
    assert (in_port, output.port) == (dp.ofproto.OFPP_CONTROLLER, 3)
    frame = packet_lib.Packet(data)
    eth = frame.get_protocol(ethernet.ethernet)
    reply = frame.get_protocol(arp.arp)
    assert (eth.src, eth.dst, eth.ethertype) == (
        '00:00:00:00:00:01', '00:00:00:00:00:09', ether_types.ETH_TYPE_ARP)
    assert (reply.opcode, reply.src_mac, reply.src_ip, reply.dst_mac,
            reply.dst_ip) == (arp.ARP_REPLY, '00:00:00:00:00:01',
                              '10.0.0.1', '00:00:00:00:00:09', '10.0.0.9')


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_barrier(version):
    dp = datapath(version)
    msg = render_one(dp, model.Barrier(DPID))
    assert isinstance(msg, dp.ofproto_parser.OFPBarrierRequest)
    msg.serialize()
    assert ofproto_parser.header(bytes(msg.buf))[1] == (
        dp.ofproto.OFPT_BARRIER_REQUEST)


def test_render_pairs_each_model_message_with_its_os_ken_message():
    dp = datapath()
    messages = [REDIRECT, model.Barrier(DPID)]
    pairs = openflow.render(dp, messages)
    assert [m for m, _ in pairs] == messages
    assert isinstance(pairs[0][1], dp.ofproto_parser.OFPFlowMod)
    assert pairs[0][1].xid is None  # the datapath assigns xids on sending


def test_describe_says_which_flow():
    text = openflow.describe(learn_flow(REVERSE_LEARN))
    assert text.startswith('flow_mod add dpid=0x1 table=0 priority=1000 '
                           'cookie=0x4841524400000001 ')
    assert 'ipv4_dst=10.0.0.1' in text
    assert 'learn(table=1,priority=1101' in text
    assert 'ipv4_dst=packet.ipv4_src' in text
    assert 'output:packet.in_port' in text
    assert openflow.describe(model.Barrier(0x2a)) == 'barrier dpid=0x2a'
    assert 'send_flow_rem' in openflow.describe(REDIRECT)
    assert 'set_field:ipv4_dst=10.0.0.2' in openflow.describe(REDIRECT)


def test_describe_error_names_type_and_code():
    dp = datapath()
    error = dp.ofproto_parser.OFPErrorMsg(
        dp, type_=dp.ofproto.OFPET_BAD_MATCH,
        code=dp.ofproto.OFPBMC_BAD_PREREQ)
    assert openflow.describe_error(error) == (
        'OFPET_BAD_MATCH(4)/OFPBMC_BAD_PREREQ(9)')


# Decoding what the switch sends.

CLIENT_MAC, SERVER_MAC = '00:00:00:00:00:09', '00:00:00:00:00:01'


def tcp_frame(flags=tcp.TCP_SYN, payload=b''):
    frame = packet_lib.Packet()
    frame.add_protocol(ethernet.ethernet(dst=SERVER_MAC, src=CLIENT_MAC))
    frame.add_protocol(ipv4.ipv4(src='10.0.0.9', dst='10.0.0.1', proto=6))
    frame.add_protocol(tcp.tcp(src_port=40000, dst_port=5001, bits=flags))
    if payload:
        frame.add_protocol(payload)
    frame.serialize()
    return bytes(frame.data)


def packet_in(data, in_port=3, buffer_id=None, version='1.3'):
    dp = datapath(version)
    if buffer_id is None:
        buffer_id = dp.ofproto.OFP_NO_BUFFER
    return dp.ofproto_parser.OFPPacketIn(
        dp, buffer_id=buffer_id, total_len=len(data),
        reason=0, table_id=0, cookie=0,
        match=dp.ofproto_parser.OFPMatch(in_port=in_port), data=data)


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_decode_tcp_syn(version):
    data = tcp_frame()
    assert openflow.decode_packet_in(packet_in(data, version=version)) == (
        model.TcpPacket(in_port=3, eth_src=CLIENT_MAC, eth_dst=SERVER_MAC,
                        ipv4_src='10.0.0.9', ipv4_dst='10.0.0.1',
                        tcp_src=40000, tcp_dst=5001,
                        tcp_flags=model.TCP_SYN, buffer_id=None, data=data))


def test_decode_keeps_buffer_id_and_flags():
    decoded = openflow.decode_packet_in(packet_in(
        tcp_frame(flags=tcp.TCP_FIN | tcp.TCP_ACK, payload=b'bye'),
        buffer_id=12))
    assert decoded.buffer_id == 12
    assert decoded.tcp_flags == tcp.TCP_FIN | tcp.TCP_ACK


def arp_frame(opcode=arp.ARP_REQUEST):
    frame = packet_lib.Packet()
    frame.add_protocol(ethernet.ethernet(dst='ff:ff:ff:ff:ff:ff',
                                         src=CLIENT_MAC,
                                         ethertype=ether_types.ETH_TYPE_ARP))
    frame.add_protocol(arp.arp(opcode=opcode, src_mac=CLIENT_MAC,
                               src_ip='10.0.0.9', dst_mac='00:00:00:00:00:00',
                               dst_ip='10.0.0.1'))
    frame.serialize()
    return bytes(frame.data)


def test_decode_arp_request():
    assert openflow.decode_packet_in(packet_in(arp_frame(), in_port=5)) == (
        model.ArpRequest(in_port=5, sender_mac=CLIENT_MAC,
                         sender_ip='10.0.0.9', target_ip='10.0.0.1'))


def udp_frame():
    frame = packet_lib.Packet()
    frame.add_protocol(ethernet.ethernet(dst=SERVER_MAC, src=CLIENT_MAC))
    frame.add_protocol(ipv4.ipv4(src='10.0.0.9', dst='10.0.0.1', proto=17))
    frame.add_protocol(udp.udp(src_port=53, dst_port=5001))
    frame.serialize()
    return bytes(frame.data)


def ipv6_frame():
    return bytes(6) + bytes(6) + b'\x86\xdd' + bytes(40)


@pytest.mark.parametrize('data', [
    udp_frame(), arp_frame(arp.ARP_REPLY), ipv6_frame()],
    ids=['udp', 'arp-reply', 'ipv6'])
def test_irrelevant_packets_decode_to_none(data):
    assert openflow.decode_packet_in(packet_in(data)) is None


@pytest.mark.parametrize('data, complaint', [
    (b'', 'shorter than an Ethernet header'),
    (b'\x01\x02\x03', 'shorter than an Ethernet header'),
    (tcp_frame()[:14 + 10], 'truncated IPv4 header'),
    (tcp_frame()[:14 + 20 + 8], 'truncated TCP header'),
    (arp_frame()[:14 + 6], 'truncated ARP packet'),
], ids=['empty', 'garbage', 'short-ip', 'short-tcp', 'short-arp'])
def test_undecodable_packets_raise(data, complaint):
    with pytest.raises(openflow.MalformedPacket, match=complaint):
        openflow.decode_packet_in(packet_in(data, in_port=4))


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_decode_flow_removed(version):
    dp = datapath(version)
    ofp_match = dp.ofproto_parser.OFPMatch(
        eth_type=IPV4, ip_proto=TCP, ipv4_src='10.0.0.2',
        ipv4_dst=('10.0.0.9', '255.255.255.255'),
        eth_src=('00:00:00:00:00:02', 'ff:ff:ff:00:00:00'),
        tcp_src=5001, tcp_dst=40000, vlan_vid=0x1005)
    removed = dp.ofproto_parser.OFPFlowRemoved(
        dp, cookie=COOKIE | 7, priority=1101,
        reason=dp.ofproto.OFPRR_IDLE_TIMEOUT, table_id=1, match=ofp_match)
    assert openflow.decode_flow_removed(removed) == (COOKIE | 7, tcp_match(
        ipv4_src='10.0.0.2', ipv4_dst='10.0.0.9', tcp_src=5001,
        tcp_dst=40000))


def ports_v13(dp):
    ofproto, parser = dp.ofproto, dp.ofproto_parser

    def port(no, config=0, state=0):
        return parser.OFPPort(no, '00:00:00:00:00:01', b'p', config, state,
                              0, 0, 0, 0, 0, 0)
    return [port(1), port(2, config=ofproto.OFPPC_PORT_DOWN),
            port(3, state=ofproto.OFPPS_LINK_DOWN),
            port(4, state=ofproto.OFPPS_LIVE), port(ofproto.OFPP_LOCAL)]


def ports_v14(dp):
    ofproto, parser = dp.ofproto, dp.ofproto_parser

    def port(no, config=0, state=0):
        return parser.OFPPort(port_no=no, hw_addr='00:00:00:00:00:01',
                              name=b'p', config=config, state=state,
                              properties=[])
    return [port(1), port(2, config=ofproto.OFPPC_PORT_DOWN),
            port(3, state=ofproto.OFPPS_LINK_DOWN),
            port(4, state=ofproto.OFPPS_LIVE), port(ofproto.OFPP_LOCAL)]


@pytest.mark.parametrize('version, ports', [
    ('1.3', ports_v13), ('1.4', ports_v14), ('1.5', ports_v14)])
def test_port_states_skip_reserved_ports(version, ports):
    dp = datapath(version)
    assert openflow.port_states_from_desc(ports(dp), dp.ofproto) == {
        1: True, 2: False, 3: False, 4: True}


OFCTL = shutil.which('ovs-ofctl')


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_open_vswitch_reads_the_learn_flow_as_intended(version):
    dp = datapath(version)
    msg = render_one(dp, learn_flow(REVERSE_LEARN))
    msg.set_xid(1)
    msg.serialize()
    text = subprocess.run([OFCTL, 'ofp-print', bytes(msg.buf).hex()],
                          check=True, capture_output=True, text=True).stdout
    assert 'ADD priority=1000,tcp,nw_dst=10.0.0.1 ' in text
    assert (
        'actions=learn(table=1,idle_timeout=30,fin_idle_timeout=2,'
        'priority=1101,cookie=0x4841524400000102,eth_type=0x800,nw_proto=6,'
        'ip_src=10.0.0.2,eth_src=00:00:00:00:00:02,'
        'NXM_OF_IP_DST[]=NXM_OF_IP_SRC[],NXM_OF_TCP_SRC[]=NXM_OF_TCP_DST[],'
        'NXM_OF_TCP_DST[]=NXM_OF_TCP_SRC[],NXM_OF_IN_PORT[],'
        'load:0xa000001->NXM_OF_IP_SRC[],load:0x1->NXM_OF_ETH_SRC[],'
        'load:0x1389->NXM_OF_TCP_SRC[],output:NXM_OF_IN_PORT[]),output:2'
    ) in text


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
def test_open_vswitch_reads_the_of15_packet_out_in_port():
    dp = datapath('1.5')
    msg = render_one(dp, model.PacketOut(DPID, (model.Output(2),),
                                         in_port=3, data=arp_frame()))
    msg.set_xid(1)
    msg.serialize()
    text = subprocess.run([OFCTL, 'ofp-print', bytes(msg.buf).hex()],
                          check=True, capture_output=True, text=True).stdout
    assert 'OFPT_PACKET_OUT (OF1.5)' in text
    assert 'in_port=3 actions=output:2' in text


FF_GROUP = model.GroupMod(DPID, model.GroupCommand.ADD, 0x48520000, (
    model.Bucket((model.Output(1),), watch_port=1),
    model.Bucket((model.SetField('eth_dst', '00:00:00:00:00:02'),
                  model.SetField('ipv4_dst', '10.0.0.2'),
                  model.Output(2)), watch_port=2)))


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
@pytest.mark.parametrize('version', ['1.3', '1.4'])
def test_open_vswitch_reads_the_fast_failover_group(version):
    dp = datapath(version)
    msg = render_one(dp, FF_GROUP)
    msg.set_xid(1)
    msg.serialize()
    text = subprocess.run([OFCTL, 'ofp-print', bytes(msg.buf).hex()],
                          check=True, capture_output=True, text=True).stdout
    assert 'ADD group_id=1213333504,type=ff' in text
    assert 'bucket=watch_port:1,actions=output:1' in text
    assert ('bucket=watch_port:2,actions=set_field:00:00:00:00:00:02->eth_dst,'
            'set_field:10.0.0.2->ip_dst,output:2') in text


def test_group_action_and_delete_render():
    dp = datapath('1.3')
    flow = render_one(dp, model.FlowMod(
        DPID, model.FlowCommand.ADD, match=model.Match(in_port=3),
        actions=(model.Group(0x48520000),)))
    assert flow.instructions[0].actions[0].group_id == 0x48520000
    delete = render_one(dp, model.GroupMod(DPID, model.GroupCommand.DELETE,
                                           0x48520000))
    assert (delete.command, delete.buckets) == (dp.ofproto.OFPGC_DELETE, [])


def test_fast_failover_groups_are_refused_on_openflow_15():
    with pytest.raises(openflow.UnsupportedFlow, match='1.3 and 1.4'):
        render_one(datapath('1.5'), FF_GROUP)


# Conntrack (the stateful strategy).

CT_COMMIT = model.Conntrack(
    0x4852, table=2, commit=True, nat_dst='10.0.0.2',
    actions=(model.SetField('ct_mark', 2),
             model.Move('in_port', 'ct_label', 16)))
CT_GROUP = model.GroupMod(DPID, model.GroupCommand.ADD, 0x48520000, (
    model.Bucket((dataclasses.replace(CT_COMMIT, nat_dst=None, actions=(
        model.SetField('ct_mark', 1),)),), watch_port=1),
    model.Bucket((CT_COMMIT,), watch_port=2)))
CT_FLOWS = [
    model.FlowMod(DPID, ADD, match=tcp_match(ipv4_dst='10.0.0.1'),
                  actions=(model.Conntrack(0x4852, table=1, nat=True),),
                  priority=1010, cookie=COOKIE),
    model.FlowMod(DPID, ADD, match=tcp_match(
        ct_state=model.ct_state(model.CT_TRK | model.CT_RPL),
        ct_zone=0x4852), actions=(
            model.SetField('eth_src', '00:00:00:00:00:01'),
            model.OutputFrom('ct_label', 16)), table=1, priority=1040,
        cookie=COOKIE),
    model.FlowMod(DPID, ADD, match=tcp_match(
        ct_state=model.ct_state(model.CT_TRK, model.CT_RPL | model.CT_INV),
        ct_zone=0x4852, ct_mark=0), actions=(model.Group(0x48520000),),
        table=1, priority=1020, cookie=COOKIE),
]


def ofp_print(msg):
    msg.set_xid(1)
    msg.serialize()
    return subprocess.run([OFCTL, 'ofp-print', bytes(msg.buf).hex()],
                          check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_conntrack_commit_round_trips(version):
    dp = datapath(version)
    [ct] = apply_actions(flow_mod(dp, model.FlowMod(
        DPID, ADD, match=tcp_match(), actions=(CT_COMMIT,))))
    assert (ct.flags, ct.zone_ofs_nbits, ct.recirc_table) == (1, 0x4852, 2)
    nat, mark, move = ct.actions
    assert (nat.flags, nat.range_ipv4_min, nat.range_ipv4_max) == (
        2, '10.0.0.2', '10.0.0.2')
    assert (mark.key, mark.value) == ('ct_mark', 2)
    assert (move.src_field, move.dst_field, move.n_bits) == (
        'in_port_nxm', 'ct_label', 16)


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_conntrack_match_fields_round_trip(version):
    dp = datapath(version)
    parsed = flow_mod(dp, CT_FLOWS[2])
    assert parsed.match['ct_state'] == (model.CT_TRK, 0x38)
    assert (parsed.match['ct_zone'], parsed.match['ct_mark']) == (0x4852, 0)
    [output_reg] = apply_actions(flow_mod(dp, CT_FLOWS[1]))[1:]
    assert (output_reg.src, output_reg.ofs_nbits) == ('ct_label', 15)


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
@pytest.mark.parametrize('version', ['1.3', '1.4'])
def test_open_vswitch_reads_the_conntrack_group_and_flows(version):
    dp = datapath(version)
    text = ofp_print(render_one(dp, CT_GROUP))
    assert ('bucket=watch_port:1,actions=ct(commit,table=2,zone=18514,'
            'exec(set_field:0x1->ct_mark))') in text
    assert ('bucket=watch_port:2,actions=ct(commit,table=2,zone=18514,'
            'nat(dst=10.0.0.2),exec(set_field:0x2->ct_mark,'
            'move:NXM_OF_IN_PORT[]->NXM_NX_CT_LABEL[0..15]))') in text
    texts = [ofp_print(render_one(dp, f)) for f in CT_FLOWS]
    assert ('priority=1010,tcp,nw_dst=10.0.0.1 cookie:0x4841524400000000 '
            'actions=ct(table=1,zone=18514,nat)') in texts[0]
    assert ('table:1 priority=1040,ct_state=+rpl+trk,ct_zone=18514,tcp '
            'cookie:0x4841524400000000 actions=set_field:00:00:00:00:00:01'
            '->eth_src,output:NXM_NX_CT_LABEL[0..15]') in texts[1]
    assert ('table:1 priority=1020,ct_state=-rpl-inv+trk,ct_zone=18514,'
            'ct_mark=0,tcp cookie:0x4841524400000000 '
            'actions=group:1213333504') in texts[2]


@pytest.mark.parametrize('action, complaint', [
    (model.OutputFrom('ct_label', 16, ofs=120), 'do not fit ct_label'),
    (model.OutputFrom('vlan_vid', 12), "field 'vlan_vid'"),
    (model.Move('in_port', 'ct_mark', 17), 'do not fit in_port'),
])
def test_bit_ranges_ovs_would_refuse_are_refused(action, complaint):
    with pytest.raises(openflow.UnsupportedFlow, match=complaint):
        render_one(datapath(), model.FlowMod(
            DPID, ADD, match=tcp_match(), actions=(action,)))


def test_conntrack_describes_like_ovs_ofctl():
    assert openflow.describe(CT_GROUP).endswith(
        'watch_port=2 ct(commit,table=2,zone=18514,nat(dst=10.0.0.2),'
        'exec(set_field:ct_mark=2,move:in_port[0..15]->ct_label[0..15]))]')
    assert 'ct_state=0x20/0x38,ct_zone=0x4852,ct_mark=0' in (
        openflow.describe(CT_FLOWS[2]))


def test_conntrack_fields_come_back_from_flow_removed():
    dp = datapath('1.3')
    ofp_match = dp.ofproto_parser.OFPMatch(
        eth_type=IPV4, ip_proto=TCP, ct_state=(0x20, 0x38), ct_zone=7,
        ct_mark=(2, 0xff))
    assert openflow.match_from_ofp(ofp_match) == tcp_match(
        ct_state=(0x20, 0x38), ct_zone=7)


@pytest.mark.parametrize('version', sorted(VERSIONS))
@pytest.mark.parametrize('fields', [
    dict(in_port=3, eth_src='00:00:00:00:01:03', eth_dst='00:00:00:00:00:01',
         eth_type=0x800, ip_proto=6, ipv4_src='10.1.0.5',
         ipv4_dst='10.0.0.1', tcp_src=10000, tcp_dst=5001),
    dict(tcp_dst=80, ip_proto=6, eth_type=0x800, in_port=1),
    dict(eth_type=0x806, arp_op=1, arp_tpa='10.0.0.1'),
    dict(eth_type=0x800, ip_proto=6, ct_state=(0x22, 0x33), ct_zone=7,
         ct_mark=2),
    dict(),
])
def test_fast_match_serialises_like_os_ken(version, fields):
    dp = datapath(version)
    parser = dp.ofproto_parser
    fast = renderer._match(parser, dp.ofproto, fields)
    slow = parser.OFPMatch(**fields)
    fast_buf, slow_buf = bytearray(), bytearray()
    fast.serialize(fast_buf, 0)
    slow.serialize(slow_buf, 0)
    assert fast_buf == slow_buf


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_open_vswitch_reads_the_conntrack_flush(version):
    text = ofp_print(render_one(datapath(version), model.ConntrackFlush(
        DPID, 18514, '10.0.0.2')))
    assert 'NXT_CT_FLUSH' in text and 'zone=18514' in text
    assert "'ct_nw_src=10.0.0.2,ct_nw_dst=::,ct_tp_src=0,ct_tp_dst=0'" in text


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
def test_open_vswitch_reads_the_fin_timeout():
    dp = datapath('1.3')
    msg = render_one(dp, model.FlowMod(
        DPID, model.FlowCommand.ADD,
        match=model.Match(in_port=3, eth_type=0x800, ip_proto=6),
        actions=(model.FinTimeout(2), model.Output(1)), idle_timeout=30))
    msg.set_xid(1)
    msg.serialize()
    text = subprocess.run([OFCTL, 'ofp-print', bytes(msg.buf).hex()],
                          check=True, capture_output=True, text=True).stdout
    assert 'actions=fin_timeout(idle_timeout=2),output:1' in text


def test_fin_timeout_needs_a_tcp_match():
    # OVS refuses it otherwise (OFPBAC_MATCH_INCONSISTENT).
    with pytest.raises(openflow.UnsupportedFlow, match='fin_timeout'):
        render_one(datapath('1.3'), model.FlowMod(
            DPID, model.FlowCommand.ADD, match=model.Match(in_port=3),
            actions=(model.FinTimeout(2), model.Output(1))))


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_open_vswitch_reads_a_bundle_as_open_add_commit(version):
    dp = datapath(version)
    flow = model.FlowMod(DPID, model.FlowCommand.ADD,
                         match=model.Match(in_port=3),
                         actions=(model.Output(1),))
    msgs = openflow.to_ofp_messages(dp, model.Bundle(DPID, (flow, flow)))
    texts = []
    for xid, msg in enumerate(msgs, 1):
        msg.set_xid(xid)
        msg.serialize()
        texts.append(subprocess.run(
            [OFCTL, 'ofp-print', bytes(msg.buf).hex()], check=True,
            capture_output=True, text=True).stdout)
    assert len(texts) == 4
    assert 'OPEN_REQUEST' in texts[0] and 'COMMIT_REQUEST' in texts[-1]
    for text in texts:
        assert 'flags=atomic ordered' in text
    for text in texts[1:3]:
        assert 'ADD priority=0,in_port=3 actions=output:1' in text
        assert 'decode error' not in text


def test_only_flow_and_group_changes_can_be_bundled():
    with pytest.raises(model.ServiceError, match='Barrier cannot be bundled'):
        model.Bundle(DPID, (model.Barrier(DPID),))


@pytest.mark.skipif(OFCTL is None, reason='ovs-ofctl (Open vSwitch) is not '
                    'installed: cannot check how OVS decodes our bytes')
@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_the_async_config_drops_only_reports_of_our_own_deletes(version):
    """Open vSwitch reads it as: report pins that expire, not those our
    deletes remove; every other report as the switch's default."""
    dp = datapath(version)
    msg = openflow.async_config(dp)
    msg.set_xid(1)
    msg.serialize()
    text = subprocess.run([OFCTL, 'ofp-print', bytes(msg.buf).hex()],
                          check=True, capture_output=True, text=True).stdout
    primary, secondary = text.split('secondary:')
    assert 'FLOW_REMOVED: idle hard\n' in primary
    assert 'FLOW_REMOVED: (off)' in secondary
    if version == '1.3':
        # One message sets every mask: OVS's defaults for the others.
        assert 'PACKET_IN: no_match action\n' in primary
        assert 'PACKET_IN: (off)' in secondary
        assert text.count('PORT_STATUS: add delete modify\n') == 2
    else:
        # From 1.4 on, a message changes only the properties it carries.
        assert len(msg.properties) == 1
