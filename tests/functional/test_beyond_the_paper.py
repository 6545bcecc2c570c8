"""Beyond the paper, on real OVS: health probes, ordered backups, drain.

Each case runs for every strategy that supports it, on a fresh testbed.
"""

import json
import re
import subprocess
import sys
import time

import pytest

from ha_redirect.lab import failures
from ha_redirect.lab import scenarios
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import topology
from ha_redirect.lab import traffic
from ha_redirect import model
from ha_redirect import plugins

STRATEGIES = [name for name in ('reactive', 'proactive', 'fast_failover',
                                'stateful')
              if name in plugins.strategy_names()]
SETTINGS = model.PolicySettings()
# Detection takes `fall` probes; allow one interval of jitter, the last
# probe's timeout and the time to reprogram the switch.
DETECTION_BOUND = (SETTINGS.probe_fall * SETTINGS.probe_interval * 1.1
                   + SETTINGS.probe_timeout + 0.3)
# From the restarted service listening: `rise` probes, with room for a
# loaded machine (CI runs on 2 cores).
RETURN_BOUND = SETTINGS.probe_rise * SETTINGS.probe_interval * 1.1 + 1.0


def first_answer_by(records, since, who):
    for attempt in traffic.attempts(records):
        if attempt['t'] >= since and attempt['ok'] and attempt['who'] == who:
            return attempt['t']
    return None


def ctl(sdn, *args):
    result = subprocess.run(
        [sys.executable, '-m', 'ha_redirect.cmd.ctl', '--socket',
         sdn.controller.control_socket, '--json', *args],
        capture_output=True, text=True, timeout=30)
    return result


def served_under_tcp_probe(scope, strategy, settings):
    """A service watched by tcp_probe, its primary serving the first
    client: (scenario, that client)."""
    sdn = scenarios.SdnScenario(
        scope, strategy=strategy, settings=settings,
        monitors=('port_status', 'tcp_probe')).start()
    client = sdn.bed.clients[0]
    traffic.wait_served_by(client, *sdn.address, 'primary', timeout=5)
    return sdn, client


def kill_while_probing(scope, strategy, settings, probing_before):
    """A served service watched by tcp_probe, a 5 ms prober at its first
    client, and the primary's service killed after `probing_before` s:
    (scenario, prober, kill time)."""
    sdn, client = served_under_tcp_probe(scope, strategy, settings)
    prober = traffic.start_prober(scope, client, *sdn.address, interval_ms=5)
    time.sleep(probing_before)
    return sdn, prober, failures.kill_service(sdn.servers['primary'])


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_a_killed_service_fails_over_and_returns_when_restarted(
        strategy, record_gap):
    with scope_mod.RunScope() as scope:
        sdn, prober, t_kill = kill_while_probing(scope, strategy, None, 0.5)
        time.sleep(DETECTION_BOUND + 0.5)
        # The same service comes back on the same, never-down link.
        sdn.servers['primary'] = traffic.start_identity_server(
            scope, sdn.bed.primary, 'primary', sdn.plan.tcp_ports,
            label='serve-primary-again')
        t_restart = time.monotonic()     # it listens from here on
        time.sleep(RETURN_BOUND + 0.5)
        prober.stop()
        records = prober.records()
        report = traffic.service_gap(records, t_kill, 'backup1')
        record_gap('service killed, tcp_probe', strategy, report)
        to_backup = first_answer_by(records, t_kill, 'backup1')
        assert to_backup is not None, report.describe()
        assert to_backup - t_kill <= DETECTION_BOUND, report.describe()
        back_home = first_answer_by(records, t_restart, 'primary')
        assert back_home is not None, 'the primary never came back'
        print(f'\n{strategy}: detection {to_backup - t_kill:.3f} s, '
              f'return {back_home - t_restart:.3f} s after the restart')
        assert back_home - t_restart <= RETURN_BOUND
        # Once home, it stays home.
        late = [a for a in traffic.attempts(records)
                if a['t'] > back_home + 0.2]
        assert late and all(a['ok'] and a['who'] == 'primary'
                            for a in late), late[:3]


# Probes too slow to notice within the bound: only the passive check can.
PASSIVE_ONLY = model.PolicySettings(probe_interval=5.0, passive_refusals=3,
                                    passive_window=1.0)
PASSIVE_BOUND = 0.5     # seconds; ~30 ms idle, room for a loaded CI host


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_refused_connections_mark_a_killed_service_down_between_probes(
        strategy, record_gap):
    """As HAProxy's `observe layer4`: the switch copies the primary's RSTs
    to the controller, which fails over after `passive_refusals` of them,
    long before a probe is due. The RSTs still reach the clients (they
    fail fast, refused), and the copies disturb nothing before the kill."""
    with scope_mod.RunScope() as scope:
        sdn, prober, t_kill = kill_while_probing(scope, strategy,
                                                 PASSIVE_ONLY, 1.0)
        time.sleep(PASSIVE_BOUND + 1.0)
        prober.stop()
        records = prober.records()
        before = [a for a in traffic.attempts(records)
                  if a['t_done'] < t_kill]
        assert before and all(a['ok'] and a['who'] == 'primary'
                              for a in before), before[:3]
        report = traffic.service_gap(records, t_kill, 'backup1')
        record_gap('service killed, passive check', strategy, report)
        to_backup = first_answer_by(records, t_kill, 'backup1')
        assert to_backup is not None, report.describe()
        print(f'\n{strategy}: {report.describe()}')
        assert to_backup - t_kill <= PASSIVE_BOUND, report.describe()
        failed = [a for a in traffic.attempts(records)
                  if a['t'] >= t_kill and not a['ok']]
        # Refused, or reset if it was open at the kill: none timed out.
        assert all(a['error'] in ('ECONNREFUSED', 'ConnectionResetError')
                   for a in failed), failed[:3]
        refused = [a for a in failed if a['error'] == 'ECONNREFUSED']
        if sdn.controller.settings.redispatch:
            # Each refused SYN went on to the backup: no client saw one.
            assert not refused, refused[:3]
        else:
            assert refused, 'no attempt was refused: was it killed?'
        assert_all_served_by(records, to_backup + 0.2, 'backup1')


# Probes and refusals both out of the picture (no client opens a connection
# after the kill): only the resets of the connections it held can tell.
ABORTS_ONLY = model.PolicySettings(probe_interval=5.0, passive_refusals=1000,
                                   passive_aborts=3,
                                   passive_abort_window=0.02)
# Connections that send until neither side can take more, never reading:
# the server's socket then holds data it has not read, so its kernel resets
# the connection when the server dies.
STUFF_CONNECTIONS = """
import json, socket, sys, time
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
for _ in range(count):
    c = socket.create_connection((ip, port), timeout=5)
    c.setblocking(False)
    conns.append(c)
for c in conns:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            c.send(b'x' * 65536)
        except BlockingIOError:
            time.sleep(0.05)
            try:
                c.send(b'x' * 65536)
            except BlockingIOError:
                break
print(json.dumps(dict(event='stuffed', connections=count)), flush=True)
time.sleep(3600)
"""
DOWN_BY_RESETS = re.compile(
    r't=([0-9.]+) service \S+: tcp_probe marks primary \S+ DOWN '
    r'\((\d+) connections reset within')


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_a_killed_service_is_marked_down_by_the_resets_it_sends(strategy):
    """A process that dies resets at once every connection it held with
    data unread: `passive_aborts` of those resets within
    `passive_abort_window` mark the server down, with no probe due and no
    new connection to be refused, and new connections go to the backup."""
    with scope_mod.RunScope() as scope:
        sdn, client = served_under_tcp_probe(scope, strategy, ABORTS_ONLY)
        ip, port = sdn.address
        stuffed = traffic.AgentProcess(
            scope, client, 'stuffed-connections',
            [sys.executable, '-c', STUFF_CONNECTIONS, ip, str(port), '4'])
        stuffed.wait_for(lambda r: r.get('event') == 'stuffed', timeout=20)
        assert 'DOWN' not in sdn.controller.log()
        t_kill = failures.kill_service(sdn.servers['primary'])

        def marked_down():
            return DOWN_BY_RESETS.search(sdn.controller.log())
        down = scope_mod.wait_until(marked_down, PASSIVE_BOUND + 1.0,
                                    what='DOWN from the resets')
        print(f'\n{strategy}: DOWN {float(down[1]) - t_kill:.3f} s after '
              f'the kill, from {down[2]} resets')
        assert float(down[1]) - t_kill <= PASSIVE_BOUND
        traffic.wait_served_by(client, *sdn.address, 'backup1', timeout=5)


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_redispatch_serves_every_connection_a_killed_primary_refuses(
        strategy):
    """HAProxy's `option redispatch`, in the switch: a SYN the primary
    refuses goes on to the backup (under reactive the controller has it;
    under the others the switch copied it), so no client sees a refusal,
    even before the passive check marks the primary down (here never: it
    needs more refusals than the test makes)."""
    settings = model.PolicySettings(probe_interval=5.0, passive_refusals=1000)
    with scope_mod.RunScope() as scope:
        sdn, client = served_under_tcp_probe(scope, strategy, settings)
        failures.kill_service(sdn.servers['primary'])
        time.sleep(0.2)
        records = [traffic.probe_once(client, *sdn.address)
                   for _ in range(20)]
        assert all(a['ok'] and a['who'] == 'backup1' for a in records), [
            a for a in records if not (a['ok'] and a['who'] == 'backup1')]
        slowest = max(a['t_done'] - a['t'] for a in records)
        print(f'\n{strategy}: 20 of 20 served by backup1, slowest in '
              f'{slowest * 1000:.1f} ms')
        status = json.loads(ctl(sdn, 'status').stdout)
        [web] = status['services']
        assert web['servers'][0]['healthy'], 'the passive check fired'


def assert_all_served_by(records, since, who):
    late = [a for a in traffic.attempts(records) if a['t'] > since]
    assert late and all(a['ok'] and a['who'] == who for a in late), late[:3]


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_when_the_backup_fails_too_the_next_backup_takes_over(
        strategy, record_gap):
    with scope_mod.RunScope() as scope:
        sdn = scenarios.SdnScenario(scope, strategy=strategy,
                                    n_backups=2).start()
        client = sdn.bed.clients[0]
        failures.link_down(sdn.bed.primary)
        traffic.wait_served_by(client, *sdn.address, 'backup1', timeout=5)
        prober = traffic.start_prober(scope, client, *sdn.address,
                                      interval_ms=5)
        time.sleep(0.3)
        t_fail = failures.link_down(sdn.bed.host('backup1'))
        time.sleep(1.5)
        prober.stop()
        records = prober.records()
        report = traffic.service_gap(records, t_fail, 'backup2')
        record_gap('second failure', strategy, report)
        assert report.gap is not None, report.describe()
        late = [a for a in traffic.attempts(records) if a['t'] > t_fail + 1]
        assert late and all(
            a['ok'] and a['who'] == 'backup2'
            and a['peer'] == sdn.plan.primary.address for a in late)


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_drain_keeps_connections_then_link_down_aborts_nothing(strategy):
    with scope_mod.RunScope() as scope:
        sdn = scenarios.SdnScenario(scope, strategy=strategy).start()
        prober_host, holder_host = sdn.bed.clients
        held = traffic.start_hold(scope, holder_host, *sdn.address,
                                  interval_ms=20)
        assert held.records()[0]['who'] == 'primary'
        result = ctl(sdn, 'drain', topology.SERVICE_NAME, 'primary')
        if not plugins.load_strategy(strategy).pins_connections:
            assert result.returncode == 1
            assert 'does not pin connections' in result.stderr
            return
        assert result.returncode == 0, result.stderr
        [service] = json.loads(result.stdout)['services']
        primary = service['servers'][0]
        assert primary['drained'] and not primary['active']
        if primary['open_connections'] is not None:
            assert primary['open_connections'] >= 1
        # New connections go to the backup; the held one stays home.
        traffic.wait_served_by(prober_host, *sdn.address, 'backup1',
                               timeout=5)
        time.sleep(1.0)
        assert held.popen.poll() is None, held.records()[-3:]
        assert held.stop() == 0
        assert not [e for e in held.records() if e.get('event') == 'error']
        # With the primary drained and idle, losing its link aborts nothing.
        prober = traffic.start_prober(scope, prober_host, *sdn.address,
                                      interval_ms=5)
        time.sleep(0.5)
        t_fail = failures.link_down(sdn.bed.primary)
        time.sleep(1.0)
        prober.stop()
        attempts = traffic.attempts(prober.records())
        assert [a for a in attempts if a['t'] > t_fail]
        failed = [a for a in attempts if not a['ok']]
        assert failed == [], failed[:3]
        assert {a['who'] for a in attempts} == {'backup1'}


LONG_LIVED = 5


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_failback_keeps_every_long_lived_connection_on_the_backup(
        strategy, record_gap):
    with scope_mod.RunScope() as scope:
        sdn = scenarios.SdnScenario(scope, strategy=strategy).start()
        prober_host, holder_host = sdn.bed.clients
        failures.link_down(sdn.bed.primary)
        traffic.wait_served_by(holder_host, *sdn.address, 'backup1',
                               timeout=5)
        held = [traffic.start_hold(scope, holder_host, *sdn.address,
                                   interval_ms=50, label=f'hold-{k}')
                for k in range(LONG_LIVED)]
        assert {h.records()[0]['who'] for h in held} == {'backup1'}
        t_back = failures.link_up(sdn.bed.primary)
        traffic.wait_served_by(prober_host, *sdn.address, 'primary',
                               timeout=5)
        time.sleep(2.0)
        survivors = []
        for h in held:
            alive = h.popen.poll() is None
            h.stop()
            events = h.records()
            errors = [e for e in events if e.get('event') == 'error']
            echoes_after = [e for e in events if e.get('event') == 'echo'
                            and e['t'] > t_back + 1.0]
            if alive and not errors and len(echoes_after) >= 10:
                survivors.append(h)
        print(f'\nfailback survivors, {strategy}: '
              f'{len(survivors)}/{LONG_LIVED}')
        if plugins.load_strategy(strategy).pins_connections:
            assert len(survivors) == LONG_LIVED
        else:
            assert survivors == []     # documented: stateless resets them
