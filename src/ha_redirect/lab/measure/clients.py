"""What the clients of a run saw: connections, the backup's first answer,
how the failure met each client, iperf3 throughput.

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
import typing

from ha_redirect.lab.measure.segments import ACK
from ha_redirect.lab.measure.segments import FIN


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
