"""Ownership of everything one testbed run creates.

A `RunScope` hands out unique names (a short random token per run), keeps
the processes the run starts and the undo steps for what it builds, and on
close undoes them newest first: processes by PID, bridges and interfaces by
name.  It never cleans by pattern (no `mn -c`, no kill by process name), so
runs of other people on the same host are safe, and two runs in a row start
from a clean host.

Use it as a context manager; SIGTERM and SIGHUP are turned into an
exception inside it, so Ctrl-C, a killed test runner and plain exceptions
all end in `close()`.
"""

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time

LOG = logging.getLogger(__name__)

IFNAME_MAX = 15  # Linux IFNAMSIZ - 1


class LabError(RuntimeError):
    """The testbed could not do what was asked; the message says what."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a RunScope was open."""


def stop_process(popen, timeout=5.0, name=None):
    """End a process we started: SIGTERM, then SIGKILL after `timeout`.

    Works on the Popen object, so a PID that was already reaped (and might
    have been reused) is never signalled.  Returns the exit status.
    """
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            LOG.warning('%s (pid %d) ignored SIGTERM; killing it',
                        name or popen.args, popen.pid)
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait(timeout)
    return popen.returncode


class OwnedProcess:
    """A long-running process a lab object starts (and may start again):
    its `popen` (None before the first start), `label` and `scope`, and
    stop(). After each start, `wait_ready` has the scope stop it on close
    and waits for it, failing as soon as it exits."""

    popen = None
    label = 'process'
    scope = None
    _stopped_on_close = False

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL; the exit status, None if never started."""
        if self.popen is None:
            return None
        return stop_process(self.popen, timeout, self.label)

    def exit_detail(self):
        """What a report that the process exited adds (e.g. the tail of
        its log); None: nothing."""
        return None

    def check_alive(self):
        """LabError if the process has exited: '<label> exited with status
        N' (and the exit detail)."""
        if self.popen.poll() is None:
            return
        detail = self.exit_detail()
        raise LabError(f'{self.label} exited with status '
                       f'{self.popen.returncode}'
                       + ('' if detail is None else f': {detail}'))

    def stop_on_close(self):
        """Have the scope stop the process when it closes (once). Call it
        before starting the process too: an interrupt between the start
        and `wait_ready` then cannot leave it running."""
        if not self._stopped_on_close:
            self._stopped_on_close = True
            self.scope.on_close(f'stop {self.label}', self.stop)

    def wait_ready(self, ready, timeout, what, interval=0.05):
        """After a start: the scope stops the process when it closes (asked
        once, at the first start); then poll `ready()` until true, e.g. it
        listens. A LabError if it exits first or `timeout` passes (the
        message says '<label> to <what>'). Returns self."""
        self.stop_on_close()

        def alive_and_ready():
            self.check_alive()
            return ready()
        wait_until(alive_and_ready, timeout, interval,
                   what=f'{self.label} to {what}')
        return self


def run(args, check=True, timeout=30):
    """Run a host command (root namespace); raise LabError on failure."""
    proc = subprocess.run(args, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f'{" ".join(map(str, args))} failed: '
                       f'{(proc.stderr or proc.stdout).strip()}')
    return proc


class RunScope:
    """Names, processes and undo steps of one testbed run."""

    def __init__(self, token=None, workdir=None, keep_workdir=False):
        self.token = token or secrets.token_hex(2)
        self._undo = []          # (description, callable), oldest first
        self._lock = threading.Lock()
        self._closed = False
        self._old_handlers = {}
        self._own_workdir = workdir is None
        self._workdir = workdir
        self.keep_workdir = keep_workdir

    # -- names --------------------------------------------------------------

    def name(self, role, reserve=0):
        """A name unique to this run: `<role>_<token>`.

        `reserve` is the room kept for a suffix (Mininet appends `-ethN` to
        node names for their interfaces); the result must still fit a Linux
        interface name.
        """
        name = f'{role}_{self.token}'
        if len(name) + reserve > IFNAME_MAX:
            raise LabError(f'name {name!r} is too long for an interface '
                           f'name (role {role!r})')
        return name

    @property
    def workdir(self):
        """The run's directory for configs, logs and outputs.

        Made on first use; removed on close unless `keep_workdir`.
        """
        if self._workdir is None:
            self._workdir = tempfile.mkdtemp(
                prefix=f'ha-redirect-lab-{self.token}-')
        os.makedirs(self._workdir, exist_ok=True)
        return self._workdir

    def path(self, filename):
        """A file in this run's working directory."""
        return os.path.join(self.workdir, filename)

    # -- ownership ----------------------------------------------------------

    def on_close(self, description, undo):
        """Run `undo()` when the scope closes (newest registered first)."""
        with self._lock:
            if self._closed:
                raise LabError('the run scope is already closed')
            self._undo.append((description, undo))

    def own_process(self, popen, name, timeout=5.0):
        """Stop this process (by PID, via its Popen) when the scope closes."""
        self.on_close(f'stop {name} (pid {popen.pid})',
                      lambda: stop_process(popen, timeout, name))
        return popen

    def close(self):
        """Undo everything, newest first; report but survive failures."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            undo, self._undo = self._undo, []
        with _signals_blocked():
            for description, step in reversed(undo):
                try:
                    LOG.debug('cleanup: %s', description)
                    step()
                except Exception as exc:  # keep cleaning the rest
                    LOG.warning('cleanup: %s failed: %s', description, exc)
            self._restore_signals()
        if self._own_workdir and self._workdir and not self.keep_workdir:
            _remove_tree(self._workdir)

    # -- context manager, signals -------------------------------------------

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[signum] = signal.signal(
                    signum, _raise_terminated)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def _restore_signals(self):
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}


def _raise_terminated(signum, frame):
    raise Terminated(f'terminated by signal {signum}')


@contextlib.contextmanager
def _signals_blocked():
    """Let cleanup finish even if the user presses Ctrl-C again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _remove_tree(path):
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(root, name))
        for name in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


def wait_until(predicate, timeout, interval=0.05, what='condition'):
    """Poll `predicate()` until it returns a true value, or LabError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f'timed out after {timeout:g}s waiting for {what}')
        time.sleep(interval)
