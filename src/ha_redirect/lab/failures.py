"""Failures to inject, as the paper does and beyond.

* `link_down` / `link_up`: the server's own interface goes down (`ip link
  set <intf> down` inside the server), exactly the paper's failure; the
  switch sees its port lose carrier.
* `kill_service` / `kill_services`: the server's process (or all its
  service processes at once) dies while the link stays up, which a
  port-status monitor cannot see.

Each returns the CLOCK_MONOTONIC time at which the failure was applied, the
reference for service gaps.
"""

import contextlib
import signal
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


def kill_services(agents, timeout=5.0):
    """SIGKILL every process of `agents` (AgentProcess or Popen) at once.

    All the signals go out before any wait, so the services die within
    microseconds of each other.  Returns the CLOCK_MONOTONIC time just
    before the first signal and just after the last.
    """
    popens = [getattr(a, 'popen', a) for a in agents]
    t0 = time.monotonic()
    for p in popens:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
    t1 = time.monotonic()
    for p in popens:
        p.wait(timeout)
    return t0, t1
