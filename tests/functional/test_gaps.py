"""`ha-redirect-lab gaps`, end to end, at its smallest.

Skipped when not root (see conftest): it builds namespaces and bridges.
"""

import json
import subprocess
import sys


def test_gap_mode_writes_a_side_by_side_table(tmp_path):
    out = tmp_path / 'gaps'
    proc = subprocess.run(
        [sys.executable, '-m', 'ha_redirect.lab.cli', 'gaps',
         '--schemes', 'sdn-proactive,sdn-stateful', '--repeat', '1',
         '--long-lived', '2', '--output', str(out), '--no-progress'],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = (out / 'gaps.md').read_text()
    print('\n' + table)
    summary = json.loads((out / 'summary.json').read_text())
    rows = summary['schemes']
    for scheme in ('sdn-proactive', 'sdn-stateful'):
        row = rows[scheme]
        assert row['runs_ok'] == 1, row['failures']
        # The backup answered, within seconds of the failure.
        assert 0 < row['gap_median_ms'] < 5000
        assert f'| {scheme} | {row["gap_median_ms"]:.1f} |' in table
        # The backup's SYN-ACK reached the client before its name did.
        assert 0 < row['connect_gap_median_ms'] <= row['gap_median_ms']
    assert rows['sdn-proactive']['ratio_to_proactive'] == 1.0
    assert rows['sdn-stateful']['ratio_to_proactive'] > 0
    # Stateful pins connections to their server: both survive failback.
    assert rows['sdn-stateful']['survivors'] == 2
    assert 0 < summary['resolution']['rate_per_s'] <= 1100
    runs = list((out / 'runs').glob('*.json'))
    assert len(runs) == 4
    # The backups had learned the clients' MACs before each failure.
    assert all(json.loads(p.read_text())['warm_arp'] for p in runs)


def test_the_flip_and_many_services_get_their_ratios(tmp_path):
    """The controller-flip comparison redirects, and --services runs 3
    services against 1, alternating, with the first service's ratio."""
    out = tmp_path / 'gaps'
    proc = subprocess.run(
        [sys.executable, '-m', 'ha_redirect.lab.cli', 'gaps',
         '--schemes', 'flip,sdn-fast_failover', '--repeat', '1',
         '--services', '3', '--output', str(out), '--no-progress'],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = (out / 'gaps.md').read_text()
    print('\n' + table)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['services'] == 3
    rows, many = summary['schemes'], summary['many_services']
    for scheme in ('flip', 'sdn-fast_failover'):
        # One failure moved the first of 3 services, and the 1 service.
        assert 0 < many[scheme]['gap_median_ms'] < 5000, rows[scheme]
        assert 0 < many[scheme]['one_gap_median_ms'] < 5000
        assert many[scheme]['ratio'] > 0
        assert f'| {scheme} | {many[scheme]["gap_median_ms"]:.1f} (1) |' \
            in table
    assert rows['flip']['ratio_to_flip'] == 1.0
    assert rows['sdn-fast_failover']['ratio_to_flip'] > 0
    assert sorted(p.name for p in (out / 'runs').glob('*.json')) == [
        'flip_link0.json', 'flip_x3_link0.json',
        'sdn-fast_failover_link0.json', 'sdn-fast_failover_x3_link0.json']
