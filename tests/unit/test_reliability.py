"""Regression tests for what once stopped or misled the controller (issue 9).

Each test names the finding it guards. They use real os-ken messages and
event loop, the real policy and the fake flow table; the fault suite in
tests/functional repeats the important ones on Open vSwitch.
"""

import logging
import struct
import subprocess
import sys
import threading

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
import pytest

from ha_redirect import app as app_mod
from ha_redirect import model
from ha_redirect.monitors import passive_check
from ha_redirect import openflow
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.proactive import ProactiveStrategy
from ha_redirect.strategies.reactive import ReactiveStrategy
from ha_redirect import testing

from os_ken_fakes import RecordingDatapath

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
CLIENT_MAC = '00:00:00:00:00:03'
WEB = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,))


def _mac(text):
    return bytes(int(b, 16) for b in text.split(':'))


def _ip(text):
    return bytes(int(b) for b in text.split('.'))


def syn_frame(dst_port=5001, options=b'', vlans=(), payload=b'',
              src_port=40000, flags=0x02, data_offset=None):
    """Ethernet (+ VLAN tags) / IPv4 / TCP bytes, built by hand."""
    words = data_offset if data_offset is not None else 5 + len(options) // 4
    tcp = struct.pack('!HHIIBBHHH', src_port, dst_port, 7, 0, words << 4,
                      flags, 1024, 0, 0) + options + payload
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), 1, 0, 64, 6,
                     0, _ip('10.0.0.3'), _ip(PRIMARY.ip))
    eth = _mac(PRIMARY.mac) + _mac(CLIENT_MAC)
    for tpid, vid in vlans:
        eth += struct.pack('!HH', tpid, vid)
    return eth + b'\x08\x00' + ip + tcp


def packet_in(data, in_port=3, datapath=None):
    datapath = datapath or RecordingDatapath()
    return parser.OFPPacketIn(datapath, buffer_id=ofp.OFP_NO_BUFFER,
                              total_len=len(data), reason=ofp.OFPR_ACTION,
                              table_id=0, cookie=0,
                              match=parser.OFPMatch(in_port=in_port),
                              data=data)


# 1. One packet stopped `reactive`: os-ken's parser looped forever on a
#    zero-length TCP option, and decoded some ports as BGP or OpenFlow.

def test_a_zero_length_tcp_option_decodes_at_once():
    # In a child process, so a regression hangs the child, not the suite.
    code = (
        'import sys; sys.path.insert(0, "tests/unit")\n'
        'import test_reliability as t\n'
        'from ha_redirect import openflow\n'
        'p = openflow.decode_packet_in(t.packet_in(t.syn_frame('
        'options=bytes([0x42, 0, 1, 1]))))\n'
        'assert p.tcp_dst == 5001 and p.tcp_flags == 2, p\n')
    result = subprocess.run([sys.executable, '-c', code], timeout=20,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('port', [179, 2600, 6633, 6653])
def test_payloads_on_bgp_and_openflow_ports_are_just_tcp(port):
    frame = syn_frame(dst_port=port, flags=0x18,
                      payload=bytes(range(256)) * 2)
    packet = openflow.decode_packet_in(packet_in(frame))
    assert (packet.tcp_dst, packet.tcp_flags) == (port, 0x18)


# 12. VLAN-tagged SYNs reached the controller and were never forwarded.

@pytest.mark.parametrize('vlans', [((0x8100, 10),),
                                   ((0x88a8, 20), (0x8100, 10))])
def test_a_vlan_tagged_syn_is_decoded_and_released_tagged(vlans):
    frame = syn_frame(vlans=vlans)
    packet = openflow.decode_packet_in(packet_in(frame))
    assert packet.ipv4_dst == PRIMARY.ip and packet.data == frame
    policy = RedirectPolicy([WEB], strategy=ReactiveStrategy())
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    release = policy.on_packet(1, packet, 0.0)[-1]
    assert isinstance(release, model.PacketOut)
    assert release.data == frame     # the tags go on with the packet


@pytest.mark.parametrize('frame', [
    b'\x00' * 13,                                       # short Ethernet
    syn_frame()[:14 + 19],                              # short IPv4
    syn_frame()[:14 + 20 + 19],                         # short TCP
    syn_frame(data_offset=4),                           # offset < 5 words
    syn_frame()[:14] + b'\x44' + syn_frame()[15:],      # ihl 4
    syn_frame()[:14] + b'\x65' + syn_frame()[15:],      # version 6
    syn_frame(vlans=((0x8100, 1),) * 3),                # three tags
    _mac(PRIMARY.mac) + _mac(CLIENT_MAC) + b'\x08\x06' + b'\x00\x01' * 3,
])
def test_inconsistent_frames_are_malformed_naming_the_port(frame):
    with pytest.raises(openflow.MalformedPacket, match='in_port 3'):
        openflow.decode_packet_in(packet_in(frame))


@hsettings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([b'\x08\x00', b'\x08\x06',
                                                 b'\x81\x00', b'\x86\xdd']))
def test_any_bytes_decode_to_a_packet_none_or_malformed(tail, ethertype):
    frame = _mac(PRIMARY.mac) + _mac(CLIENT_MAC) + ethertype + tail
    try:
        result = openflow.decode_packet_in(packet_in(frame))
    except openflow.MalformedPacket:
        return
    assert result is None or isinstance(result, (model.TcpPacket,
                                                 model.ArpRequest))


# 2. An exception escaping a handler silently ended the app's event loop.

class _FlakyPolicy(RedirectPolicy):
    """Raises on its first tick, as a bug would."""
    ticks = 0

    def on_tick(self, now):
        self.ticks += 1
        if self.ticks == 1:
            raise RuntimeError('a bug in a handler')
        return []

    @property
    def tick_interval(self):
        return None     # the test sends the ticks itself


def test_the_real_event_loop_logs_a_failing_handler_and_serves_on(caplog):
    policy = _FlakyPolicy([WEB], strategy=ReactiveStrategy())
    app = app_mod.RedirectApp(redirect_policy=policy)
    app_manager.register_app(app)   # so send_event finds it by name
    app.start()
    try:
        with caplog.at_level(logging.ERROR, logger='ha_redirect.app'):
            app.send_event(app.name, app_mod.EventTick())
            # The next event is still handled: an operator's request.
            answer = app._ask_app_thread({'command': 'status'})
        assert answer['ok'] and answer['services'][0]['service'] == 'web'
        assert policy.ticks == 1
        [record] = [r for r in caplog.records if 'on_tick' in r.message]
        assert 'EventTick' in record.message and record.exc_info
    finally:
        app.stop()
        app_manager.unregister_app(app)


def test_an_experimenter_error_is_described_not_raised():
    datapath = RecordingDatapath()
    error = parser.OFPErrorExperimenterMsg(datapath, exp_type=2,
                                           experimenter=0x4f4e4600,
                                           data=b'')
    error.type = ofp.OFPET_EXPERIMENTER
    text = openflow.describe_error(error)
    assert 'OFPET_EXPERIMENTER' in text and '0x4f4e4600' in text


# 3 and 11. tcp_probe with servers shared between services, and forged
#    replies.

def _probing_policy(services):
    settings = model.PolicySettings(probe_ip='10.0.0.250',
                                    probe_mac='00:00:00:00:00:fa')
    policy = RedirectPolicy(services, settings, strategy=ReactiveStrategy())
    ports = {s.port: True for svc in services for s in svc.servers}
    policy.on_switch_connected(1, {**ports, 9: True}, 0.0)
    return policy


def _answer(probe, flags):
    return model.TcpPacket(
        in_port=probe.out_port, eth_src=probe.eth_dst, eth_dst=probe.eth_src,
        ipv4_src=probe.ipv4_dst, ipv4_dst=probe.ipv4_src,
        tcp_src=probe.tcp_dst, tcp_dst=probe.tcp_src, tcp_flags=flags,
        tcp_seq=99, tcp_ack=(probe.tcp_seq + 1) & 0xffffffff)


def test_services_sharing_a_backup_each_see_their_probe_replies():
    third = model.Endpoint('10.0.0.4', '00:00:00:00:00:04', 4)
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
    api = model.Service('api', 1, (80,), third, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
    policy = _probing_policy([web, api])
    now = 0.0
    while now < 3.0:
        now += 0.01
        for probe in [m for m in policy.on_tick(now)
                      if isinstance(m, model.TcpSegment)]:
            policy.on_packet(1, _answer(probe, model.TCP_SYN | model.TCP_ACK),
                             now)
    for service in ('web', 'api'):
        assert policy.active_server(service) is not None, service
    for service in policy.status():
        assert all(s['healthy'] for s in service['servers']), service


def test_forged_rsts_to_the_probe_address_do_not_mark_a_server_down():
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
    policy = _probing_policy([web])
    for now in (0.5, 0.6, 0.7, 0.8, 0.9):
        probes = [m for m in policy.on_tick(now)
                  if isinstance(m, model.TcpSegment)]
        for probe in probes:
            forged = _answer(probe, model.TCP_RST | model.TCP_ACK)
            policy.on_packet(1, model.TcpPacket(**{
                **forged.__dict__, 'tcp_ack': forged.tcp_ack + 1}), now)
            policy.on_packet(1, _answer(probe, model.TCP_SYN | model.TCP_ACK),
                             now)
    assert policy.active_server('web') == PRIMARY


def test_probe_source_ports_are_not_sequential():
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
    policy = _probing_policy([web])
    ports = []
    now = 0.0
    while len(ports) < 20:
        now += 0.05
        ports += [m.tcp_src for m in policy.on_tick(now)
                  if isinstance(m, model.TcpSegment)]
    steps = {b - a for a, b in zip(ports, ports[1:])}
    assert len(steps) > 5, ports


# 4 and 5. A backup's reply that overtakes its connection's pin.

@pytest.mark.parametrize('strategy', [ReactiveStrategy, ProactiveStrategy])
def test_an_unpinned_reply_of_the_active_backup_comes_from_the_primary(
        strategy):
    policy = RedirectPolicy([WEB], strategy=strategy())
    table = testing.FakeFlowTable()
    table.apply(policy.on_switch_connected(1, {1: True, 2: True, 3: True},
                                           0.0))
    table.apply(policy.on_port_status(1, 1, False, 1.0))
    reply = {'in_port': 2, 'eth_type': 0x800, 'ip_proto': 6,
             'eth_src': BACKUP.mac, 'eth_dst': CLIENT_MAC,
             'ipv4_src': BACKUP.ip, 'ipv4_dst': '10.0.0.3',
             'tcp_src': 5001, 'tcp_dst': 40000, 'tcp_flags': 0x12}
    [out] = table.process(1, reply)
    assert out.packet['ipv4_src'] == PRIMARY.ip
    # ... but only while that backup stands in for the primary.
    table.apply(policy.on_port_status(1, 1, True, 2.0))
    [out] = table.process(1, reply)
    assert out.packet['ipv4_src'] == BACKUP.ip


# 6. A reconnect overtaking the old connection's DEAD event.

def _connect(app, datapath):
    reply = parser.OFPPortDescStatsReply(datapath)
    reply.flags = 0
    reply.body = [parser.OFPPort(no, f'00:00:00:00:aa:{no:02x}', f'p{no}',
                                 0, 0, 0, 0, 0, 0, 0, 0) for no in (1, 2, 3)]
    app.on_port_desc(ofp_event.EventOFPPortDescStatsReply(reply))


def test_an_old_connections_end_does_not_disconnect_the_live_switch():
    policy = RedirectPolicy([WEB], strategy=ReactiveStrategy())
    app = app_mod.RedirectApp(redirect_policy=policy)
    old, new = RecordingDatapath(), RecordingDatapath()
    _connect(app, old)
    _connect(app, new)
    app.on_switch_gone(ofp_event.EventOFPStateChange(old))
    [service] = policy.status()
    assert service['connected']
    app.on_switch_gone(ofp_event.EventOFPStateChange(new))
    [service] = policy.status()
    assert not service['connected']


# 7. Configs that started, then crashed at run time.

@pytest.mark.parametrize('settings, culprit', [
    (dict(connection_idle_timeout=70000), 'connection_idle_timeout'),
    (dict(fin_idle_timeout=70000), 'fin_idle_timeout'),
    (dict(max_connections_per_service=0), 'max_connections_per_service'),
    (dict(packet_in_rate=-1), 'packet_in_rate'),
])
def test_out_of_range_settings_name_the_option(settings, culprit):
    with pytest.raises(model.ServiceError, match=culprit):
        model.PolicySettings(**settings)


def test_stateful_zones_past_65535_are_refused_at_start():
    from ha_redirect.strategies.stateful import StatefulStrategy
    services = [model.Service(f's{i}', 1, (80 + i,), PRIMARY, (BACKUP,))
                for i in range(3)]
    with pytest.raises(model.ServiceError, match='first_ct_zone'):
        RedirectPolicy(services, model.PolicySettings(
            strategy='stateful', first_ct_zone=65534),
            strategy=StatefulStrategy())


def test_probe_timeouts_that_would_exhaust_probe_ports_are_refused():
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
    settings = model.PolicySettings(
        probe_ip='10.0.0.250', probe_mac='00:00:00:00:00:fa',
        probe_interval=0.001, probe_timeout=60)
    with pytest.raises(model.ServiceError, match='probe source ports'):
        RedirectPolicy([web], settings, strategy=ReactiveStrategy())


@pytest.mark.parametrize('probe_ip, probe_mac, culprit', [
    ('10.0.0.4', '00:00:00:00:00:fa', 'probe_ip'),
    ('10.0.0.250', '00:00:00:00:00:04', 'probe_mac'),
])
def test_probe_addresses_of_another_services_server_are_refused(
        probe_ip, probe_mac, culprit):
    other = model.Endpoint('10.0.0.4', '00:00:00:00:00:04', 4)
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
    api = model.Service('api', 1, (81,), other, (BACKUP,))
    with pytest.raises(model.ServiceError, match=culprit):
        RedirectPolicy([web, api], model.PolicySettings(
            probe_ip=probe_ip, probe_mac=probe_mac),
            strategy=ReactiveStrategy())


def test_one_ip_with_two_macs_or_ports_is_refused():
    imposter = model.Endpoint(PRIMARY.ip, '00:00:00:00:00:09', 9)
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,))
    api = model.Service('api', 1, (81,), imposter, (BACKUP,))
    with pytest.raises(model.ServiceError, match="service 'web'"):
        RedirectPolicy([web, api], strategy=ReactiveStrategy())


def test_services_sharing_a_primary_share_one_arp_responder():
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,))
    api = model.Service('api', 1, (81,), PRIMARY, (BACKUP,))
    policy = RedirectPolicy([web, api], strategy=ReactiveStrategy())
    table = testing.FakeFlowTable()
    table.apply(policy.on_switch_connected(1, {1: True, 2: True, 3: True},
                                           0.0))
    table.apply(policy.on_port_status(1, 1, False, 1.0))
    arp = {'in_port': 3, 'eth_src': CLIENT_MAC,
           'eth_dst': 'ff:ff:ff:ff:ff:ff', 'eth_type': 0x806, 'arp_op': 1,
           'arp_spa': '10.0.0.3', 'arp_tpa': PRIMARY.ip}
    assert [d.port for d in table.process(1, arp)] == [testing.CONTROLLER]
    table.apply(policy.on_port_status(1, 1, True, 2.0))
    # Back up: the primary answers for itself again.
    assert testing.CONTROLLER not in [d.port for d in table.process(1, arp)]


# 8. Unbounded controller state.

def _syn(src_port):
    return model.TcpPacket(in_port=3, eth_src=CLIENT_MAC,
                           eth_dst=PRIMARY.mac, ipv4_src='10.0.0.3',
                           ipv4_dst=PRIMARY.ip, tcp_src=src_port,
                           tcp_dst=5001, tcp_flags=model.TCP_SYN,
                           data=b'x')


def test_past_the_cap_new_connections_are_forwarded_unpinned(caplog):
    policy = RedirectPolicy([WEB], model.PolicySettings(
        max_connections_per_service=3), strategy=ReactiveStrategy())
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    answers = [policy.on_packet(1, _syn(40000 + i), 0.0) for i in range(6)]
    assert all(any(isinstance(m, model.FlowMod) for m in a)
               for a in answers[:3])
    for answer in answers[3:]:
        [release] = answer
        assert isinstance(release, model.PacketOut)
        assert model.Output(PRIMARY.port) in release.actions
    assert len(policy.pinned_connections('web')) == 3
    assert sum('maximum' in r.message for r in caplog.records) == 1


def test_a_pin_the_switch_refuses_is_forgotten():
    policy = RedirectPolicy([WEB], strategy=ReactiveStrategy())
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    forward = policy.on_packet(1, _syn(40000), 0.0)[0]
    assert len(policy.pinned_connections('web')) == 1
    policy.on_flow_rejected(1, forward, 0.1)
    assert policy.pinned_connections('web') == {}


# 9. Nothing limited what reaches the controller.

def test_flows_to_the_controller_pass_a_meter_where_the_switch_has_them():
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
    settings = model.PolicySettings(probe_ip='10.0.0.250',
                                    probe_mac='00:00:00:00:00:fa')
    policy = RedirectPolicy([web], settings, strategy=ReactiveStrategy())
    messages = policy.on_switch_connected(1, {1: True, 2: True, 3: True},
                                          0.0, max_meter_id=1000)
    meters = [m for m in messages if isinstance(m, model.MeterMod)]
    # Shared, monitors', servers' RST copies (the passive check), server
    # ports 1 and 2's for their bare RSTs held for redispatch, and client
    # port 3's own (72 + 2 + port).
    assert {m.meter_id for m in meters} == {72, 73, 74, 75, 76, 77}
    assert all(m.rate == settings.packet_in_rate for m in meters)
    [bundle] = [m for m in messages if isinstance(m, model.Bundle)]
    assert messages.index(bundle) > messages.index(meters[-1])
    to_controller = [f for f in bundle.messages
                     if isinstance(f, model.FlowMod) and model.Output(
                         model.SpecialPort.CONTROLLER) in f.actions]
    assert to_controller
    # The passive check's: servers' RSTs (held for redispatch, reactive).
    copies = [f for f in to_controller if f.match.reg6 is not None]
    assert copies
    for flow in to_controller:
        probe = flow.cookie & 0xffff == model.ROLE_PROBE
        bare = flow.match.tcp_flags == passive_check.BARE_RST
        expected = (74 + flow.match.in_port if bare
                    else 74 if flow in copies else 73 if probe
                    else 77 if flow.match.in_port == 3 else 72)
        assert flow.actions[0] == model.Meter(expected)
    # Port 3's copy of each service flow, one priority up.
    shared = [f for f in to_controller
              if f.cookie & 0xffff == model.ROLE_SERVICE
              and f.match.in_port is None]
    assert len(shared) == 2     # opening SYNs, and the rest
    for service in shared:
        [own] = [f for f in to_controller if f.match == dataclass_replace(
            service.match, in_port=3)]
        assert own.priority == service.priority + 1
    # ... and on a switch without meters, none.
    plain = policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 1.0)
    assert not any(isinstance(m, model.MeterMod) for m in plain)
    [bundle] = [m for m in plain if isinstance(m, model.Bundle)]
    assert not any(isinstance(a, model.Meter) for f in bundle.messages
                   for a in getattr(f, 'actions', ()))


def test_the_meter_is_an_instruction_on_openflow_13():
    flow = model.FlowMod(1, model.FlowCommand.ADD, actions=(
        model.Meter(72), model.Output(model.SpecialPort.CONTROLLER)))
    [msg] = openflow.to_ofp_messages(RecordingDatapath(), flow)
    assert isinstance(msg.instructions[0], parser.OFPInstructionMeter)
    assert msg.instructions[0].meter_id == 72
    msg.serialize()


def test_a_meter_the_switch_kept_is_not_an_error():
    datapath = RecordingDatapath()
    add = model.MeterMod(1, model.MeterCommand.ADD, 72, 1500, 150)
    error = parser.OFPErrorMsg(datapath, type_=ofp.OFPET_METER_MOD_FAILED,
                               code=ofp.OFPMMFC_METER_EXISTS)
    assert openflow.is_expected_error(error, add)
    assert not openflow.is_expected_error(error, dataclass_replace(
        add, command=model.MeterCommand.MODIFY))


def dataclass_replace(obj, **changes):
    import dataclasses
    return dataclasses.replace(obj, **changes)


# 14. A status request that timed out left its entries behind.

def test_a_timed_out_status_request_leaves_nothing_behind():
    policy = RedirectPolicy([WEB], strategy=ReactiveStrategy())
    app = app_mod.RedirectApp(redirect_policy=policy)
    datapath = RecordingDatapath()
    _connect(app, datapath)
    request = app_mod.EventControl({'command': 'status'})
    app.on_control(request)
    assert app._operator.stats_waiting
    pending = next(iter(app._operator.stats_waiting.values()))
    app.on_stats_timeout(app_mod.EventStatsTimeout(pending))
    assert app._operator.stats_waiting == {}
    answer = request.answers.get(timeout=1)
    assert answer['ok'] and answer['services'][0]['servers'][0][
        'open_connections'] is None
    # A second answer (a late reply) is dropped, not raised.
    request.answer({'ok': False})


def test_answers_from_two_threads_never_raise():
    request = app_mod.EventControl({'command': 'status'})
    errors = []

    def answer():
        try:
            request.answer({'ok': True})
        except Exception as exc:     # pragma: no cover - the bug
            errors.append(exc)
    threads = [threading.Thread(target=answer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and request.answers.qsize() == 1


# 9. A PacketIn flood delayed failover: the switch's receive thread blocked
#    on the app's full queue while PortStatus waited in the socket behind
#    the flood.

def test_a_flooding_port_is_shed_and_others_still_get_through():
    policy = RedirectPolicy([WEB], strategy=ReactiveStrategy())
    app = app_mod.RedirectApp(redirect_policy=policy)   # loop not started
    datapath = RecordingDatapath()
    _connect(app, datapath)
    flood = [ofp_event.EventOFPPacketIn(packet_in(syn_frame(), 3, datapath))
             for _ in range(50)]
    for ev in flood:
        app._send_event(ev, None)      # as the receive thread does
    other = ofp_event.EventOFPPacketIn(packet_in(syn_frame(), 4, datapath))
    app._send_event(other, None)
    status = parser.OFPPortStatus(datapath, ofp.OFPPR_MODIFY, parser.OFPPort(
        1, '00:00:00:00:aa:01', 'p1', 0, ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0,
        0))
    app._send_event(ofp_event.EventOFPPortStatus(status), None)
    queued = [app.events.get_nowait()[0] for _ in range(app.events.qsize())]
    assert len(queued) == app_mod.PACKET_IN_BACKLOG_PER_PORT + 2
    assert queued[-2] is other
    assert isinstance(queued[-1], ofp_event.EventOFPPortStatus)
    # Ports take turns: the next token handles port 4's packet, though the
    # flood's came first.
    handled = []
    policy.on_packet = lambda dpid, packet, now: handled.append(
        packet.in_port) or []
    for token in queued[:3]:
        app.on_packet_in(token)
    assert handled == [3, 4, 3]
    # Handling makes room for the port again.
    app._send_event(flood[-1], None)
    assert app.events.qsize() == 1


def test_a_backup_two_services_share_passes_replies_unless_one_owns_it():
    """Whose primary a shared backup's unpinned reply should come from is
    known only while exactly one service has it standing in."""
    third = model.Endpoint('10.0.0.4', '00:00:00:00:00:04', 4)
    web = model.Service('web', 1, (80,), PRIMARY, (BACKUP,))
    api = model.Service('api', 1, (80,), third, (BACKUP,))
    policy = RedirectPolicy([web, api], strategy=ReactiveStrategy())
    table = testing.FakeFlowTable()
    table.apply(policy.on_switch_connected(
        1, {1: True, 2: True, 4: True, 9: True}, 0.0))
    reply = {'in_port': 2, 'eth_type': 0x800, 'ip_proto': 6,
             'eth_src': BACKUP.mac, 'eth_dst': CLIENT_MAC,
             'ipv4_src': BACKUP.ip, 'ipv4_dst': '10.0.0.3',
             'tcp_src': 80, 'tcp_dst': 40000, 'tcp_flags': 0x12}

    def source():
        [out] = table.process(1, reply)
        return out.packet['ipv4_src']
    table.apply(policy.on_port_status(1, 1, False, 1.0))     # web's down
    assert source() == PRIMARY.ip
    table.apply(policy.on_port_status(1, 4, False, 2.0))     # api's too
    assert source() == BACKUP.ip
    table.apply(policy.on_port_status(1, 1, True, 3.0))      # web's back
    assert source() == third.ip
    table.apply(policy.on_port_status(1, 4, True, 4.0))
    assert source() == BACKUP.ip


def test_no_packet_in_is_handled_before_an_event_that_came_ahead_of_it():
    policy = RedirectPolicy([WEB], strategy=ReactiveStrategy())
    app = app_mod.RedirectApp(redirect_policy=policy)   # loop not started
    datapath = RecordingDatapath()
    _connect(app, datapath)
    handled = []
    policy.on_packet = lambda dpid, packet, now: handled.append(
        ('packet', packet.in_port)) or []
    policy.on_port_status_in_chunks = lambda dpid, port, up, now: iter(
        handled.append(('port', port)) or [])

    def packet(port):
        return ofp_event.EventOFPPacketIn(packet_in(syn_frame(), port,
                                                    datapath))
    status = parser.OFPPortStatus(datapath, ofp.OFPPR_MODIFY, parser.OFPPort(
        1, '00:00:00:00:aa:01', 'p1', 0, ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0,
        0))
    for ev in [packet(3), packet(3), packet(3),
               ofp_event.EventOFPPortStatus(status), packet(4), packet(4)]:
        app._send_event(ev, None)
    while app.events.qsize():
        ev, _ = app.events.get_nowait()
        if isinstance(ev, ofp_event.EventOFPPacketIn):
            app.on_packet_in(ev)
        else:
            app.on_port_status(ev)
    # Port 4's packets came after the PortStatus: round-robin interleaves
    # them with port 3's only after it.
    assert handled == [('packet', 3), ('packet', 3), ('packet', 3),
                       ('port', 1), ('packet', 4), ('packet', 4)]


def test_packet_ins_of_an_ended_connection_are_not_handled():
    policy = RedirectPolicy([WEB], strategy=ReactiveStrategy())
    app = app_mod.RedirectApp(redirect_policy=policy)
    old, new = RecordingDatapath(), RecordingDatapath()
    _connect(app, old)
    _connect(app, new)
    old.sent.clear()
    app.on_packet_in(ofp_event.EventOFPPacketIn(packet_in(syn_frame(), 3,
                                                          old)))
    assert old.sent == [] and policy.pinned_connections('web') == {}


def test_probe_replies_are_not_crowded_out_by_a_full_backlog():
    from ha_redirect import backlog
    queue = backlog.PacketInBacklog(total=4, per_port=2)
    assert [queue.admit(port, object()) for port in (1, 1, 2, 2, 3)] == [
        True, True, True, True, False]
    assert queue.admit('server port', object(), exempt_from_total=True)
    assert queue.take_shed() == {3: 1}
