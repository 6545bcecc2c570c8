"""Failures to inject, as the paper does and beyond.

* `link_down` / `link_up`: the server's own interface goes down (`ip link
  set <intf> down` inside the server), exactly the paper's failure; the
  switch sees its port lose carrier.
* `kill_service` / `kill_services`: the server's process (or all its
  service processes at once) dies while the link stays up, which a
  port-status monitor cannot see.

Each returns the CLOCK_MONOTONIC time at which the failure was applied, the
reference for service gaps.

`LinkCutter` and `ServiceKiller` are the same failures armed ahead of time,
for runs that time them to the microsecond: `fire()` applies the failure
and returns the CLOCK_MONOTONIC times just before and just after.
"""

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

from ha_redirect.lab import scope as scope_mod


def _ip(host, *args):
    out, err, code = host.pexec(['ip'] + list(args))
    if code != 0:
        raise scope_mod.LabError(f'ip {" ".join(args)} in {host.name}: '
                                 f'{err.strip()}')


def link_down(host, intf=None):
    """Take the host's interface down; returns the time just before."""
    intf = str(intf or host.defaultIntf())
    t = time.monotonic()
    _ip(host, 'link', 'set', 'dev', intf, 'down')
    return t


def link_up(host, intf=None):
    """Bring the host's interface back; returns the time just before."""
    intf = str(intf or host.defaultIntf())
    t = time.monotonic()
    _ip(host, 'link', 'set', 'dev', intf, 'up')
    return t


def kill_service(agent):
    """End a service process (SIGKILL, no goodbye); returns the time."""
    t = time.monotonic()
    agent.popen.kill()
    agent.popen.wait(5)
    return t


def kill_services(agents, timeout=5.0, exited=None):
    """SIGKILL every process of `agents` (AgentProcess or Popen) at once.

    All the signals go out before any wait, so the services are told
    within microseconds of each other.  Returns the CLOCK_MONOTONIC time
    just before the first signal and just after the last.

    A killed process still has to be scheduled to die, and until it has,
    its sockets stay open (its listener even queues new connections): on
    busy cores the probed server took a median 10-18 ms here.  If
    `exited` is a dict, it gets, per agent's label (or PID), when its
    process had exited: a pidfd turns readable then, so this waits
    without polling.
    """
    popens = [getattr(a, 'popen', a) for a in agents]
    labels = [getattr(a, 'label', None) or p.pid
              for a, p in zip(agents, popens)]
    pidfds = {}
    for label, p in zip(labels, popens):
        if p.poll() is None:
            with contextlib.suppress(OSError):
                pidfds[os.pidfd_open(p.pid)] = label
    t0 = time.monotonic()
    for p in popens:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
    t1 = time.monotonic()
    try:
        _wait_for_exits(pidfds, t1 + timeout, exited)
    finally:
        for fd in pidfds:
            os.close(fd)
    for p in popens:
        p.wait(timeout)
    return t0, t1


def _wait_for_exits(pidfds, deadline, exited):
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    pending = set(pidfds)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        for fd, _ in poller.poll(left * 1000):
            now = time.monotonic()
            poller.unregister(fd)
            pending.discard(fd)
            if exited is not None:
                exited[pidfds[fd]] = now


# Takes the interface down with one ioctl when a line arrives on stdin, and
# prints CLOCK_MONOTONIC just before and after it.  Started ahead of time,
# so the failure instant is not blurred by starting `ip` in the namespace
# (about 10 ms on a loaded host).
_LINK_DOWN = r"""
import fcntl, socket, struct, sys, time
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
name = sys.argv[1].encode()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack('16sH22x', name, 0)
flags = struct.unpack('16sH', fcntl.ioctl(sock, SIOCGIFFLAGS, req)[:18])[1]
print('ready', flush=True)
if sys.stdin.readline():
    t0 = time.monotonic()
    fcntl.ioctl(sock, SIOCSIFFLAGS,
                struct.pack('16sH22x', name, flags & ~IFF_UP))
    t1 = time.monotonic()
    print(repr(t0), repr(t1), flush=True)
"""


class LinkCutter:
    """The paper's failure: the server's own interface goes down."""

    def __init__(self, scope, host):
        self.intf = str(host.defaultIntf())
        self.popen = host.popen([sys.executable, '-c', _LINK_DOWN,
                                 self.intf], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        scope.own_process(self.popen, f'link-down {self.intf}')
        line = self.popen.stdout.readline()
        if line.strip() != b'ready':
            raise scope_mod.LabError(
                f'link-down helper for {self.intf} failed: '
                f'{self.popen.stderr.read().decode().strip()[-300:]}')

    def fire(self):
        """Down now; (monotonic just before, just after) the ioctl."""
        self.popen.stdin.write(b'go\n')
        self.popen.stdin.flush()
        line = self.popen.stdout.readline().split()
        if len(line) != 2:
            raise scope_mod.LabError(
                f'taking {self.intf} down failed: '
                f'{self.popen.stderr.read().decode().strip()[-300:]}')
        return float(line[0]), float(line[1])


class ServiceKiller:
    """The failure beyond the paper: the primary's service processes die
    (SIGKILL) while its link stays up."""

    def __init__(self, agents):
        self.agents = list(agents)
        self.exited = {}    # label -> when its process had exited

    def fire(self):
        """Kill now; (monotonic just before the first, after the last)."""
        return kill_services(self.agents, exited=self.exited)
