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
different hosts compare directly).  Standard library only, as are the
frame builders (`frames`) and generators (`fuzz`) it sends.
"""

import argparse
import errno
import ipaddress
import itertools
import json
import math
import selectors
import signal
import socket
import sys
import threading
import time

from ha_redirect.lab.frames import parse_tcp_frame
from ha_redirect.lab.frames import tcp_frame
from ha_redirect.lab.fuzz import FUZZ_CATEGORIES
from ha_redirect.lab.fuzz import fuzz_frames
from ha_redirect.lab.fuzz import syn_flood_frames


def emit(**record):
    sys.stdout.write(json.dumps(record, sort_keys=True) + '\n')
    sys.stdout.flush()


def _target(text):
    host, _, port = text.rpartition(':')
    return host, int(port)


def _stop_on_signals():
    """An event SIGTERM or SIGINT sets: every command stops cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


# -- serve: a server that says who it is -------------------------------------

LISTEN_BACKLOG = 1024


class _IdentityServer:
    """Sends its name and a newline on every connection it accepts, then
    echoes what it receives, until the peer closes.

    One thread and one selector serve every port: the name goes out in the
    same wake-up as the accept.  (A thread per connection cost up to a few
    milliseconds on a loaded host, and the lab's service gap ends when the
    name arrives: that was the lab's time, not the redirector's.)  While a
    reply waits to be sent the connection is not read, as a blocking
    `sendall` would hold it.
    """

    def __init__(self, name, ports):
        self.identity = (name + '\n').encode()
        self.sel = selectors.DefaultSelector()
        for port in ports:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(('0.0.0.0', port))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
            self.sel.register(listener, selectors.EVENT_READ, None)

    def run(self, stop):
        while not stop.is_set():
            for key, _ in self.sel.select(0.2):
                if key.data is None:
                    self._accept(key.fileobj)
                elif key.data['out']:
                    self._flush(key.fileobj, key.data)
                else:
                    self._echo(key.fileobj, key.data)

    def _accept(self, listener):
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:          # e.g. the peer reset before accept
                continue
            sock.setblocking(False)
            conn = dict(out=bytearray(self.identity))
            self.sel.register(sock, selectors.EVENT_WRITE, conn)
            self._flush(sock, conn)

    def _echo(self, sock, conn):
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(sock)
            return
        if not data:
            self._close(sock)
            return
        conn['out'] += data
        self._flush(sock, conn)

    def _flush(self, sock, conn):
        try:
            sent = sock.send(conn['out'])
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(sock)
            return
        del conn['out'][:sent]
        self.sel.modify(sock, selectors.EVENT_WRITE if conn['out']
                        else selectors.EVENT_READ, conn)

    def _close(self, sock):
        self.sel.unregister(sock)
        sock.close()


def serve(args):
    server = _IdentityServer(args.name, args.port)
    stop = _stop_on_signals()
    emit(event='listening', name=args.name, ports=args.port,
         t=time.monotonic())
    server.run(stop)
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
    stop = _stop_on_signals()
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
    stop = _stop_on_signals()
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


# -- raw frames: forge, capture, fuzz and flood -------------------------------

ETH_P_ALL = 0x0003


def _raw_socket(interface, protocol=0):
    """A packet socket on `interface`: protocol 0 only sends."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, protocol)
    sock.bind((interface, 0))
    return sock


def send_raw(args):
    sock = _raw_socket(args.interface)
    for i in range(args.count):
        frame = tcp_frame(args.eth_src, args.eth_dst, args.ip_src,
                          args.ip_dst, args.tcp_src, args.tcp_dst,
                          seq=args.seq + i)
        sock.send(frame)
        emit(event='sent', seq=args.seq + i, t=time.monotonic())
        time.sleep(args.gap_ms / 1000.0)
    return 0


def sniff(args):
    sock = _raw_socket(args.interface, socket.htons(ETH_P_ALL))
    sock.settimeout(0.2)
    stop = _stop_on_signals()
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


def _no_frames():
    return {'frames': 0, 'sent': 0, 'refused': 0, 'errors': {}}


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
            c = counts[category] = _no_frames()
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
             **counts.get(category, _no_frames()))
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
    c = counts.get('syn', _no_frames())
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
