"""Small programs the testbed runs inside emulated hosts.

    python -m ha_redirect.lab.agent serve --name primary --port 5001
    python -m ha_redirect.lab.agent probe --target 10.0.0.1:5001
    python -m ha_redirect.lab.agent hold --target 10.0.0.1:5001
    python -m ha_redirect.lab.agent sniff --interface c2_ab12-eth0
    python -m ha_redirect.lab.agent send-raw --interface ... (see --help)

Each prints JSON lines on stdout, timestamps from time.monotonic()
(CLOCK_MONOTONIC is shared by all network namespaces, so times from
different hosts compare directly).  Standard library only.
"""

import argparse
import errno
import json
import math
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time


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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OSError as exc:
        print(f'ha_redirect.lab.agent {args.command}: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
