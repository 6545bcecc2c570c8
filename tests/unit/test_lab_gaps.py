"""Gap mode: its command line, and the numbers it derives from records."""

import dataclasses
import json
import subprocess
import sys

import pytest

from ha_redirect.lab import gaps
from ha_redirect.lab import gaps_summary


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'ha_redirect.lab.cli',
                           'gaps'] + list(args), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize('args, culprit', [
    (['--repeat', '0'], "'0'"),
    (['--repeat', 'two'], "'two'"),
    (['--interval-ms', '-1'], "'-1'"),
    (['--long-lived', '0'], "'0'"),
    (['--schemes', 'sdn-nosuch'], "'sdn-nosuch'"),
    (['--schemes', ','], 'no scheme'),
    (['--bogus'], '--bogus'),
    (['--services', '0'], "'0'"),
    (['--services', 'many'], "'many'"),
    (['--services', '1001'], "'1001'"),
    (['--services', '3', '--schemes', 'flip,haproxy-tuned'],
     'haproxy-tuned serves one service'),
])
def test_bad_arguments_give_one_line_and_status_2(args, culprit):
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert culprit in lines[0]
    assert 'Traceback' not in proc.stderr


def test_defaults_are_the_flip_every_strategy_and_tuned_haproxy():
    from ha_redirect import plugins
    args = gaps.add_arguments(gaps._Parser()).parse_args([])
    assert (args.repeat, args.interval_ms, args.long_lived,
            args.services, args.cold_arp) == (5, 5.0, 5, 1, False)
    schemes = gaps.default_schemes()
    assert schemes[0] == 'flip' and schemes[-1] == 'haproxy-tuned'
    assert set(schemes[1:-1]) == {f'sdn-{n}'
                                  for n in plugins.strategy_names()}
    assert gaps_summary.REFERENCE in schemes
    # Many services: HAProxy serves one, so it is left out.
    assert gaps.default_schemes(100) == schemes[:-1]


def test_the_flip_is_a_scheme_of_gaps_only():
    from ha_redirect.lab import schemes
    flip = gaps.parse_scheme('flip')
    assert flip.is_flip and flip.has_controller and not flip.is_sdn
    assert flip.name == 'flip'
    # evaluate and demo parse without comparisons: not a product scheme.
    with pytest.raises(ValueError, match='unknown scheme'):
        schemes.Scheme.parse('flip')
    assert gaps.scheme_list('flip, sdn-reactive,flip') == (
        'flip', 'sdn-reactive')
    assert gaps.check_services(('flip', 'sdn-reactive'), 100) is None
    assert gaps.check_services(('haproxy-tuned',), 1) is None


def test_runs_interleave_schemes_then_failbacks():
    runs = gaps.plan_runs(('a', 'b'), 2)
    assert runs == [('link', 'a', 0, 1), ('link', 'b', 0, 1),
                    ('link', 'a', 1, 1), ('link', 'b', 1, 1),
                    ('failback', 'a', None, 1), ('failback', 'b', None, 1)]


def test_many_services_alternate_with_one_run_by_run():
    runs = gaps.plan_runs(('a', 'b'), 2, services=100)
    assert runs == [('link', 'a', 0, 100), ('link', 'a', 0, 1),
                    ('link', 'b', 0, 100), ('link', 'b', 0, 1),
                    ('link', 'a', 1, 100), ('link', 'a', 1, 1),
                    ('link', 'b', 1, 100), ('link', 'b', 1, 1)]
    names = {gaps._run_id(k, s, r, n) for k, s, r, n in runs}
    assert len(names) == len(runs)


def attempt(t, ok=True, who='backup1', latency=0.001, error=None):
    return dict(t=t, t_connected=t + latency / 2 if ok else None,
                t_done=t + latency if ok else t + 1.0, ok=ok,
                who=who if ok else None, error=error if not ok else None,
                peer=None)


def probe_records(t_fail, gap, step=0.001, start=-1.0, end=0.5):
    """A 1 ms prober: the primary answers before `t_fail`, nothing for
    `gap` seconds, then the backup."""
    records = [dict(event='probing', t=t_fail + start)]
    n = int(round((end - start) / step))
    for i in range(n):
        t = t_fail + start + i * step
        if t < t_fail:
            records.append(attempt(t, who='primary', latency=0.002))
        elif t < t_fail + gap:
            records.append(attempt(t, ok=False, error='timeout'))
        else:
            records.append(attempt(t))
    return records


def test_link_metrics_gap_failed_attempts_latency_and_resolution():
    m = gaps.link_metrics(probe_records(100.0, 0.0205), 100.0)
    # First attempt at or after the failure answered by the backup starts
    # at 100.021 and is done 1 ms later.
    assert m['gap_s'] == pytest.approx(0.022, abs=1e-6)
    assert m['first_backup_start_s'] == pytest.approx(0.021, abs=1e-6)
    assert m['failed_after'] == 21
    assert m['latency_before_ms'] == pytest.approx(2.0)
    assert m['resolution']['rate_per_s'] == pytest.approx(1000, rel=1e-3)
    assert m['resolution']['spacing_median_ms'] == pytest.approx(1.0)
    assert m['spacing_max_near_failure_ms'] == pytest.approx(1.0)


def test_link_metrics_connect_gap_ends_at_the_backups_syn_ack():
    records = probe_records(100.0, 0.0205)
    m = gaps.link_metrics(records, 100.0)
    # The first backup attempt (start 100.021) connected 0.5 ms later,
    # and had its identity line 1 ms after it started.
    assert m['connect_gap_s'] == pytest.approx(0.0215, abs=1e-6)
    assert m['gap_s'] == pytest.approx(0.022, abs=1e-6)
    assert m['connect_before_ms'] == pytest.approx(1.0)
    # A later attempt that connected sooner than the first one finished
    # sets the connect gap: the backup's first SYN-ACK at the client.
    slow = [r for r in records if r.get('t') == pytest.approx(100.021)]
    slow[0]['t_connected'] = 100.0300
    slow[0]['t_done'] = 100.0305
    m = gaps.link_metrics(records, 100.0)
    assert m['connect_gap_s'] == pytest.approx(0.0225, abs=1e-6)
    # Records from before the prober stamped connections: no figure.
    for r in records:
        r.pop('t_connected', None)
    m = gaps.link_metrics(records, 100.0)
    assert m['connect_gap_s'] is None and m['connect_before_ms'] is None


class FakeServer:
    """A host whose `ping` fills its neighbour table (or does not)."""

    def __init__(self, name, learns=True, after_pings=1):
        self.name, self.learns, self.table = name, learns, {}
        self.pings_left = after_pings      # the switch may still be busy

    def cmd(self, line):
        ip = line.split()[-1]
        self.pings_left -= 1
        if self.learns and self.pings_left <= 0:
            self.table[ip] = '00:00:00:00:00:' + ip.split('.')[-1]

    def pexec(self, argv):
        ip = argv[-1]
        entries = ([dict(dst=ip, lladdr=self.table[ip])]
                   if ip in self.table else [])
        return json.dumps(entries), '', 0


def test_warm_neighbours_checks_each_backup_learned_each_client():
    from ha_redirect.lab import scope as scope_mod
    from ha_redirect.lab import topology
    clients = [topology.HostPlan(f'client{i}', f'c{i}', f'10.0.0.{i}/24',
                                 f'00:00:00:00:00:{i}') for i in (11, 12)]
    server = FakeServer('bk1')
    gaps.warm_neighbours([server], clients)
    assert server.table == {'10.0.0.11': '00:00:00:00:00:11',
                            '10.0.0.12': '00:00:00:00:00:12'}
    with pytest.raises(scope_mod.LabError,
                       match="bk2 did not learn 10.0.0.11's MAC within 0.2 s"):
        gaps.warm_neighbours([FakeServer('bk2', learns=False)], clients,
                             timeout=0.2)
    # A switch still busy with many services' flows: a later ping works.
    late = FakeServer('bk3', after_pings=20)
    gaps.warm_neighbours([late], clients)
    assert '10.0.0.11' in late.table


def test_link_metrics_without_an_answer_from_the_backup():
    records = probe_records(100.0, 10.0, end=0.2)
    m = gaps.link_metrics(records, 100.0)
    assert m['gap_s'] is None and m['first_backup_start_s'] is None
    assert m['failed_after'] == 200


def test_resolution_sees_a_stalled_prober():
    records = [attempt(t) for t in (0.0, 0.001, 0.002, 0.050, 0.051)]
    res = gaps.probe_resolution(records)
    assert res['spacing_max_ms'] == pytest.approx(48.0)
    assert res['spacing_median_ms'] == pytest.approx(1.0)
    assert gaps.probe_resolution(records[:1]) is None


def test_failback_metrics_longest_unanswered_stretch():
    t_back = 10.0
    records = ([attempt(9.9)]
               + [attempt(10.0 + i * 0.001) for i in range(5)]
               + [attempt(10.005 + i * 0.001, ok=False) for i in range(10)]
               # a slow one, done at 10.030; the next one is done first,
               # at 10.017: 12 ms after the first failed attempt started
               + [attempt(10.015, who='primary', latency=0.015)]
               + [attempt(10.016 + i * 0.001, who='primary')
                  for i in range(5)])
    m = gaps.failback_metrics(records, t_back)
    assert m['attempts_after'] == 21
    assert m['failed_after'] == 10
    assert m['gap_s'] == pytest.approx(0.012)
    assert m['to_primary_s'] == pytest.approx(0.017)


def test_failback_metrics_no_failure_and_no_recovery():
    ok = [attempt(10.0 + i * 0.001) for i in range(5)]
    assert gaps.failback_metrics(ok, 10.0)['gap_s'] == 0.0
    assert gaps.failback_metrics(ok, 10.0)['to_primary_s'] is None
    # Unanswered to the end: the stretch lasts until its timeout (1 s).
    broken = ok + [attempt(10.01, ok=False)]
    assert gaps.failback_metrics(broken, 10.0)['gap_s'] == pytest.approx(1.0)
    assert gaps.failback_metrics(ok, 11.0)['gap_s'] is None


def hold_records(t_back, echoes_after, error=False):
    recs = [dict(event='connected', who='backup1', t=t_back - 1)]
    recs += [dict(event='echo', seq=i, t=t_back + 1.0 + 0.05 * (i + 1))
             for i in range(echoes_after)]
    if error:
        recs.append(dict(event='error', seq=99, t=t_back + 0.1,
                         error='ConnectionResetError'))
    return recs


def test_survivor_needs_life_no_error_and_ten_echoes_after_failback():
    assert gaps.survivor(hold_records(5.0, 10), True, 5.0)
    assert not gaps.survivor(hold_records(5.0, 9), True, 5.0)
    assert not gaps.survivor(hold_records(5.0, 20), False, 5.0)
    assert not gaps.survivor(hold_records(5.0, 20, error=True), True, 5.0)


def link_result(scheme, rep, gap_ms, failed=3, status='ok', services=1):
    if status != 'ok':
        return dict(kind='link', scheme=scheme, repetition=rep,
                    status=status, reason='LabError: no switch',
                    services=services)
    return dict(kind='link', scheme=scheme, repetition=rep, status='ok',
                services=services,
                metrics=dict(
                    gap_s=None if gap_ms is None else gap_ms / 1000,
                    first_backup_start_s=(None if gap_ms is None
                                          else gap_ms / 2000),
                    connect_gap_s=(None if gap_ms is None
                                   else gap_ms / 1250),
                    failed_after=failed, latency_before_ms=1.5,
                    connect_before_ms=0.5,
                    spacing_max_near_failure_ms=2.0,
                    resolution=dict(rate_per_s=900.0, spacing_median_ms=1.1,
                                    spacing_p99_ms=3.0,
                                    spacing_max_ms=9.0)))


def failback_result(scheme, survivors):
    return dict(kind='failback', scheme=scheme, repetition=None,
                status='ok', metrics=dict(
                    survivors=survivors, gap_s=0.0, failed_after=0,
                    to_primary_s=0.04, attempts_after=100))


SCHEMES = ('sdn-proactive', 'sdn-stateful', 'sdn-fast_failover',
           'haproxy-tuned')


def synthetic_results():
    results = []
    for rep, (p, s, f, h) in enumerate([(10, 3, 4, 100), (12, 4, 6, 120),
                                        (20, 5, 30, 300)]):
        results += [link_result('sdn-proactive', rep, p),
                    link_result('sdn-stateful', rep, s),
                    link_result('sdn-fast_failover', rep, f),
                    link_result('haproxy-tuned', rep, h, failed=0)]
    results.append(link_result('haproxy-tuned', 3, None,
                               status='failed'))
    results += [failback_result('sdn-proactive', 5),
                failback_result('sdn-stateful', 5),
                failback_result('sdn-fast_failover', 0),
                failback_result('haproxy-tuned', 4)]
    return results


def test_summary_medians_ranges_and_ratios_to_proactive():
    summary = gaps_summary.summarize(synthetic_results(), SCHEMES, 5)
    rows = summary['schemes']
    assert rows['sdn-proactive']['gap_median_ms'] == pytest.approx(12)
    assert rows['sdn-proactive']['ratio_to_proactive'] == pytest.approx(1)
    assert rows['sdn-stateful']['gap_median_ms'] == pytest.approx(4)
    assert rows['sdn-stateful']['ratio_to_proactive'] == pytest.approx(1 / 3)
    assert (rows['haproxy-tuned']['gap_min_ms'],
            rows['haproxy-tuned']['gap_max_ms']) == pytest.approx((100, 300))
    assert rows['haproxy-tuned']['ratio_to_proactive'] == pytest.approx(10)
    assert rows['haproxy-tuned']['runs'] == 4
    assert rows['haproxy-tuned']['runs_ok'] == 3
    assert rows['haproxy-tuned']['failures'][0]['reason'].startswith(
        'LabError')
    assert rows['sdn-fast_failover']['survivors'] == 0
    assert rows['sdn-fast_failover']['pins_connections'] is False
    assert rows['haproxy-tuned']['pins_connections'] is None
    assert summary['resolution']['rate_per_s'] == pytest.approx(900)
    verdicts = {g['goal']: g['met'] for g in summary['goals']}
    assert verdicts == {'sdn-fast_failover: median gap <= 5 ms': False,
                        'sdn-stateful: median gap <= 5 ms': True,
                        'sdn-stateful: 5 of 5 connections survive '
                        'failback': True}


def test_ratio_to_the_flip_in_the_summary_and_the_table():
    results = synthetic_results() + [
        link_result('flip', rep, gap) for rep, gap in enumerate((8, 9, 40))]
    schemes = ('flip',) + SCHEMES
    summary = gaps_summary.summarize(results, schemes, 5)
    rows = summary['schemes']
    assert rows['flip']['ratio_to_flip'] == pytest.approx(1)
    assert rows['sdn-proactive']['ratio_to_flip'] == pytest.approx(12 / 9)
    assert rows['sdn-proactive']['connect_gap_median_ms'] == pytest.approx(
        12 / 1.25)
    assert rows['sdn-proactive']['connect_ratio_to_flip'] == pytest.approx(
        12 / 9)
    assert rows['flip']['pins_connections'] is False
    text = gaps_summary.markdown(summary, meta())
    head = next(line for line in text.splitlines()
                if line.startswith('| scheme |'))
    cells = [c.strip() for c in head.strip('|').split('|')]
    assert cells[3:7] == ['connect gap median ms', 'ratio to flip',
                          'connect ratio to flip', 'ratio to proactive']
    row = next(line for line in text.splitlines()
               if line.startswith('| sdn-proactive |'))
    assert [c.strip() for c in row.strip('|').split('|')][3:7] == [
        '9.6', '1.33', '1.33', '1.00']
    # Without the flip the table has no flip columns.
    plain = gaps_summary.markdown(
        gaps_summary.summarize(synthetic_results(), SCHEMES, 5), meta())
    assert 'ratio to flip' not in plain
    # The printed table: every scheme's medians and ratios to the flip.
    printed = gaps_summary.console_table(summary).splitlines()
    assert printed[0].split() == ['scheme', 'gap', 'ms', 'to', 'flip',
                                  'connect', 'gap', 'ms', 'to', 'flip',
                                  'runs']
    assert printed[1].split() == ['flip', '9.0', '1.00', '7.2', '1.00',
                                  '3/3']
    assert printed[2].split() == ['sdn-proactive', '12.0', '1.33', '9.6',
                                  '1.33', '3/3']
    assert printed[-1].split() == ['haproxy-tuned', '120.0', '13.33',
                                   '96.0', '13.33', '3/4']


def test_many_services_ratio_of_the_first_services_gap():
    results = []
    for rep, (many, one) in enumerate([(20, 10), (30, 10), (25, 12)]):
        results += [link_result('sdn-proactive', rep, many, services=100),
                    link_result('sdn-proactive', rep, one)]
    results += [link_result('sdn-stateful', 0, None, status='failed',
                            services=100),
                link_result('sdn-stateful', 0, 7)]
    schemes = ('sdn-proactive', 'sdn-stateful')
    summary = gaps_summary.summarize(results, schemes, 5, services=100)
    many = summary['many_services']
    assert many['sdn-proactive']['gap_median_ms'] == pytest.approx(25)
    assert many['sdn-proactive']['one_gap_median_ms'] == pytest.approx(10)
    assert many['sdn-proactive']['ratio'] == pytest.approx(2.5)
    assert many['sdn-stateful']['ratio'] is None
    # The main table holds the one-service runs only.
    assert summary['schemes']['sdn-proactive']['gap_median_ms'] == 10
    assert summary['schemes']['sdn-proactive']['runs'] == 3
    text = gaps_summary.markdown(summary, meta(services=100))
    assert '## 100 services against 1' in text
    assert 'with 100 services, then with 1' in text
    assert 'long-lived' not in text.split('## Goals')[0]
    assert '| sdn-proactive | 25.0 (3) | 10.0 (3) | 2.50 |' in text
    assert '| sdn-stateful | - (0) | 7.0 (1) | - |' in text
    one = gaps_summary.summarize(results, schemes, 5)
    assert 'many_services' not in one


def test_summary_without_the_reference_has_no_ratios():
    results = [r for r in synthetic_results()
               if r['scheme'] != 'sdn-proactive']
    summary = gaps_summary.summarize(results, SCHEMES[1:], 5)
    assert all(r['ratio_to_proactive'] is None
               for r in summary['schemes'].values())


def meta(**extra):
    return dict(command='ha-redirect-lab gaps --repeat 3',
                started='2026-01-01 00:00:00 UTC', elapsed_s=123.4,
                load_before='1.00 1.00 1.00', load_after='2.00 1.50 1.00',
                cpus=2, repeat=3, interval_ms=1.0, long_lived=5,
                schemes=list(SCHEMES), probe_timeout_ms=1000,
                survivor_echoes=10,
                environment={'Open vSwitch': '3.1.0'}, **extra)


def test_markdown_table_goals_and_environment():
    summary = gaps_summary.summarize(synthetic_results(), SCHEMES, 5)
    text = gaps_summary.markdown(summary, meta())
    assert '`ha-redirect-lab gaps --repeat 3`' in text
    row = next(line for line in text.splitlines()
               if line.startswith('| sdn-stateful |'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[1:7] == ['4.0', '3.0-5.0 (3/3 runs)', '3.2', '0.33', '2.0',
                          '3 (3-3)']
    assert cells[7:9] == ['1.5', '0.5']
    assert cells[10] == '5/5'
    row = next(line for line in text.splitlines()
               if line.startswith('| haproxy-tuned |'))
    assert '(3/4 runs)' in row and '| 4/5 |' in row
    row = next(line for line in text.splitlines()
               if line.startswith('| sdn-fast_failover |'))
    assert '0/5 (stateless)' in row
    assert 'sdn-fast_failover: median gap <= 5 ms: 6.0 ms -- NOT met' in text
    assert 'sdn-stateful: median gap <= 5 ms: 4.0 ms -- met' in text
    assert 'achieved 900 attempts/s' in text
    assert 'haproxy-tuned link 3: LabError: no switch' in text
    assert '| Open vSwitch | 3.1.0 |' in text
    assert 'Interrupted' not in text
    text = gaps_summary.markdown(summary, meta(interrupted='x'))
    assert 'Interrupted' in text


def test_markdown_of_nothing_still_renders():
    summary = gaps_summary.summarize([], SCHEMES, 5)
    text = gaps_summary.markdown(summary, meta())
    assert 'No link run completed.' in text
    assert 'not measured -- NOT met' in text


def test_outputs_are_written(tmp_path):
    path, summary = gaps_summary.write_outputs(
        str(tmp_path), synthetic_results(), meta())
    assert path == str(tmp_path / 'gaps.md')
    data = json.loads((tmp_path / 'summary.json').read_text())
    assert data['schemes']['sdn-stateful']['gap_median_ms'] == 4.0
    assert data['command'] == 'ha-redirect-lab gaps --repeat 3'


def test_many_services_share_the_servers_on_consecutive_ports(tmp_path):
    from ha_redirect.lab import flip
    from ha_redirect.lab import scenarios
    from ha_redirect.lab import topology
    from ha_redirect import policy

    class Scope:
        token = '1a2b'

        def name(self, prefix, width):
            return prefix + self.token

    plan = topology.sdn_plan(Scope())
    services = scenarios.many_services(plan, 4)
    assert services[0] == plan.service()
    assert [s.tcp_ports for s in services] == [(5001,), (5002,), (5003,),
                                               (5004,)]
    assert len({s.name for s in services}) == 4
    assert {(s.primary, s.backups) for s in services} == {
        (plan.service().primary, plan.service().backups)}
    # Our controller takes them together.
    policy.RedirectPolicy(services, None)
    for bad in (0, scenarios.MAX_SERVICES + 1):
        with pytest.raises(ValueError, match='n_services'):
            scenarios.many_services(plan, bad)
    # The flip app gets one rewrite per port, for the shared servers.
    text = flip.render_flip_config(services)
    assert 'tcp_ports = 5001,5002,5003,5004\n' in text
    assert 'primary_port = 1\n' in text and 'backup_ip = 10.0.0.2\n' in text
    other = dataclasses.replace(
        services[1], backups=(dataclasses.replace(
            services[1].backups[0], ip='10.0.0.9'),))
    with pytest.raises(ValueError, match="service 'web2'"):
        flip.render_flip_config([services[0], other])
