"""The tcp_probe monitor's state machine, on an injected clock."""

import random

import pytest

from ha_redirect import model
from ha_redirect.monitors.port_status import PortStatusMonitor
from ha_redirect.monitors.tcp_probe import TcpProbeMonitor
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.reactive import ReactiveStrategy

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
PROBE_IP, PROBE_MAC = '10.0.0.250', '02:00:00:00:00:fa'
SERVICE = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
SETTINGS = model.PolicySettings(probe_ip=PROBE_IP, probe_mac=PROBE_MAC,
                                probe_interval=0.1, probe_timeout=0.3,
                                probe_fall=3, probe_rise=2, probe_jitter=0.1)
MONITORS = {'port_status': PortStatusMonitor, 'tcp_probe': TcpProbeMonitor}


class Server:
    """How a server answers the probes sent to it."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.mode = 'listening'   # or 'closed' (RST) or 'silent'

    def answer(self, probe):
        if self.mode == 'silent':
            return None
        flags = (model.TCP_SYN | model.TCP_ACK if self.mode == 'listening'
                 else model.TCP_RST | model.TCP_ACK)
        return model.TcpPacket(
            in_port=self.endpoint.port, eth_src=self.endpoint.mac,
            eth_dst=probe.eth_src, ipv4_src=self.endpoint.ip,
            ipv4_dst=probe.ipv4_src, tcp_src=probe.tcp_dst,
            tcp_dst=probe.tcp_src, tcp_flags=flags, tcp_seq=777,
            tcp_ack=probe.tcp_seq + 1)


class Lab:
    """A policy with both monitors, servers that answer, and a clock."""

    def __init__(self, settings=SETTINGS, seed=1):
        self.policy = RedirectPolicy(
            [SERVICE], settings, strategy=ReactiveStrategy(),
            monitor_classes={
                'port_status': PortStatusMonitor,
                'tcp_probe': lambda *a: TcpProbeMonitor(
                    *a, rng=random.Random(seed))})
        self.servers = {s.port: Server(s) for s in SERVICE.servers}
        self.now = 0.0
        self.sent = []
        self.pending = []          # (time due, server's answer)
        self.policy.on_switch_connected(1, {1: True, 2: True, 3: True},
                                        self.now)

    @property
    def monitor(self):
        return self.policy._states[0].monitors[1]

    def run(self, seconds, step=0.01, reply_delay=0.0):
        """Advance time, answering each probe after `reply_delay`."""
        pending = self.pending
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = round(self.now + step, 6)
            for due, packet in [p for p in pending if p[0] <= self.now]:
                pending.remove((due, packet))
                self.sent += self.policy.on_packet(1, packet, self.now)
            for message in self.policy.on_tick(self.now):
                self.sent.append(message)
                if (isinstance(message, model.TcpSegment)
                        and message.tcp_flags == model.TCP_SYN):
                    answer = self.servers[message.out_port].answer(message)
                    if answer is not None:
                        pending.append((self.now + reply_delay, answer))

    def probes(self, port=None):
        return [m for m in self.sent if isinstance(m, model.TcpSegment)
                and m.tcp_flags == model.TCP_SYN
                and (port is None or m.out_port == port)]


def test_probes_go_out_of_each_server_port_from_the_probe_address():
    lab = Lab()
    lab.run(1.0)
    for server in SERVICE.servers:
        probes = lab.probes(server.port)
        assert 8 <= len(probes) <= 12          # every 0.1 s, with jitter
        for probe in probes:
            assert (probe.eth_src, probe.ipv4_src) == (PROBE_MAC, PROBE_IP)
            assert (probe.eth_dst, probe.ipv4_dst, probe.tcp_dst) == (
                server.mac, server.ip, 5001)
    assert lab.policy.active_server('web') == PRIMARY


def test_jitter_keeps_intervals_within_bounds():
    lab = Lab(seed=7)
    sent_at = []
    now = 0.0
    while now < 5.0:
        now = round(now + 0.001, 6)
        for message in lab.policy.on_tick(now):
            if getattr(message, 'out_port', None) == PRIMARY.port:
                sent_at.append(now)
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert min(gaps) >= 0.09 - 1e-6 and max(gaps) <= 0.11 + 1e-3
    assert max(gaps) - min(gaps) > 0.005       # not in lockstep


def test_each_syn_ack_is_closed_with_a_reset():
    lab = Lab()
    lab.run(0.5)
    resets = [m for m in lab.sent if isinstance(m, model.TcpSegment)
              and m.tcp_flags == model.TCP_RST]
    probes = lab.probes()
    assert resets and len(resets) >= len(probes) - 2
    for reset in resets:
        assert reset.ipv4_src == PROBE_IP and reset.tcp_dst == 5001
        assert reset.tcp_seq in {p.tcp_seq + 1 for p in probes}


def test_a_silent_service_fails_over_after_fall_probes():
    lab = Lab()
    lab.run(1.0)
    lab.servers[PRIMARY.port].mode = 'silent'
    killed_at = lab.now
    while lab.policy.active_server('web') == PRIMARY:
        lab.run(0.01)
        assert lab.now - killed_at < 2
    detection = lab.now - killed_at
    # fall x interval, plus the timeout of the last probe, plus jitter.
    assert 0.3 <= detection <= 3 * 0.11 + 0.3 + 0.02
    [(when, server, up)] = lab.monitor.transitions
    assert (server, up) == (0, False)


def test_a_closed_port_counts_as_down_at_once_per_probe():
    lab = Lab()
    lab.run(1.0)
    lab.servers[PRIMARY.port].mode = 'closed'
    killed_at = lab.now
    while lab.policy.active_server('web') == PRIMARY:
        lab.run(0.01)
    # No timeout to wait for: RSTs count as they arrive.
    assert lab.now - killed_at <= 3 * 0.11 + 0.02


def test_the_server_returns_after_rise_good_probes():
    lab = Lab()
    lab.run(1.0)
    lab.servers[PRIMARY.port].mode = 'closed'
    lab.run(1.0)
    assert lab.policy.active_server('web') == BACKUP
    lab.servers[PRIMARY.port].mode = 'listening'
    back_at = lab.now
    while lab.policy.active_server('web') == BACKUP:
        lab.run(0.01)
    assert lab.now - back_at <= 2 * 0.11 + 0.02
    assert [up for _, _, up in lab.monitor.transitions] == [False, True]


def test_slow_answers_within_the_timeout_are_not_failures():
    lab = Lab()
    lab.run(5.0, reply_delay=0.25)      # slower than the interval
    assert lab.monitor.transitions == []


def test_answers_later_than_the_timeout_are_failures():
    lab = Lab()
    lab.run(3.0, reply_delay=0.35)
    assert lab.monitor.transitions[0][1:] == (0, False)


def test_fewer_than_fall_failures_change_nothing():
    lab = Lab()
    lab.run(1.0)
    lab.servers[PRIMARY.port].mode = 'closed'
    lab.run(0.15)        # at most two probes
    lab.servers[PRIMARY.port].mode = 'listening'
    lab.run(2.0)
    assert lab.monitor.transitions == []


def test_link_down_still_fails_over_at_once():
    lab = Lab()
    lab.run(1.0)
    lab.policy.on_port_status(1, PRIMARY.port, False, lab.now)
    assert lab.policy.active_server('web') == BACKUP


def test_arp_for_the_probe_address_is_answered():
    lab = Lab()
    request = model.ArpRequest(PRIMARY.port, PRIMARY.mac, PRIMARY.ip,
                               PROBE_IP)
    [reply] = lab.policy.on_packet(1, request, 0.0)
    assert (reply.out_port, reply.sender_mac, reply.sender_ip) == (
        PRIMARY.port, PROBE_MAC, PROBE_IP)


def test_probe_flows_return_only_server_answers_to_the_controller():
    from ha_redirect import testing
    table = testing.FakeFlowTable()
    policy = RedirectPolicy([SERVICE], SETTINGS, strategy=ReactiveStrategy(),
                            monitor_classes=MONITORS)
    table.apply(policy.on_switch_connected(1, {1: True, 2: True}, 0.0))
    answer = dict(in_port=1, eth_src=PRIMARY.mac, eth_dst=PROBE_MAC,
                  eth_type=0x800, ip_proto=6, ipv4_src=PRIMARY.ip,
                  ipv4_dst=PROBE_IP, tcp_src=5001, tcp_dst=50000)
    assert table.is_output(1, answer, port=testing.CONTROLLER)
    forged = dict(answer, in_port=3)
    assert not table.is_output(1, forged, port=testing.CONTROLLER)


def test_no_probes_while_the_switch_is_away():
    lab = Lab()
    lab.policy.on_switch_disconnected(1, lab.now)
    lab.run(1.0)
    assert lab.probes() == []


@pytest.mark.parametrize('changes, culprit', [
    (dict(probe_ip=None), 'probe_ip'),
    (dict(probe_ip=PRIMARY.ip), 'probe_ip'),
])
def test_bad_probe_settings_are_named(changes, culprit):
    settings = model.PolicySettings(**{**dict(
        probe_ip=PROBE_IP, probe_mac=PROBE_MAC), **changes})
    with pytest.raises(model.ServiceError, match=culprit):
        RedirectPolicy([SERVICE], settings, strategy=ReactiveStrategy(),
                       monitor_classes=MONITORS)


def test_policy_asks_for_ticks_only_when_a_monitor_needs_them():
    lab = Lab()
    assert 0 < lab.policy.tick_interval <= 0.025
    plain = RedirectPolicy([model.Service('web', 1, (80,), PRIMARY,
                                          (BACKUP,))],
                           strategy=ReactiveStrategy())
    assert plain.tick_interval is None
