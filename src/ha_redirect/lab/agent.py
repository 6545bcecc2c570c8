"""Small programs the testbed runs inside emulated hosts.

    python -m ha_redirect.lab.agent serve --name primary --port 5001
    python -m ha_redirect.lab.agent probe --target 10.0.0.1:5001
    python -m ha_redirect.lab.agent hold --target 10.0.0.1:5001
    python -m ha_redirect.lab.agent sniff --interface c2_ab12-eth0
    python -m ha_redirect.lab.agent send-raw --interface ... (see --help)
    python -m ha_redirect.lab.agent fuzz --interface ... --count 100000
    python -m ha_redirect.lab.agent syn-flood --interface ... --rate 1000

Each prints JSON lines on stdout, timestamps from time.monotonic()
(CLOCK_MONOTONIC is shared by all network namespaces, so times from
different hosts compare directly).  Standard library only.
"""

import argparse
import errno
import ipaddress
import itertools
import json
import math
import random
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import typing


def emit(**record):
    sys.stdout.write(json.dumps(record, sort_keys=True) + '\n')
    sys.stdout.flush()


def _target(text):
    host, _, port = text.rpartition(':')
    return host, int(port)


# -- serve: a server that says who it is -------------------------------------

class _IdentityHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        try:
            sock.sendall(self.server.identity)
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                sock.sendall(data)
        except OSError:
            return


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def serve(args):
    servers = []
    for port in args.port:
        server = _Server(('0.0.0.0', port), _IdentityHandler)
        server.identity = (args.name + '\n').encode()
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    emit(event='listening', name=args.name, ports=args.port,
         t=time.monotonic())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    return 0


# -- probe: a new connection every few milliseconds ---------------------------

class _Attempt:
    def __init__(self, target, timeout):
        self.t = time.monotonic()
        self.deadline = self.t + timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.connected = None
        self.buf = b''
        self.peer = None
        err = self.sock.connect_ex(target)
        if err not in (0, 115):  # EINPROGRESS
            raise OSError(err, 'connect failed')

    def record(self, ok, who=None, error=None):
        emit(t=self.t, t_connected=self.connected, t_done=time.monotonic(),
             ok=ok, who=who, error=error, peer=self.peer)
        self.sock.close()


def probe(args):
    target = _target(args.target)
    interval = args.interval_ms / 1000.0
    timeout = args.timeout_ms / 1000.0
    end = time.monotonic() + args.duration if args.duration else None
    sel = selectors.DefaultSelector()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    emit(event='probing', target=args.target, interval_ms=args.interval_ms,
         t=time.monotonic())
    next_at = time.monotonic()
    pending = {}     # oldest first, so the first deadline is the nearest
    started = 0
    while not stop.is_set() or pending:
        now = time.monotonic()
        if not stop.is_set() and end is not None and now >= end:
            stop.set()
        if not stop.is_set() and now >= next_at:
            next_at += interval
            if next_at < now:  # we fell behind: do not burst to catch up
                next_at = now + interval
            started += 1
            if args.count and started >= args.count:
                stop.set()
            try:
                a = _Attempt(target, timeout)
            except OSError as exc:
                emit(t=now, t_connected=None, t_done=now, ok=False,
                     who=None, error=str(exc), peer=None)
            else:
                pending[a] = None
                sel.register(a.sock, selectors.EVENT_WRITE, a)
        now = time.monotonic()
        oldest = next(iter(pending), None)
        wait = max(0.0, min([next_at - now, 0.05] + (
            [oldest.deadline - now] if oldest else [])))
        for key, _ in _select(sel, wait):
            a = key.data
            if a.connected is None:
                err = a.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sel.unregister(a.sock)
                    del pending[a]
                    a.record(False, error=errno.errorcode.get(err, str(err)))
                    continue
                a.connected = time.monotonic()
                a.peer = a.sock.getpeername()[0]
                sel.modify(a.sock, selectors.EVENT_READ, a)
                continue
            try:
                data = a.sock.recv(256)
            except OSError as exc:
                sel.unregister(a.sock)
                del pending[a]
                a.record(False, error=type(exc).__name__)
                continue
            a.buf += data
            if b'\n' in a.buf or not data:
                sel.unregister(a.sock)
                del pending[a]
                if b'\n' in a.buf:
                    a.record(True, who=a.buf.split(b'\n')[0].decode())
                else:
                    a.record(False, error='closed before identity')
        now = time.monotonic()
        flush = stop.is_set() and not args.drain
        for a in list(pending):
            if a.deadline > now and not flush:
                break            # every later one was started later
            sel.unregister(a.sock)
            del pending[a]
            a.record(False, error='timeout' if a.deadline <= now
                     else 'stopped')
    return 0


def _select(sel, wait):
    """`sel.select(wait)` without oversleeping a sub-millisecond wait.

    epoll counts whole milliseconds and rounds up, so a 1 ms prober that
    waits 0.9 ms sleeps 1 ms or more every time, falls behind and skips
    attempts.  Wait whole milliseconds in epoll, and the rest in short
    sleeps between polls, so answers are still noticed within 0.2 ms.
    """
    if wait >= 0.001:
        return sel.select(math.floor(wait * 1000) / 1000)
    ready = sel.select(0)
    if not ready and wait > 0:
        time.sleep(min(wait, 0.0002))
    return ready


# -- hold: one long-lived connection that keeps talking -----------------------

def hold(args):
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sock = socket.create_connection(_target(args.target), timeout=5)
    sock.settimeout(args.reply_timeout_ms / 1000.0)
    reader = sock.makefile('rb')
    who = reader.readline().decode().strip()
    emit(event='connected', who=who, peer=sock.getpeername()[0],
         t=time.monotonic())
    seq = 0
    while not stop.is_set():
        seq += 1
        line = f'ping {seq}\n'.encode()
        try:
            sock.sendall(line)
            reply = reader.readline()
        except OSError as exc:
            emit(event='error', seq=seq, error=f'{type(exc).__name__}: {exc}',
                 t=time.monotonic())
            return 1
        if reply != line:
            emit(event='error', seq=seq, error=f'bad reply {reply!r}',
                 t=time.monotonic())
            return 1
        emit(event='echo', seq=seq, t=time.monotonic())
        stop.wait(args.interval_ms / 1000.0)
    sock.close()
    emit(event='closed', seq=seq, t=time.monotonic())
    return 0


# -- raw frames: forge and capture --------------------------------------------

ETH_P_ALL = 0x0003


def _mac_bytes(mac):
    return bytes(int(b, 16) for b in mac.split(':'))


def _mac_text(raw):
    return ':'.join(f'{b:02x}' for b in raw)


def _checksum(data):
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack(f'!{len(data) // 2}H', data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff


def _fast_checksum(data):
    """`_checksum`, by big-integer arithmetic (2**16 = 1 mod 0xffff)."""
    if len(data) % 2:
        data += b'\0'
    value = int.from_bytes(data, 'big')
    total = value % 0xffff
    if total == 0 and value:     # the end-around sum is 0xffff, not 0
        total = 0xffff
    return ~total & 0xffff


def tcp_frame(eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, seq=0,
              flags=0x12, payload=b''):
    """An Ethernet/IPv4/TCP frame with correct checksums."""
    src, dst = socket.inet_aton(ip_src), socket.inet_aton(ip_dst)
    tcp = struct.pack('!HHIIBBHHH', tcp_src, tcp_dst, seq, 0, 5 << 4, flags,
                      65535, 0, 0) + payload
    pseudo = src + dst + struct.pack('!BBH', 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), seq & 0xffff,
                     0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', _checksum(ip)) + ip[12:]
    return _mac_bytes(eth_dst) + _mac_bytes(eth_src) + b'\x08\x00' + ip + tcp


def parse_tcp_frame(frame):
    """(eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, seq) or None."""
    if len(frame) < 54 or frame[12:14] != b'\x08\x00' or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0f) * 4
    tcp_src, tcp_dst, seq = struct.unpack('!HHI',
                                          frame[14 + ihl:14 + ihl + 8])
    return (_mac_text(frame[6:12]), _mac_text(frame[0:6]),
            socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]),
            tcp_src, tcp_dst, seq)


def send_raw(args):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.interface, 0))
    for i in range(args.count):
        frame = tcp_frame(args.eth_src, args.eth_dst, args.ip_src,
                          args.ip_dst, args.tcp_src, args.tcp_dst,
                          seq=args.seq + i)
        sock.send(frame)
        emit(event='sent', seq=args.seq + i, t=time.monotonic())
        time.sleep(args.gap_ms / 1000.0)
    return 0


def sniff(args):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                         socket.htons(ETH_P_ALL))
    sock.bind((args.interface, 0))
    sock.settimeout(0.2)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    emit(event='sniffing', interface=args.interface, t=time.monotonic())
    end = time.monotonic() + args.duration if args.duration else None
    while not stop.is_set() and (end is None or time.monotonic() < end):
        try:
            frame, addr = sock.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        fields = parse_tcp_frame(frame)
        if fields is None or (args.tcp_dst and fields[5] != args.tcp_dst):
            continue
        emit(event='frame', eth_src=fields[0], eth_dst=fields[1],
             ip_src=fields[2], ip_dst=fields[3], tcp_src=fields[4],
             tcp_dst=fields[5], seq=fields[6], t=time.monotonic())
    return 0


# -- fuzz and syn-flood: hostile frames ---------------------------------------
#
# Frame building is pure: generators of bytes driven by a random.Random, so
# the unit tests can check the frames without root or namespaces.  Only
# `_send_frames` touches a socket.

FUZZ_CATEGORIES = (
    'random-bytes',       # random bytes, 0..1514 long (some under 14)
    'tcp-syn',            # valid SYNs from odd source MACs, IPs and ports
    'truncated',          # valid frames cut at every offset
    'bad-tcp-options',    # zero/short/overlong options, bad data offsets
    'bad-ipv4',           # bad ihl, total length, version, checksum
    'ipv4-fragments',     # MF set, nonzero offsets, tiny and overlapping
    'odd-arp',            # truncated, wrong hlen/plen, opcode 3, replies
    'vlan',               # 802.1Q and QinQ (0x88a8) SYNs and ARP
    'ipv6-tcp-syn',       # 0x86dd SYNs to random addresses
    'special-ports',      # TCP to 179/2600/6633/6653, random payloads
)

ETH_BROADCAST = b'\xff' * 6
ETH_ZERO = b'\x00' * 6
TCP_SYN = 0x02
TCP_PSH_ACK = 0x18
MSS_1460 = b'\x02\x04\x05\xb4'
MAX_FRAME = 1514
ETH_HLEN = 14

# Ports os-ken decodes TCP payloads for: BGP, zebra, OpenFlow (two ports).
SPECIAL_PORTS = (179, 2600, 6633, 6653)

_ODD_MACS = (ETH_BROADCAST, ETH_ZERO, b'\x01\x00\x5e\x00\x00\x01',
             b'\x33\x33\x00\x00\x00\x01', b'\x01\x80\xc2\x00\x00\x00')
_ODD_IPS = (b'\x00\x00\x00\x00', b'\xff\xff\xff\xff', b'\x7f\x00\x00\x01',
            b'\xe0\x00\x00\x01', b'\xa9\xfe\x00\x01')
_ETHERTYPES = (0x0800, 0x0806, 0x86dd, 0x8100, 0x88a8, 0x88cc, 0x8847,
               0x8863, 0x0000, 0x05dc, 0xffff)


class FuzzTarget(typing.NamedTuple):
    """The service the frames are aimed at, in wire form."""

    mac: bytes
    ip: bytes
    port: int

    @classmethod
    def parse(cls, mac, ip, port):
        return cls(_mac_bytes(mac), socket.inet_aton(ip), int(port))


def eth_header(dst, src, ethertype, tags=()):
    """Ethernet header; `tags` are (tpid, tci) pairs, outermost first."""
    head = dst + src
    for tpid, tci in tags:
        head += struct.pack('!HH', tpid, tci)
    return head + struct.pack('!H', ethertype)


def ipv4_packet(src, dst, payload, proto=6, ident=0, frag=0, ttl=64,
                ihl=None, version=4, total_length=None, options=b''):
    """IPv4 header + payload; the header checksum covers the bytes built.

    `frag` is the 16-bit flags/fragment-offset field; `ihl`, `version` and
    `total_length` override the correct values.
    """
    hl = 5 + len(options) // 4 if ihl is None else ihl
    tl = 20 + len(options) + len(payload) if total_length is None \
        else total_length
    head = struct.pack('!BBHHHBBH4s4s', (version & 0xf) << 4 | (hl & 0xf),
                       0, tl & 0xffff, ident & 0xffff, frag & 0xffff, ttl,
                       proto, 0, src, dst) + options
    return (head[:10] + struct.pack('!H', _fast_checksum(head)) + head[12:]
            + payload)


def tcp_segment(src, dst, sport, dport, seq, flags=TCP_SYN, options=b'',
                payload=b'', offset=None, ack=0, window=65535):
    """A TCP segment with the checksum for IPv4 or IPv6 `src`/`dst`.

    Options are padded to 32 bits with zeros; `offset` (in words)
    overrides the data offset the header declares.
    """
    options += b'\0' * (-len(options) % 4)
    off = 5 + len(options) // 4 if offset is None else offset
    seg = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xffffffff,
                      ack & 0xffffffff, (off & 0xf) << 4, flags, window, 0,
                      0) + options + payload
    if len(src) == 4:
        pseudo = src + dst + struct.pack('!BBH', 0, 6, len(seg))
    else:
        pseudo = src + dst + struct.pack('!IxxxB', len(seg), 6)
    csum = _fast_checksum(pseudo + seg)
    return seg[:16] + struct.pack('!H', csum) + seg[18:]


def ipv6_packet(src, dst, payload, next_header=6, hop_limit=64):
    return struct.pack('!IHBB16s16s', 6 << 28, len(payload), next_header,
                       hop_limit, src, dst) + payload


def arp_body(op, sha, spa, tha, tpa, htype=1, ptype=0x0800, hlen=6,
             plen=4):
    return (struct.pack('!HHBBH', htype, ptype, hlen, plen, op)
            + sha + spa + tha + tpa)


def syn_frame(eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, seq,
              options=MSS_1460, tags=()):
    """A valid Ethernet/IPv4/TCP SYN (addresses in wire form)."""
    tcp = tcp_segment(ip_src, ip_dst, tcp_src, tcp_dst, seq,
                      options=options)
    return (eth_header(eth_dst, eth_src, 0x0800, tags)
            + ipv4_packet(ip_src, ip_dst, tcp, ident=seq))


def _rbytes(rng, n):
    return rng.getrandbits(8 * n).to_bytes(n, 'big') if n else b''


def _local_mac(rng):
    """A random locally administered unicast MAC."""
    raw = _rbytes(rng, 6)
    return bytes([raw[0] & 0xfc | 0x02]) + raw[1:]


def _odd_mac(rng, k):
    """Every fourth one broadcast, all-zero or multicast, in turn."""
    if k % 4 == 0:
        return _ODD_MACS[k // 4 % len(_ODD_MACS)]
    return _local_mac(rng) if k % 2 else _rbytes(rng, 6)


def _odd_ip(rng, k):
    if k % 4 == 0:
        return _ODD_IPS[k // 4 % len(_ODD_IPS)]
    return _rbytes(rng, 4)


def _odd_port(rng, k):
    return (0, 1, 65535)[k // 8 % 3] if k % 8 == 0 else rng.randrange(65536)


def _seq(rng):
    return rng.getrandbits(32)


def _fuzz_random_bytes(rng, t):
    for k in itertools.count():
        n = k // 8 % ETH_HLEN if k % 8 == 0 else rng.randint(ETH_HLEN,
                                                             MAX_FRAME)
        data = bytearray(_rbytes(rng, n))
        kind = k % 4               # 0: pure noise; 1-3: more and more aimed
        if kind >= 1 and n >= 6:
            data[0:6] = t.mac
        if kind >= 2 and n >= ETH_HLEN:
            data[12:14] = struct.pack('!H', rng.choice(_ETHERTYPES))
        if kind == 3 and n >= 54:  # IPv4/TCP to the service, noise inside
            data[12:14] = b'\x08\x00'
            data[14] = 0x45
            data[23] = 6
            data[30:34] = t.ip
            data[36:38] = struct.pack('!H', t.port)
        yield bytes(data)


def _fuzz_tcp_syn(rng, t):
    for k in itertools.count():
        dst = ETH_BROADCAST if k % 16 == 15 else t.mac
        yield syn_frame(_odd_mac(rng, k), dst, _odd_ip(rng, k // 2), t.ip,
                        _odd_port(rng, k // 3), t.port, _seq(rng),
                        options=MSS_1460 if k % 2 else b'')


def _templates(rng, t):
    """Valid frames for `truncated` to cut."""
    mac, ip, port, seq = _local_mac(rng), _rbytes(rng, 4), \
        rng.randrange(1024, 65536), _seq(rng)
    full_options = (MSS_1460 + b'\x04\x02\x08\x0a' + _rbytes(rng, 4)
                    + b'\0\0\0\0\x01\x03\x03\x07')
    ip6 = b'\x20\x01\x0d\xb8' + _rbytes(rng, 12)
    ip6_dst = b'\x20\x01\x0d\xb8' + _rbytes(rng, 12)
    return (
        syn_frame(mac, t.mac, ip, t.ip, port, t.port, seq,
                  options=full_options),
        eth_header(ETH_BROADCAST, mac, 0x0806)
        + arp_body(1, mac, ip, ETH_ZERO, t.ip),
        eth_header(t.mac, mac, 0x86dd)
        + ipv6_packet(ip6, ip6_dst, tcp_segment(ip6, ip6_dst, port, t.port,
                                                seq, options=MSS_1460)),
        syn_frame(mac, t.mac, ip, t.ip, port, t.port, seq,
                  tags=((0x8100, rng.randrange(1, 4095)),)),
        eth_header(t.mac, mac, 0x0800) + ipv4_packet(
            ip, t.ip, tcp_segment(ip, t.ip, port, 6653, seq, TCP_PSH_ACK,
                                  payload=b'\x04\x00\x00\x08' + _rbytes(
                                      rng, 4)), ident=seq),
    )


def _fuzz_truncated(rng, t):
    while True:
        for frame in _templates(rng, t):
            for cut in range(len(frame)):
                yield frame[:cut]


# (options, data offset or None for the right one): each went wrong
# somewhere.  os-ken's option parser advanced by the option's length byte,
# so a length 0 (unknown kind, or SACK) looped forever.
BAD_TCP_OPTIONS = (
    (b'\x42\x00', None),            # unknown kind, length 0
    (b'\x42\x01', None),            # length 1: shorter than kind + length
    (b'\x05\x00', None),            # SACK, length 0
    (b'\x05\x01', None),            # SACK, length 1
    (b'\x05\x03\x00', None),        # SACK with a partial block
    (b'\x02\x00', None),            # MSS, lengths 0, 1, 3
    (b'\x02\x01', None),
    (b'\x02\x03\x05', None),
    (b'\x03\x02', None),            # window scale, length 2
    (b'\x08\x0a\x00\x00', None),    # timestamps running past the header
    (b'\x42\x28', None),            # length 40: beyond the header
    (b'\x42\xff', None),            # length 255
    (b'\x01\x01\x01\x42', None),    # a kind with no length byte
    (b'\x01\x01\x01\x02', None),    # MSS kind with no length byte
    (b'\x01' * 40, None),           # 40 NOPs
    (b'\x00' * 40, None),           # 40 end-of-lists
    (b'', 0), (b'', 1), (b'', 2), (b'', 3), (b'', 4),  # data offset < 5
    (b'', 6), (b'', 15),            # data offset beyond the frame
    (MSS_1460, 15),
)


def _fuzz_bad_tcp_options(rng, t):
    for k in itertools.count():
        if k % 4 == 3:             # random option bytes
            options, offset = _rbytes(rng, 4 * rng.randint(1, 10)), None
        else:
            options, offset = BAD_TCP_OPTIONS[
                (k - k // 4) % len(BAD_TCP_OPTIONS)]
        src, ip = _local_mac(rng), _rbytes(rng, 4)
        tcp = tcp_segment(ip, t.ip, rng.randrange(1024, 65536), t.port,
                          _seq(rng), options=options, offset=offset)
        yield eth_header(t.mac, src, 0x0800) + ipv4_packet(ip, t.ip, tcp)


# Overrides of ipv4_packet's arguments; a callable total_length is given
# the right one.  'bad_checksum' flips the header checksum.
BAD_IPV4 = (
    dict(ihl=0), dict(ihl=1), dict(ihl=2), dict(ihl=3), dict(ihl=4),
    dict(ihl=15),                              # options beyond the header
    dict(ihl=15, options=b'\x01' * 40),        # 40 bytes of NOP options
    dict(options=b'\x44\x00\x00\x00'),         # timestamp option, length 0
    dict(options=b'\x07\xff\x00\x00'),         # record route, length 255
    dict(options=b'\x83\x02\x00\x00'),         # loose source route, short
    dict(total_length=0), dict(total_length=19), dict(total_length=20),
    dict(total_length=30),                     # cuts the TCP header
    dict(total_length=65535),
    dict(total_length=lambda n: n + 100),
    dict(total_length=lambda n: n - 1),
    dict(version=6), dict(version=0), dict(version=15),
    dict(bad_checksum=True), dict(ttl=0),
    dict(proto=0), dict(proto=1), dict(proto=17), dict(proto=47),
    dict(proto=58), dict(proto=255),
)


def _fuzz_bad_ipv4(rng, t):
    for k in itertools.count():
        bad = dict(BAD_IPV4[k % len(BAD_IPV4)])
        flip = bad.pop('bad_checksum', False)
        src, ip = _local_mac(rng), _rbytes(rng, 4)
        if bad.get('proto', 6) == 6:
            payload = tcp_segment(ip, t.ip, rng.randrange(1024, 65536),
                                  t.port, _seq(rng))
        else:
            payload = _rbytes(rng, rng.randint(0, 40))
        if callable(bad.get('total_length')):
            bad['total_length'] = bad['total_length'](
                20 + len(bad.get('options', b'')) + len(payload))
        pkt = ipv4_packet(ip, t.ip, payload, ident=k, **bad)
        if flip:
            pkt = pkt[:10] + bytes([pkt[10] ^ 0xff, pkt[11] ^ 0xff]) \
                + pkt[12:]
        yield eth_header(t.mac, src, 0x0800) + pkt


MF = 0x2000
DF = 0x4000


def _fuzz_ipv4_fragments(rng, t):
    for k in itertools.count():
        src, ip = _local_mac(rng), _rbytes(rng, 4)
        payload = _rbytes(rng, 8 * rng.randint(0, 4))
        tcp = tcp_segment(ip, t.ip, rng.randrange(1024, 65536), t.port,
                          _seq(rng), options=MSS_1460, payload=payload)
        ident = rng.randrange(65536)
        variant = k % 8
        if variant == 0:     # tiny first fragment: the ports, no flags
            frags = [(MF, tcp[:8])]
        elif variant == 1:   # first fragment, whole TCP header
            frags = [(MF, tcp[:24])]
        elif variant == 2:   # the rest, at offset 8 bytes
            frags = [(1, tcp[8:])]
        elif variant == 3:   # a middle fragment of noise
            frags = [(MF | rng.randint(1, 0x1ffe), _rbytes(rng, 16))]
        elif variant == 4:   # at the largest offset: past 65535 bytes
            frags = [(0x1fff, tcp)]
        elif variant == 5:   # DF and MF together
            frags = [(DF | MF, tcp)]
        elif variant == 6:   # a TCP header to the service, not at offset 0
            frags = [(MF | rng.randint(1, 0x1fff), tcp)]
        else:                # empty, more fragments
            frags = [(MF | rng.randint(0, 0x1fff), b'')]
        for frag, data in frags:
            yield eth_header(t.mac, src, 0x0800) + ipv4_packet(
                ip, t.ip, data, ident=ident, frag=frag)


def _fuzz_odd_arp(rng, t):
    for k in itertools.count():
        mac, ip = _local_mac(rng), _rbytes(rng, 4)
        dst = ETH_BROADCAST if k % 2 else t.mac
        request = arp_body(1, mac, ip, ETH_ZERO, t.ip)
        variant = k % 10
        if variant == 0:     # request cut short, each length in turn
            body = request[:k // 10 % len(request)]
        elif variant == 1:   # wrong hlen, standard layout
            body = arp_body(1, mac, ip, ETH_ZERO, t.ip,
                            hlen=(0, 1, 8, 255)[k // 10 % 4])
        elif variant == 2:   # wrong plen, standard layout
            body = arp_body(1, mac, ip, ETH_ZERO, t.ip,
                            plen=(0, 2, 16, 255)[k // 10 % 4])
        elif variant == 3:   # hlen 8, plen 16, laid out to match
            body = arp_body(1, mac + b'\0\0', ip + bytes(12), bytes(8),
                            t.ip + bytes(12), hlen=8, plen=16)
        elif variant == 4:   # opcodes 3 (RARP request) and beyond
            body = arp_body((3, 4, 0, 9, 0xffff)[k // 10 % 5], mac, ip,
                            ETH_ZERO, t.ip)
        elif variant == 5:   # unsolicited reply to the service
            dst = t.mac
            body = arp_body(2, mac, ip, t.mac, t.ip)
        elif variant == 6:   # wrong hardware / protocol type
            body = arp_body(1, mac, ip, ETH_ZERO, t.ip,
                            htype=(0, 6, 0xffff)[k // 10 % 3],
                            ptype=(0x86dd, 0x0806, 0)[k // 10 % 3])
        elif variant == 7:   # ARP probe (sender IP 0.0.0.0) whose sender
            body = arp_body(1, mac, bytes(4), ETH_ZERO, t.ip)
            mac = _local_mac(rng)   # MAC is not the Ethernet source
        elif variant == 8:   # a request with a long tail of noise
            body = request + _rbytes(rng, rng.randint(1, 1000))
        else:                # reply with a broadcast / zero sender MAC
            body = arp_body(2, (ETH_BROADCAST, ETH_ZERO)[k // 10 % 2], ip,
                            t.mac, t.ip)
        yield eth_header(dst, mac, 0x0806) + body


def _fuzz_vlan(rng, t):
    for k in itertools.count():
        mac, ip = _local_mac(rng), _rbytes(rng, 4)
        if k % 3 == 0:      # VLAN 0 (priority tag), 1 and 4095 in turn
            tci = rng.randrange(8) << 13 | (0, 1, 4095)[k // 6 % 3]
        else:
            tci = rng.randrange(65536)
        inner = rng.randrange(65536)
        tags = (
            ((0x8100, tci),),                   # 802.1Q
            ((0x8100, tci),),
            ((0x88a8, tci), (0x8100, inner)),   # QinQ
            ((0x88a8, tci), (0x8100, inner)),
            ((0x8100, tci), (0x8100, inner)),   # 802.1Q twice
            ((0x8100, tci | 0x1000),),          # DEI set
        )[k % 6]
        if k % 6 in (1, 3):
            yield eth_header(ETH_BROADCAST, mac, 0x0806, tags) + arp_body(
                1, mac, ip, ETH_ZERO, t.ip)
        else:
            yield syn_frame(mac, t.mac, ip, t.ip, rng.randrange(1024, 65536),
                            t.port, _seq(rng), tags=tags)


def _fuzz_ipv6_tcp_syn(rng, t):
    for k in itertools.count():
        mac, src = _local_mac(rng), _rbytes(rng, 16)
        dst = (_rbytes(rng, 16), _rbytes(rng, 16), _rbytes(rng, 16),
               b'\xfe\x80' + bytes(6) + _rbytes(rng, 8),
               b'\xff\x02' + bytes(13) + b'\x01',
               bytes(10) + b'\xff\xff' + t.ip,       # IPv4-mapped service
               bytes(15) + b'\x01')[k % 7]
        tcp = tcp_segment(src, dst, rng.randrange(1024, 65536), t.port,
                          _seq(rng), options=MSS_1460)
        if k % 5 == 4:      # behind a hop-by-hop header, 8 bytes or "2048"
            ext = b'\x06' + (b'\x00', b'\xff')[k // 5 % 2] + b'\x01\x04' \
                + bytes(4)
            pkt = ipv6_packet(src, dst, ext + tcp, next_header=0)
        else:
            pkt = ipv6_packet(src, dst, tcp)
        yield eth_header(t.mac, mac, 0x86dd) + pkt


def _special_payload(rng, port, k):
    n = rng.randint(0, 1400)
    look = k % 3
    if look == 0:
        return _rbytes(rng, n)
    if port == 179:                 # BGP: marker, length, type
        return (b'\xff' * 16 + struct.pack(
            '!HB', rng.choice((0, 19, 29, 4096, 65535, 19 + n)),
            rng.randrange(256)) + _rbytes(rng, n))
    if port == 2600:                # zebra: length, marker, version, cmd
        return struct.pack('!HBBH', rng.choice((0, 6, 8, 65535, 8 + n)),
                           0xff, rng.randrange(256),
                           rng.randrange(65536)) + _rbytes(rng, n)
    # OpenFlow: version, type, length, xid
    return struct.pack('!BBHI', rng.choice((1, 4, 5, 6, 0, 0xff)),
                       rng.randrange(256),
                       rng.choice((0, 7, 8, 65535, 8 + n)),
                       rng.getrandbits(32)) + _rbytes(rng, n)


def _fuzz_special_ports(rng, t):
    for k in itertools.count():
        port = SPECIAL_PORTS[k % len(SPECIAL_PORTS)]
        mac, ip = _local_mac(rng), _rbytes(rng, 4)
        ephemeral = rng.randrange(1024, 65536)
        # To the special port, or from it to the service (which its flows
        # send to the controller).
        sport, dport = (ephemeral, port) if k // 4 % 2 == 0 \
            else (port, t.port)
        flags = TCP_SYN if k % 5 == 0 else TCP_PSH_ACK
        tcp = tcp_segment(ip, t.ip, sport, dport, _seq(rng), flags,
                          payload=_special_payload(rng, port, k // 8),
                          ack=_seq(rng))
        yield eth_header(t.mac, mac, 0x0800) + ipv4_packet(ip, t.ip, tcp)


_FUZZERS = {
    'random-bytes': _fuzz_random_bytes,
    'tcp-syn': _fuzz_tcp_syn,
    'truncated': _fuzz_truncated,
    'bad-tcp-options': _fuzz_bad_tcp_options,
    'bad-ipv4': _fuzz_bad_ipv4,
    'ipv4-fragments': _fuzz_ipv4_fragments,
    'odd-arp': _fuzz_odd_arp,
    'vlan': _fuzz_vlan,
    'ipv6-tcp-syn': _fuzz_ipv6_tcp_syn,
    'special-ports': _fuzz_special_ports,
}


def fuzz_frames(seed, eth_dst, ip_dst, tcp_dst, categories=None):
    """Endless (category, frame) pairs, cycling through the categories.

    Deterministic from `seed`; each category has its own random stream,
    so its frames do not depend on which other categories are chosen.
    """
    target = FuzzTarget.parse(eth_dst, ip_dst, tcp_dst)
    names = tuple(categories or FUZZ_CATEGORIES)
    streams = [(name, _FUZZERS[name](random.Random(f'{seed}/{name}'),
                                     target)) for name in names]
    for name, stream in itertools.cycle(streams):
        yield name, next(stream)


def _random_host(rng, network):
    first, size = int(network.network_address), network.num_addresses
    if size > 2:                 # not the network or broadcast address
        return (first + rng.randrange(1, size - 1)).to_bytes(4, 'big')
    return (first + rng.randrange(size)).to_bytes(4, 'big')


def syn_flood_frames(seed, eth_dst, ip_dst, tcp_dst,
                     ip_src_net='10.200.0.0/16'):
    """Endless valid SYNs from random sources in `ip_src_net`.

    Random locally administered unicast source MACs, random ports 1024 and
    up, random sequence numbers, an MSS option, correct checksums.
    """
    target = FuzzTarget.parse(eth_dst, ip_dst, tcp_dst)
    network = ipaddress.IPv4Network(ip_src_net, strict=False)
    rng = random.Random(f'{seed}/syn-flood')
    while True:
        yield syn_frame(_local_mac(rng), target.mac,
                        _random_host(rng, network), target.ip,
                        rng.randrange(1024, 65536), target.port, _seq(rng))


class _Pacer:
    """Hold a long-run average of `rate` frames per second (0: no limit).

    Waits under half a millisecond are not slept (sleep oversleeps them);
    the frames after go out back to back until the schedule is ahead
    again.  Far behind, it does not burst to catch up.
    """

    def __init__(self, rate, stop=None):
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()
        self.sleep = stop.wait if stop is not None else time.sleep

    def wait(self):
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_at - now > 0.0005:
            self.sleep(self.next_at - now)
        elif now - self.next_at > 0.1:
            self.next_at = now
        self.next_at += self.interval


# send() errors: the kernel refused this frame (under 14 bytes: EINVAL;
# over the MTU: EMSGSIZE), or its queue is full for now.
_REFUSED = (errno.EINVAL, errno.EMSGSIZE, errno.EOPNOTSUPP)
_BUSY = (errno.ENOBUFS, errno.EAGAIN)


def _send_frames(sock, frames, rate=0.0, stop=None, deadline=None):
    """Send (category, frame) pairs; per-category counts.

    Returns {category: {'frames': n, 'sent': n, 'refused': n,
    'errors': {errno name: n}}}; 'refused' counts the frames the kernel
    would not send.  Other OSErrors (the interface went away) propagate.
    """
    counts = {}
    pacer = _Pacer(rate, stop)
    for category, frame in frames:
        pacer.wait()
        if stop is not None and stop.is_set():
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        c = counts.get(category)
        if c is None:
            c = counts[category] = {'frames': 0, 'sent': 0, 'refused': 0,
                                    'errors': {}}
        c['frames'] += 1
        for attempt in range(1000):
            try:
                sock.send(frame)
            except OSError as exc:
                if exc.errno in _BUSY and attempt < 999:
                    time.sleep(0.001)
                    continue
                if exc.errno not in _REFUSED + _BUSY:
                    raise
                c['refused'] += 1
                name = errno.errorcode.get(exc.errno, str(exc.errno))
                c['errors'][name] = c['errors'].get(name, 0) + 1
            else:
                c['sent'] += 1
            break
    return counts


def _raw_socket(interface):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((interface, 0))
    return sock


def _stop_on_signals():
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def fuzz(args):
    stop = _stop_on_signals()
    sock = _raw_socket(args.interface)
    frames = itertools.islice(
        fuzz_frames(args.seed, args.eth_dst, args.ip_dst, args.tcp_dst,
                    args.category), args.count)
    t0 = time.monotonic()
    counts = _send_frames(sock, frames, args.rate, stop)
    seconds = time.monotonic() - t0
    sock.close()
    for category in args.category or FUZZ_CATEGORIES:
        emit(event='fuzz', category=category,
             **counts.get(category, {'frames': 0, 'sent': 0, 'refused': 0,
                                     'errors': {}}))
    total = sum(c['frames'] for c in counts.values())
    emit(event='done', frames=total,
         sent=sum(c['sent'] for c in counts.values()),
         refused=sum(c['refused'] for c in counts.values()),
         seconds=round(seconds, 6),
         rate=round(total / seconds, 1) if seconds else None,
         seed=args.seed, t=time.monotonic())
    return 0


def syn_flood(args):
    stop = _stop_on_signals()
    sock = _raw_socket(args.interface)
    emit(event='flooding', interface=args.interface, rate=args.rate,
         duration=args.duration, t=time.monotonic())
    t0 = time.monotonic()
    frames = (('syn', f) for f in syn_flood_frames(
        args.seed, args.eth_dst, args.ip_dst, args.tcp_dst,
        args.ip_src_net))
    counts = _send_frames(sock, frames, args.rate, stop,
                          t0 + args.duration if args.duration else None)
    seconds = time.monotonic() - t0
    sock.close()
    c = counts.get('syn', {'sent': 0, 'refused': 0, 'errors': {}})
    emit(event='done', sent=c['sent'], refused=c['refused'],
         errors=c['errors'], seconds=round(seconds, 6),
         rate=round(c['sent'] / seconds, 1) if seconds else None,
         t=time.monotonic())
    return 0


def _mac_arg(text):
    parts = text.split(':')
    if len(parts) != 6 or not all(
            len(p) == 2 and all(ch in '0123456789abcdefABCDEF' for ch in p)
            for p in parts):
        raise argparse.ArgumentTypeError(f'not a MAC address: {text!r}')
    return text


def _ipv4_arg(text):
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _net_arg(text):
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _port_arg(text):
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f'not a port: {text}')
    return port


def _add_target_args(p):
    p.add_argument('--interface', required=True)
    p.add_argument('--eth-dst', type=_mac_arg, required=True)
    p.add_argument('--ip-dst', type=_ipv4_arg, required=True)
    p.add_argument('--tcp-dst', type=_port_arg, required=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='ha_redirect.lab.agent')
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('serve', help='TCP server that sends its name, '
                       'then echoes')
    p.add_argument('--name', required=True)
    p.add_argument('--port', type=int, action='append', required=True)
    p.set_defaults(func=serve)
    p = sub.add_parser('probe', help='a new connection every interval')
    p.add_argument('--target', required=True, help='ip:port')
    p.add_argument('--interval-ms', type=float, default=5.0)
    p.add_argument('--timeout-ms', type=float, default=3000.0)
    p.add_argument('--duration', type=float, default=0,
                   help='seconds; 0 = until SIGTERM')
    p.add_argument('--count', type=int, default=0,
                   help='stop after this many attempts; 0 = no limit')
    p.add_argument('--drain', action='store_true',
                   help='on stop, let pending attempts finish')
    p.set_defaults(func=probe)
    p = sub.add_parser('hold', help='one long-lived echoing connection')
    p.add_argument('--target', required=True, help='ip:port')
    p.add_argument('--interval-ms', type=float, default=50.0)
    p.add_argument('--reply-timeout-ms', type=float, default=3000.0)
    p.set_defaults(func=hold)
    p = sub.add_parser('send-raw', help='forge Ethernet/IPv4/TCP frames')
    for name in ('interface', 'eth-src', 'eth-dst', 'ip-src', 'ip-dst'):
        p.add_argument('--' + name, required=True)
    p.add_argument('--tcp-src', type=int, required=True)
    p.add_argument('--tcp-dst', type=int, required=True)
    p.add_argument('--seq', type=int, default=1)
    p.add_argument('--count', type=int, default=3)
    p.add_argument('--gap-ms', type=float, default=20.0)
    p.set_defaults(func=send_raw)
    p = sub.add_parser('sniff', help='print TCP frames an interface receives')
    p.add_argument('--interface', required=True)
    p.add_argument('--tcp-dst', type=int, default=0)
    p.add_argument('--duration', type=float, default=0)
    p.set_defaults(func=sniff)
    p = sub.add_parser('fuzz', help='send malformed and hostile frames '
                       '(categories: ' + ', '.join(FUZZ_CATEGORIES) + ')')
    _add_target_args(p)
    p.add_argument('--count', type=int, required=True)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--rate', type=float, default=0.0,
                   help='frames per second; 0 = as fast as possible')
    p.add_argument('--category', action='append', choices=FUZZ_CATEGORIES,
                   help='only this category (repeatable); default all')
    p.set_defaults(func=fuzz)
    p = sub.add_parser('syn-flood', help='valid SYNs from random sources')
    _add_target_args(p)
    p.add_argument('--rate', type=float, required=True,
                   help='frames per second; 0 = as fast as possible')
    p.add_argument('--duration', type=float, required=True,
                   help='seconds; 0 = until SIGTERM')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--ip-src-net', type=_net_arg, default='10.200.0.0/16',
                   help='source addresses are random hosts of this net')
    p.set_defaults(func=syn_flood)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OSError as exc:
        print(f'ha_redirect.lab.agent {args.command}: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
