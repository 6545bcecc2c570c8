"""The evaluation report: aggregation, the paper's claims, figures."""

import os

import pytest

from ha_redirect.lab import report

RATES = (1.0, 2.0, 4.0, 8.0)


def run(scheme, rate, rep=0, status='ok', **metrics):
    values = dict(backup_response_s=0.05, service_gap_s=0.06,
                  probe_failed_after=0, rst_after=10, aborted_before=2,
                  aborted_after=0, throughput_mbps=80.0,
                  baseline_throughput_mbps=100.0)
    values.update(metrics)
    return dict(scheme=scheme, rate=rate, repetition=rep, status=status,
                metrics=values, capture_drops={'c1': 0},
                clock=dict(sample_uncertainty_s=3e-7, drift_s=1e-7,
                           failure_command_s=2e-4))


def paper_like():
    """Results shaped like the paper's: SDN fast and flat, HAProxy slow
    with aborts growing with the rate and lower throughput."""
    results = []
    for rep in range(2):
        for rate in RATES:
            for s in ('sdn-reactive', 'sdn-proactive'):
                results.append(run(s, rate, rep,
                                   backup_response_s=0.04 + 0.01 * rep,
                                   service_gap_s=0.05 + 0.01 * rep))
            results.append(run('haproxy-paper', rate, rep,
                               backup_response_s=17.0 + rep,
                               service_gap_s=17.0 + rep,
                               aborted_after=3 * rate + rep,
                               throughput_mbps=30.0,
                               baseline_throughput_mbps=60.0))
            results.append(run('haproxy-tuned', rate, rep,
                               backup_response_s=0.15, service_gap_s=0.2,
                               throughput_mbps=40.0,
                               baseline_throughput_mbps=60.0))
    return results


SCHEMES = ['sdn-reactive', 'sdn-proactive', 'haproxy-paper', 'haproxy-tuned']


def verdicts(results):
    agg = report.aggregate(results)
    return [v for _, v, _ in report.claims(agg, SCHEMES)]


def test_aggregate_gives_median_and_range_over_repetitions():
    agg = report.aggregate(paper_like())
    spread = agg['haproxy-paper'][4.0]['aborted_after']
    assert (spread.median, spread.low, spread.high, spread.n) == (
        12.5, 12.0, 13.0, 2)


def test_failed_runs_are_left_out_of_the_aggregate():
    results = paper_like() + [dict(scheme='sdn-reactive', rate=1.0,
                                   repetition=9, status='failed',
                                   reason='LabError: boom')]
    assert report.aggregate(results)['sdn-reactive'][1.0][
        'service_gap_s'].n == 2


def test_paper_shaped_results_reproduce_all_three_claims():
    assert verdicts(paper_like()) == ['reproduced'] * 3


def test_slow_sdn_does_not_reproduce_the_response_claim():
    results = [dict(r, metrics=dict(r['metrics'], backup_response_s=1.5))
               if r['scheme'] == 'sdn-proactive' else r
               for r in paper_like()]
    assert verdicts(results)[0] == 'partly reproduced (sdn-reactive only)'
    results = [dict(r, metrics=dict(r['metrics'], backup_response_s=1.5))
               if r['scheme'].startswith('sdn') else r
               for r in paper_like()]
    assert verdicts(results)[0] == 'not reproduced'


def test_fast_paper_proxy_does_not_reproduce_the_response_claim():
    results = [dict(r, metrics=dict(r['metrics'], backup_response_s=0.2))
               if r['scheme'] == 'haproxy-paper' else r
               for r in paper_like()]
    assert verdicts(results)[0] == 'not reproduced'


def test_sdn_aborts_growing_with_the_rate_are_not_flat():
    results = [dict(r, metrics=dict(r['metrics'],
                                    aborted_after=3 * r['rate']))
               if r['scheme'] == 'sdn-reactive' else r
               for r in paper_like()]
    assert verdicts(results)[1] == 'partly reproduced (sdn-proactive only)'
    flat_proxy = [dict(r, metrics=dict(r['metrics'], aborted_after=5))
                  if r['scheme'] == 'haproxy-paper' else r
                  for r in paper_like()]
    assert verdicts(flat_proxy)[1] == 'not reproduced'


def test_proxy_faster_than_sdn_does_not_reproduce_the_throughput_claim():
    results = [dict(r, metrics=dict(r['metrics'],
                                    baseline_throughput_mbps=500.0))
               if r['scheme'] == 'haproxy-tuned' else r
               for r in paper_like()]
    assert verdicts(results)[2] == 'not reproduced'


def test_claims_need_their_schemes_and_rates():
    only_sdn = [r for r in paper_like() if r['scheme'] == 'sdn-reactive']
    assert verdicts(only_sdn) == ['not tested'] * 3
    two_rates = [r for r in paper_like() if r['rate'] <= 2]
    assert verdicts(two_rates)[1] == 'not tested'


def test_gap_ratio_is_sdn_over_tuned_haproxy():
    rows = report.gap_ratios(paper_like(), SCHEMES)
    overall = {(s, rate): ratio for s, rate, ratio, _, _ in rows}
    assert overall[('sdn-reactive', 'all')] == pytest.approx(0.055 / 0.2)
    assert overall[('sdn-proactive', '8')] == pytest.approx(0.055 / 0.2)
    assert report.gap_ratios(
        [r for r in paper_like() if r['scheme'] != 'haproxy-tuned'],
        SCHEMES) == []


def test_spearman():
    assert report._spearman([(1, 1), (2, 2), (3, 5)]) == pytest.approx(1.0)
    assert report._spearman([(1, 3), (2, 2), (3, 1)]) == pytest.approx(-1.0)
    assert report._spearman([(1, 1), (2, 1), (3, 1)]) == 0.0
    assert report._spearman([(1, 1), (2, 2)]) is None


def test_write_report_makes_figures_and_every_section(tmp_path):
    results = paper_like() + [dict(scheme='sdn-reactive', rate=8.0,
                                   repetition=5, status='failed',
                                   reason='LabError: boom')]
    meta = dict(config=dict(seed='1', duration=2.0, window=7.0, fail_at=5.0,
                            interval_ms=5.0, grace=4.0, baseline=True),
                environment={'Open vSwitch': '3.1.0', 'CPU cores': '2'},
                elapsed_s=12.0, interrupted='KeyboardInterrupt',
                command='python -m ha_redirect.lab.evaluation')
    path = report.write_report(str(tmp_path), results, meta)
    text = open(path).read()
    for heading in ('## Results', '## The paper\'s claims',
                    '## Service gap', '## Environment',
                    '## Measurement resolution', '## Failed runs'):
        assert heading in text
    assert 'Partial report' in text
    assert text.count('**Reproduced**') == 3
    assert '| haproxy-paper | 8 | 2 | 17500 [17000-18000] |' in text
    assert 'LabError: boom' in text
    for name in ('fig2_backup_response.png', 'fig3_rsts_aborts.png',
                 'fig4_throughput.png', 'fig5_service_gap.png'):
        with open(os.path.join(tmp_path, name), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
        assert f'![{name}]({name})' in text


def test_report_of_nothing_but_failures(tmp_path):
    results = [dict(scheme='sdn-reactive', rate=1.0, repetition=0,
                    status='failed', reason='LabError: no OVS')]
    path = report.write_report(str(tmp_path), results, {})
    text = open(path).read()
    assert '0 of 1 runs succeeded' in text
    assert 'No successful run.' in text
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.png')]


def test_regenerate_from_a_results_folder(tmp_path, capsys):
    import json
    os.makedirs(tmp_path / 'runs')
    for i, r in enumerate(paper_like()):
        with open(tmp_path / 'runs' / f'{i}.json', 'w') as f:
            json.dump(r, f)
    assert report.main([str(tmp_path)]) == 0
    assert os.path.exists(tmp_path / 'report.md')
    assert report.main([str(tmp_path / 'missing')]) == 2
