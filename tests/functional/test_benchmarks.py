"""Smoke runs of the benchmarks in devtools/: each at its smallest.

Benchmarks measure; tests do not assert their numbers. These runs prove
only that each benchmark still runs end to end on this code and writes
sane JSON, so a refactor cannot silently break them. (bench_policy and
bench_controller need no root; they are here with the others so that CI,
which runs this suite as root, runs every benchmark.)
"""

import json
import os
import subprocess
import sys

DEVTOOLS = os.path.join(os.path.dirname(__file__), '..', '..', 'devtools')


def _bench(name, tmp_path, *args, timeout=300):
    output = tmp_path / f'{name}.json'
    proc = subprocess.run(
        [sys.executable, os.path.join(DEVTOOLS, name), *args,
         '--output', str(output)],
        capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    print(proc.stdout[-1500:])
    return json.loads(output.read_text())


def test_bench_policy_times_every_stage(tmp_path):
    result = _bench('bench_policy', tmp_path, '--connections', '300',
                    '--burst-services', '5')
    assert len(result['stages']) == 6
    for figures in result['stages'].values():
        assert figures['connections'] == 300
        assert figures['connections_per_second'] > 0
    assert set(result['bursts']) == {'fast_failover', 'proactive',
                                     'reactive', 'stateful'}
    for burst in result['bursts'].values():
        # Chunks of 1, 2, then the last 2 services.
        assert burst['services'] == 5 and burst['chunks'] == 3
        assert 0 < burst['first_chunk_s'] <= burst['burst_s']
        assert burst['openflow_bytes'] > 0
        assert burst['failback_burst_s'] > 0 and burst['switch_meeting_s'] > 0


def test_bench_controller_completes_connections_through_the_controller(
        tmp_path):
    result = _bench('bench_controller', tmp_path, '--rates', '200',
                    '--duration', '0.5', '--window', '8', '--drain', '3')
    for state in ('normal', 'failed_over'):
        runs = result['states'][state]
        opened = runs['open_200']
        assert opened['completed'] > 0
        assert opened['packet_out_before_flow_mods'] == 0
        assert 0 < opened['p50_ms'] <= opened['p99_ms']
        assert runs['closed_window_8']['completed_per_second'] > 0


def test_bench_controller_compares_schemes_over_rounds(tmp_path):
    result = _bench('bench_controller', tmp_path, '--rates', '200',
                    '--duration', '0.3', '--window', '8', '--drain', '1',
                    '--states', 'normal', '--repeat', '2', '--pin',
                    '--scheme', 'a=', '--scheme', 'b=')
    assert result['pinned'] and result['repeat'] == 2
    for scheme in ('a', 'b'):
        normal = result['schemes'][scheme]['states']['normal']
        assert len(normal['rounds']) == 2
        assert normal['median']['open_200']['completed_per_second'] > 0


def test_bench_flood_measures_a_quiet_and_a_flooded_failover(tmp_path):
    result = _bench('bench_flood', tmp_path, '--strategies', 'stateful',
                    '--rate', '200', '--repeat', '1')
    runs = result['runs']
    assert [r['flood_pps'] for r in runs] == [0, 200]
    for run in runs:
        assert run['gap_ms'] is not None and run['gap_ms'] > 0


def test_bench_takeover_times_one_kill(tmp_path):
    result = _bench('bench_takeover', tmp_path, '--strategies',
                    'fast_failover', '--kills', '1')
    (row,) = result['table']
    assert row['kills'] == 1
    assert 0 < row['takeover_median_ms'] < 10000
    assert row['probes'] > 0


def test_bench_reactive_stages_times_one_failover(tmp_path):
    result = _bench('bench_reactive_stages', tmp_path, '--strategies',
                    'reactive', '--runs', '1')
    (run,) = result['runs']
    assert run['status'] == 'ok', run
    stages = run['stages']
    assert 0 < stages['gap'] < 5
