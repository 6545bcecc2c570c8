"""Measuring a change of master: how long, and what it did to the switch.

`FlowMonitor` watches a bridge's flow table through Open vSwitch's own flow
monitor (`ovs-ofctl monitor BRIDGE watch:!initial`): every flow any
controller adds, modifies or deletes is one event. Per-connection pins
come and go with traffic; the other events are what a takeover must not
cause.

`master_times` reads when each controller became MASTER of a switch from
its log (`t=` is CLOCK_MONOTONIC, the same clock as the lab's).
"""

import re
import subprocess

from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed as testbed_mod
from ha_redirect import model

_EVENT = re.compile(
    r'event=(ADDED|DELETED|MODIFIED)\b.*?\bcookie=(0x[0-9a-f]+)')
_MASTER = re.compile(
    r't=([\d.]+) dpid=(0x[0-9a-f]+): MASTER \(generation (\d+)\)')


class FlowMonitor:
    """Flow-table events of one bridge, from when it starts."""

    def __init__(self, scope, bridge, label='flow-monitor'):
        self.path = scope.path(f'{label}.txt')
        self._out = open(self.path, 'wb')
        self.popen = subprocess.Popen(
            ['ovs-ofctl', '-O', testbed_mod.OFP_VERSION, 'monitor', bridge,
             'watch:!initial'],
            stdout=self._out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        scope.on_close(f'stop {label}', self.stop)

    def stop(self):
        if self.popen.poll() is None:
            scope_mod.stop_process(self.popen, 2.0, 'flow monitor')
        self._out.close()

    def events(self):
        """[(event, cookie, line)] so far."""
        with open(self.path, errors='replace') as f:
            text = f.read()
        return [(m.group(1), int(m.group(2), 16), line)
                for line in text.splitlines()
                for m in [_EVENT.search(line)] if m]

    def mark(self):
        return len(self.events())

    def service_changes(self, since=0):
        """The events since `mark()` on flows other than pins."""
        return [line for event, cookie, line in self.events()[since:]
                if cookie & 0xffff < model.ROLE_CONNECTION_BASE]


def master_times(log_text, datapath_id):
    """[(t, generation)] of each time the log's controller became MASTER
    of the switch."""
    return [(float(t), int(generation))
            for t, dpid, generation in _MASTER.findall(log_text)
            if int(dpid, 16) == datapath_id]
