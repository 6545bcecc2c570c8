"""Metrics of one evaluation run, from captures, iperf3 and the prober.

Pure functions: they read pcap files (with dpkt), iperf3 `--json` reports
and prober records, and return numbers; nothing here runs a process.

Clock.  Everything is expressed in CLOCK_MONOTONIC seconds, the clock the
agents and the failure injection use (shared by all network namespaces).
Capture timestamps are CLOCK_REALTIME; the runner samples the offset
`realtime - monotonic` when the captures start (and again when they stop,
to bound drift) and `read_segments` subtracts it.

Backup response time (the paper's Fig. 2) is the time from the failure to
the first SYN-ACK or data segment *from the backup* that a client receives.
With SDN redirection the backup's packets reach the client carrying the
primary's addresses, so the client-side capture alone cannot tell who sent
them.  Two methods, chosen by scheme:

* ``same-connection`` (SDN): the switch rewrites addresses but not TCP
  sequence numbers.  A client-side segment is the backup's when a segment
  with the same (client address, client port, service port, sequence
  number, SYN flag, payload length) was sent by the backup, as seen by a
  capture on the backup's own interface.
* ``relayed`` (reverse proxy): the proxy terminates TCP, so the client's
  segments come from the proxy.  A client-side data segment is the backup's
  when the backup sent the same payload bytes (prefix) at most `window`
  seconds before it on its own interface.  SYN-ACKs come from the proxy
  itself and are never the backup's.
"""

import dataclasses
import datetime
import re
import statistics
import typing

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


# -- connections seen from the client side ------------------------------------

@dataclasses.dataclass
class Connection:
    """A TCP connection as a client's capture shows it."""
    client: str
    client_port: int
    server: str
    server_port: int
    isn: int
    t_syn: float
    syns: int = 1
    t_synack: typing.Optional[float] = None
    rst_in: typing.List[float] = dataclasses.field(default_factory=list)
    rst_out: typing.List[float] = dataclasses.field(default_factory=list)
    t_fin: typing.Optional[float] = None   # first FIN, either direction

    def established_before(self, t):
        return self.t_synack is not None and self.t_synack < t


def connections(segments, server_ports):
    """Client-side connections to any of `server_ports`, by first SYN.

    A SYN with a new initial sequence number on a used 4-tuple starts a new
    connection (port reuse).  Segments of connections whose SYN was not
    captured are ignored.
    """
    server_ports = set(server_ports)
    open_ = {}
    done = []
    for s in segments:
        if s.dport in server_ports:
            key = (s.src, s.sport, s.dst, s.dport)
            outbound = True
        elif s.sport in server_ports:
            key = (s.dst, s.dport, s.src, s.sport)
            outbound = False
        else:
            continue
        conn = open_.get(key)
        if outbound and s.syn and not s.flags & ACK:
            if conn is not None and conn.isn == s.seq:
                conn.syns += 1
                continue
            if conn is not None:
                done.append(conn)
            open_[key] = Connection(*key, isn=s.seq, t_syn=s.t)
            continue
        if conn is None:
            continue
        if not outbound and s.syn and s.flags & ACK:
            if conn.t_synack is None:
                conn.t_synack = s.t
        if s.rst:
            (conn.rst_out if outbound else conn.rst_in).append(s.t)
        if s.flags & FIN and conn.t_fin is None:
            conn.t_fin = s.t
    return sorted(done + list(open_.values()), key=lambda c: c.t_syn)


# -- backup response time -----------------------------------------------------

def _from_server(s, server_ports):
    return s.sport in server_ports


def first_backup_response(client_segments, backup_segments, t_fail,
                          server_ports, method, window=1.0):
    """Seconds from `t_fail` to the first backup SYN-ACK/data at a client.

    `client_segments` are from captures on the clients' interfaces,
    `backup_segments` from the backup's own interface; `method` is
    'same-connection' or 'relayed' (see the module docstring).  Returns
    (seconds, segment) or (None, None) when no client heard the backup.
    """
    ports = set(server_ports)
    candidates = [s for s in client_segments
                  if s.t >= t_fail and _from_server(s, ports)
                  and ((s.syn and s.flags & ACK) or s.payload_len > 0)]
    sent = [s for s in backup_segments if _from_server(s, ports)]
    if method == 'same-connection':
        keys = {(s.dst, s.dport, s.sport, s.seq, s.syn, s.payload_len)
                for s in sent}
        for s in candidates:
            if (s.dst, s.dport, s.sport, s.seq, s.syn,
                    s.payload_len) in keys:
                return s.t - t_fail, s
        return None, None
    if method == 'relayed':
        data = [s for s in sent if s.payload_len > 0 and s.t >= t_fail]
        for s in candidates:
            if s.payload_len == 0 or not s.payload:
                continue
            for b in data:
                if b.t > s.t:
                    break
                if s.t - b.t <= window and (
                        b.payload.startswith(s.payload)
                        or s.payload.startswith(b.payload)):
                    return s.t - t_fail, s
        return None, None
    raise ValueError(f'unknown method {method!r}')


# -- iperf3 -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ClientOutcome:
    """What one iperf3 client achieved."""
    ok: bool
    error: typing.Optional[str]
    bytes: int
    bits_per_second: float


def iperf3_outcome(report, lifetime=None):
    """Throughput of one iperf3 client from its `--json` report.

    A completed test counts what the server received
    (`end.sum_received`).  A test that ended in an error (or had no report)
    counts the bytes its intervals record over the client's `lifetime`
    (seconds from launch to exit), so an aborted client lowers the average
    as it lowers what a user gets; with no lifetime it counts zero.
    """
    if not isinstance(report, dict):
        return ClientOutcome(False, 'no JSON report', 0, 0.0)
    error = report.get('error')
    received = report.get('end', {}).get('sum_received')
    if not error and received and received.get('bytes'):
        return ClientOutcome(True, None, int(received['bytes']),
                             float(received['bits_per_second']))
    sent = sum(int(i.get('sum', {}).get('bytes', 0))
               for i in report.get('intervals', []))
    bps = sent * 8.0 / lifetime if lifetime else 0.0
    return ClientOutcome(False, error or 'no bytes received', sent, bps)


# -- summaries ----------------------------------------------------------------

def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


@dataclasses.dataclass(frozen=True)
class Spread:
    """Median and range of one metric over repetitions."""
    median: typing.Optional[float]
    low: typing.Optional[float]
    high: typing.Optional[float]
    n: int

    @classmethod
    def of(cls, values):
        values = sorted(v for v in values if v is not None)
        if not values:
            return cls(None, None, None, 0)
        return cls(statistics.median(values), values[0], values[-1],
                   len(values))


# -- clients of one run -------------------------------------------------------

def client_class(conns, t_fail, t_exit=None):
    """How the failure met one client, from its connections.

    'finished' (it was done before the failure), 'before' (a connection
    of it was established before the failure: a redirect cannot save it)
    or 'after' (not yet established at the failure: attempted after it,
    or its handshake was still unanswered).
    """
    if t_exit is not None and t_exit < t_fail:
        return 'finished'
    if any(c.established_before(t_fail) for c in conns):
        return 'before'
    return 'after'


def failover_resets(conn, t_fail):
    """Times of the RSTs on `conn` that the failure caused.

    RSTs (either direction) at or after `t_fail` and before the connection
    began to close: an iperf3 server that closes while the client's last
    segments are in flight answers them with RSTs, at the end of every
    test, failure or not -- those follow a FIN and are not counted.
    """
    return [t for t in sorted(conn.rst_in + conn.rst_out)
            if t >= t_fail and (conn.t_fin is None or t < conn.t_fin)]


def resets_after(conns, t_fail):
    """Failover RST segments on `conns` (see `failover_resets`)."""
    return sum(len(failover_resets(c, t_fail)) for c in conns)


def reset_connections(conns, t_fail):
    """How many of `conns` the failure reset (one RST or more)."""
    return sum(1 for c in conns if failover_resets(c, t_fail))


# -- health transitions (detection and false failovers) -----------------------

@dataclasses.dataclass(frozen=True)
class HealthTransition:
    """A health monitor marking a server up or down (monotonic seconds).

    `monitor` is the controller monitor's name ('tcp_probe', ...) or
    'haproxy'; `server` a role: 'primary', 'backup1', ...
    """
    t: float
    monitor: str
    server: str
    up: bool
    reason: str = ''


# "t=12.345678 service web: tcp_probe marks backup 1 10.0.0.2 DOWN (why)"
_MONITOR_LINE = re.compile(
    r't=(?P<t>\d+(?:\.\d+)?) service (?P<service>\S+): (?P<monitor>\w+) '
    r'marks (?:(?P<primary>primary)|backup (?P<backup>\d+)) (?P<ip>\S+) '
    r'(?P<state>UP|DOWN)(?: \((?P<why>.*)\))?\s*$')

# "t=12.3 service web: new connections to backup 1 10.0.0.2 (was primary
# 10.0.0.1): why"
_REDIRECT_LINE = re.compile(
    r't=(?P<t>\d+(?:\.\d+)?) service (?P<service>\S+): new connections to '
    r'(?P<to>nobody|primary \S+|backup \d+ \S+) \(was (?P<was>nobody|'
    r'primary \S+|backup \d+ \S+)\)(?:: (?P<why>.*))?\s*$')

# "2026-11-26T14:43:59.141451+00:00 Server web_back/primary is DOWN,
# reason: Layer4 connection problem, info: ..." (HAProxy's `iso` format)
_HAPROXY_LINE = re.compile(
    r'^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?'
    r'(?:Z|[+-]\d\d:\d\d)?)\s.*?Server (?P<backend>[^/\s]+)/'
    r'(?P<server>\S+) is (?P<state>UP|DOWN)(?:, reason: (?P<why>[^,]*))?')


def _role(match):
    if match.group('primary'):
        return 'primary'
    return f'backup{int(match.group("backup"))}'


def controller_transitions(log_text, service=None):
    """The monitors' transitions the controller logged, oldest first.

    The controller stamps them with CLOCK_MONOTONIC (`t=`), the clock of
    every other lab measurement.  `service` keeps one service's only.
    """
    found = []
    for line in log_text.splitlines():
        m = _MONITOR_LINE.search(line)
        if m is None or (service and m.group('service') != service):
            continue
        found.append(HealthTransition(
            t=float(m.group('t')), monitor=m.group('monitor'),
            server=_role(m), up=m.group('state') == 'UP',
            reason=m.group('why') or ''))
    return sorted(found, key=lambda x: x.t)


def _redirect_role(text):
    if text == 'nobody':
        return None
    if text.startswith('primary'):
        return 'primary'
    return 'backup' + text.split()[1]


def controller_redirects(log_text, service=None):
    """[(t, to role, from role, why)]: where the policy sent new
    connections, as the controller logged it (roles None for nobody)."""
    found = []
    for line in log_text.splitlines():
        m = _REDIRECT_LINE.search(line)
        if m is None or (service and m.group('service') != service):
            continue
        found.append((float(m.group('t')), _redirect_role(m.group('to')),
                      _redirect_role(m.group('was')), m.group('why') or ''))
    return sorted(found, key=lambda x: x[0])


def haproxy_transitions(log_text, offset):
    """HAProxy's server transitions from a log in its `iso` format.

    Its timestamps are CLOCK_REALTIME (microseconds); `offset` (realtime
    minus monotonic) moves them to CLOCK_MONOTONIC.  Lines without a
    timestamp (the `raw` format, or the same message repeated as a warning
    on stderr) are skipped.
    """
    found = []
    for line in log_text.splitlines():
        m = _HAPROXY_LINE.search(line)
        if m is None:
            continue
        ts = m.group('ts')
        when = datetime.datetime.fromisoformat(ts.replace('Z', '+00:00'))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        found.append(HealthTransition(
            t=when.timestamp() - offset, monitor='haproxy',
            server=m.group('server'), up=m.group('state') == 'UP',
            reason=(m.group('why') or '').strip()))
    return sorted(found, key=lambda x: x.t)


def detection_time(transitions, failed, t_fail):
    """Seconds from `t_fail` to the first DOWN of server `failed` at or
    after it; None when none was logged."""
    downs = [x.t for x in transitions
             if x.server == failed and not x.up and x.t >= t_fail]
    return min(downs) - t_fail if downs else None


def false_failovers(transitions, failed, t_fail, t_start, t_end=None):
    """The DOWN marks of servers that were healthy, in [t_start, t_end].

    Server `failed` was healthy until `t_fail`, every other server all
    along.  Transitions before `t_start` (the testbed starting) are not
    counted.
    """
    t_end = float('inf') if t_end is None else t_end
    return [x for x in transitions
            if not x.up and t_start <= x.t <= t_end
            and (x.server != failed or x.t < t_fail)]
