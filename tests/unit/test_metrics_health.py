"""Health transitions from the controller's and HAProxy's logs: detection
time and false failovers.

The controller's lines are made by the real policy and tcp_probe monitor
(driven on an injected clock, logged with the launcher's format), so a
change of the log wording fails here rather than silently in a sweep.
"""

import logging
import random

from ha_redirect.cmd import launcher
from ha_redirect.lab.measure import health_log
from ha_redirect import model
from ha_redirect.monitors.port_status import PortStatusMonitor
from ha_redirect.monitors.tcp_probe import TcpProbeMonitor
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.reactive import ReactiveStrategy

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
SERVICE = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,),
                        monitors=('port_status', 'tcp_probe'))
# A short probe timeout, so a one-second stall is a (false) mark-down.
SETTINGS = model.PolicySettings(probe_ip='10.0.0.250',
                                probe_mac='00:00:00:00:00:fa',
                                probe_timeout=0.3)
OFFSET = 1_790_000_000.0        # CLOCK_REALTIME - CLOCK_MONOTONIC


def answer(probe, mode):
    """A listening server's SYN-ACK, a closed port's RST, or silence."""
    if mode == 'silent':
        return None
    flags = (model.TCP_SYN | model.TCP_ACK if mode == 'listening'
             else model.TCP_RST | model.TCP_ACK)
    server = PRIMARY if probe.out_port == PRIMARY.port else BACKUP
    return model.TcpPacket(
        in_port=server.port, eth_src=server.mac, eth_dst=probe.eth_src,
        ipv4_src=server.ip, ipv4_dst=probe.ipv4_src,
        tcp_src=probe.tcp_dst, tcp_dst=probe.tcp_src, tcp_flags=flags,
        tcp_seq=7, tcp_ack=probe.tcp_seq + 1)


def controller_log(script, until, start=1000.0, step=0.01):
    """The controller's log text while servers behave as `script` says:
    script(now) -> {port: 'listening'|'closed'|'silent'}."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))
    handler = Keep()
    handler.setFormatter(logging.Formatter(launcher.LOG_FORMAT))
    root = logging.getLogger('ha_redirect')
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        policy = RedirectPolicy(
            [SERVICE], SETTINGS, strategy=ReactiveStrategy(),
            monitor_classes={
                'port_status': PortStatusMonitor,
                'tcp_probe': lambda *a: TcpProbeMonitor(
                    *a, rng=random.Random(3))})
        now = start
        policy.on_switch_connected(1, {1: True, 2: True, 3: True}, now)
        while now < until:
            now = round(now + step, 6)
            for message in policy.on_tick(now):
                if (isinstance(message, model.TcpSegment)
                        and message.tcp_flags == model.TCP_SYN):
                    reply = answer(message, script(now)[message.out_port])
                    if reply is not None:
                        policy.on_packet(1, reply, now + 0.001)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return '\n'.join(records)


def test_controller_transitions_of_a_killed_primary_and_a_stalled_backup():
    def script(now):
        return {1: 'closed' if now >= 1002.0 else 'listening',
                2: 'silent' if 1000.5 <= now < 1001.5 else 'listening'}
    text = controller_log(script, until=1003.0)
    found = health_log.controller_transitions(text)
    assert [(x.server, x.up, x.monitor) for x in found] == [
        ('backup1', False, 'tcp_probe'), ('backup1', True, 'tcp_probe'),
        ('primary', False, 'tcp_probe')]
    stall, back, kill = found
    assert 'no answer' in stall.reason and back.reason == 'SYN-ACK'
    assert kill.reason == 'refused (RST)'
    # fall 3 x interval 0.1 (one interval of phase, 10% jitter) after it.
    assert 1002.15 < kill.t < 1002.45
    assert 1000.5 + 0.3 < stall.t < 1000.5 + 0.3 + 0.45
    assert health_log.detection_time(found, 'primary', 1002.0) == \
        kill.t - 1002.0
    false = health_log.false_failovers(found, 'primary', 1002.0, 1000.0)
    assert false == [stall]
    assert health_log.controller_transitions(text, service='other') == []


def test_controller_redirects_follow_the_primary_down():
    def script(now):
        return {1: 'closed' if now >= 1001.0 else 'listening',
                2: 'listening'}
    text = controller_log(script, until=1002.0)
    redirects = health_log.controller_redirects(text)
    assert [(to, was) for _, to, was, _ in redirects][-1] == (
        'backup1', 'primary')
    down = health_log.controller_transitions(text)[-1]
    assert redirects[-1][0] == down.t


def test_no_transition_when_every_server_answers():
    text = controller_log(lambda now: {1: 'listening', 2: 'listening'},
                          until=1002.0)
    assert health_log.controller_transitions(text) == []


def test_unrelated_and_malformed_lines_are_ignored():
    text = '\n'.join([
        '2026-11-26 14:00:00,000 INFO ha_redirect.app: switch connected: '
        'dpid=0x1 ports=[]',
        't=12.5 service web: tcp_probe marks primary 10.0.0.1 SIDEWAYS (x)',
        'garbage t=abc service web: tcp_probe marks primary 10.0.0.1 DOWN',
        't=13.25 service web: tcp_probe marks backup 2 10.0.0.3 DOWN '
        '(no answer within 0.3s)',
    ])
    [x] = health_log.controller_transitions(text)
    assert (x.t, x.server, x.up) == (13.25, 'backup2', False)


def haproxy_line(realtime, server, state, reason='Layer4 timeout'):
    import datetime
    stamp = datetime.datetime.fromtimestamp(
        realtime, datetime.timezone.utc).isoformat(timespec='microseconds')
    return (f'{stamp} Server web_back/{server} is {state}, reason: '
            f'{reason}, check duration: 101ms. 0 active and 1 backup '
            'servers left. 0 sessions active, 0 requeued, 0 remaining in '
            'queue.')


def test_haproxy_transitions_move_to_the_monotonic_clock():
    text = '\n'.join([
        haproxy_line(OFFSET + 50.25, 'primary', 'DOWN'),
        '2026-11-26T14:00:00.000001+00:00 backend web_back has no server '
        'available!',
        haproxy_line(OFFSET + 50.45, 'primary', 'UP',
                     'Layer4 check passed'),
        haproxy_line(OFFSET + 60.000125, 'backup1', 'DOWN',
                     'Layer4 connection problem'),
        # The raw format (no time) and stderr's warning copy are skipped.
        'Server web_back/primary is DOWN, reason: Layer4 timeout',
        '[WARNING]  (77) : Server web_back/primary is DOWN, reason: x',
    ])
    found = health_log.haproxy_transitions(text, OFFSET)
    assert [(x.server, x.up, x.monitor) for x in found] == [
        ('primary', False, 'haproxy'), ('primary', True, 'haproxy'),
        ('backup1', False, 'haproxy')]
    assert abs(found[0].t - 50.25) < 1e-5
    assert abs(found[2].t - 60.000125) < 1e-5
    assert found[2].reason == 'Layer4 connection problem'


def test_false_failovers_count_serving_servers_marked_down():
    def x(t, server, up=False):
        return health_log.HealthTransition(t, 'tcp_probe', server, up)
    found = [x(1.0, 'primary'),            # before the load: start-up
             x(1.5, 'primary', up=True),
             x(3.0, 'primary'),            # under load, before the kill
             x(3.4, 'primary', up=True),
             x(5.2, 'primary'),            # the kill, detected
             x(6.0, 'backup1'),            # the backup, after the kill
             x(9.5, 'backup1')]            # after the run ended
    false = health_log.false_failovers(found, 'primary', t_fail=5.0,
                                       t_start=2.0, t_end=9.0)
    assert [(f.t, f.server) for f in false] == [(3.0, 'primary'),
                                                (6.0, 'backup1')]
    assert health_log.detection_time(found, 'primary', 5.0) == \
        found[4].t - 5.0
    assert health_log.detection_time(found, 'backup1', 7.0) == 9.5 - 7.0
    assert health_log.detection_time(found[:4], 'primary', 5.0) is None
    assert health_log.false_failovers([], 'primary', 5.0, 0.0) == []
