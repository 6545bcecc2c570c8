"""Agents' frame building and the prober's service-gap analysis."""

import dpkt

from ha_redirect.lab import frames
from ha_redirect.lab import traffic


def test_forged_frames_have_valid_checksums_and_the_given_headers():
    frame = frames.tcp_frame('00:00:00:00:00:02', '00:00:00:00:00:0c',
                             '10.0.0.2', '10.0.0.12', 5001, 47123, seq=1000)
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    tcp = ip.data
    assert (ip.sum, tcp.sum) != (0, 0)
    assert (ip.id, ip.ttl, tcp.flags, tcp.win) == (1000, 64, 0x12, 65535)
    ip_sum, tcp_sum = ip.sum, tcp.sum
    ip.sum = tcp.sum = 0
    recomputed = dpkt.ethernet.Ethernet(bytes(eth))  # dpkt fills sums
    assert (recomputed.data.sum, recomputed.data.data.sum) == (ip_sum,
                                                               tcp_sum)
    assert frames.parse_tcp_frame(frame) == (
        '00:00:00:00:00:02', '00:00:00:00:00:0c', '10.0.0.2', '10.0.0.12',
        5001, 47123, 1000)


def test_non_tcp_frames_are_ignored():
    arp = b'\xff' * 6 + b'\x00' * 6 + b'\x08\x06' + b'\x00' * 28
    assert frames.parse_tcp_frame(arp) is None


def attempt(t, ok, who=None, done=None):
    return {'t': t, 't_done': done if done is not None else t + 0.001,
            'ok': ok, 'who': who, 'error': None if ok else 'timeout',
            'peer': '10.0.0.1'}


def test_gap_is_failure_to_first_backup_answer_started_after_it():
    records = [
        {'event': 'probing'},
        attempt(9.9, True, 'primary'),
        attempt(10.01, False),
        attempt(10.02, True, 'backup1', done=11.02),  # SYN retransmitted
        attempt(10.05, True, 'backup1', done=10.051),
        attempt(10.06, True, 'backup1'),
    ]
    report = traffic.service_gap(records, 10.0, 'backup1')
    assert round(report.gap, 3) == 0.051
    assert report.attempts_after == 4
    assert report.failed_after == 1
    assert report.failed_opened_after == 0
    assert report.answered_by == {'backup1': 3}
    assert '51.0 ms' in report.describe()


def test_failed_attempts_that_opened_first_are_counted_apart():
    opened = dict(attempt(10.01, False), t_connected=10.02)
    lost_before = dict(attempt(9.99, False), t_connected=10.0)
    records = [lost_before, opened, attempt(10.03, False),
               attempt(10.04, True, 'backup1')]
    report = traffic.service_gap(records, 10.0, 'backup1')
    assert (report.failed_after, report.failed_opened_after) == (2, 1)


def test_no_backup_answer_means_no_gap():
    report = traffic.service_gap([attempt(10.1, True, 'primary')], 10.0,
                                 'backup1')
    assert report.gap is None
    assert 'service gap none' in report.describe()
