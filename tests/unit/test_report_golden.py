"""report.md, its kill-mode section and gaps.md, byte for byte.

The texts under `data/golden/` were written by the report code before it
was refactored; a change to them is a change of the reports users read.
Regenerate on purpose only:
`GOLDEN_WRITE=1 pytest tests/unit/test_report_golden.py`.
"""

import os

import pytest

from ha_redirect.lab import gaps_summary
from ha_redirect.lab import health_report
from ha_redirect.lab import report

GOLDEN = os.path.join(os.path.dirname(__file__), 'data', 'golden')


def check(name, text):
    path = os.path.join(GOLDEN, name)
    if os.environ.get('GOLDEN_WRITE'):
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read()


def link_run(scheme, rate, rep, **metrics):
    values = dict(backup_response_s=0.0423, service_gap_s=0.0561,
                  backup_response_iperf_s=None, probe_failed_after=0,
                  rst_after=12, aborted_before=2, aborted_after=0,
                  throughput_mbps=81.234, baseline_throughput_mbps=99.5)
    values.update(metrics)
    return dict(scheme=scheme, rate=rate, repetition=rep, status='ok',
                failure='link', metrics=values,
                capture_drops={'c1': 0, 'c2': 3, 'c3': None},
                clock=dict(sample_uncertainty_s=3.4e-7, drift_s=-1.2e-7,
                           failure_command_s=2.1e-4 + 1e-5 * rep))


def link_results():
    out = []
    for rep in range(3):
        for rate in (1.0, 2.5, 4.0):
            out.append(link_run('sdn-reactive', rate, rep,
                                backup_response_s=0.04 + 0.013 * rep,
                                service_gap_s=0.05 + 0.007 * rep))
            out.append(link_run('sdn-proactive', rate, rep,
                                backup_response_s=0.9 + 0.2 * rep,
                                service_gap_s=None if rep == 1 else 0.004,
                                aborted_after=rep))
            out.append(link_run('haproxy-paper', rate, rep,
                                backup_response_s=9.0 + rep,
                                service_gap_s=9.5 + rep,
                                aborted_after=3 * rate + rep,
                                throughput_mbps=30.5 + rep,
                                baseline_throughput_mbps=160.0))
            out.append(link_run('haproxy-tuned', rate, rep,
                                backup_response_s=0.15, service_gap_s=0.21,
                                throughput_mbps=1234.5,
                                baseline_throughput_mbps=0.0123))
    out.append(dict(scheme='sdn-reactive', rate=2.5, repetition=7,
                    status='failed', reason='LabError: boom'))
    out.append(dict(scheme='haproxy-tuned', rate=4.0, repetition=1,
                    status='clock stepped', reason='ClockStepped: moved'))
    return out


LINK_META = dict(
    config=dict(seed='7', duration=2.0, window=7.0, fail_at=5.0,
                interval_ms=5.0, grace=4.0, baseline=True, failure='link'),
    environment={'Open vSwitch': '3.1.0', 'CPU cores': '2',
                 'kernel': '6.1.0'},
    elapsed_s=1234.56, interrupted='KeyboardInterrupt',
    command='ha-redirect-lab evaluate --rates 1,2.5,4')


def test_link_report(tmp_path):
    path = report.write_report(str(tmp_path), link_results(), LINK_META)
    check('report_link.md', open(path).read())


def test_link_report_of_two_schemes_without_baseline(tmp_path):
    results = [r for r in link_results()
               if r['scheme'] in ('sdn-reactive', 'haproxy-paper')
               and r['rate'] < 4]
    meta = dict(LINK_META, config=dict(LINK_META['config'], baseline=False))
    del meta['interrupted']
    path = report.write_report(str(tmp_path), results, meta)
    check('report_link_two_schemes.md', open(path).read())


def test_report_of_failures_only(tmp_path):
    results = [r for r in link_results() if r['status'] != 'ok']
    path = report.write_report(str(tmp_path), results, {})
    check('report_failures_only.md', open(path).read())


def down(t, server, monitor='tcp_probe', counted=True, reason='x'):
    return dict(t=t, server=server, state='DOWN', monitor=monitor,
                reason=reason, counted=counted)


def kill_run(scheme, rate, rep, gap, detection, failed, transitions=()):
    false = [x for x in transitions if x['counted'] and x['state'] == 'DOWN'
             and (x['server'] != 'primary' or x['t'] < 0)]
    monitoring = (dict(monitors=['haproxy'], haproxy_profile='tuned',
                       haproxy_server_options=['check', 'inter 100ms',
                                               'fall 1'],
                       haproxy_timeout_connect='100ms')
                  if scheme.startswith('haproxy') else
                  dict(monitors=['port_status', 'tcp_probe'],
                       probe_interval=0.1, probe_timeout=0.3, probe_fall=2,
                       probe_rise=2, probe_jitter=0.1))
    return dict(
        scheme=scheme, rate=rate, repetition=rep, status='ok',
        failure='kill', health_monitoring=monitoring,
        health_transitions=list(transitions), prober_window=[-1.0, 0.8],
        metrics=dict(
            service_gap_s=gap, monitor_detection_s=detection,
            # The probe port's server exits 8 ms after the kill.
            probe_server_exited_s=0.008, services_exited_s=0.031,
            detection_after_exit_s=(None if detection is None
                                    else detection - 0.008),
            # The network's queues before the kill: longer through a
            # switch that is the bottleneck.
            connect_before_failure_s=0.004 if scheme.startswith('haproxy')
            else 0.090,
            backup_response_s=gap, probe_failed_after=failed,
            # The dying primary's last accepted connections.
            probe_failed_opened_after=0 if scheme.startswith('haproxy')
            else min(failed, 1),
            rst_after=0, aborted_before=1, aborted_after=0,
            throughput_mbps=50.0, baseline_throughput_mbps=None,
            false_failovers=len(false),
            false_failovers_primary=sum(1 for x in false
                                        if x['server'] == 'primary'),
            false_failovers_backup=sum(1 for x in false
                                       if x['server'] != 'primary')),
        capture_drops={'c1': 1},
        clock=dict(sample_uncertainty_s=1e-7, drift_s=2e-7,
                   failure_command_s=2e-5 + 1e-6 * rep))


def kill_results():
    out = []
    for rep in range(3):
        for rate in (2.0, 8.0):
            out.append(kill_run('sdn-proactive', rate, rep,
                                0.271 + 0.01 * rep, 0.24 + 0.01 * rep,
                                50 + rep, [down(-30.0, 'primary',
                                                counted=False),
                                           down(0.24, 'primary')]))
            haproxy = [down(0.01, 'primary', 'haproxy')]
            if rate == 8.0 and rep == 1:
                haproxy += [down(-2.5, 'primary', 'haproxy',
                                 reason='Layer4 timeout'),
                            down(1.2, 'backup1', 'haproxy')]
            out.append(kill_run('haproxy-tuned', rate, rep, 0.07, 0.01, 0,
                                haproxy))
        out.append(kill_run('sdn-reactive', 2.0, rep, None, 0.4, 3,
                            [down(0.4, 'primary',
                                  reason='no answer within 0.3s'),
                             down(2.0, 'backup1')]))
    return out


KILL_META = dict(
    config=dict(failure='kill', fail_at=5.0, interval_ms=5.0, duration=2.0,
                window=7.0, seed='1', grace=4.0, baseline=False),
    environment={'Open vSwitch': '3.1.0'}, elapsed_s=99.4,
    command='ha-redirect-lab evaluate --failure kill')


def test_kill_report(tmp_path):
    results = kill_results() + [
        dict(scheme='sdn-reactive', rate=8.0, repetition=0,
             status='failed', reason='LabError: no OVS')]
    path = report.write_report(str(tmp_path), results, KILL_META)
    check('report_kill.md', open(path).read())


def test_kill_section_alone():
    check('health_section.md',
          '\n'.join(health_report.section(kill_results(), KILL_META)))


def gaps_link(scheme, rep, gap_ms, failed=3, status='ok'):
    if status != 'ok':
        return dict(kind='link', scheme=scheme, repetition=rep,
                    status=status, reason='LabError: no switch')
    return dict(kind='link', scheme=scheme, repetition=rep, status='ok',
                metrics=dict(
                    gap_s=None if gap_ms is None else gap_ms / 1000,
                    first_backup_start_s=(None if gap_ms is None
                                          else gap_ms / 2000),
                    failed_after=failed, latency_before_ms=1.537,
                    spacing_max_near_failure_ms=2.04 + rep,
                    resolution=dict(rate_per_s=912.4,
                                    spacing_median_ms=1.096,
                                    spacing_p99_ms=3.05,
                                    spacing_max_ms=9.0)))


def gaps_failback(scheme, survivors, gap_s=0.0):
    return dict(kind='failback', scheme=scheme, repetition=None,
                status='ok', metrics=dict(
                    survivors=survivors, gap_s=gap_s, failed_after=0,
                    to_primary_s=0.0412, attempts_after=100))


GAPS_SCHEMES = ('sdn-proactive', 'sdn-stateful', 'sdn-fast_failover',
                'sdn-reactive', 'haproxy-tuned')


def gaps_results():
    out = []
    for rep, (p, s, f, h) in enumerate([(10.2, 3, 4, 100), (12, 4.4, 6, 120),
                                        (20, 5, None, 300)]):
        out += [gaps_link('sdn-proactive', rep, p),
                gaps_link('sdn-stateful', rep, s, failed=rep),
                gaps_link('sdn-fast_failover', rep, f),
                gaps_link('haproxy-tuned', rep, h, failed=0)]
    out += [gaps_link('haproxy-tuned', 3, None, status='failed'),
            gaps_link('sdn-reactive', 0, None, status='failed'),
            gaps_failback('sdn-proactive', 5),
            gaps_failback('sdn-stateful', 5),
            gaps_failback('sdn-fast_failover', 0, gap_s=0.0123),
            gaps_failback('haproxy-tuned', 4),
            dict(kind='failback', scheme='sdn-reactive', repetition=None,
                 status='failed', reason='LabError: gone')]
    return out


def gaps_meta(**extra):
    return dict(command='ha-redirect-lab gaps --repeat 3',
                started='2026-01-01 00:00:00 UTC', elapsed_s=123.4,
                load_before='1.00 1.00 1.00', load_after='2.00 1.50 1.00',
                cpus=2, repeat=3, interval_ms=1.0, long_lived=5,
                schemes=list(GAPS_SCHEMES), probe_timeout_ms=1000,
                survivor_echoes=10,
                environment={'Open vSwitch': '3.1.0', 'CPU cores': '2'},
                **extra)


@pytest.mark.parametrize('name, results, extra', [
    ('gaps.md', gaps_results, {}),
    ('gaps_interrupted.md', gaps_results, dict(interrupted='x')),
    ('gaps_empty.md', list, {}),
])
def test_gaps_markdown(name, results, extra):
    summary = gaps_summary.summarize(results(), GAPS_SCHEMES, 5)
    check(name, gaps_summary.markdown(summary, gaps_meta(**extra)))
