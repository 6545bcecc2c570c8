"""The os-ken app shell, driven with real os-ken messages and a recording
datapath: each handler hands the event to the policy and sends its answer."""

import logging

from os_ken.base import app_manager
from os_ken.controller import handler
from os_ken.controller import ofp_event
from os_ken.lib.packet import arp
from os_ken.lib.packet import ethernet
from os_ken.lib.packet import ipv4
from os_ken.lib.packet import packet
from os_ken.lib.packet import tcp
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
import pytest

from ha_redirect import adoption
from ha_redirect import app as app_mod
from ha_redirect import model
from ha_redirect import operator_requests
from ha_redirect.policy import RedirectPolicy
from ha_redirect import roles
from ha_redirect.strategies.reactive import ReactiveStrategy

from os_ken_fakes import RecordingDatapath

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)


@pytest.fixture
def redirect_app():
    service = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,))
    policy = RedirectPolicy([service], strategy=ReactiveStrategy())
    return app_mod.RedirectApp(redirect_policy=policy)


def _port(no, up=True):
    return parser.OFPPort(no, f'00:00:00:00:aa:{no:02x}', f'p{no}', 0,
                          0 if up else ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0, 0)


def _connect(app, datapath, ports=((1, True), (2, True), (3, True))):
    reply = parser.OFPPortDescStatsReply(datapath)
    reply.flags = 0
    reply.body = [_port(no, up) for no, up in ports]
    app.on_port_desc(ofp_event.EventOFPPortDescStatsReply(reply))


def _syn_bytes(src_port=40000):
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst=PRIMARY.mac,
                                         src='00:00:00:00:00:03'))
    frame.add_protocol(ipv4.ipv4(src='10.0.0.3', dst=PRIMARY.ip, proto=6))
    frame.add_protocol(tcp.tcp(src_port=src_port, dst_port=5001,
                               bits=tcp.TCP_SYN))
    frame.serialize()
    return bytes(frame.data)


def _packet_in(datapath, data, in_port=3):
    msg = parser.OFPPacketIn(datapath, buffer_id=ofp.OFP_NO_BUFFER,
                             total_len=len(data), reason=ofp.OFPR_ACTION,
                             table_id=0, cookie=0,
                             match=parser.OFPMatch(in_port=in_port),
                             data=data)
    return ofp_event.EventOFPPacketIn(msg)


def test_switch_connect_resyncs_our_flows(redirect_app):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    [delete] = datapath.flow_mods(ofp.OFPFC_DELETE)
    assert delete.cookie_mask == model.COOKIE_OURS_MASK
    assert delete.table_id == ofp.OFPTT_ALL
    assert len(datapath.flow_mods(ofp.OFPFC_ADD)) >= 2
    assert isinstance(datapath.sent[-1], parser.OFPBarrierRequest)


def test_packet_in_pins_the_connection_and_releases_the_packet(
        redirect_app):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    datapath.sent.clear()
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    kinds = [type(m).__name__ for m in datapath.sent]
    assert kinds == ['OFPFlowMod', 'OFPFlowMod', 'OFPBarrierRequest',
                     'OFPPacketOut']
    forward = datapath.sent[0]
    assert forward.match['tcp_src'] == 40000
    assert forward.instructions[0].actions[-1].port == PRIMARY.port


def _described(app, datapath, mfr, hw):
    reply = parser.OFPDescStatsReply(datapath)
    reply.body = parser.OFPDescStats(mfr.encode(), hw.encode(), b'3.1.0',
                                     b'None', b'None')
    app.on_switch_desc(ofp_event.EventOFPDescStatsReply(reply))


@pytest.mark.parametrize('mfr, hw, option, barrier', [
    ('Nicira, Inc.', 'Open vSwitch', 'auto', False),
    ('Nicira, Inc.', 'Open vSwitch', 'always', True),
    ('Acme', 'Open vSwitch', 'auto', True),
    ('Acme', 'HW-9000', 'auto', True),
])
def test_a_barrier_orders_a_new_connection_unless_the_switch_keeps_order(
        mfr, hw, option, barrier):
    """Open vSwitch carries out one connection's messages in order: a
    barrier between a connection's flows and its first packet orders
    nothing there. Any other switch gets it."""
    service = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,))
    app = app_mod.RedirectApp(
        redirect_policy=RedirectPolicy([service], strategy=ReactiveStrategy()),
        switch_barriers=option)
    datapath = RecordingDatapath()
    _connect(app, datapath)
    _described(app, datapath, mfr, hw)
    datapath.sent.clear()
    app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    kinds = [type(m).__name__ for m in datapath.sent]
    assert kinds == ['OFPFlowMod', 'OFPFlowMod'] + (
        ['OFPBarrierRequest'] if barrier else []) + ['OFPPacketOut']


def test_a_garbled_description_is_logged_and_keeps_the_barriers(
        redirect_app, caplog):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    reply = parser.OFPDescStatsReply(datapath)
    reply.body = parser.OFPDescStats(b'\xff\xfeNicira, Inc.\x00\x00',
                                     b'Open vSwitch\x00junk', b'', b'', b'')
    with caplog.at_level(logging.INFO, logger='ha_redirect.app'):
        redirect_app.on_switch_desc(ofp_event.EventOFPDescStatsReply(reply))
    assert 'barriers where order matters' in caplog.text
    datapath.sent.clear()
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    assert 'OFPBarrierRequest' in [type(m).__name__ for m in datapath.sent]


def test_a_switch_is_sent_barriers_until_it_has_described_itself(
        redirect_app):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    _described(redirect_app, datapath, 'Nicira, Inc.', 'Open vSwitch')
    # It reconnects (another switch may now answer to its dpid).
    redirect_app.on_switch_features(ofp_event.EventOFPSwitchFeatures(
        parser.OFPSwitchFeatures(datapath, datapath_id=1)))
    redirect_app.on_switch_ready(ofp_event.EventOFPStateChange(datapath))
    assert [type(m).__name__ for m in datapath.sent[-4:]] == [
        'OFPSetAsync', 'OFPDescStatsRequest', 'OFPMeterFeaturesStatsRequest',
        'OFPPortDescStatsRequest']
    _connect(redirect_app, datapath)
    datapath.sent.clear()
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    assert 'OFPBarrierRequest' in [type(m).__name__ for m in datapath.sent]


def test_port_down_redirects_and_arp_is_answered(redirect_app):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    status = parser.OFPPortStatus(datapath, reason=ofp.OFPPR_MODIFY,
                                  desc=_port(1, up=False))
    redirect_app.on_port_status(ofp_event.EventOFPPortStatus(status))
    assert redirect_app.policy.active_server('web') == BACKUP
    datapath.sent.clear()
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst='ff:ff:ff:ff:ff:ff',
                                         src='00:00:00:00:00:03',
                                         ethertype=0x0806))
    frame.add_protocol(arp.arp(src_mac='00:00:00:00:00:03',
                               src_ip='10.0.0.3', dst_ip=PRIMARY.ip))
    frame.serialize()
    redirect_app.on_packet_in(_packet_in(datapath, bytes(frame.data)))
    [out] = datapath.sent
    answer = packet.Packet(out.data).get_protocol(arp.arp)
    assert (answer.opcode, answer.src_mac, answer.src_ip) == (
        arp.ARP_REPLY, PRIMARY.mac, PRIMARY.ip)
    assert out.actions[0].port == 3


@pytest.mark.parametrize('data', [b'\x00' * 5, _syn_bytes()[:20],
                                  _syn_bytes()[:40]])
def test_malformed_packet_in_is_logged_and_dropped(redirect_app, data,
                                                   caplog):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    datapath.sent.clear()
    with caplog.at_level(logging.WARNING):
        redirect_app.on_packet_in(_packet_in(datapath, data))
    assert datapath.sent == []
    assert 'malformed PacketIn' in caplog.text
    # ...and the app still works afterwards.
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    assert datapath.flow_mods(ofp.OFPFC_ADD)


def test_packet_in_without_in_port_is_dropped(redirect_app, caplog):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    datapath.sent.clear()
    event = _packet_in(datapath, _syn_bytes())
    event.msg.match = parser.OFPMatch()
    with caplog.at_level(logging.WARNING):
        redirect_app.on_packet_in(event)
    assert datapath.sent == []


def test_switch_errors_name_the_offending_flow(redirect_app, caplog):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    culprit = datapath.flow_mods(ofp.OFPFC_ADD)[0]
    error = parser.OFPErrorMsg(datapath, type_=ofp.OFPET_FLOW_MOD_FAILED,
                               code=ofp.OFPFMFC_TABLE_FULL, data=b'')
    error.xid = culprit.xid
    with caplog.at_level(logging.ERROR):
        redirect_app.on_switch_error(ofp_event.EventOFPErrorMsg(error))
    assert 'rejected' in caplog.text
    assert 'xid' not in caplog.text.split('rejected')[1].split(':')[0]


def test_flow_removed_lets_the_policy_forget(redirect_app):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    forward = datapath.flow_mods(ofp.OFPFC_ADD)[-2]
    assert redirect_app.policy.pinned_connections('web')
    removed = parser.OFPFlowRemoved(
        datapath, cookie=forward.cookie, priority=forward.priority,
        reason=ofp.OFPRR_IDLE_TIMEOUT, table_id=0, duration_sec=30,
        duration_nsec=0, idle_timeout=30, hard_timeout=0, packet_count=1,
        byte_count=60, match=forward.match)
    redirect_app.on_flow_removed(ofp_event.EventOFPFlowRemoved(removed))
    assert redirect_app.policy.pinned_connections('web') == {}


def test_status_counts_open_connections_from_the_switch(redirect_app):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    forward = datapath.flow_mods(ofp.OFPFC_ADD)[-2]
    datapath.sent.clear()
    ev = app_mod.EventControl({'command': 'drain', 'service': 'web',
                               'server': 'primary'})
    redirect_app.on_control(ev)
    [query] = [m for m in datapath.sent
               if isinstance(m, parser.OFPFlowStatsRequest)]
    assert query.cookie_mask == model.COOKIE_SERVICE_MASK
    assert ev.answers.empty()      # waits for the switch's answer
    reply = parser.OFPFlowStatsReply(datapath)
    reply.xid, reply.flags = query.xid, 0
    reply.body = [parser.OFPFlowStats(
        table_id=0, duration_sec=1, duration_nsec=0, priority=1050,
        idle_timeout=30, hard_timeout=0, flags=0, cookie=forward.cookie,
        packet_count=1, byte_count=60, match=forward.match,
        instructions=[])]
    redirect_app.on_flow_stats(ofp_event.EventOFPFlowStatsReply(reply))
    answer = ev.answers.get_nowait()
    primary, backup = answer['services'][0]['servers']
    assert primary['drained'] and primary['open_connections'] == 1
    assert backup['active'] and backup['open_connections'] == 0
    # New connections now avoid the drained primary.
    datapath.sent.clear()
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes(40001)))
    new_forward = datapath.flow_mods(ofp.OFPFC_ADD)[0]
    assert new_forward.instructions[0].actions[-1].port == BACKUP.port


def test_os_ken_loads_the_one_app_of_the_module():
    # load_app takes the module's first OSKenApp class: the shell's
    # collaborators must define none, and stay plain objects.
    assert app_manager.AppManager().load_app('ha_redirect.app') is (
        app_mod.RedirectApp)
    for module in (adoption, operator_requests, roles):
        assert app_manager.AppManager().load_app(module.__name__) is None


def test_without_an_election_every_write_goes_out(redirect_app):
    datapath = RecordingDatapath()
    _connect(redirect_app, datapath)
    assert datapath.flow_mods(ofp.OFPFC_ADD)
    assert not any(isinstance(m, parser.OFPRoleRequest)
                   for m in datapath.sent)
    assert redirect_app._status(None)['controller'] == {'role': 'single'}


class WireDatapath(RecordingDatapath):
    """A datapath as os-ken's: it takes bytes (`send`), kept as written and
    split into (type, xid, bytes) frames."""

    def __init__(self):
        super().__init__()
        self.writes = []
        self.frames = []

    def send(self, buf):
        self.writes.append(buf)
        offset = 0
        while offset < len(buf):
            _, msg_type, length, xid = ofproto_parser.header(buf[offset:])
            self.frames.append((msg_type, xid, buf[offset:offset + length]))
            offset += length
        return True


def test_an_event_is_one_write_of_what_message_by_message_sent(
        redirect_app):
    recording, wire = RecordingDatapath(), WireDatapath()
    for datapath in (recording, wire):
        _connect(redirect_app, datapath)
        datapath.sent.clear()
        datapath.writes, datapath.frames = [], []
        redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    assert len(wire.writes) == 1
    assert [t for t, _, _ in wire.frames] == [
        ofp.OFPT_FLOW_MOD, ofp.OFPT_FLOW_MOD, ofp.OFPT_BARRIER_REQUEST,
        ofp.OFPT_PACKET_OUT]
    # The bytes and xids os-ken sent for them one message at a time.
    assert wire.frames == [(m.msg_type, m.xid, bytes(m.buf))
                           for m in recording.sent]


def _frame_count(buf):
    count = offset = 0
    while offset < len(buf):
        offset += ofproto_parser.header(buf[offset:])[2]
        count += 1
    return count


def test_a_port_down_of_many_services_goes_out_in_growing_writes():
    """Seven services behind one port: the first service's redirect is
    written alone, before the other services' changes are even made."""
    first = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,))
    services = [first] + [model.Service(f'web{i}', 1, (5001 + i,), PRIMARY,
                                        (BACKUP,)) for i in range(1, 7)]
    policy = RedirectPolicy(services, strategy=ReactiveStrategy())
    app = app_mod.RedirectApp(redirect_policy=policy)
    alone = RedirectPolicy([first], strategy=ReactiveStrategy())
    alone.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    datapath = WireDatapath()
    _connect(app, datapath)
    datapath.writes, datapath.frames = [], []
    status = parser.OFPPortStatus(datapath, reason=ofp.OFPPR_MODIFY,
                                  desc=_port(1, up=False))
    app.on_port_status(ofp_event.EventOFPPortStatus(status))
    # Chunks of 1, 2 and 4 services; the barrier closes the last.
    assert len(datapath.writes) == 3
    in_first = _frame_count(datapath.writes[0])
    assert in_first == len(alone.on_port_status(1, 1, False, 1.0)) - 1
    assert ofp.OFPT_BARRIER_REQUEST not in [
        t for t, _, _ in datapath.frames[:in_first]]
    assert datapath.frames[-1][0] == ofp.OFPT_BARRIER_REQUEST
    assert policy.active_server('web6') == BACKUP


def test_an_error_names_a_message_sent_in_a_write(redirect_app, caplog):
    datapath = WireDatapath()
    _connect(redirect_app, datapath)
    datapath.frames = []
    redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes(40123)))
    forward_xid = datapath.frames[0][1]
    error = parser.OFPErrorMsg(datapath, type_=ofp.OFPET_FLOW_MOD_FAILED,
                               code=ofp.OFPFMFC_TABLE_FULL, data=b'')
    error.xid = forward_xid
    with caplog.at_level(logging.ERROR):
        redirect_app.on_switch_error(ofp_event.EventOFPErrorMsg(error))
    assert 'rejected flow_mod add' in caplog.text
    assert f'tcp_src={40123:#x}' in caplog.text


def test_a_refused_message_leaves_the_others_in_the_write(
        redirect_app, caplog, monkeypatch):
    datapath = WireDatapath()
    _connect(redirect_app, datapath)
    datapath.writes, datapath.frames = [], []
    refused = model.FlowMod(1, model.FlowCommand.ADD,
                            model.Match(tcp_dst=80), (model.Output(2),))
    monkeypatch.setattr(redirect_app.policy, 'on_packet',
                        lambda *args: [model.Barrier(1), refused,
                                       model.Barrier(1)])
    with caplog.at_level(logging.ERROR):
        redirect_app.on_packet_in(_packet_in(datapath, _syn_bytes()))
    assert 'not sending' in caplog.text
    assert len(datapath.writes) == 1
    assert [t for t, _, _ in datapath.frames] == [
        ofp.OFPT_BARRIER_REQUEST, ofp.OFPT_BARRIER_REQUEST]


def test_the_features_reply_reaches_the_app_which_then_reads_the_switch(
        redirect_app):
    """os-ken hands an event only to apps with a handler for it, and the
    features reply is where the app starts reading the switch's PacketIns
    itself, below os-ken's event queue (half the cost per connection; an
    app without the handler ran at half the rate)."""
    features = ofp_event.EventOFPSwitchFeatures(
        parser.OFPSwitchFeatures(RecordingDatapath(), datapath_id=1))
    assert redirect_app.get_handlers(features, handler.CONFIG_DISPATCHER)
