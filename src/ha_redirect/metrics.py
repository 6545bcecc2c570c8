"""The controller's Prometheus metrics, served over HTTP when configured.

    [metrics]
    port = 9302            # 0 (the default): no metrics endpoint
    host = 127.0.0.1

`ControllerMetrics` owns its own registry (several apps, or tests, in one
process do not collide). The app has it count what crosses the OpenFlow
channel and `refresh` the gauges after each event; the policy tells it of
failovers and probe results as its `observer`.
"""

import logging
import math
import time
import typing

import prometheus_client
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram

from ha_redirect import model

LOG = logging.getLogger(__name__)

# Probe round trips on a LAN are sub-millisecond to a few ms; a dead server
# answers nothing at all (counted as a timeout, not observed here).
_PROBE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
                  0.5, 1.0)
# From the switch's PortStatus reaching the controller to our last message
# for it leaving: milliseconds matter.
_REACTION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                     0.25, 1.0)
# Label sets: a service's server, a service, a switch.
_SERVER = ('service', 'server')
_SERVICE = ('service',)
_SWITCH = ('dpid',)
# The per-server flags of `RedirectPolicy.status()`, each a gauge
# `ha_redirect_server_<flag>`.
_SERVER_FLAGS = {
    'healthy': "Whether the service's monitors call the server healthy",
    'eligible': 'Whether the server may take new connections (healthy, '
                'past the hold-down, not drained)',
    'active': 'Whether new connections of the service go to this server',
    'drained': 'Whether an operator drained the server',
}
# Seconds between refreshes of the gauges that move with every connection.
REFRESH_INTERVAL = 0.1


def _dpid(datapath_id: int) -> str:
    return f'{datapath_id:#x}'


class ControllerMetrics:
    """Every metric of one controller, in a registry of its own."""

    def __init__(self, server_names: typing.Mapping[str, typing.Sequence[str]]
                 = None):
        self.registry = prometheus_client.CollectorRegistry()
        # service -> server labels (primary, backup1, ...) by index
        self._server_names = dict(server_names or {})
        self._server_flags = {
            flag: self._new(Gauge, f'server_{flag}', _SERVER, documentation)
            for flag, documentation in _SERVER_FLAGS.items()}
        self.probe_verdict = self._new(
            Gauge, 'probe_last_ok', _SERVER,
            'The last tcp_probe result: 1 ok, 0 refused or timed out')
        self.tracked = self._new(
            Gauge, 'tracked_connections', _SERVICE,
            'Connections the controller pinned and remembers (reactive)')
        self.failovers = self._new(
            Counter, 'failovers', _SERVICE,
            'Times new connections moved to a later server (or to none)')
        self.failbacks = self._new(
            Counter, 'failbacks', _SERVICE,
            'Times new connections moved back to an earlier server')
        self.probes = self._new(
            Counter, 'probes', _SERVER + ('outcome',),
            'tcp_probe results by outcome (ok, refused, timeout)')
        self.passive_refusals = self._new(
            Counter, 'passive_refusals', _SERVER,
            "Clients' connections a server refused (its RST answering a "
            "SYN), as tcp_probe's passive check saw them")
        self.passive_aborts = self._new(
            Counter, 'passive_aborts', _SERVER,
            "Clients' established connections a server reset (its RST "
            "carrying its own sequence number), as tcp_probe's passive "
            "check saw them")
        self.probe_rtt = self._new(
            Histogram, 'probe_rtt_seconds', _SERVICE,
            'tcp_probe round trip: SYN out to SYN-ACK or RST back',
            buckets=_PROBE_BUCKETS)
        self.packet_ins = self._new(Counter, 'packet_ins', _SWITCH,
                                    'PacketIns handled')
        self.packet_ins_malformed = self._new(
            Counter, 'packet_ins_malformed', _SWITCH,
            'PacketIns dropped because their OpenFlow fields or frame do '
            'not parse (crafted or truncated)')
        self.packet_ins_dropped = self._new(
            Counter, 'packet_ins_dropped', (),
            'PacketIns dropped on arrival (backlog full)')
        self.flows_removed = self._new(
            Counter, 'flows_removed', _SWITCH + ('reason',),
            'FlowRemoved reports from the switch, by reason (our own '
            'deletes are not reported: idle_timeout is pins expiring)')
        self.flow_mods = self._new(Counter, 'flow_mods',
                                   _SWITCH + ('command',), 'FlowMods sent')
        self.group_mods = self._new(Counter, 'group_mods',
                                    _SWITCH + ('command',), 'GroupMods sent')
        self.switch_errors = self._new(
            Counter, 'switch_errors', _SWITCH + ('type',),
            'Errors the switch returned (unexpected ones)')
        self.reaction = self._new(
            Histogram, 'port_status_reaction_seconds', (),
            'From a PortStatus reaching the controller to its last message '
            'sent', buckets=_REACTION_BUCKETS)
        self.connected = self._new(
            Gauge, 'switch_connected', _SWITCH,
            'Whether the switch is connected to this controller')
        self.master = self._new(
            Gauge, 'switch_master', _SWITCH, "Whether this controller is the "
            "switch's MASTER (always 1 without [coordination])")
        self._server = None
        self._policy_version = None
        self._tracked = {}          # service -> the count the gauge shows
        self._sent_counters = {}    # (dpid, kind, command) -> counter
        self._switches = set()      # the dpids the gauges last showed
        self._refreshed = -math.inf

    def _new(self, kind, name, labels, documentation, **options):
        """One metric, `ha_redirect_` + `name`, in this registry."""
        return kind(name, documentation, labels, namespace='ha_redirect',
                    registry=self.registry, **options)

    # The policy's observer ----------------------------------------------

    def server_changed(self, service, previous, active, why):
        later = active is None or (previous is not None and active > previous)
        if previous is None and active is not None:
            return          # first choice, not a move
        (self.failovers if later else self.failbacks).labels(service).inc()

    def probe_result(self, service, server_index, outcome, rtt):
        name = self._name(service, server_index)
        self.probes.labels(service, name, outcome).inc()
        self.probe_verdict.labels(service, name).set(int(outcome == 'ok'))
        if rtt is not None:
            self.probe_rtt.labels(service).observe(rtt)

    def passive_refusal(self, service, server_index):
        self.passive_refusals.labels(
            service, self._name(service, server_index)).inc()

    def passive_abort(self, service, server_index):
        self.passive_aborts.labels(
            service, self._name(service, server_index)).inc()

    # The app's --------------------------------------------------------------

    def refresh_services(self, status):
        """Gauges from `RedirectPolicy.status()`."""
        for service in status:
            name = service['service']
            for server in service['servers']:
                labels = (name, server['name'])
                for flag, gauge in self._server_flags.items():
                    gauge.labels(*labels).set(int(server[flag]))

    def refresh(self, policy, switches, leads, every_time=True):
        """The gauges, after an event that may have moved them: the
        servers' at once; after a PacketIn, the rest (connection counts,
        switches) at most every REFRESH_INTERVAL s. `switches` are the
        connected dpids, `leads(dpid)` whether we are MASTER there."""
        if policy.version != self._policy_version:
            since, self._policy_version = self._policy_version, policy.version
            # Only the services that changed since the last refresh.
            self.refresh_services(policy.status() if since is None
                                  else policy.status(since=since))
        now = time.monotonic()
        if not every_time and now - self._refreshed < REFRESH_INTERVAL:
            return
        self._refreshed = now
        tracked = self._tracked
        for name, count in policy.tracked_connections().items():
            # Only the counts that moved: a gauge's labels cost more than
            # comparing a thousand services' counts.
            if tracked.get(name) != count:
                tracked[name] = count
                self.tracked.labels(name).set(count)
        for dpid in switches | self._switches:
            self.switch_state(dpid, dpid in switches,
                              dpid in switches and leads(dpid))
        self._switches = switches

    def sent(self, datapath_id, message_kind, command, count=1):
        key = (datapath_id, message_kind, command)
        child = self._sent_counters.get(key)
        if child is None:
            counter = self.flow_mods if message_kind == 'flow' else (
                self.group_mods)
            # (A label lookup per message cost more than the message's
            # bytes.)
            child = self._sent_counters[key] = counter.labels(
                _dpid(datapath_id), command)
        child.inc(count)

    def count_sent(self, datapath_id, messages):
        """Messages sent: their flow and group changes, bundled or not
        (one increment per kind and command: each takes a lock)."""
        counts = {}
        self._tally(messages, counts)
        for (kind, command), count in counts.items():
            self.sent(datapath_id, kind, command.name, count)

    def _tally(self, messages, counts):
        for message in messages:
            kind = type(message)
            if kind is model.FlowMod:
                key = ('flow', message.command)
            elif kind is model.GroupMod:
                key = ('group', message.command)
            elif kind is model.Bundle:
                self._tally(message.messages, counts)
                continue
            else:
                continue
            counts[key] = counts.get(key, 0) + 1

    def switch_state(self, datapath_id, connected, master):
        self.connected.labels(_dpid(datapath_id)).set(int(connected))
        self.master.labels(_dpid(datapath_id)).set(int(master))

    def _name(self, service, index):
        names = self._server_names.get(service)
        if names and index < len(names):
            return names[index]
        return 'primary' if index == 0 else f'backup{index}'

    # Serving ------------------------------------------------------------

    def serve(self, host, port):
        """Start the HTTP endpoint (a thread of its own)."""
        server, _ = prometheus_client.start_http_server(
            port, addr=host, registry=self.registry)
        self._server = server
        LOG.info('metrics: http://%s:%d/metrics', host, port)

    def close(self):
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def text(self) -> str:
        """The exposition text, as a scrape would get it."""
        return prometheus_client.generate_latest(self.registry).decode()
