"""The control socket: operator actions on a running controller.

A Unix stream socket, created with mode 0600 so only the controller's own
user (root, in practice) can connect; the server also checks each peer's
uid with SO_PEERCRED; its directory must be the controller user's and
writable by no one else (it is created 0700 when missing). There is no
network listener to secure. Each client is served in a thread of its own,
at most MAX_CLIENTS at once (any more are answered "busy"), and must send
its whole request within TIMEOUT seconds. One JSON object per line each way:

    {"command": "status"}
    {"command": "drain", "service": "web", "server": "primary"}
    {"command": "undrain", "service": "web", "server": "10.0.0.1"}

Answers are `{"ok": true, ...}` or `{"ok": false, "error": "one line"}`.
`ha-redirect-ctl` is the client. This module knows nothing of os-ken or the
policy: the app hands it a function that answers a request.
"""

import functools
import json
import logging
import os
import socket
import stat
import struct
import threading
import time

LOG = logging.getLogger(__name__)

COMMANDS = ('status', 'drain', 'undrain')
MAX_REQUEST = 64 * 1024
MAX_CLIENTS = 16        # served at once; any more are answered "busy"
TIMEOUT = 10.0          # seconds for a whole request to arrive
BACKOFF = (0.05, 1.0)   # seconds between failed accepts: first, longest


class ControlError(ValueError):
    """A request that cannot be answered; the message is one line."""


def parse_request(line: bytes) -> dict:
    """A request as a dict, checked; raises ControlError."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ControlError('request is not a JSON object') from None
    if not isinstance(request, dict):
        raise ControlError('request is not a JSON object')
    command = request.get('command')
    if command not in COMMANDS:
        raise ControlError(f'unknown command {command!r} (known: '
                           f'{", ".join(COMMANDS)})')
    if not isinstance(request.get('counts', True), bool):
        raise ControlError('"counts" must be true or false')
    if command in ('drain', 'undrain'):
        for key in ('service', 'server'):
            if not isinstance(request.get(key), str) or not request[key]:
                raise ControlError(f'{command} needs "{key}"')
    return request


def encode(message: dict) -> bytes:
    return json.dumps(message, sort_keys=True).encode() + b'\n'


class ControlServer:
    """Accepts connections on `path`; `answer(request) -> dict` is called
    for each valid request, from the thread serving that client (several
    at once, at most `max_clients`: more are answered "busy")."""

    def __init__(self, path, answer, timeout=TIMEOUT, max_clients=MAX_CLIENTS):
        self.path = path
        self.answer = answer
        self.timeout = timeout
        self.max_clients = max_clients
        self._sock = None
        self._spawn = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._clients = set()       # the connections being served

    def start(self, spawn):
        """Listen, then serve in threads made by `spawn(func)`."""
        directory = os.path.dirname(self.path) or '.'
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _check_directory(directory)
        if os.path.exists(self.path):
            if not stat.S_ISSOCK(os.stat(self.path).st_mode):
                raise ControlError(f'{self.path} exists and is not a socket')
            if _in_use(self.path):
                raise ControlError(f'{self.path} is in use by another '
                                   'controller')
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)     # the socket is born 0600
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        sock.listen(8)
        self._sock = sock
        self._spawn = spawn
        spawn(self._serve)
        LOG.info('control socket: %s', self.path)

    def close(self):
        self._closed.set()
        if self._sock is not None:
            # Closing alone does not wake a thread blocked in accept().
            _shutdown(self._sock)
            self._sock.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        with self._lock:    # under the lock: no client is closed meanwhile
            for conn in self._clients:
                _shutdown(conn)     # its thread ends now, not at its deadline

    def _serve(self):
        delay = BACKOFF[0]
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError as exc:
                if self._closed.is_set():
                    return
                # EMFILE and the like: the client waits in the backlog;
                # retry once descriptors may be free, without spinning.
                LOG.error('control socket: accept failed: %s', exc)
                self._closed.wait(delay)
                delay = min(2 * delay, BACKOFF[1])
                continue
            delay = BACKOFF[0]
            try:
                self._dispatch(conn)
            except Exception:   # never let one client stop the server
                LOG.exception('control socket: cannot serve a client')
                self._forget(conn)

    def _dispatch(self, conn):
        """Serve `conn` in a thread of its own, or answer "busy"."""
        with self._lock:
            busy = len(self._clients) >= self.max_clients
            if not busy:
                self._clients.add(conn)
        if not busy:
            self._spawn(functools.partial(self._client, conn))
            return
        LOG.warning('control socket: busy with %d clients, refused one',
                    self.max_clients)
        with conn:
            conn.settimeout(0)  # a new socket's empty buffer takes it now
            try:
                conn.send(encode({'ok': False, 'error': 'busy'}))
            except OSError:
                pass            # gone already: nothing to tell

    def _client(self, conn):
        try:
            self._handle(conn)
        except OSError as exc:      # hung up, or too slow to read the answer
            LOG.warning('control socket: %s', exc)
        except Exception:
            LOG.exception('control socket: a client failed')
        finally:
            self._forget(conn)

    def _forget(self, conn):
        with self._lock:
            self._clients.discard(conn)
        conn.close()

    def _handle(self, conn):
        conn.settimeout(self.timeout)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                struct.calcsize('3i'))
        _, uid, _ = struct.unpack('3i', creds)
        if uid not in (0, os.getuid()):
            conn.sendall(encode({'ok': False, 'error': 'permission denied'}))
            return
        try:
            line = _read_line(conn, self.timeout)
        except socket.timeout:
            error = f'no whole request in {self.timeout:g} s'
            LOG.warning('control socket: %s', error)
            conn.settimeout(self.timeout)
            conn.sendall(encode({'ok': False, 'error': error}))
            return
        try:
            response = self.answer(parse_request(line))
        except ControlError as exc:
            response = {'ok': False, 'error': str(exc)}
        except Exception as exc:    # never let a request kill the server
            LOG.exception('control request failed')
            response = {'ok': False, 'error': f'{type(exc).__name__}: {exc}'}
        conn.settimeout(self.timeout)
        conn.sendall(encode(response))


def request(path, message, timeout=10.0) -> dict:
    """Send one request to the controller at `path`; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            sock.sendall(encode(message))
        except BrokenPipeError:
            pass    # refused unheard ("busy"): the reason is there to read
        try:
            line = _read_line(sock, timeout)
        except socket.timeout:
            raise socket.timeout(f'no answer in {timeout:g} s') from None
    if not line:
        raise ControlError('the controller hung up without an answer')
    answer = json.loads(line)
    if not isinstance(answer, dict):
        raise ControlError('the controller sent something that is not an '
                           'answer')
    return answer


def _read_line(sock, timeout):
    """The first line from `sock`; raises socket.timeout unless all of it
    arrives within `timeout` seconds, however it is trickled (a timeout per
    recv would let a byte every few seconds hold the connection forever)."""
    deadline = time.monotonic() + timeout
    chunks = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout('timed out')
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b'\n' in chunk or size > MAX_REQUEST:
            break
    return b''.join(chunks).split(b'\n', 1)[0]


def _check_directory(directory):
    """Refuse a socket directory that someone else could swap the socket
    in: another user's, or one that group or others may write to."""
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise ControlError(f'{directory} is owned by uid {info.st_uid}, '
                           f'not {os.getuid()}: chown it or pick another')
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlError(f'{directory} is writable by group or others '
                           f'(mode {stat.S_IMODE(info.st_mode):04o}): '
                           'chmod 700 it or pick another')


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass        # not connected, or closed already


def _in_use(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
