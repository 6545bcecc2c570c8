"""RedirectPolicy: switch events in, flow data out.

The policy decides which server each service's new connections go to and
remembers which server each connection it has seen is pinned to; the chosen
strategy turns those decisions into flows. It never talks to a switch: an
os-ken app (ours in `ha_redirect.app`, or yours) feeds it events and sends
what it returns. Time comes in as `now`, so tests control the clock.
"""

import dataclasses
import itertools
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
    at_capacity: bool = False    # connections reached the cap (logged once)


class RedirectPolicy:
    """Keeps a set of TCP services reachable across server failures.

    `services` are `model.Service` definitions; `settings` the deployment
    choices; `strategy` a `strategies.base.Strategy` instance, or None to
    load `settings.strategy` by name from the `ha_redirect.strategies`
    stevedore namespace. Each service's `monitors` are looked up by name in
    `monitor_classes`, or else in the `ha_redirect.monitors` namespace.
    Every `on_*` method returns the messages (flow data) to send to the
    switch, in order. `observer`, if given, has
    `server_changed(service_name, previous, active, why)` (server indexes
    or None) and `probe_result(service_name, server_index, outcome,
    rtt_seconds)`, called as things happen.
    """

    def __init__(self, services: typing.Iterable[model.Service],
                 settings: typing.Optional[model.PolicySettings] = None,
                 strategy: typing.Optional[base.Strategy] = None,
                 monitor_classes: typing.Optional[
                     typing.Mapping[str, type]] = None,
                 observer: typing.Any = None):
        self.settings = settings or model.PolicySettings()
        # Told of decisions as they happen (see `observer` in the class
        # docstring); ha_redirect.metrics is one.
        self.observer = observer
        # Moves whenever any service's servers change state: a cheap way
        # for the app to know when status() has news.
        self.version = 0
        self.services = tuple(services)
        _check_services(self.services, self.settings)
        if strategy is None:
            from ha_redirect import plugins  # stevedore only when needed
            strategy = plugins.load_strategy(self.settings.strategy)
        self.strategy = strategy
        strategy.check_services(self.services, self.settings)
        self._states = []
        for index, service in enumerate(self.services):
            cookie = model.make_cookie(self.settings.cookie, index,
                                       model.ROLE_PROBE)
            monitors = [_monitor_class(name, monitor_classes)(
                service, self.settings, cookie) for name in service.monitors]
            for monitor in monitors:
                monitor.observer = observer
            self._states.append(_ServiceState(
                service, index, healthy=(False,) * len(service.servers),
                monitors=monitors))
        self._connected: typing.Set[int] = set()
        # Switches with our meters -> their client ports' own meters.
        self._metered: typing.Dict[int, typing.Dict[int, int]] = {}

    def set_observer(self, observer: typing.Any) -> None:
        """Tell `observer` (see the class docstring) of what happens from
        now on; None: nobody."""
        self.observer = observer
        for state in self._states:
            for monitor in state.monitors:
                monitor.observer = observer

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

    def tracked_connections(self) -> typing.Dict[str, int]:
        """How many connections each service remembers (reactive pins)."""
        return {state.service.name: len(state.connections)
                for state in self._states}

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
                           'tracked_connections': len(state.connections),
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
        self.version += 1
        return self._reconcile(state, now, f'server {server_index} drained')

    def undrain(self, service_name: str, server_index: int, now: float
                ) -> typing.List[model.Message]:
        state = self._state_named(service_name)
        state.drained.discard(server_index)
        self.version += 1
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
                            now: float, max_meter_id: int = 0
                            ) -> typing.List[model.Message]:
        """Resynchronise a (re)connected switch: our stale flows go, the
        current state is installed. Switches we serve nothing on are left
        alone. `max_meter_id`: the highest id of the switch's OpenFlow
        meters that drop by packet rate (0: none); with meters, what our
        flows send to the controller is limited to `packet_in_rate`, per
        client port where the ids reach."""
        if datapath_id not in self.datapath_ids:
            return []
        meter_mods = self._meet_switch(datapath_id, port_states,
                                       max_meter_id)
        for state in self._states_on(datapath_id):
            state.connections.clear()
            state.at_capacity = False
            for monitor in state.monitors:
                monitor.on_switch_connected(port_states, now)
            self._start_from_monitors(state, now, 'switch connected')
        messages: typing.List[model.Message] = [model.FlowMod(
            datapath_id, model.FlowCommand.DELETE, table=model.ALL_TABLES,
            cookie=self.settings.cookie << 32,
            cookie_mask=model.COOKIE_OURS_MASK)]
        messages += self._full_state(datapath_id)
        messages.append(model.Barrier(datapath_id))
        return meter_mods + _bundled(
            datapath_id, self._with_meters(datapath_id, messages))

    def on_switch_adopted(self, datapath_id: int,
                          port_states: typing.Mapping[int, bool],
                          now: float, snapshot: typing.Any,
                          max_meter_id: int = 0
                          ) -> typing.List[model.Message]:
        """Take over a switch that another controller has been running,
        without disturbing it: each service starts in the state the
        switch's flows show (which server is active, which are healthy),
        pinned connections are remembered, and only what differs from what
        that state needs is changed -- nothing, if the switch is as its
        last master left it. Monitors then correct the state the usual way.

        `snapshot` offers `contains(message)`, `pins()` and
        `changes_towards(messages)` (see `ha_redirect.snapshot`)."""
        if datapath_id not in self.datapath_ids:
            return []
        meter_mods = self._meet_switch(datapath_id, port_states,
                                       max_meter_id)
        self._adopt_port_meters(datapath_id, snapshot)
        pins = snapshot.pins()
        for state in self._states_on(datapath_id):
            state.at_capacity = False
            for monitor in state.monitors:
                monitor.on_switch_connected(port_states, now)
            shown = self._state_shown(state, snapshot, port_states)
            if shown is None:
                LOG.warning('takeover: service %s: the switch shows no '
                            'state of ours; installing from the monitors',
                            state.service.name)
                self._start_from_monitors(state, now, 'takeover')
            else:
                self._start_from_switch(state, shown, now)
            state.connections = (self._pinned_in(state, pins)
                                 if self.strategy.pins_by_controller else {})
        changes = snapshot.changes_towards(self._with_meters(
            datapath_id, self._full_state(datapath_id)))
        messages = list(meter_mods)
        if changes:
            messages += _bundled(datapath_id, changes)
        messages.append(model.Barrier(datapath_id))
        for state in self._states_on(datapath_id):
            messages += self._reconcile(state, now, 'takeover: monitors')
        return messages

    def _meet_switch(self, datapath_id, port_states, max_meter_id):
        """Note a switch as ours and choose its meters; their MeterMods."""
        self._connected.add(datapath_id)
        settings = self.settings
        self._metered.pop(datapath_id, None)
        if settings.packet_in_rate and max_meter_id >= (
                model.last_shared_meter_id(settings)):
            servers = {p for s in self._states_on(datapath_id)
                       for p in s.service.server_ports}
            ports = {port: model.port_meter_id(settings, port)
                     for port in port_states if port not in servers}
            self._metered[datapath_id] = {
                port: meter for port, meter in ports.items()
                if meter <= max_meter_id}
            return self._meter_mods(datapath_id)
        return []

    def _adopt_port_meters(self, datapath_id, snapshot):
        """Meter per client port only where the old master did: ports it
        never knew (added since it met the switch) share the first meter,
        as they would have under it, and nothing changes for them."""
        port_meters = self._metered.get(datapath_id)
        if not port_meters:
            return
        # The flows that send clients' packets to the controller do not
        # depend on the services' state: any state shows them.
        flows = []
        for state in self._states_on(datapath_id):
            count = len(state.service.servers)
            view = base.ServiceView(state.service, state.index,
                                    self.settings, (True,) * count, 0,
                                    (True,) * count)
            flows += [m for m in self.strategy.service_flows(view)
                      if _to_controller(m)
                      and m.cookie & 0xffff == model.ROLE_SERVICE]
        metered = self._with_meters(datapath_id, flows)
        for port, meter_id in list(port_meters.items()):
            uses = [m for m in metered if model.Meter(meter_id) in m.actions]
            if uses and not snapshot.contains(uses[0]):
                del port_meters[port]

    def _start_from_monitors(self, state, now, why):
        state.healthy = self._health_of(state)
        # What is healthy when we meet the switch takes connections at
        # once: there is no failure to recover from.
        state.healthy_since = {i: -math.inf for i, ok
                               in enumerate(state.healthy) if ok}
        state.eligible = self._eligible(state, now)
        previous, state.active = state.active, self._choose_active(state)
        self._transition(state, previous, now, why)

    def _start_from_switch(self, state, shown, now):
        healthy, eligible, active = shown
        for monitor in state.monitors:
            for server, ok in enumerate(healthy):
                monitor.adopt(server, ok, now)
        state.healthy, state.eligible, state.active = shown
        self.version += 1
        # A server in its hold-down starts it again.
        state.healthy_since = {
            i: -math.inf if eligible[i] else now
            for i, ok in enumerate(healthy) if ok}
        LOG.info('takeover: service %s as the switch shows it: active %s, '
                 'healthy %s, eligible %s', state.service.name,
                 'none' if active is None else _server_label(state, active),
                 list(healthy), list(eligible))

    def _full_state(self, datapath_id):
        """Everything a fresh switch gets: the flows and groups of the
        services' current state (no deletes, no barrier, no meters)."""
        settings = self.settings
        switch_cookie = model.make_cookie(
            settings.cookie, model.GLOBAL_SERVICE_INDEX, model.ROLE_SERVICE)
        messages: typing.List[model.Message] = []
        if settings.forward_non_service_traffic:
            messages.append(model.FlowMod(
                datapath_id, model.FlowCommand.ADD,
                actions=(model.Output(model.SpecialPort.NORMAL),),
                table=settings.table, priority=model.PRIORITY_TABLE_MISS,
                cookie=switch_cookie))
        messages += self.strategy.switch_flows(settings, datapath_id,
                                               switch_cookie)
        for state in self._states_on(datapath_id):
            for monitor in state.monitors:
                messages += monitor.flows(datapath_id)
            messages += self.strategy.service_flows(self._view(state))
        messages += self._reply_fallbacks(datapath_id)
        for owner in self._arp_owners(datapath_id):
            if self._primary_down_anywhere(datapath_id,
                                           owner.service.primary.ip):
                messages.append(self._arp_responder(
                    self._view(owner), model.FlowCommand.ADD))
        return messages

    def _state_shown(self, state, snapshot, port_states):
        """(healthy, eligible, active) whose flows the switch holds, or
        None. Candidates are tried most plausible first: no server
        healthy whose port is down, then the most eligible and healthy."""
        service = state.service
        datapath_id = service.datapath_id
        monitor_flows = [m for monitor in state.monitors
                         for m in monitor.flows(datapath_id)]
        if not all(snapshot.contains(m) for m in self._with_meters(
                datapath_id, monitor_flows)):
            return None
        owner = next(s for s in self._arp_owners(datapath_id)
                     if s.service.primary.ip == service.primary.ip)
        responder = self._arp_responder(self._view(owner),
                                        model.FlowCommand.ADD)
        responder_held = snapshot.contains(
            self._with_meters(datapath_id, [responder])[-1])
        sharing = any(s is not state and s.service.primary.ip
                      == service.primary.ip
                      for s in self._states_on(datapath_id))
        port_up = [port_states.get(server.port, False)
                   for server in service.servers]
        shown = []
        for healthy, eligible, active in _candidates(
                len(service.servers), self.settings.failback, port_up):
            if not healthy[0] and not responder_held:
                continue
            if healthy[0] and responder_held and not sharing:
                continue
            view = base.ServiceView(service, state.index, self.settings,
                                    healthy, active, eligible)
            flows = self._with_meters(datapath_id,
                                      self.strategy.service_flows(view))
            if all(snapshot.contains(m) for m in flows):
                shown.append((healthy, eligible, active))
        # Where the service flows do not tell the active server apart
        # (reactive's go to the controller), the backups' reply fallbacks
        # may: they rewrite a backup's replies while it stands in.
        previous = state.active
        try:
            for candidate in shown:
                state.active = candidate[2]
                if all(snapshot.contains(m) for m in self._reply_fallbacks(
                        datapath_id, involving=service)):
                    return candidate
        finally:
            state.active = previous
        return shown[0] if shown else None

    @staticmethod
    def _pinned_in(state, pins):
        """The connections the switch holds pins for: forward pins match
        the client's packets to the primary."""
        connections = {}
        primary = state.service.primary
        for cookie, match in pins:
            server = model.server_index_of_cookie(cookie)
            if ((cookie >> 16) & 0xffff != state.index or server is None
                    or server >= len(state.service.servers)
                    or match.ipv4_dst != primary.ip):
                continue
            connections[(match.in_port, match.ipv4_src, match.tcp_src,
                         match.tcp_dst)] = server
        return connections

    def on_switch_disconnected(self, datapath_id: int, now: float
                               ) -> typing.List[model.Message]:
        # The resync on reconnect removes every pin we installed.
        self._connected.discard(datapath_id)
        self.version += 1
        for state in self._states_on(datapath_id):
            state.connections.clear()
            state.at_capacity = False
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
        # Every monitor sees the packet: services may share a server, and
        # each tcp_probe monitor claims only the replies to its own probes.
        claimed = False
        messages: typing.List[model.Message] = []
        for state in self._states_on(datapath_id):
            answered = False
            for monitor in state.monitors:
                answer = monitor.on_packet(packet, now)
                if answer is not None:
                    answered = True
                    messages += answer
            if answered:
                claimed = True
                messages += self._reconcile(state, now, 'health probes')
                if isinstance(packet, model.ArpRequest):
                    break       # one answer is enough
        if claimed:
            return messages
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
            if state.at_capacity and len(state.connections) < (
                    self.settings.max_connections_per_service):
                state.at_capacity = False
                LOG.info('service %s: below %d tracked connections again',
                         state.service.name,
                         self.settings.max_connections_per_service)
        return []

    def on_flow_rejected(self, datapath_id: int, flow: model.Message,
                         now: float) -> typing.List[model.Message]:
        """The switch refused a message of ours (its table is full, ...).
        A refused pin will never expire, so forget its connection: the
        next packet is decided anew."""
        if (isinstance(flow, model.FlowMod)
                and flow.command is model.FlowCommand.ADD):
            return self.on_flow_removed(datapath_id, flow.cookie,
                                        flow.match, now)
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
        self._transition(state, previous, now, why)
        messages += self.strategy.on_servers_changed(view, previous)
        if previous != state.active:
            messages += self._reply_fallbacks(state.service.datapath_id,
                                              involving=state.service)
        for server, (before, after) in enumerate(zip(was_healthy,
                                                     state.healthy)):
            if before and not after:
                # Connections pinned to a dead server cannot be saved;
                # removing their flows lets their packets be decided anew
                # (after the redirect above, so they are not re-pinned).
                messages.append(base.delete_connections(view, server))
                state.connections = {k: s for k, s in state.connections.items()
                                     if s != server}
                state.at_capacity = False
        if was_healthy[0] != state.healthy[0]:
            messages += self._update_arp_responder(state)
        messages.append(model.Barrier(state.service.datapath_id))
        return self._with_meters(state.service.datapath_id, messages)

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
        cap = self.settings.max_connections_per_service
        if key not in state.connections and len(state.connections) >= cap:
            # Memory stays bounded under a SYN flood; the connection still
            # reaches its server, one PacketIn per packet.
            if not state.at_capacity:
                state.at_capacity = True
                LOG.warning('service %s: tracking %d connections, the '
                            'maximum: new ones are forwarded unpinned',
                            state.service.name, cap)
            return [self.strategy.release(view, packet, server)]
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

    def _reply_fallbacks(self, datapath_id, involving=None):
        """Per backup and service port on the switch (of `involving`'s
        backups only, if given): where its replies go when no pin claims
        them. A reply can overtake its connection's pin (OVS's datapath
        flow cache keeps entries made before the pin until it revalidates,
        and `learn` runs in the slow path), so while one service has the
        backup standing in, they are sent as that service's primary's.
        Where that is ambiguous (two services have it standing in, or it
        is some service's primary on that port) they pass untouched. The
        match on the TCP source port also keeps the datapath cache from
        lumping service replies with the server's other traffic: an entry
        made by a ping cannot carry a SYN-ACK."""
        table = self.strategy.reply_fallback_table(self.settings)
        if table is None:
            return []
        states = self._states_on(datapath_id)
        keys = {(server.ip, tcp_port): server
                for state in states
                if involving is None or state.service is involving
                for server in state.service.backups
                for tcp_port in state.service.tcp_ports}
        cookie = model.make_cookie(self.settings.cookie,
                                   model.GLOBAL_SERVICE_INDEX,
                                   model.ROLE_SERVICE)
        flows = []
        for (ip, tcp_port), server in sorted(keys.items()):
            serving = [s for s in states if tcp_port in s.service.tcp_ports]
            stand_ins = [s for s in serving if s.active
                         and s.service.servers[s.active].ip == ip]
            is_primary = any(s.service.primary.ip == ip for s in serving)
            actions = (model.Output(model.SpecialPort.NORMAL),)
            if len(stand_ins) == 1 and not is_primary:
                actions = base.reply_as_primary(stand_ins[0].service, server)
            flows.append(model.FlowMod(
                datapath_id, model.FlowCommand.ADD,
                match=model.Match(in_port=server.port, eth_src=server.mac,
                                  eth_type=model.ETH_TYPE_IPV4,
                                  ip_proto=model.IP_PROTO_TCP,
                                  ipv4_src=server.ip, tcp_src=tcp_port),
                actions=actions, table=table,
                priority=self.settings.base_priority
                + model.PRIORITY_SERVER_REPLY, cookie=cookie))
        return flows

    def _arp_owners(self, datapath_id):
        """One service per primary IP on the switch: services may share a
        primary, and one ARP responder flow (with the first one's cookie)
        serves them all."""
        owners = {}
        for state in self._states_on(datapath_id):
            owners.setdefault(state.service.primary.ip, state)
        return list(owners.values())

    def _primary_down_anywhere(self, datapath_id, ip, excluding=None):
        return any(not s.healthy[0] for s in self._states_on(datapath_id)
                   if s.service.primary.ip == ip and s is not excluding)

    def _update_arp_responder(self, state):
        """Answer ARP for a primary while any service sees it down."""
        dpid, ip = state.service.datapath_id, state.service.primary.ip
        down = not state.healthy[0]
        if self._primary_down_anywhere(dpid, ip, excluding=state):
            return []           # the responder is there already
        owner = next(s for s in self._arp_owners(dpid)
                     if s.service.primary.ip == ip)
        return [self._arp_responder(
            self._view(owner), model.FlowCommand.ADD if down
            else model.FlowCommand.DELETE_STRICT)]

    def _meter_mods(self, datapath_id):
        """Our meters: ADD for a fresh switch, then MODIFY for one that
        kept them (the switch refuses the other; its error is expected)."""
        rate = self.settings.packet_in_rate
        # A tenth of a second's worth may come at once.
        burst = max(10, rate // 10)
        ids = [self.settings.first_meter_id + offset
               for offset in (model.METER_CLIENTS, model.METER_MONITORS)]
        ids += sorted(self._metered[datapath_id].values())
        return [model.MeterMod(datapath_id, command, meter_id, rate, burst)
                for command in (model.MeterCommand.ADD,
                                model.MeterCommand.MODIFY)
                for meter_id in ids]

    def _with_meters(self, datapath_id, messages):
        """Flows that send to the controller pass a meter first, where the
        switch has ours: the monitors' own, or the clients'. A service flow
        for clients on any port gets a copy per known client port, one
        priority up, each with the port's own meter, so one flooding host
        cannot use up the others' share; a port that appears later shares
        the first meter until the switch reconnects."""
        port_meters = self._metered.get(datapath_id)
        if port_meters is None:
            return messages
        settings = self.settings
        result = []
        for message in messages:
            if not _to_controller(message):
                result.append(message)
                continue
            role = message.cookie & 0xffff
            shared = settings.first_meter_id + (
                model.METER_MONITORS if role == model.ROLE_PROBE
                else model.METER_CLIENTS)
            meter = port_meters.get(message.match.in_port, shared)
            index = (message.cookie >> 16) & 0xffff
            if (role == model.ROLE_SERVICE and message.match.in_port is None
                    and port_meters and index < len(self._states)):
                service = self._states[index].service
                for port in sorted(port_meters):
                    if service.client_ports and (
                            port not in service.client_ports):
                        continue
                    copy = dataclasses.replace(
                        message, priority=message.priority + 1,
                        match=dataclasses.replace(message.match,
                                                  in_port=port))
                    result.append(_with_meter(copy, port_meters[port]))
            result.append(_with_meter(message, meter))
        return result

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

    def _transition(self, state, previous, now, why):
        """Servers changed state; maybe new connections go elsewhere."""
        self.version += 1
        if previous == state.active:
            return
        _log_transition(state, previous, now, why)
        if self.observer is not None:
            self.observer.server_changed(state.service.name, previous,
                                         state.active, why)

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


def _server_label(state, server):
    if server is None:
        return 'nobody'
    return ('primary ' if server == 0 else f'backup {server} ') + (
        state.service.servers[server].ip)


def _log_transition(state, previous, now, why):
    LOG.info('t=%.6f service %s: new connections to %s (was %s): %s',
             now, state.service.name, _server_label(state, state.active),
             _server_label(state, previous), why)


# Past this many servers, a takeover considers only the states where the
# healthy servers are all eligible.
_ALL_STATES_UP_TO = 4


def _candidates(count, failback, port_up):
    """Every (healthy, eligible, active) a service of `count` servers can
    be in, most plausible first: fewest servers healthy on a down port,
    then most eligible, then most healthy."""
    found = []
    for healthy in itertools.product((True, False), repeat=count):
        choices = [i for i in range(count) if healthy[i]]
        if count <= _ALL_STATES_UP_TO:
            eligibles = itertools.product(
                *[(True, False) if ok else (False,) for ok in healthy])
        else:
            eligibles = [healthy]
        for eligible in eligibles:
            chosen = [i for i in choices if eligible[i]]
            actives = chosen[:1] if failback else chosen
            for active in actives or [None]:
                found.append((healthy, tuple(eligible), active))
    found.sort(key=lambda c: (
        sum(ok and not up for ok, up in zip(c[0], port_up)),
        -sum(c[1]), -sum(c[0]), count if c[2] is None else c[2]))
    return found


def _to_controller(message):
    return (isinstance(message, model.FlowMod)
            and message.command is model.FlowCommand.ADD
            and model.Output(model.SpecialPort.CONTROLLER) in message.actions
            and not any(isinstance(a, model.Meter) for a in message.actions))


def _with_meter(flow, meter_id):
    return dataclasses.replace(
        flow, actions=(model.Meter(meter_id),) + flow.actions)


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


def _check_services(services, settings):
    names = [s.name for s in services]
    for name in names:
        if names.count(name) > 1:
            raise model.ServiceError(f'service {name!r}: defined twice')
    if len(services) >= model.GLOBAL_SERVICE_INDEX:
        raise model.ServiceError(f'services: at most '
                                 f'{model.GLOBAL_SERVICE_INDEX - 1}')
    # One host per address on a switch: services may share servers, but
    # an IP seen with two MACs or ports would get two rewrites (and two
    # ARP responders overwriting each other's flow).
    hosts = {}
    for service in services:
        for server in service.servers:
            key = (service.datapath_id, server.ip)
            seen = hosts.setdefault(key, (server, service.name))
            if seen[0] != server:
                raise model.ServiceError(
                    f'service {service.name!r}: server {server.ip} has MAC '
                    f'{server.mac} on port {server.port}, but service '
                    f'{seen[1]!r} has it with MAC {seen[0].mac} on port '
                    f'{seen[0].port}')
    if any('tcp_probe' in s.monitors for s in services):
        for service in services:
            for server in service.servers:
                if server.ip == settings.probe_ip:
                    raise model.ServiceError(
                        f'probe_ip: {server.ip} is a server of service '
                        f'{service.name!r}; probes need an unused address')
                if server.mac == settings.probe_mac:
                    raise model.ServiceError(
                        f'probe_mac: {server.mac} is a server of service '
                        f'{service.name!r}; probes need an unused address')
    seen = {}
    for service in services:
        for tcp_port in service.tcp_ports:
            key = (service.datapath_id, service.primary.ip, tcp_port)
            if key in seen:
                raise model.ServiceError(
                    f'service {service.name!r}: {service.primary.ip}:'
                    f'{tcp_port} is already served by {seen[key]!r}')
            seen[key] = service.name
