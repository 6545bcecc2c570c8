"""TCP segments from pcap files (dpkt), on the monotonic clock."""

import dataclasses

import dpkt

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
PAYLOAD_PREFIX = 32


@dataclasses.dataclass(frozen=True)
class Segment:
    """One captured TCP segment (monotonic time)."""
    t: float
    src: str
    sport: int
    dst: str
    dport: int
    flags: int
    seq: int
    payload_len: int
    payload: bytes = b''   # the captured prefix (snap length permitting)

    @property
    def syn(self):
        return bool(self.flags & SYN)

    @property
    def rst(self):
        return bool(self.flags & RST)


def _ip_text(raw):
    return '.'.join(str(b) for b in raw)


def read_segments(path, offset=0.0):
    """TCP/IPv4 segments in a pcap or pcapng file, oldest first.

    `offset` is CLOCK_REALTIME minus CLOCK_MONOTONIC; it is subtracted from
    each capture timestamp.  Truncated frames (a short snap length) keep
    their real payload length from the IP header.
    """
    segments = []
    with open(path, 'rb') as f:
        reader = dpkt.pcap.UniversalReader(f)
        linktype = reader.datalink()
        for ts, frame in reader:
            seg = _decode(frame, linktype)
            if seg is not None:
                segments.append(dataclasses.replace(seg, t=ts - offset))
    segments.sort(key=lambda s: s.t)
    return segments


def _decode(frame, linktype):
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
        elif linktype in (dpkt.pcap.DLT_LINUX_SLL,):
            ip = dpkt.sll.SLL(frame).data
        else:
            return None
    except (dpkt.UnpackError, IndexError):
        return None
    if not isinstance(ip, dpkt.ip.IP) or ip.p != dpkt.ip.IP_PROTO_TCP:
        return None
    tcp = ip.data
    if not isinstance(tcp, dpkt.tcp.TCP):
        # dpkt leaves a truncated TCP header as bytes.
        return None
    payload_len = ip.len - ip.hl * 4 - tcp.off * 4
    return Segment(t=0.0, src=_ip_text(ip.src), sport=tcp.sport,
                   dst=_ip_text(ip.dst), dport=tcp.dport, flags=tcp.flags,
                   seq=tcp.seq, payload_len=max(payload_len, 0),
                   payload=bytes(tcp.data[:PAYLOAD_PREFIX]))
