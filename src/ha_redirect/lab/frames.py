"""Ethernet, ARP, IPv4, IPv6 and TCP in wire form: build and parse frames.

Pure byte arithmetic, standard library only (the agent runs it inside
emulated hosts).  Addresses are bytes (`b'\\x0a\\x00\\x00\\x01'`), except
in `tcp_frame` and `parse_tcp_frame`, which speak text for the agent's
command line.  The builders take deliberately wrong values too (a bad
header length, a short data offset): the fuzzer relies on it.
"""

import socket
import struct

ETH_BROADCAST = b'\xff' * 6
ETH_ZERO = b'\x00' * 6
ETH_HLEN = 14
MAX_FRAME = 1514
TCP_SYN = 0x02
TCP_SYN_ACK = 0x12
TCP_PSH_ACK = 0x18
MSS_1460 = b'\x02\x04\x05\xb4'
# IPv4 flags, in the 16-bit flags/fragment-offset field.
MF = 0x2000
DF = 0x4000


def mac_bytes(mac):
    return bytes(int(b, 16) for b in mac.split(':'))


def mac_text(raw):
    return ':'.join(f'{b:02x}' for b in raw)


def checksum(data):
    """The Internet checksum (RFC 1071) of `data`.

    By big-integer arithmetic: 2**16 = 1 mod 0xffff, so the one's
    complement sum of the 16-bit words is the number mod 0xffff.
    """
    if len(data) % 2:
        data += b'\0'
    value = int.from_bytes(data, 'big')
    total = value % 0xffff
    if total == 0 and value:     # the end-around sum is 0xffff, not 0
        total = 0xffff
    return ~total & 0xffff


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
    return (head[:10] + struct.pack('!H', checksum(head)) + head[12:]
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
    csum = checksum(pseudo + seg)
    return seg[:16] + struct.pack('!H', csum) + seg[18:]


def ipv6_packet(src, dst, payload, next_header=6, hop_limit=64):
    return struct.pack('!IHBB16s16s', 6 << 28, len(payload), next_header,
                       hop_limit, src, dst) + payload


def arp_body(op, sha, spa, tha, tpa, htype=1, ptype=0x0800, hlen=6,
             plen=4):
    return (struct.pack('!HHBBH', htype, ptype, hlen, plen, op)
            + sha + spa + tha + tpa)


def tcp_ipv4_frame(eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, seq,
                   flags=TCP_SYN, options=b'', payload=b'', tags=()):
    """A valid Ethernet/IPv4/TCP frame (addresses in wire form).

    The IPv4 identification is the low 16 bits of `seq`, so each frame of
    a forged series is told apart in captures.
    """
    tcp = tcp_segment(ip_src, ip_dst, tcp_src, tcp_dst, seq, flags,
                      options=options, payload=payload)
    return (eth_header(eth_dst, eth_src, 0x0800, tags)
            + ipv4_packet(ip_src, ip_dst, tcp, ident=seq))


def syn_frame(eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, seq,
              options=MSS_1460, tags=()):
    """A valid Ethernet/IPv4/TCP SYN (addresses in wire form)."""
    return tcp_ipv4_frame(eth_src, eth_dst, ip_src, ip_dst, tcp_src,
                          tcp_dst, seq, options=options, tags=tags)


def tcp_frame(eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, seq=0,
              flags=TCP_SYN_ACK, payload=b''):
    """An Ethernet/IPv4/TCP frame with correct checksums (text addresses)."""
    return tcp_ipv4_frame(mac_bytes(eth_src), mac_bytes(eth_dst),
                          socket.inet_aton(ip_src), socket.inet_aton(ip_dst),
                          tcp_src, tcp_dst, seq, flags, payload=payload)


def parse_tcp_frame(frame):
    """(eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, seq) or None."""
    if len(frame) < 54 or frame[12:14] != b'\x08\x00' or frame[23] != 6:
        return None
    ihl = (frame[14] & 0x0f) * 4
    tcp_src, tcp_dst, seq = struct.unpack('!HHI',
                                          frame[14 + ihl:14 + ihl + 8])
    return (mac_text(frame[6:12]), mac_text(frame[0:6]),
            socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34]),
            tcp_src, tcp_dst, seq)
