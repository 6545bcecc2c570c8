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
        r = self.registry
        server = ('service', 'server')
        self.healthy = Gauge('ha_redirect_server_healthy', 'Whether the '
                             'service\'s monitors call the server healthy',
                             server, registry=r)
        self.eligible = Gauge('ha_redirect_server_eligible', 'Whether the '
                              'server may take new connections (healthy, '
                              'past the hold-down, not drained)', server,
                              registry=r)
        self.active = Gauge('ha_redirect_server_active', 'Whether new '
                            'connections of the service go to this server',
                            server, registry=r)
        self.drained = Gauge('ha_redirect_server_drained', 'Whether an '
                             'operator drained the server', server,
                             registry=r)
        self.probe_verdict = Gauge(
            'ha_redirect_probe_last_ok', 'The last tcp_probe result: 1 ok, '
            '0 refused or timed out', server, registry=r)
        self.tracked = Gauge('ha_redirect_tracked_connections', 'Connections '
                             'the controller pinned and remembers (reactive)',
                             ('service',), registry=r)
        self.failovers = Counter('ha_redirect_failovers', 'Times new '
                                 'connections moved to a later server (or to '
                                 'none)', ('service',), registry=r)
        self.failbacks = Counter('ha_redirect_failbacks', 'Times new '
                                 'connections moved back to an earlier '
                                 'server', ('service',), registry=r)
        self.probes = Counter('ha_redirect_probes', 'tcp_probe results by '
                              'outcome (ok, refused, timeout)',
                              server + ('outcome',), registry=r)
        self.probe_rtt = Histogram(
            'ha_redirect_probe_rtt_seconds', 'tcp_probe round trip: SYN out '
            'to SYN-ACK or RST back', ('service',), buckets=_PROBE_BUCKETS,
            registry=r)
        self.packet_ins = Counter('ha_redirect_packet_ins', 'PacketIns '
                                  'handled', ('dpid',), registry=r)
        self.packet_ins_dropped = Counter(
            'ha_redirect_packet_ins_dropped', 'PacketIns dropped on arrival '
            '(backlog full)', registry=r)
        self.flow_mods = Counter('ha_redirect_flow_mods', 'FlowMods sent',
                                 ('dpid', 'command'), registry=r)
        self.group_mods = Counter('ha_redirect_group_mods', 'GroupMods sent',
                                  ('dpid', 'command'), registry=r)
        self.switch_errors = Counter('ha_redirect_switch_errors', 'Errors '
                                     'the switch returned (unexpected ones)',
                                     ('dpid', 'type'), registry=r)
        self.reaction = Histogram(
            'ha_redirect_port_status_reaction_seconds', 'From a PortStatus '
            'reaching the controller to its last message sent',
            buckets=_REACTION_BUCKETS, registry=r)
        self.connected = Gauge('ha_redirect_switch_connected', 'Whether the '
                               'switch is connected to this controller',
                               ('dpid',), registry=r)
        self.master = Gauge('ha_redirect_switch_master', 'Whether this '
                            'controller is the switch\'s MASTER (always 1 '
                            'without [coordination])', ('dpid',), registry=r)
        self._server = None
        self._policy_version = None
        self._switches = set()      # the dpids the gauges last showed
        self._refreshed = -math.inf

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

    # The app's --------------------------------------------------------------

    def refresh_services(self, status):
        """Gauges from `RedirectPolicy.status()`."""
        for service in status:
            name = service['service']
            for server in service['servers']:
                labels = (name, server['name'])
                self.healthy.labels(*labels).set(int(server['healthy']))
                self.eligible.labels(*labels).set(int(server['eligible']))
                self.active.labels(*labels).set(int(server['active']))
                self.drained.labels(*labels).set(int(server['drained']))

    def refresh(self, policy, switches, leads, every_time=True):
        """The gauges, after an event that may have moved them: the
        servers' at once; after a PacketIn, the rest (connection counts,
        switches) at most every REFRESH_INTERVAL s. `switches` are the
        connected dpids, `leads(dpid)` whether we are MASTER there."""
        if policy.version != self._policy_version:
            self._policy_version = policy.version
            self.refresh_services(policy.status())
        now = time.monotonic()
        if not every_time and now - self._refreshed < REFRESH_INTERVAL:
            return
        self._refreshed = now
        for name, count in policy.tracked_connections().items():
            self.tracked.labels(name).set(count)
        for dpid in switches | self._switches:
            self.switch_state(dpid, dpid in switches,
                              dpid in switches and leads(dpid))
        self._switches = switches

    def sent(self, datapath_id, message_kind, command):
        counter = self.flow_mods if message_kind == 'flow' else (
            self.group_mods)
        counter.labels(_dpid(datapath_id), command).inc()

    def count_sent(self, datapath_id, message):
        """A message sent: its flow and group changes, bundled or not."""
        if isinstance(message, model.Bundle):
            for inner in message.messages:
                self.count_sent(datapath_id, inner)
        elif isinstance(message, model.FlowMod):
            self.sent(datapath_id, 'flow', message.command.name)
        elif isinstance(message, model.GroupMod):
            self.sent(datapath_id, 'group', message.command.name)

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
