"""Metric extraction on small pcaps written here with dpkt, and on iperf3
`--json` reports shipped in tests/unit/data (made by real iperf3 3.12)."""

import json
import os
import socket

import dpkt
import pytest

from ha_redirect.lab.measure import clients
from ha_redirect.lab.measure import health_log
from ha_redirect.lab.measure import segments
from ha_redirect.lab.measure import stats
from ha_redirect.lab import metrics

DATA = os.path.join(os.path.dirname(__file__), 'data')
OFFSET = 1_700_000_000.0     # CLOCK_REALTIME - CLOCK_MONOTONIC
T_FAIL = 100.0               # monotonic

CLIENT, PRIMARY, BACKUP, PROXY_BACK = ('10.0.0.11', '10.0.0.1', '10.0.0.2',
                                       '10.0.2.254')
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08


def frame(src, sport, dst, dport, flags, seq=0, payload=b''):
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags,
                       data=payload)
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst),
                    p=dpkt.ip.IP_PROTO_TCP, data=tcp)
    ip.len = len(bytes(ip))
    eth = dpkt.ethernet.Ethernet(src=b'\x00' * 5 + b'\x0b',
                                 dst=b'\x00' * 5 + b'\x01',
                                 type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    return bytes(eth)


def write_pcap(path, packets, snaplen=65535):
    """packets: (monotonic t, frame bytes); written with realtime stamps."""
    with open(path, 'wb') as f:
        writer = dpkt.pcap.Writer(f, snaplen=snaplen)
        for t, raw in packets:
            writer.writepkt(raw[:snaplen], ts=t + OFFSET)
    return str(path)


def test_read_segments_moves_to_the_monotonic_clock_and_decodes(tmp_path):
    path = write_pcap(tmp_path / 'c.pcap', [
        (T_FAIL + 0.5, frame(PRIMARY, 5001, CLIENT, 40000, SYN | ACK, 7)),
        (T_FAIL + 0.25, frame(CLIENT, 40000, PRIMARY, 5001, SYN, 3)),
    ])
    segs = segments.read_segments(path, OFFSET)
    assert [round(s.t - T_FAIL, 6) for s in segs] == [0.25, 0.5]
    first = segs[0]
    assert (first.src, first.sport, first.dst, first.dport, first.seq) == (
        CLIENT, 40000, PRIMARY, 5001, 3)
    assert first.syn and not first.rst


def test_truncated_frames_keep_their_payload_length(tmp_path):
    payload = b'x' * 400
    path = write_pcap(tmp_path / 'c.pcap', [
        (T_FAIL, frame(PRIMARY, 5001, CLIENT, 40000, ACK | PSH, 1, payload))],
        snaplen=128)
    seg, = segments.read_segments(path, OFFSET)
    assert seg.payload_len == 400
    assert seg.payload == payload[:segments.PAYLOAD_PREFIX][:len(seg.payload)]


def test_non_tcp_frames_are_skipped(tmp_path):
    udp = dpkt.ip.IP(src=socket.inet_aton(CLIENT),
                     dst=socket.inet_aton(PRIMARY), p=dpkt.ip.IP_PROTO_UDP,
                     data=dpkt.udp.UDP(sport=1, dport=2))
    eth = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=udp)
    path = write_pcap(tmp_path / 'c.pcap', [(T_FAIL, bytes(eth))])
    assert segments.read_segments(path, OFFSET) == []


def seg(t, src, sport, dst, dport, flags, seq=0, payload=b''):
    return segments.Segment(
        t=t, src=src, sport=sport, dst=dst, dport=dport, flags=flags,
        seq=seq, payload_len=len(payload),
        payload=payload[:segments.PAYLOAD_PREFIX])


def test_connections_count_syn_retries_and_split_port_reuse():
    segs = [
        seg(1.0, CLIENT, 40000, PRIMARY, 5201, SYN, 10),
        seg(2.0, CLIENT, 40000, PRIMARY, 5201, SYN, 10),       # retry
        seg(2.1, PRIMARY, 5201, CLIENT, 40000, SYN | ACK, 99),
        seg(2.2, PRIMARY, 5201, CLIENT, 40000, RST),
        seg(3.0, CLIENT, 40000, PRIMARY, 5201, SYN, 500),      # reuse
        seg(3.0, CLIENT, 40001, PRIMARY, 9999, SYN, 1),        # not ours
    ]
    first, second = clients.connections(segs, {5201})
    assert (first.syns, first.t_synack, first.rst_in) == (2, 2.1, [2.2])
    assert first.established_before(2.5)
    assert not first.established_before(2.0)
    assert (second.isn, second.t_synack) == (500, None)


def test_failover_resets_ignore_the_resets_after_a_normal_close():
    segs = [
        seg(99.0, CLIENT, 40000, PRIMARY, 5201, SYN, 1),
        seg(99.1, PRIMARY, 5201, CLIENT, 40000, SYN | ACK, 2),
        seg(100.5, PRIMARY, 5201, CLIENT, 40000, RST),        # failover
        seg(100.6, CLIENT, 40001, PRIMARY, 5202, SYN, 3),
        seg(100.7, PRIMARY, 5202, CLIENT, 40001, SYN | ACK, 4),
        seg(102.0, PRIMARY, 5202, CLIENT, 40001, FIN | ACK),   # normal end
        seg(102.0, PRIMARY, 5202, CLIENT, 40001, RST),
        seg(102.0, PRIMARY, 5202, CLIENT, 40001, RST),
    ]
    conns = clients.connections(segs, {5201, 5202})
    assert clients.resets_after(conns, T_FAIL) == 1
    assert clients.reset_connections(conns, T_FAIL) == 1
    # Before the failure nothing counts.
    assert clients.resets_after(conns, 101.0) == 0


def test_client_class():
    segs = [seg(99.0, CLIENT, 40000, PRIMARY, 5201, SYN, 1),
            seg(99.1, PRIMARY, 5201, CLIENT, 40000, SYN | ACK, 2)]
    conns = clients.connections(segs, {5201})
    assert clients.client_class(conns, T_FAIL) == 'before'
    assert clients.client_class(conns, T_FAIL, t_exit=99.5) == 'finished'
    assert clients.client_class(conns, 99.05) == 'after'
    assert clients.client_class([], T_FAIL) == 'after'


def test_same_connection_method_finds_the_backup_behind_the_primary_address(
        tmp_path):
    """SDN: the client sees the primary's address; sequence numbers say
    which SYN-ACK the backup sent."""
    client = write_pcap(tmp_path / 'client.pcap', [
        # the primary's answer, before the failure
        (99.0, frame(PRIMARY, 5001, CLIENT, 40000, SYN | ACK, 111)),
        # in flight from the primary, after the failure: not the backup's
        (T_FAIL + 0.001, frame(PRIMARY, 5001, CLIENT, 40002, SYN | ACK,
                               222)),
        # redirected: the backup's SYN-ACK, rewritten to the primary's
        (T_FAIL + 0.040, frame(PRIMARY, 5001, CLIENT, 40001, SYN | ACK,
                               333)),
    ])
    backup = write_pcap(tmp_path / 'backup.pcap', [
        (T_FAIL + 0.039, frame(BACKUP, 5001, CLIENT, 40001, SYN | ACK, 333)),
    ])
    gap, found = clients.first_backup_response(
        segments.read_segments(client, OFFSET),
        segments.read_segments(backup, OFFSET), T_FAIL, {5001},
        'same-connection')
    assert gap == pytest.approx(0.040, abs=2e-6)
    assert (found.dport, found.seq) == (40001, 333)


def test_same_connection_method_counts_backup_data_segments():
    client = [seg(T_FAIL + 0.2, PRIMARY, 5201, CLIENT, 40000, ACK | PSH,
                  77, b'\x09')]
    backup = [seg(T_FAIL + 0.2, BACKUP, 5201, CLIENT, 40000, ACK | PSH,
                  77, b'\x09')]
    gap, _ = clients.first_backup_response(client, backup, T_FAIL, {5201},
                                           'same-connection')
    assert gap == pytest.approx(0.2)
    # A pure ACK is neither a SYN-ACK nor data.
    client = [seg(T_FAIL + 0.1, PRIMARY, 5201, CLIENT, 40000, ACK, 77)]
    backup = [seg(T_FAIL + 0.1, BACKUP, 5201, CLIENT, 40000, ACK, 77)]
    assert clients.first_backup_response(
        client, backup, T_FAIL, {5201}, 'same-connection') == (None, None)


def test_relayed_method_matches_the_payload_the_backup_sent():
    """HAProxy: the proxy's own SYN-ACKs never count; relayed data does."""
    client = [
        seg(T_FAIL + 0.01, PROXY_BACK, 5001, CLIENT, 40000, SYN | ACK, 5),
        seg(T_FAIL + 0.5, '10.0.0.100', 5001, CLIENT, 40000, ACK | PSH, 6,
            b'primary\n'),                  # never sent by the backup
        seg(T_FAIL + 7.2, '10.0.0.100', 5001, CLIENT, 40001, ACK | PSH, 8,
            b'backup1\n'),
    ]
    backup = [
        seg(T_FAIL + 7.1995, BACKUP, 5001, PROXY_BACK, 33000, ACK | PSH, 9,
            b'backup1\n'),
    ]
    gap, found = clients.first_backup_response(client, backup, T_FAIL,
                                               {5001}, 'relayed')
    assert gap == pytest.approx(7.2)
    assert found.dport == 40001
    # Too long after the backup sent it: not the relay of that segment.
    late = [dataclass_replace(client[2], t=T_FAIL + 9.0)]
    assert clients.first_backup_response(
        late, backup, T_FAIL, {5001}, 'relayed', window=1.0) == (None, None)


def dataclass_replace(obj, **changes):
    import dataclasses
    return dataclasses.replace(obj, **changes)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError):
        clients.first_backup_response([], [], 0, {1}, 'psychic')


def load(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)


def test_iperf3_completed_test_counts_what_the_server_received():
    out = clients.iperf3_outcome(load('iperf3_ok.json'), lifetime=1.2)
    assert out.ok and out.error is None
    assert out.bytes == 12582912
    assert out.bits_per_second == pytest.approx(100551281.87, rel=1e-6)


def test_iperf3_interrupted_test_counts_sent_bytes_over_its_lifetime():
    report = load('iperf3_interrupted.json')
    sent = sum(i['sum']['bytes'] for i in report['intervals'])
    out = clients.iperf3_outcome(report, lifetime=2.0)
    assert not out.ok
    assert out.error == 'interrupt - the client has terminated'
    assert out.bytes == sent > 0
    assert out.bits_per_second == pytest.approx(sent * 8 / 2.0)
    assert clients.iperf3_outcome(report).bits_per_second == 0.0


def test_iperf3_error_before_any_data_and_missing_report():
    report = {'start': {}, 'intervals': [],
              'error': 'unable to send control message: Broken pipe'}
    out = clients.iperf3_outcome(report, lifetime=3.0)
    assert (out.ok, out.bytes, out.bits_per_second) == (False, 0, 0.0)
    assert 'Broken pipe' in out.error
    assert clients.iperf3_outcome(None).error == 'no JSON report'


def test_spread_and_mean():
    s = stats.Spread.of([3.0, None, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.0, 3.0, 3)
    assert stats.Spread.of([None]).median is None
    assert stats.mean([1, None, 3]) == 2
    assert stats.mean([]) is None


def test_lab_metrics_keeps_every_name_from_its_home():
    homes = (segments, clients, health_log, stats)
    for name in metrics.__all__:
        assert any(getattr(home, name, None) is getattr(metrics, name)
                   for home in homes), name
