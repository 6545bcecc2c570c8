"""The control socket's server in this process, without a controller:
real Unix sockets and real threads."""

import errno
import json
import logging
import os
import pathlib
import select
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from ha_redirect import control

ROOT = pathlib.Path(__file__).resolve().parents[2]
CTL = [sys.executable, '-m', 'ha_redirect.cmd.ctl']
STATUS = {'ok': True, 'services': []}


class Threads:
    """A `spawn` that keeps its threads, to check that they end."""

    def __init__(self):
        self.threads = []

    def __call__(self, func):
        thread = threading.Thread(target=func, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(answer=lambda request: STATUS, path=None, **kwargs):
        path = path or tmp_path / 'run' / 'control.sock'
        server = control.ControlServer(str(path), answer, **kwargs)
        server.spawned = Threads()
        server.start(server.spawned)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def connect(server):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(server.path)
    return sock


def status(server, timeout=3.0):
    return control.request(server.path, {'command': 'status'}, timeout)


def test_a_silent_client_does_not_hold_up_the_others(serve):
    server = serve()
    with connect(server):
        start = time.monotonic()
        assert status(server) == STATUS
        assert time.monotonic() - start < 1


def test_a_trickled_request_must_arrive_whole_in_time(serve):
    server = serve(timeout=1.0)
    with connect(server) as slow:
        start = time.monotonic()
        # A byte every 0.2 s: each recv is prompt, the request never whole.
        for byte in b'{"command": "status"}':
            if select.select([slow], [], [], 0.2)[0]:
                break
            slow.send(bytes([byte]))
        answer = json.loads(slow.recv(4096))
    assert answer == {'ok': False, 'error': 'no whole request in 1 s'}
    assert 0.9 < time.monotonic() - start < 2
    assert status(server) == STATUS


def test_clients_beyond_the_bound_are_told_busy(serve):
    server = serve(max_clients=2)
    silent = [connect(server) for _ in range(2)]
    try:
        with connect(server) as third:
            assert json.loads(third.recv(4096)) == {'ok': False,
                                                    'error': 'busy'}
        result = subprocess.run(CTL + ['--socket', server.path, 'status'],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert result.stderr == ('ha-redirect-ctl: error: the controller is '
                                 'busy with other control clients; try '
                                 'again\n')
    finally:
        silent.pop().close()
    # One client gone, one place free.
    deadline = time.monotonic() + 3
    while (answer := status(server)) != STATUS:
        assert answer == {'ok': False, 'error': 'busy'}
        assert time.monotonic() < deadline
        time.sleep(0.05)
    silent.pop().close()


def test_an_exception_in_a_client_thread_is_logged(serve, caplog):
    answers = iter([{'ok': True, 'not json': object()}, STATUS])
    server = serve(answer=lambda request: next(answers))
    with pytest.raises(control.ControlError, match='hung up without'):
        status(server)
    assert status(server) == STATUS
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info and 'control socket' in record.getMessage()


def test_close_ends_every_thread(serve):
    server = serve()
    with connect(server):
        deadline = time.monotonic() + 3
        while len(server.spawned.threads) < 2:   # the accept loop, the client
            assert time.monotonic() < deadline
            time.sleep(0.01)
        server.close()
        for thread in server.spawned.threads:
            thread.join(timeout=1)
            assert not thread.is_alive()
    assert not os.path.exists(server.path)


class _AcceptFailsOnce:
    """The listening socket, whose first accept() fails as it does when
    the process is out of descriptors. (Exhausting them for real races
    with the garbage collector and glibc's lazy loading of libgcc_s.)"""

    def __init__(self, sock):
        self._sock, self.failed = sock, False

    def accept(self):
        if not self.failed:
            self.failed = True
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return self._sock.accept()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_a_failing_accept_is_logged_and_serving_goes_on(tmp_path, caplog):
    server = control.ControlServer(str(tmp_path / 'control.sock'),
                                   lambda request: {'ok': True})

    def spawn(function):
        if function == server._serve:
            server._sock = _AcceptFailsOnce(server._sock)
        threading.Thread(target=function, daemon=True).start()
    with caplog.at_level(logging.INFO, logger='ha_redirect.control'):
        server.start(spawn)
        try:
            answer = control.request(server.path, {'command': 'status'}, 5)
        finally:
            server.close()
    assert answer == {'ok': True}
    assert server._sock.failed
    errors = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.ERROR]
    assert errors == ['control socket: accept failed: [Errno 24] Too many '
                      'open files']


def test_a_missing_directory_is_created_0700(serve, tmp_path):
    server = serve(path=tmp_path / 'a' / 'run' / 'control.sock')
    mode = os.stat(tmp_path / 'a' / 'run').st_mode
    assert stat.S_IMODE(mode) == 0o700
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    assert status(server) == STATUS


@pytest.mark.parametrize('mode', [0o720, 0o702, 0o777, 0o1777], ids=oct)
def test_a_directory_others_may_write_to_is_refused(tmp_path, mode):
    directory = tmp_path / 'run'
    directory.mkdir()
    directory.chmod(mode)
    server = control.ControlServer(str(directory / 'control.sock'), dict)
    with pytest.raises(control.ControlError,
                       match=f'^{directory} is writable by group or others '
                             f'\\(mode {mode:04o}\\)'):
        server.start(Threads())
    assert os.listdir(directory) == []


@pytest.mark.skipif(os.getuid() != 0, reason='chown needs root')
def test_another_users_directory_is_refused(tmp_path):
    directory = tmp_path / 'run'
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    server = control.ControlServer(str(directory / 'control.sock'), dict)
    with pytest.raises(control.ControlError,
                       match=f'^{directory} is owned by uid 65534, not 0'):
        server.start(Threads())


def _as_nobody(path):
    """Connect to `path` as uid 65534, in a forked child: what it gets."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:    # the child: system calls only, then _exit
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)     # refused before any request
                os.write(writer, sock.recv(4096))
        except OSError as exc:
            os.write(writer, type(exc).__name__.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, 'rb') as pipe:
        got = pipe.read()
    os.waitpid(pid, 0)
    return got


@pytest.mark.skipif(os.getuid() != 0, reason='setuid needs root')
def test_other_users_are_refused(serve):
    # pytest's own directories are 0700: others could not even reach it.
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o711)
        server = serve(path=pathlib.Path(directory) / 'control.sock')
        assert _as_nobody(server.path) == b'PermissionError'    # mode 0600
        os.chmod(server.path, 0o666)    # then the server's SO_PEERCRED check
        assert json.loads(_as_nobody(server.path)) == {
            'ok': False, 'error': 'permission denied'}
        server.close()
