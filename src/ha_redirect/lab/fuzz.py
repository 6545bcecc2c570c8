"""Hostile frames for the fuzz and syn-flood agents, as pure generators.

Each generator yields bytes driven by a `random.Random`, so a seed
replays a run and the unit tests check the frames without root or
namespaces; the agent alone puts them on a socket.
"""

import ipaddress
import itertools
import random
import socket
import struct
import typing

from ha_redirect.lab.frames import arp_body
from ha_redirect.lab.frames import DF
from ha_redirect.lab.frames import ETH_BROADCAST
from ha_redirect.lab.frames import eth_header
from ha_redirect.lab.frames import ETH_HLEN
from ha_redirect.lab.frames import ETH_ZERO
from ha_redirect.lab.frames import ipv4_packet
from ha_redirect.lab.frames import ipv6_packet
from ha_redirect.lab.frames import mac_bytes
from ha_redirect.lab.frames import MAX_FRAME
from ha_redirect.lab.frames import MF
from ha_redirect.lab.frames import MSS_1460
from ha_redirect.lab.frames import syn_frame
from ha_redirect.lab.frames import TCP_PSH_ACK
from ha_redirect.lab.frames import tcp_segment
from ha_redirect.lab.frames import TCP_SYN

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
        return cls(mac_bytes(mac), socket.inet_aton(ip), int(port))


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
