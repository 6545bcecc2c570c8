"""report.md's first table: the best scheme per metric against tuned
HAProxy, from run results."""

import math

import pytest

from ha_redirect.lab import report
from ha_redirect.lab import report_best


def run(scheme, rate=1.0, rep=0, status='ok', failure='link', **metrics):
    values = dict(backup_response_s=0.1, service_gap_s=0.1,
                  monitor_detection_s=None, probe_failed_after=0,
                  aborted_before=1, aborted_after=0, throughput_mbps=50.0,
                  baseline_throughput_mbps=60.0)
    values.update(metrics)
    return dict(scheme=scheme, rate=rate, repetition=rep, status=status,
                failure=failure, metrics=values, capture_drops={},
                clock=dict(sample_uncertainty_s=1e-7, drift_s=1e-7,
                           failure_command_s=1e-4))


def by_label(results):
    return {row.metric.label: row for row in report_best.rows(results)}


def sweep():
    """Two rates, two repetitions: stateful answers fastest, tuned HAProxy
    moves the most data, the paper's HAProxy aborts the most."""
    out = []
    for rep in range(2):
        for rate in (2.0, 8.0):
            out += [
                run('haproxy-paper', rate, rep, backup_response_s=9.0,
                    service_gap_s=9.5, aborted_after=5,
                    throughput_mbps=30.0),
                run('haproxy-tuned', rate, rep, backup_response_s=0.2,
                    service_gap_s=0.25, throughput_mbps=90.0),
                run('sdn-reactive', rate, rep, backup_response_s=0.05,
                    service_gap_s=0.06),
                run('sdn-stateful', rate, rep,
                    backup_response_s=0.01 + 0.01 * rep,
                    service_gap_s=0.02, throughput_mbps=80.0,
                    aborted_before=0),
            ]
    return out


def test_lower_is_better_picks_the_smallest_median_and_its_ratio():
    row = by_label(sweep())['backup response time']
    assert row.metric.better == 'lower'
    assert row.best == ('sdn-stateful',)
    assert row.best_median == pytest.approx(0.015)
    assert row.tuned == pytest.approx(0.2)
    assert report_best.ratio(row.best_median, row.tuned) == \
        pytest.approx(0.075)


def test_higher_is_better_picks_the_largest_and_names_the_best_sdn():
    row = by_label(sweep())['throughput per client, with the failure']
    assert row.metric.better == 'higher'
    assert row.best == ('haproxy-tuned',)
    assert report_best.ratio(row.best_median, row.tuned) == 1.0
    assert row.best_sdn == ('sdn-stateful',)
    assert report_best.ratio(row.best_sdn_median, row.tuned) == \
        pytest.approx(80 / 90)


def test_aborted_connections_count_both_classes_and_ties_list_all():
    rows = by_label(sweep())
    aborted = rows['aborted connections (iperf3 clients per run)']
    assert aborted.best == ('sdn-stateful',)
    assert aborted.best_median == 0
    # Without failure every scheme moved 60 Mbit/s: all share the best.
    baseline = rows['throughput per client, without failure']
    assert set(baseline.best) == {'haproxy-paper', 'haproxy-tuned',
                                  'sdn-reactive', 'sdn-stateful'}


def test_a_backup_that_never_answered_is_not_fast():
    results = sweep() + [
        run('sdn-proactive', 2.0, rep, backup_response_s=(
            0.001 if rep == 0 else None)) for rep in range(3)]
    row = by_label(results)['backup response time']
    assert row.best == ('sdn-stateful',)
    medians = report_best.scheme_medians(results, row.metric)
    assert math.isinf(medians['sdn-proactive'])


def test_failed_runs_do_not_count():
    results = sweep() + [run('sdn-proactive', backup_response_s=0.001,
                             status='failed')]
    assert 'sdn-proactive' not in report_best.scheme_medians(
        results, report_best.BACKUP_RESPONSE)


def test_kill_mode_puts_detection_first():
    results = [run('haproxy-tuned', failure='kill', service_gap_s=0.055,
                   monitor_detection_s=0.01, probe_failed_after=0),
               run('sdn-reactive', failure='kill', service_gap_s=0.28,
                   monitor_detection_s=0.25, probe_failed_after=50)]
    rows = report_best.rows(results)
    assert [r.metric.label for r in rows[:3]] == [
        'detection: kill to first answer from the backup',
        'detection: kill to monitor DOWN logged',
        'failed connection attempts after the kill']
    assert rows[0].best == ('haproxy-tuned',)
    assert rows[0].best_sdn == ('sdn-reactive',)
    assert report_best.ratio(rows[0].best_sdn_median, rows[0].tuned) == \
        pytest.approx(0.28 / 0.055)
    # 50 failed attempts against none: no ratio, both values shown.
    text = '\n'.join(report_best.table(rows))
    assert ('| failed connection attempts after the kill | lower | '
            'haproxy-tuned | 0 | 0 | 1 | sdn-reactive (50) | - |') in text


def test_ratio_edges():
    assert report_best.ratio(0, 0) == 1.0
    assert report_best.ratio(math.inf, math.inf) == 1.0
    assert report_best.ratio(3, 0) is None
    assert report_best.ratio(0.1, math.inf) is None
    assert report_best.ratio(0.1, None) is None
    assert report_best.ratio(0.1, 0.4) == pytest.approx(0.25)


def test_schemes_are_told_apart_by_the_scheme_type():
    assert report_best.is_sdn('sdn-stateful')
    assert not report_best.is_sdn('haproxy-tuned')
    assert not report_best.is_sdn('sdn-uninstalled')


def test_without_tuned_haproxy_there_is_no_ratio():
    results = [r for r in sweep() if r['scheme'] != 'haproxy-tuned']
    lines = report_best.section(results)
    assert 'No ratio: haproxy-tuned was not measured.' in lines
    assert report_best.section([run('sdn-reactive', status='failed')]) == []


def test_it_is_the_reports_first_table(tmp_path):
    path = report.write_report(str(tmp_path), sweep(), {})
    text = open(path).read()
    first_table = text.index('\n|')
    assert text.index('## The best scheme per metric') < first_table < \
        text.index('## Results')
    assert ('| backup response time (ms) | lower | sdn-stateful | 15 | 200 '
            '| 0.075 | sdn-stateful (15) | 0.075 |') in text
