"""Packet captures of a run, and the clock that places them in time.

`Captures` runs dumpcap on several hosts at once, one pcap per host in a
folder; the capture timestamps are CLOCK_REALTIME while everything else in
the lab stamps CLOCK_MONOTONIC, so it samples the offset between the two
clocks when the captures start and again when they stop, and refuses the
run (`ClockStepped`) if the wall clock moved in between.
"""

import os
import re
import time

from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import traffic

SNAPLEN = 128
# Past this, the wall clock was stepped (NTP, the VM host) during the run:
# capture timestamps (CLOCK_REALTIME) cannot be mapped to CLOCK_MONOTONIC.
CLOCK_STEP_LIMIT_S = 0.001


class ClockStepped(scope_mod.LabError):
    """The wall clock moved against the monotonic clock during a run."""


def clock_offset(samples=7):
    """(CLOCK_REALTIME - CLOCK_MONOTONIC, uncertainty), both seconds."""
    best = None
    for _ in range(samples):
        m1 = time.monotonic()
        r = time.time()
        m2 = time.monotonic()
        if best is None or m2 - m1 < best[1]:
            best = (r - (m1 + m2) / 2, m2 - m1)
    return best


def capture_filter(lo, hi):
    """Handshakes, FINs and RSTs, plus server segments that carry data.

    The bulk of the iperf3 traffic (client data and its ACKs) is not
    needed for any metric and is left out, so captures stay small and
    cheap even at high arrival rates.
    """
    payload = "(ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2)) != 0"
    return (f'tcp and ((tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst)) != 0 '
            f'or (src portrange {lo}-{hi} and {payload}))')


# "Packets received/dropped on interface 'x': 10/0 (pcap:0/dumpcap:0/...)"
_DROPS = re.compile(r"received/dropped on interface '[^']*': \d+/(\d+)")


class Capture:
    """dumpcap on one interface inside a host, writing a pcap we own."""

    def __init__(self, scope, host, path, bpf, label):
        self.path = path
        argv = ['dumpcap', '-q', '-P', '-s', str(SNAPLEN), '-i',
                str(host.defaultIntf()), '-f', bpf, '-w', path]
        self.agent = traffic.AgentProcess(scope, host, label, argv)

    def wait_started(self, timeout=10.0):
        def started():
            if self.agent.popen.poll() is not None:
                raise scope_mod.LabError(
                    f'dumpcap exited: {self.agent.stderr().strip()[-300:]}')
            return 'Capturing on' in self.agent.stderr()
        scope_mod.wait_until(started, timeout, what='dumpcap to capture')

    def stop(self):
        """Stop; the number of packets dropped, None if not reported."""
        self.agent.stop()
        found = _DROPS.search(self.agent.stderr())
        return int(found.group(1)) if found else None


def pcap_path(directory, host_name):
    """Where `Captures` writes the capture of the host named so."""
    return os.path.join(directory, f'{host_name}.pcap')


class Captures:
    """A capture on each of `hosts`, into `directory/<host>.pcap`.

    Returns once every capture runs; the clock offset is sampled then
    (`offset`), as the captures' timestamps are mapped with it.
    """

    def __init__(self, scope, hosts, directory, bpf):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._running = {
            host.name: Capture(scope, host, pcap_path(directory, host.name),
                               bpf, f'dumpcap-{host.name}')
            for host in hosts}
        for capture in self._running.values():
            capture.wait_started()
        self.offset, self._offset_err = clock_offset()
        self._end = None

    def stop(self):
        """Stop every capture; {host name: packets dropped}.

        Raises `ClockStepped` if the wall clock moved against the
        monotonic clock since the captures started.
        """
        drops = {name: cap.stop() for name, cap in self._running.items()}
        self._end = clock_offset()
        moved = self._end[0] - self.offset
        if abs(moved) > CLOCK_STEP_LIMIT_S:
            raise ClockStepped(
                f'the wall clock moved {moved:+.6f} s against '
                'the monotonic clock during the run: its capture times '
                'cannot be trusted')
        return drops

    def clock(self):
        """The offsets at start and stop, for the run's result."""
        end, end_err = self._end
        return dict(offset_start=self.offset, offset_end=end,
                    drift_s=end - self.offset,
                    sample_uncertainty_s=max(self._offset_err, end_err))
