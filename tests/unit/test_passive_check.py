"""tcp_probe's passive check: servers' refusals mark them down at once.

The switch side runs on the fake switch (which applies OVS's own rules);
tests/functional/test_faults.py shows it on Open vSwitch.
"""

import random

import pytest

from ha_redirect import model
from ha_redirect.monitors import passive_check
from ha_redirect.monitors.port_status import PortStatusMonitor
from ha_redirect.monitors.tcp_probe import TcpProbeMonitor
from ha_redirect import plugins
from ha_redirect.policy import RedirectPolicy
from ha_redirect import testing

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
CLIENT_PORT, CLIENT_MAC, CLIENT_IP = 3, '00:00:00:00:00:03', '10.0.0.3'
PROBE_IP, PROBE_MAC = '10.0.0.250', '02:00:00:00:00:fa'
SERVICE = model.Service('web', 1, (5001, 5002), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
STRATEGIES = ('reactive', 'proactive', 'stateful', 'fast_failover')


def _policy(strategy='reactive', **changes):
    settings = model.PolicySettings(**{
        'probe_ip': PROBE_IP, 'probe_mac': PROBE_MAC, 'strategy': strategy,
        'probe_interval': 0.1, 'probe_timeout': 0.3, **changes})
    return RedirectPolicy(
        [SERVICE], settings,
        strategy=plugins.load_strategy(strategy),
        monitor_classes={'port_status': PortStatusMonitor,
                         'tcp_probe': lambda *a: TcpProbeMonitor(
                             *a, rng=random.Random(1))})


def _reset(server, seq=0, tcp_port=5001, client_port=40000):
    """A server's RST to the client: seq 0 + ACK is a refused SYN."""
    return model.TcpPacket(
        in_port=server.port, eth_src=server.mac, eth_dst=CLIENT_MAC,
        ipv4_src=server.ip, ipv4_dst=CLIENT_IP, tcp_src=tcp_port,
        tcp_dst=client_port, tcp_flags=model.TCP_RST | model.TCP_ACK,
        tcp_seq=seq, tcp_ack=1234)


def _fields(packet):
    return dict(in_port=packet.in_port, eth_src=packet.eth_src,
                eth_dst=packet.eth_dst, eth_type=model.ETH_TYPE_IPV4,
                ip_proto=model.IP_PROTO_TCP, ipv4_src=packet.ipv4_src,
                ipv4_dst=packet.ipv4_dst, tcp_src=packet.tcp_src,
                tcp_dst=packet.tcp_dst, tcp_flags=packet.tcp_flags)


def _without(name, fields):
    return {k: v for k, v in fields.items() if k != name}


def _switch(policy):
    table = testing.FakeFlowTable()
    table.apply(policy.on_switch_connected(
        1, {1: True, 2: True, 3: True}, 0.0))
    return table


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_servers_resets_are_forwarded_as_without_the_check_and_copied(
        strategy):
    """Whatever strategy forwards a server's RST, and before or after a
    failover, the client gets exactly what it got without the passive
    check, and the controller one copy of the RST."""
    # (reactive holds RSTs for redispatch instead: test_redispatch.py)
    checked = _policy(strategy, redispatch=False)
    plain = _policy(strategy, passive_refusals=0)
    tables = {'checked': _switch(checked), 'plain': _switch(plain)}
    for failed_over in (False, True):
        if failed_over:
            tables['checked'].apply(checked.on_port_status(1, 1, False, 1.0))
            tables['plain'].apply(plain.on_port_status(1, 1, False, 1.0))
        for server in (PRIMARY, BACKUP):
            for seq in (0, 99):
                fields = _fields(_reset(server, seq))
                seen = {name: table.process(1, fields, now=2.0, dry_run=True)
                        for name, table in tables.items()}
                copies = [d for d in seen['checked']
                          if d.port == testing.CONTROLLER]
                # The register is the switch's scratch, not the packet's.
                forwarded = [(d.port, _without('reg6', d.packet))
                             for d in seen['checked']
                             if d.port != testing.CONTROLLER]
                assert forwarded and forwarded == [
                    (d.port, d.packet) for d in seen['plain']]
                assert len(copies) == 1
                copy = copies[0].packet
                assert (copy['in_port'], copy['tcp_src'], copy['tcp_dst']) == (
                    server.port, 5001, 40000)


@pytest.mark.parametrize('strategy', STRATEGIES)
@pytest.mark.parametrize('redispatch', (False, True))
def test_bare_resets_are_not_copied_and_held_only_for_redispatch(
        strategy, redispatch):
    """A RST without ACK answers a segment of a connection the server has
    no socket for: never a refusal, so never copied. Redispatch holds it
    (the refuser's answer to a moved connection's ACK must not reach the
    client); without redispatch it passes as without the check."""
    checked = _switch(_policy(strategy, redispatch=redispatch))
    plain = _switch(_policy(strategy, passive_refusals=0))
    for server in (PRIMARY, BACKUP):
        bare = dict(_fields(_reset(server, seq=777)),
                    tcp_flags=model.TCP_RST)
        seen = checked.process(1, bare, now=2.0, dry_run=True)
        if redispatch:
            assert [d.port for d in seen] == [testing.CONTROLLER]
            continue
        assert testing.CONTROLLER not in [d.port for d in seen]
        assert [(d.port, _without('reg6', d.packet)) for d in seen] == [
            (d.port, d.packet) for d in plain.process(1, bare, now=2.0,
                                                      dry_run=True)]
        assert seen


@pytest.mark.parametrize('redispatch', (False, True))
def test_bare_resets_cannot_crowd_refusals_out_of_their_meter(redispatch):
    """When a service dies its clients' data in flight draws thousands of
    bare RSTs a second; refusals and resets (RST with ACK) pass the
    passive check's meter, held bare RSTs their server port's."""
    policy = _policy('proactive', redispatch=redispatch)
    messages = [m for message in policy.on_switch_connected(
        1, {1: True, 2: True, 3: True}, 0.0, max_meter_id=1000)
        for m in getattr(message, 'messages', (message,))]
    settings = policy.settings
    meter_ids = {m.meter_id for m in messages
                 if isinstance(m, model.MeterMod)}
    held = {}
    for flow in messages:
        if (isinstance(flow, model.FlowMod) and flow.match.tcp_flags
                and flow.match.tcp_flags[0] & model.TCP_RST
                and model.Output(model.SpecialPort.CONTROLLER)
                in flow.actions):
            held.setdefault(flow.match.tcp_flags, set()).add(
                (flow.match.in_port, flow.actions[0].meter_id))
    passive_meter = settings.first_meter_id + model.METER_PASSIVE
    rst_ack = (model.TCP_RST | model.TCP_ACK,) * 2
    if redispatch:
        assert held[rst_ack] == {(PRIMARY.port, passive_meter),
                                 (BACKUP.port, passive_meter)}
        assert held[passive_check.BARE_RST] == {
            (server.port, model.port_meter_id(settings, server.port))
            for server in (PRIMARY, BACKUP)}
        assert {model.port_meter_id(settings, server.port)
                for server in (PRIMARY, BACKUP)} <= meter_ids
    else:
        # The copy pass, on any server port.
        assert held == {rst_ack: {(PRIMARY.port, passive_meter),
                                  (BACKUP.port, passive_meter)}}
    assert passive_meter in meter_ids


def test_a_servers_other_packets_are_not_copied():
    table = _switch(_policy(redispatch=False))
    syn_ack = dict(_fields(_reset(PRIMARY)),
                   tcp_flags=model.TCP_SYN | model.TCP_ACK)
    assert not table.is_output(1, syn_ack, port=testing.CONTROLLER)
    elsewhere = dict(_fields(_reset(PRIMARY)), tcp_src=22)
    assert not table.is_output(1, elsewhere, port=testing.CONTROLLER)


def test_no_copy_flows_when_the_check_is_off():
    table = _switch(_policy(passive_refusals=0))
    assert not table.is_output(1, _fields(_reset(PRIMARY)),
                               port=testing.CONTROLLER)


def _refuse(policy, server, count, start, spacing=0.005):
    messages = []
    for n in range(count):
        messages += policy.on_packet(
            1, _reset(server, client_port=40000 + n), start + n * spacing)
    return messages


def test_passive_refusals_within_the_window_mark_the_primary_down():
    policy = _policy(passive_refusals=3, passive_window=1.0)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    _refuse(policy, PRIMARY, 2, start=1.0)
    assert policy.active_server('web') == PRIMARY
    messages = _refuse(policy, PRIMARY, 1, start=1.01)
    assert policy.active_server('web') == BACKUP
    assert messages          # the failover's flows, at once
    [(when, index, up)] = policy._states[0].monitors[1].transitions
    assert (when, index, up) == (1.01, 0, False)


def test_each_refusal_is_told_to_the_observer():
    from ha_redirect import metrics as metrics_mod
    policy = _policy(passive_refusals=3)
    metrics = metrics_mod.ControllerMetrics()
    policy.set_observer(metrics)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    _refuse(policy, PRIMARY, 2, start=1.0)
    policy.on_packet(1, _reset(PRIMARY, seq=99), 1.1)    # not a refusal
    assert metrics.registry.get_sample_value(
        'ha_redirect_passive_refusals_total',
        {'service': 'web', 'server': 'primary'}) == 2


def test_refusals_spread_wider_than_the_window_change_nothing():
    policy = _policy(passive_refusals=3, passive_window=1.0)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    _refuse(policy, PRIMARY, 6, start=1.0, spacing=0.6)
    assert policy.active_server('web') == PRIMARY


def test_resets_of_established_connections_are_not_refusals():
    """Apart by more than the abort window, resets add up to nothing,
    however many."""
    policy = _policy(passive_refusals=3, passive_aborts=3,
                     passive_abort_window=0.02)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    for n in range(10):
        answer = policy.on_packet(
            1, _reset(PRIMARY, seq=5000 + n, client_port=40000 + n),
            1.0 + n * 0.05)
        # Claimed, never taken for a client's packet: only passed on.
        assert [type(m) for m in answer] == [model.PacketOut]
    assert policy.active_server('web') == PRIMARY


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_a_burst_of_resets_marks_the_primary_down_at_once(strategy):
    """A dying process resets its connections together: passive_aborts
    of them within passive_abort_window fail over, refusals or not."""
    policy = _policy(strategy, passive_aborts=3, passive_abort_window=0.02)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    for n in range(2):
        policy.on_packet(1, _reset(PRIMARY, seq=7000 + n,
                                   client_port=40000 + n), 1.0 + n * 0.005)
    assert policy.active_server('web') == PRIMARY
    policy.on_packet(1, _reset(PRIMARY, seq=9000, client_port=40009), 1.015)
    assert policy.active_server('web') == BACKUP
    [(when, index, up)] = policy._states[0].monitors[1].transitions
    assert (when, index, up) == (1.015, 0, False)


def test_resets_count_only_where_passive_aborts_is_on():
    assert model.PolicySettings().passive_aborts == 0   # off by default
    policy = _policy()
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    for n in range(10):
        policy.on_packet(1, _reset(PRIMARY, seq=5000 + n,
                                   client_port=40000 + n), 1.0)
    assert policy.active_server('web') == PRIMARY


def test_bare_rsts_are_neither_refusals_nor_aborts():
    """The kernel's answers to segments it has no socket for (a flood
    after any crash, or stray packets) decide nothing."""
    policy = _policy(passive_refusals=1, passive_aborts=1)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    for n in range(10):
        bare = model.TcpPacket(**{
            **_reset(PRIMARY, seq=5000 + n, client_port=40000 + n).__dict__,
            'tcp_flags': model.TCP_RST})
        policy.on_packet(1, bare, 1.0)
    assert policy.active_server('web') == PRIMARY


def test_each_abort_is_told_to_the_observer():
    from ha_redirect import metrics as metrics_mod
    policy = _policy(passive_aborts=5)
    metrics = metrics_mod.ControllerMetrics()
    policy.set_observer(metrics)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    for n in range(3):
        policy.on_packet(1, _reset(PRIMARY, seq=99 + n,
                                   client_port=40000 + n), 1.0)
    _refuse(policy, PRIMARY, 1, start=1.1)              # not an abort
    assert metrics.registry.get_sample_value(
        'ha_redirect_passive_aborts_total',
        {'service': 'web', 'server': 'primary'}) == 3


def test_a_backups_refusals_count_against_the_backup_even_rewritten():
    """After a failover the forwarding pass gives the backup's RST the
    primary's address before the copy is made: the port tells."""
    policy = _policy(passive_refusals=3)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    policy.on_port_status(1, 1, False, 0.5)
    rewritten = _reset(BACKUP)
    rewritten = model.TcpPacket(**{
        **rewritten.__dict__, 'ipv4_src': PRIMARY.ip,
        'eth_src': PRIMARY.mac})
    for n in range(3):
        policy.on_packet(1, rewritten, 1.0 + n * 0.01)
    monitor = policy._states[0].monitors[1]
    assert not monitor.is_healthy(1) and monitor.is_healthy(0)


def test_probes_bring_a_passively_marked_server_back():
    policy = _policy(passive_refusals=3, probe_rise=2)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    _refuse(policy, PRIMARY, 3, start=1.0)
    assert policy.active_server('web') == BACKUP
    now = 1.0
    while policy.active_server('web') != PRIMARY:
        now = round(now + 0.01, 6)
        assert now < 3.0, 'probes never brought the primary back'
        for message in policy.on_tick(now):
            if (isinstance(message, model.TcpSegment)
                    and message.tcp_flags == model.TCP_SYN):
                server = PRIMARY if message.out_port == 1 else BACKUP
                policy.on_packet(1, model.TcpPacket(
                    in_port=server.port, eth_src=server.mac,
                    eth_dst=PROBE_MAC, ipv4_src=server.ip,
                    ipv4_dst=PROBE_IP, tcp_src=5001,
                    tcp_dst=message.tcp_src,
                    tcp_flags=model.TCP_SYN | model.TCP_ACK, tcp_seq=7,
                    tcp_ack=message.tcp_seq + 1), now)


@pytest.mark.parametrize('changes, culprit', [
    (dict(passive_refusals=-1), 'passive_refusals'),
    (dict(passive_window=0), 'passive_window'),
    (dict(passive_aborts=-1), 'passive_aborts'),
    (dict(passive_abort_window=0), 'passive_abort_window'),
])
def test_bad_passive_settings_are_named(changes, culprit):
    with pytest.raises(model.SettingsError, match=culprit):
        model.PolicySettings(**changes)
