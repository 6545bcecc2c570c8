"""The agent's fuzz and SYN-flood frames, built without root or sockets."""

import collections
import contextlib
import errno
import io
import ipaddress
import itertools
import json
import random
import signal
import struct
import subprocess
import sys
import time

import dpkt
import pytest

from ha_redirect.lab import agent
from ha_redirect.lab import frames as frames_mod
from ha_redirect.lab import fuzz
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import traffic

MAC = '00:00:00:00:00:0c'
MAC_RAW = bytes.fromhex('00000000000c')
IP = '10.0.0.100'
IP_RAW = bytes([10, 0, 0, 100])
PORT = 8080


def frames(count, seed=1, categories=None):
    return list(itertools.islice(
        fuzz.fuzz_frames(seed, MAC, IP, PORT, categories), count))


def of(category, count=2000, seed=1):
    return [f for _, f in frames(count, seed, [category])]


def checksums_ok(eth):
    """Whether dpkt, refilling the zeroed sums, gets the frame's ones."""
    ip, tcp = eth.data, eth.data.data
    sums = (ip.sum, tcp.sum) if isinstance(ip, dpkt.ip.IP) else (tcp.sum,)
    ip.sum = tcp.sum = 0
    again = type(eth)(bytes(eth))
    if isinstance(again.data, dpkt.ip.IP):
        return (again.data.sum, again.data.data.sum) == sums
    return (again.data.data.sum,) == sums


def ones_complement_ok(data):
    """Independent check: the one's complement sum of a checksummed
    region (header plus checksum) is 0xffff."""
    if len(data) % 2:
        data += b'\0'
    total = sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return total == 0xffff


# -- the generator as a whole -------------------------------------------------

def test_every_category_produces_frames_in_turn():
    got = frames(10 * len(fuzz.FUZZ_CATEGORIES))
    assert [c for c, _ in got] == list(fuzz.FUZZ_CATEGORIES) * 10
    assert all(isinstance(f, bytes) for _, f in got)
    for category in fuzz.FUZZ_CATEGORIES:
        assert any(f for c, f in got if c == category), category


def test_frames_are_deterministic_per_seed():
    assert frames(3000, seed=5) == frames(3000, seed=5)
    a, b = frames(3000, seed=5), frames(3000, seed=6)
    assert a != b
    for category in fuzz.FUZZ_CATEGORIES:
        if category != 'truncated':   # cuts at 0..13 bytes coincide
            assert [f for c, f in a if c == category] != \
                [f for c, f in b if c == category], category


def test_a_category_does_not_depend_on_the_others_chosen():
    alone = of('bad-ipv4', 200)
    mixed = [f for c, f in frames(200 * len(fuzz.FUZZ_CATEGORIES))
             if c == 'bad-ipv4']
    assert alone == mixed


def test_frames_never_exceed_an_ethernet_frame():
    assert max(len(f) for _, f in frames(20000)) <= frames_mod.MAX_FRAME


def plain_checksum(data):
    """RFC 1071 word by word, to check the big-integer one against."""
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack(f'!{len(data) // 2}H', data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def test_checksum_matches_the_plain_one():
    rng = random.Random(3)
    samples = [b'', b'\0', b'\xff\xff', b'\0' * 20, b'\xff' * 1514]
    samples += [rng.randbytes(rng.randint(0, 1514)) for _ in range(300)]
    for data in samples:
        assert frames_mod.checksum(data) == plain_checksum(data)


# -- categories ---------------------------------------------------------------

def test_random_bytes_cover_every_short_length_and_up_to_1514():
    lengths = [len(f) for f in of('random-bytes', 4000)]
    assert set(range(14)) <= set(lengths)
    assert max(lengths) > 1400
    aimed = [f for f in of('random-bytes', 400) if f[:6] == MAC_RAW]
    assert len(aimed) > 100


def test_tcp_syns_are_valid_with_odd_sources():
    sources = set()
    for f in of('tcp-syn', 400):
        eth = dpkt.ethernet.Ethernet(f)
        tcp = eth.data.data
        assert tcp.flags == dpkt.tcp.TH_SYN and tcp.dport == PORT
        assert eth.data.dst == IP_RAW
        sources.add(eth.src)
        assert checksums_ok(eth)
    assert b'\xff' * 6 in sources and b'\0' * 6 in sources
    assert len(sources) > 200


def test_truncated_frames_are_cut_at_every_offset():
    lengths = [len(f) for f in of('truncated', 400)]
    first = lengths[:lengths.index(0, 1)]     # the first template's cuts
    assert first == list(range(len(first))) and len(first) >= 54
    full = fuzz._templates(random.Random(0), fuzz.FuzzTarget.parse(
        MAC, IP, PORT))[0]
    assert dpkt.ethernet.Ethernet(full).data.data.dport == PORT


def tcp_header(frame):
    return frame[34:]


def test_the_zero_length_tcp_option_is_there():
    """Kind 0x42 length 0 wedged os-ken's option parser; so does SACK 0."""
    options = [tcp_header(f)[20:] for f in of('bad-tcp-options', 200)]
    assert any(o.startswith(b'\x42\x00') for o in options)
    assert any(o.startswith(b'\x05\x00') for o in options)
    assert any(o.startswith(b'\x42\x01') for o in options)


def test_bad_data_offsets_are_there_and_checksums_still_right():
    offsets = set()
    for f in of('bad-tcp-options', 400):
        tcp = tcp_header(f)
        offsets.add(tcp[12] >> 4)
        pseudo = f[26:34] + bytes([0, 6]) + len(tcp).to_bytes(2, 'big')
        assert ones_complement_ok(pseudo + tcp)
        assert ones_complement_ok(f[14:34])
    assert {0, 1, 2, 3, 4} <= offsets           # under 5
    beyond = [f for f in of('bad-tcp-options', 400)
              if (tcp_header(f)[12] >> 4) * 4 > len(tcp_header(f))]
    assert {tcp_header(f)[12] >> 4 for f in beyond} >= {6, 15}


def test_bad_ipv4_headers():
    heads = [f[14:34] for f in of('bad-ipv4', 400)]
    assert {h[0] & 0x0f for h in heads} >= {0, 1, 2, 3, 4, 15}
    assert {h[0] >> 4 for h in heads} >= {4, 6, 0, 15}   # in an 0x0800
    lengths = {int.from_bytes(f[16:18], 'big') - (len(f) - 14)
               for f in of('bad-ipv4', 400)}
    assert 0 in lengths and any(d > 0 for d in lengths) and \
        any(d < 0 for d in lengths)
    assert not all(ones_complement_ok(h) for h in heads)
    assert all(f[12:14] == b'\x08\x00' for f in of('bad-ipv4', 400))


def test_fragments_to_the_service():
    fields = []
    for f in of('ipv4-fragments', 400):
        assert f[23] == 6 and f[30:34] == IP_RAW
        assert ones_complement_ok(f[14:34])
        frag = int.from_bytes(f[20:22], 'big')
        fields.append((bool(frag & frames_mod.MF), frag & 0x1fff))
    assert (True, 0) in fields                       # MF, first
    assert any(mf and off for mf, off in fields)     # MF, middle
    assert any(not mf and off for mf, off in fields)  # last
    assert (False, 0x1fff) in fields
    tiny = [f for f in of('ipv4-fragments', 8)
            if int.from_bytes(f[16:18], 'big') == 28]
    assert tiny and tiny[0][36:38] == PORT.to_bytes(2, 'big')


def test_odd_arp():
    arps = of('odd-arp', 600)
    assert all(f[12:14] == b'\x08\x06' for f in arps)
    bodies = [f[14:] for f in arps]
    assert set(range(28)) <= {len(b) for b in bodies}      # truncated
    full = [b for b in bodies if len(b) >= 8]
    assert {b[4] for b in full} >= {0, 1, 8, 255}          # hlen
    assert {b[5] for b in full} >= {0, 2, 16, 255}         # plen
    ops = {int.from_bytes(b[6:8], 'big') for b in full}
    assert {1, 2, 3} <= ops
    replies = [f for f in arps if f[20:22] == b'\x00\x02']
    assert any(f[:6] == MAC_RAW and f[38:42] == IP_RAW for f in replies)
    requests = [b for b in bodies if len(b) >= 28
                and b[:8] == bytes.fromhex('0001080006040001')]
    assert requests and all(b[24:28] == IP_RAW for b in requests)


def test_vlan_frames():
    kinds = collections.Counter()
    for f in of('vlan', 120):
        if f[12:14] == b'\x81\x00' and f[16:18] == b'\x08\x00':
            kinds['dot1q-ipv4'] += 1
            eth = dpkt.ethernet.Ethernet(f)
            assert eth.data.data.dport == PORT and eth.data.dst == IP_RAW
            assert checksums_ok(eth)
        elif f[12:14] == b'\x81\x00' and f[16:18] == b'\x08\x06':
            kinds['dot1q-arp'] += 1
            assert f[42:46] == IP_RAW
        elif f[12:14] == b'\x88\xa8' and f[16:18] == b'\x81\x00':
            kinds['qinq-' + f[20:22].hex()] += 1
        elif f[12:14] == b'\x81\x00' and f[16:18] == b'\x81\x00':
            kinds['dot1q-dot1q'] += 1
    assert set(kinds) == {'dot1q-ipv4', 'dot1q-arp', 'qinq-0800',
                          'qinq-0806', 'dot1q-dot1q'}
    vids = {int.from_bytes(f[14:16], 'big') & 0x0fff for f in of('vlan')}
    assert {0, 1, 4095} <= vids


def test_ipv6_syns():
    dsts = set()
    plain = 0
    for f in of('ipv6-tcp-syn', 200):
        assert f[12:14] == b'\x86\xdd' and f[14] >> 4 == 6
        dsts.add(f[38:54])
        if f[20] == 6:
            plain += 1
            tcp = dpkt.ethernet.Ethernet(f).data.data
            assert tcp.dport == PORT and tcp.flags == dpkt.tcp.TH_SYN
            pseudo = (f[22:54] + len(f[54:]).to_bytes(4, 'big')
                      + b'\0\0\0\x06')
            assert ones_complement_ok(pseudo + f[54:])
        else:
            assert f[20] == 0 and f[54] == 6        # hop-by-hop, then TCP
    assert plain > 100 and len(dsts) > 100
    assert bytes(10) + b'\xff\xff' + IP_RAW in dsts


def test_special_ports():
    seen = collections.Counter()
    for f in of('special-ports', 400):
        eth = dpkt.ethernet.Ethernet(f)
        tcp = eth.data.data
        assert checksums_ok(dpkt.ethernet.Ethernet(f))
        for port in fuzz.SPECIAL_PORTS:
            if tcp.dport == port:
                seen[('to', port)] += 1
            if tcp.sport == port and tcp.dport == PORT:
                seen[('from', port)] += 1
    assert set(seen) == {(d, p) for d in ('to', 'from')
                         for p in fuzz.SPECIAL_PORTS}
    payloads = [dpkt.ethernet.Ethernet(f).data.data.data
                for f in of('special-ports', 400)]
    assert any(p.startswith(b'\xff' * 16) for p in payloads)     # BGP-ish
    assert sum(1 for p in payloads if p) > 300


# -- SYN flood ----------------------------------------------------------------

def test_syn_flood_frames_are_valid_syns_from_random_sources():
    flood = list(itertools.islice(
        fuzz.syn_flood_frames(4, MAC, IP, PORT, '10.200.0.0/16'), 500))
    net = ipaddress.ip_network('10.200.0.0/16')
    sources = set()
    for f in flood:
        eth = dpkt.ethernet.Ethernet(f)
        ip, tcp = eth.data, eth.data.data
        assert eth.dst == MAC_RAW and eth.src[0] & 0x03 == 0x02
        assert ipaddress.ip_address(ip.src) in net
        assert ip.src not in (net.network_address.packed,
                              net.broadcast_address.packed)
        assert ip.dst == IP_RAW and tcp.dport == PORT and tcp.sport >= 1024
        assert tcp.flags == dpkt.tcp.TH_SYN
        assert ones_complement_ok(f[14:34])
        pseudo = f[26:34] + b'\0\x06' + len(f[34:]).to_bytes(2, 'big')
        assert ones_complement_ok(pseudo + f[34:])
        assert checksums_ok(eth)
        sources.add((eth.src, ip.src, tcp.sport))
    assert len(sources) == 500
    assert flood == list(itertools.islice(
        fuzz.syn_flood_frames(4, MAC, IP, PORT, '10.200.0.0/16'), 500))


def test_syn_flood_in_a_tiny_net():
    flood = itertools.islice(
        fuzz.syn_flood_frames(0, MAC, IP, PORT, '192.0.2.7/32'), 20)
    assert {dpkt.ethernet.Ethernet(f).data.src for f in flood} == {
        bytes([192, 0, 2, 7])}


# -- the send loop, with a socket that refuses like the kernel ----------------

class FakeSocket:
    def __init__(self, busy=0):
        self.sent = []
        self.busy = busy

    def send(self, frame):
        if len(frame) < 14:
            raise OSError(errno.EINVAL, 'Invalid argument')
        if self.busy:
            self.busy -= 1
            raise OSError(errno.ENOBUFS, 'No buffer space available')
        self.sent.append(frame)
        return len(frame)

    def close(self):
        pass


def test_short_frames_count_as_refused():
    sock = FakeSocket(busy=2)
    counts = agent._send_frames(sock, frames(1000))
    assert sum(c['frames'] for c in counts.values()) == 1000
    refused = counts['random-bytes']['refused'] + \
        counts['truncated']['refused']
    assert refused == sum(c['refused'] for c in counts.values()) > 0
    assert counts['random-bytes']['errors'] == {
        'EINVAL': counts['random-bytes']['refused']}
    assert len(sock.sent) == sum(c['sent'] for c in counts.values())
    assert len(sock.sent) + refused == 1000


def test_other_send_errors_propagate():
    class Gone:
        def send(self, frame):
            raise OSError(errno.ENETDOWN, 'Network is down')
    with pytest.raises(OSError):
        agent._send_frames(Gone(), frames(3))


def test_rate_paces_the_loop():
    t0 = time.monotonic()
    agent._send_frames(FakeSocket(), frames(50), rate=500)
    assert 0.08 < time.monotonic() - t0 < 1.0


def run_agent(monkeypatch, argv):
    sock = FakeSocket()
    monkeypatch.setattr(agent, '_raw_socket', lambda interface: sock)
    saved = {signum: signal.getsignal(signum)   # the agent sets them
             for signum in (signal.SIGTERM, signal.SIGINT)}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = agent.main(argv)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_fuzz_command_prints_a_line_per_category(monkeypatch):
    code, records = run_agent(monkeypatch, [
        'fuzz', '--interface', 'x', '--count', '1000', '--seed', '3',
        '--eth-dst', MAC, '--ip-dst', IP, '--tcp-dst', str(PORT)])
    assert code == 0
    assert [r['category'] for r in records[:-1]] == list(
        fuzz.FUZZ_CATEGORIES)
    assert records[-1]['event'] == 'done' and records[-1]['frames'] == 1000
    assert records[-1]['sent'] + records[-1]['refused'] == 1000


def test_syn_flood_command(monkeypatch):
    code, records = run_agent(monkeypatch, [
        'syn-flood', '--interface', 'x', '--rate', '200', '--duration',
        '0.2', '--eth-dst', MAC, '--ip-dst', IP, '--tcp-dst', str(PORT)])
    assert code == 0
    assert records[0]['event'] == 'flooding'
    assert records[-1]['event'] == 'done' and 20 < records[-1]['sent'] <= 45


# -- traffic.py wrappers ------------------------------------------------------

class FakeHost:
    name = 'h1'

    def __init__(self, monkeypatch=None, result=None):
        self.monkeypatch = monkeypatch
        self.result = result
        self.argv = None

    def defaultIntf(self):
        return 'h1-eth0'

    def pexec(self, argv):
        self.argv = argv
        if self.result is not None:
            return self.result
        code, records = run_agent(self.monkeypatch, argv[3:])
        return ''.join(json.dumps(r) + '\n' for r in records), '', code

    def popen(self, argv, **kwargs):
        self.argv = argv
        line = json.dumps({'event': 'flooding'})
        return subprocess.Popen(
            [sys.executable, '-c',
             f'import time; print({line!r}, flush=True); time.sleep(30)'],
            **kwargs)


def test_send_fuzz_returns_the_counts(monkeypatch):
    host = FakeHost(monkeypatch)
    counts = traffic.send_fuzz(host, IP, PORT, MAC, count=500, seed=2,
                               rate=100000)
    assert set(counts) == set(fuzz.FUZZ_CATEGORIES)
    assert counts['tcp-syn'] == 50 and counts.refused['tcp-syn'] == 0
    assert sum(counts.values()) + sum(counts.refused.values()) == 500
    assert counts.refused['random-bytes'] > 0
    assert counts.errors['random-bytes'] == {
        'EINVAL': counts.refused['random-bytes']}
    assert host.argv[3:5] == ['fuzz', '--interface']
    assert '--rate' in host.argv and 'h1-eth0' in host.argv


def test_send_fuzz_failure_is_one_line():
    host = FakeHost(result=('', 'Traceback\n  ...\nha_redirect.lab.agent '
                            'fuzz: [Errno 19] No such device\n', 1))
    with pytest.raises(scope_mod.LabError) as info:
        traffic.send_fuzz(host, IP, PORT, MAC, count=5, seed=0)
    assert str(info.value) == ('fuzz from h1: ha_redirect.lab.agent fuzz: '
                               '[Errno 19] No such device')
    host = FakeHost(result=('', '', -9))
    with pytest.raises(scope_mod.LabError, match='exit status -9'):
        traffic.send_fuzz(host, IP, PORT, MAC, count=5, seed=0)


def test_start_syn_flood_waits_for_the_agent(tmp_path):
    host = FakeHost()
    with scope_mod.RunScope(workdir=str(tmp_path)) as scope:
        flood = traffic.start_syn_flood(scope, host, IP, PORT, MAC,
                                        rate=1000, duration=5, seed=9)
        assert flood.records() == [{'event': 'flooding'}]
        argv = host.argv[3:]
        assert argv[0] == 'syn-flood'
        opts = dict(zip(argv[1::2], argv[2::2]))
        assert opts == {'--interface': 'h1-eth0', '--eth-dst': MAC,
                        '--ip-dst': IP, '--tcp-dst': str(PORT),
                        '--rate': '1000', '--duration': '5', '--seed': '9',
                        '--ip-src-net': '10.200.0.0/16'}
        assert flood.stop() is not None
