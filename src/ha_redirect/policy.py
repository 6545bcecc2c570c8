"""RedirectPolicy: switch events in, flow data out.

The policy decides which server each service's new connections go to and
remembers which server each connection it has seen is pinned to; the chosen
strategy turns those decisions into flows. It never talks to a switch: an
os-ken app (ours in `ha_redirect.app`, or yours) feeds it events and sends
what it returns. Time comes in as `now`, so tests control the clock.
"""

import dataclasses
import logging
import math
import typing

from ha_redirect import model
from ha_redirect.strategies import base

LOG = logging.getLogger(__name__)

# (client port on the switch, client IP, client TCP port, service TCP port)
ConnectionKey = typing.Tuple[int, str, int, int]


@dataclasses.dataclass
class _ServiceState:
    service: model.Service
    index: int
    healthy: typing.Tuple[bool, ...]
    monitors: typing.List[typing.Any]
    active: typing.Optional[int] = None
    # Which servers may take new connections: healthy, past the hold-down,
    # and not drained by the operator.
    eligible: typing.Tuple[bool, ...] = ()
    healthy_since: typing.Dict[int, float] = dataclasses.field(
        default_factory=dict)
    drained: typing.Set[int] = dataclasses.field(default_factory=set)
    connections: typing.Dict[ConnectionKey, int] = dataclasses.field(
        default_factory=dict)


class RedirectPolicy:
    """Keeps a set of TCP services reachable across server failures.

    `services` are `model.Service` definitions; `settings` the deployment
    choices; `strategy` a `strategies.base.Strategy` instance, or None to
    load `settings.strategy` by name from the `ha_redirect.strategies`
    stevedore namespace. Each service's `monitors` are looked up by name in
    `monitor_classes`, or else in the `ha_redirect.monitors` namespace.
    Every `on_*` method returns the messages (flow data) to send to the
    switch, in order.
    """

    def __init__(self, services: typing.Iterable[model.Service],
                 settings: typing.Optional[model.PolicySettings] = None,
                 strategy: typing.Optional[base.Strategy] = None,
                 monitor_classes: typing.Optional[
                     typing.Mapping[str, type]] = None):
        self.settings = settings or model.PolicySettings()
        self.services = tuple(services)
        _check_services(self.services)
        if strategy is None:
            from ha_redirect import plugins  # stevedore only when needed
            strategy = plugins.load_strategy(self.settings.strategy)
        self.strategy = strategy
        self._states = []
        for index, service in enumerate(self.services):
            cookie = model.make_cookie(self.settings.cookie, index,
                                       model.ROLE_PROBE)
            monitors = [_monitor_class(name, monitor_classes)(
                service, self.settings, cookie) for name in service.monitors]
            self._states.append(_ServiceState(
                service, index, healthy=(False,) * len(service.servers),
                monitors=monitors))
        self._connected: typing.Set[int] = set()

    @property
    def tick_interval(self) -> typing.Optional[float]:
        """How often `on_tick` should be called, or None if never needed."""
        if any(getattr(m, 'needs_ticks', False)
               for state in self._states for m in state.monitors):
            return min(0.01, self.settings.probe_interval / 4)
        if self.settings.failback_hold_down > 0:
            return 0.01
        return None

    @property
    def datapath_ids(self) -> typing.Set[int]:
        return {s.datapath_id for s in self.services}

    def active_server(self, service_name: str
                      ) -> typing.Optional[model.Endpoint]:
        """The server that takes the service's new connections, if any."""
        state = self._state_named(service_name)
        if state.active is None:
            return None
        return state.service.servers[state.active]

    def pinned_connections(self, service_name: str
                           ) -> typing.Dict[ConnectionKey, model.Endpoint]:
        """Connections this policy pinned to a server and still tracks."""
        state = self._state_named(service_name)
        return {key: state.service.servers[server]
                for key, server in state.connections.items()}

    def server_index(self, service_name: str, server: str) -> int:
        """Resolve 'primary', 'backupN' or a server's IP to its index."""
        service = self._state_named(service_name).service
        if server == 'primary':
            return 0
        if server.startswith('backup') and server[6:].isdigit():
            index = int(server[6:])
            if 1 <= index <= len(service.backups):
                return index
        for index, endpoint in enumerate(service.servers):
            if endpoint.ip == server:
                return index
        raise KeyError(f'service {service_name!r} has no server {server!r}')

    def status(self) -> typing.List[typing.Dict[str, typing.Any]]:
        """Each service's servers, their health and who takes connections."""
        report = []
        for state in self._states:
            servers = []
            for index, endpoint in enumerate(state.service.servers):
                servers.append({
                    'name': 'primary' if index == 0 else f'backup{index}',
                    'ip': endpoint.ip, 'port': endpoint.port,
                    'healthy': bool(state.healthy[index]),
                    'eligible': bool(state.eligible[index])
                    if state.eligible else False,
                    'drained': index in state.drained,
                    'active': index == state.active})
            report.append({'service': state.service.name,
                           'datapath_id': state.service.datapath_id,
                           'connected': state.service.datapath_id
                           in self._connected,
                           'servers': servers})
        return report

    def drain(self, service_name: str, server_index: int, now: float
              ) -> typing.List[model.Message]:
        """New connections avoid the server; its connections continue.

        Only strategies that pin connections can keep them: with a
        stateless one, draining would move them and reset them.
        """
        if not self.strategy.pins_connections:
            raise ValueError(
                f'strategy {self.settings.strategy!r} does not pin '
                'connections: a drain would reset them')
        state = self._state_named(service_name)
        state.drained.add(server_index)
        return self._reconcile(state, now, f'server {server_index} drained')

    def undrain(self, service_name: str, server_index: int, now: float
                ) -> typing.List[model.Message]:
        state = self._state_named(service_name)
        state.drained.discard(server_index)
        return self._reconcile(state, now,
                               f'server {server_index} back in service')

    def pin_queries(self) -> typing.List[model.FlowStatsRequest]:
        """Requests for the flows that pin connections, when the strategy
        keeps its pins in flows (else none): see `count_pins`."""
        if not getattr(self.strategy, 'pins_in_flows', False):
            return []
        return [model.FlowStatsRequest(
            state.service.datapath_id,
            cookie=model.make_cookie(self.settings.cookie, state.index, 0),
            cookie_mask=model.COOKIE_SERVICE_MASK)
            for state in self._states
            if state.service.datapath_id in self._connected]

    def count_pins(self, flows: typing.Iterable[
            typing.Tuple[int, model.Match]]
    ) -> typing.Dict[str, typing.Dict[int, int]]:
        """Open connections per service and server, from the switch's
        flows (cookie, match): one forward pin per connection."""
        counts: typing.Dict[str, typing.Dict[int, int]] = {}
        for cookie, match in flows:
            index = (cookie >> 16) & 0xffff
            server = model.server_index_of_cookie(cookie)
            if (cookie >> 32 != self.settings.cookie or server is None
                    or index >= len(self._states)):
                continue
            service = self._states[index].service
            if match.ipv4_dst == service.primary.ip:
                per_server = counts.setdefault(service.name, {})
                per_server[server] = per_server.get(server, 0) + 1
        return counts

    # Events -------------------------------------------------------------

    def on_switch_connected(self, datapath_id: int,
                            port_states: typing.Mapping[int, bool],
                            now: float) -> typing.List[model.Message]:
        """Resynchronise a (re)connected switch: our stale flows go, the
        current state is installed. Switches we serve nothing on are left
        alone."""
        if datapath_id not in self.datapath_ids:
            return []
        self._connected.add(datapath_id)
        settings = self.settings
        messages: typing.List[model.Message] = [model.FlowMod(
            datapath_id, model.FlowCommand.DELETE, table=model.ALL_TABLES,
            cookie=settings.cookie << 32,
            cookie_mask=model.COOKIE_OURS_MASK)]
        switch_cookie = model.make_cookie(
            settings.cookie, model.GLOBAL_SERVICE_INDEX, model.ROLE_SERVICE)
        if settings.forward_non_service_traffic:
            messages.append(model.FlowMod(
                datapath_id, model.FlowCommand.ADD,
                actions=(model.Output(model.SpecialPort.NORMAL),),
                table=settings.table, priority=model.PRIORITY_TABLE_MISS,
                cookie=switch_cookie))
        messages += self.strategy.switch_flows(settings, datapath_id,
                                               switch_cookie)
        for state in self._states_on(datapath_id):
            state.connections.clear()
            for monitor in state.monitors:
                monitor.on_switch_connected(port_states, now)
                messages += monitor.flows(datapath_id)
            state.healthy = self._health_of(state)
            # What is healthy when we meet the switch takes connections at
            # once: there is no failure to recover from.
            state.healthy_since = {i: -math.inf for i, ok
                                   in enumerate(state.healthy) if ok}
            state.eligible = self._eligible(state, now)
            previous, state.active = state.active, self._choose_active(state)
            _log_transition(state, previous, now, 'switch connected')
            view = self._view(state)
            messages += self.strategy.service_flows(view)
            if not state.healthy[0]:
                messages.append(
                    self._arp_responder(view, model.FlowCommand.ADD))
        messages.append(model.Barrier(datapath_id))
        return _bundled(datapath_id, messages)

    def on_switch_disconnected(self, datapath_id: int, now: float
                               ) -> typing.List[model.Message]:
        # The resync on reconnect removes every pin we installed.
        self._connected.discard(datapath_id)
        for state in self._states_on(datapath_id):
            state.connections.clear()
        return []

    def on_port_status(self, datapath_id: int, port_no: int, is_up: bool,
                       now: float) -> typing.List[model.Message]:
        messages: typing.List[model.Message] = []
        for state in self._states_on(datapath_id):
            for monitor in state.monitors:
                monitor.on_port_status(port_no, is_up, now)
            messages += self._reconcile(
                state, now, f'port {port_no} {"up" if is_up else "down"}')
        return messages

    def on_tick(self, now: float) -> typing.List[model.Message]:
        """Let monitors probe and time out; call every `tick_interval`."""
        messages: typing.List[model.Message] = []
        for state in self._states:
            if state.service.datapath_id not in self._connected:
                continue
            for monitor in state.monitors:
                messages += monitor.on_tick(now)
            messages += self._reconcile(state, now, 'health probes')
        return messages

    def on_packet(self, datapath_id: int, packet: model.Packet, now: float
                  ) -> typing.List[model.Message]:
        """A packet the switch sent us: a client's service packet, or an ARP
        request we may answer for a failed primary, or an answer to a
        monitor's probe. Anything else: []."""
        for state in self._states_on(datapath_id):
            for monitor in state.monitors:
                answer = monitor.on_packet(packet, now)
                if answer is not None:
                    return answer + self._reconcile(state, now,
                                                    'health probes')
        if isinstance(packet, model.TcpPacket):
            return self._on_service_packet(datapath_id, packet)
        if isinstance(packet, model.ArpRequest):
            return self._on_arp_request(datapath_id, packet)
        return []

    def on_flow_removed(self, datapath_id: int, cookie: int,
                        match: model.Match, now: float
                        ) -> typing.List[model.Message]:
        """Forget a connection whose pin expired in the switch."""
        if cookie >> 32 != self.settings.cookie:
            return []
        index = (cookie >> 16) & 0xffff
        server = model.server_index_of_cookie(cookie)
        if index >= len(self._states) or server is None:
            return []
        state = self._states[index]
        key = (match.in_port, match.ipv4_src, match.tcp_src, match.tcp_dst)
        if state.connections.get(key) == server:
            del state.connections[key]
        return []

    # Decisions ----------------------------------------------------------

    def _reconcile(self, state: _ServiceState, now: float, why: str
                   ) -> typing.List[model.Message]:
        was_healthy, was_eligible = state.healthy, state.eligible
        state.healthy = self._health_of(state)
        for server, ok in enumerate(state.healthy):
            if not ok:
                state.healthy_since.pop(server, None)
            elif server not in state.healthy_since:
                state.healthy_since[server] = now
        state.eligible = self._eligible(state, now)
        if state.healthy == was_healthy and state.eligible == was_eligible:
            return []
        messages: typing.List[model.Message] = []
        previous, state.active = state.active, self._choose_active(state)
        view = self._view(state)
        if previous != state.active:
            _log_transition(state, previous, now, why)
        messages += self.strategy.on_servers_changed(view, previous)
        for server, (before, after) in enumerate(zip(was_healthy,
                                                     state.healthy)):
            if before and not after:
                # Connections pinned to a dead server cannot be saved;
                # removing their flows lets their packets be decided anew
                # (after the redirect above, so they are not re-pinned).
                messages.append(base.delete_connections(view, server))
                state.connections = {k: s for k, s in state.connections.items()
                                     if s != server}
        if was_healthy[0] != state.healthy[0]:
            messages.append(self._arp_responder(
                view, model.FlowCommand.DELETE_STRICT if state.healthy[0]
                else model.FlowCommand.ADD))
        messages.append(model.Barrier(state.service.datapath_id))
        return messages

    def _eligible(self, state, now):
        hold_down = self.settings.failback_hold_down
        return tuple(
            healthy and server not in state.drained
            and now - state.healthy_since.get(server, now) >= hold_down
            for server, healthy in enumerate(state.healthy))

    def _choose_active(self, state: _ServiceState) -> typing.Optional[int]:
        """The first eligible server in order; without failback, a backup
        keeps the service until it fails or is drained itself."""
        if (not self.settings.failback and state.active is not None
                and state.eligible[state.active]):
            return state.active
        for server, eligible in enumerate(state.eligible):
            if eligible:
                return server
        return None

    def _on_service_packet(self, datapath_id, packet):
        state = self._service_for(datapath_id, packet)
        if state is None:
            return []
        key = (packet.in_port, packet.ipv4_src, packet.tcp_src,
               packet.tcp_dst)
        server = state.connections.get(key)
        view = self._view(state)
        if server is not None and state.healthy[server]:
            # Packets that raced the connection's flows to the switch: its
            # flows are on their way, these only need forwarding. Under load
            # this keeps a burst from costing a flow install per packet.
            return [self.strategy.release(view, packet, server)]
        server = state.active
        if server is None:
            return []
        state.connections[key] = server
        return self.strategy.connection_flows(view, packet, server)

    def _on_arp_request(self, datapath_id, request):
        for state in self._states_on(datapath_id):
            primary = state.service.primary
            if (request.target_ip == primary.ip and not state.healthy[0]
                    and request.in_port != primary.port):
                return [model.ArpReply(
                    datapath_id, out_port=request.in_port,
                    sender_mac=primary.mac, sender_ip=primary.ip,
                    target_mac=request.sender_mac,
                    target_ip=request.sender_ip)]
        return []

    # Helpers ------------------------------------------------------------

    def _service_for(self, datapath_id, packet):
        for state in self._states_on(datapath_id):
            service = state.service
            if (packet.ipv4_dst == service.primary.ip
                    and packet.tcp_dst in service.tcp_ports
                    and packet.in_port not in service.server_ports
                    and (not service.client_ports
                         or packet.in_port in service.client_ports)):
                return state
        return None

    def _arp_responder(self, view, command):
        return model.FlowMod(
            view.datapath_id, command,
            match=model.Match(eth_type=model.ETH_TYPE_ARP,
                              arp_op=model.ARP_REQUEST,
                              arp_tpa=view.service.primary.ip),
            actions=(model.Output(model.SpecialPort.CONTROLLER),)
            if command == model.FlowCommand.ADD else (),
            table=self.settings.table,
            priority=view.priority(model.PRIORITY_ARP_RESPONDER),
            cookie=view.cookie(model.ROLE_ARP),
            cookie_mask=model.COOKIE_EXACT_MASK
            if command != model.FlowCommand.ADD else 0)

    @staticmethod
    def _health_of(state):
        return tuple(all(m.is_healthy(server) for m in state.monitors)
                     for server in range(len(state.service.servers)))

    def _view(self, state):
        return base.ServiceView(state.service, state.index, self.settings,
                                state.healthy, state.active, state.eligible)

    def _states_on(self, datapath_id):
        return [s for s in self._states
                if s.service.datapath_id == datapath_id]

    def _state_named(self, name):
        for state in self._states:
            if state.service.name == name:
                return state
        raise KeyError(f'no service named {name!r}')


def _log_transition(state, previous, now, why):
    def label(server):
        if server is None:
            return 'nobody'
        return ('primary ' if server == 0 else f'backup {server} ') + \
            state.service.servers[server].ip
    if previous != state.active:
        LOG.info('t=%.6f service %s: new connections to %s (was %s): %s',
                 now, state.service.name, label(state.active),
                 label(previous), why)


def _bundled(datapath_id, messages):
    """The flow and group changes as one atomic bundle, then the rest in
    order: a resync deletes our flows and installs them again, and traffic
    must not fall into the gap (non-service traffic least of all)."""
    changes = [m for m in messages
               if isinstance(m, (model.FlowMod, model.GroupMod))]
    others = [m for m in messages
              if not isinstance(m, (model.FlowMod, model.GroupMod))]
    return [model.Bundle(datapath_id, tuple(changes))] + others


def _monitor_class(name, monitor_classes):
    if monitor_classes is not None and name in monitor_classes:
        return monitor_classes[name]
    if name == 'port_status':   # the paper's, always at hand
        from ha_redirect.monitors import port_status
        return port_status.PortStatusMonitor
    from ha_redirect import plugins
    return plugins.monitor_class(name)


def _check_services(services):
    names = [s.name for s in services]
    for name in names:
        if names.count(name) > 1:
            raise model.ServiceError(f'service {name!r}: defined twice')
    seen = {}
    for service in services:
        for tcp_port in service.tcp_ports:
            key = (service.datapath_id, service.primary.ip, tcp_port)
            if key in seen:
                raise model.ServiceError(
                    f'service {service.name!r}: {service.primary.ip}:'
                    f'{tcp_port} is already served by {seen[key]!r}')
            seen[key] = service.name
