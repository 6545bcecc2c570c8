"""RedirectPolicy: switch events in, flow data out.

The policy decides which server each service's new connections go to and
remembers which server each connection it has seen is pinned to; the chosen
strategy turns those decisions into flows. It never talks to a switch: an
os-ken app (ours in `ha_redirect.app`, or yours) feeds it events and sends
what it returns. Time comes in as `now`, so tests control the clock.

Its parts: `service_state` (one service's state and the rules that read
it), `service_checks`, `packet_in_meters`, `stand_in` (ARP answers and
reply fallbacks for a failed primary) and `takeover_state` (reading a
switch another controller ran).
"""

import logging
import typing

from ha_redirect import model
from ha_redirect.monitors import base as monitor_base
from ha_redirect.packet_in_meters import PacketInMeters
from ha_redirect import plugins
from ha_redirect import redispatch
from ha_redirect import service_checks
from ha_redirect.service_state import ConnectionKey
from ha_redirect.service_state import ServiceState
from ha_redirect import stand_in
from ha_redirect.strategies import base
from ha_redirect import takeover_state

LOG = logging.getLogger(__name__)

# Services per chunk of a port's changes, at most: small enough that a
# PacketIn let in between two chunks waits little.
MAX_CHUNK = 8


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
        # service index -> the version at which its status last changed
        self._changed_at: typing.Dict[int, int] = {}
        self.services = tuple(services)
        service_checks.check_services(self.services, self.settings)
        if strategy is None:
            strategy = plugins.load_strategy(self.settings.strategy)
        self.strategy = strategy
        strategy.check_services(self.services, self.settings)
        self._redispatch = redispatch.Redispatcher(
            self.settings, len(self.services),
            switch_pins=not strategy.pins_by_controller)
        self._states = []
        for index, service in enumerate(self.services):
            cookie = model.make_cookie(self.settings.cookie, index,
                                       model.ROLE_PROBE)
            monitors = [plugins.find_monitor_class(name, monitor_classes)(
                service, self.settings, cookie) for name in service.monitors]
            for monitor in monitors:
                monitor.observer = observer
            self._states.append(ServiceState(
                service, index, healthy=(False,) * len(service.servers),
                monitors=monitors))
        self._connected: typing.Set[int] = set()
        # dpid -> port -> up, as the switch last reported them
        self._port_up: typing.Dict[int, typing.Dict[int, bool]] = {}
        # Services not yet told of a port's change, while its chunks are
        # being taken: index -> (port, up, when, why).
        self._unsettled: typing.Dict[
            int, typing.Tuple[int, bool, float, str]] = {}
        self._meters = PacketInMeters(self.settings, self.services)
        # The services never change: index them once, so that a change to
        # one service costs the same with 1 or 1,000 services beside it.
        self._states_by_switch: typing.Dict[
            int, typing.List[ServiceState]] = {}
        self._states_by_port: typing.Dict[
            typing.Tuple[int, int], typing.List[ServiceState]] = {}
        self._states_by_primary: typing.Dict[
            typing.Tuple[int, str], typing.List[ServiceState]] = {}
        # Services whose monitors look at packets (the base class's
        # on_packet never claims one): the rest need not see each PacketIn.
        self._watching_packets: typing.Dict[int, typing.List[
            typing.Tuple[ServiceState, list]]] = {}
        primary_down_in: typing.Dict[typing.Tuple[int, str],
                                     typing.Set[int]] = {}
        for state in self._states:
            service = state.service
            dpid = service.datapath_id
            self._states_by_switch.setdefault(dpid, []).append(state)
            for tcp_port in service.tcp_ports:
                self._states_by_port.setdefault(
                    (dpid, tcp_port), []).append(state)
            watchers = [m for m in state.monitors if type(m).on_packet
                        is not monitor_base.Monitor.on_packet]
            if watchers:
                self._watching_packets.setdefault(dpid, []).append(
                    (state, watchers))
            self._states_by_primary.setdefault(
                (dpid, service.primary.ip), []).append(state)
            state.share_primary_watch(primary_down_in.setdefault(
                (dpid, service.primary.ip), set()))

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
        if any(m.needs_ticks
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
        return self._state_named(service_name).server_index(server)

    def status(self, since: typing.Optional[int] = None
               ) -> typing.List[typing.Dict[str, typing.Any]]:
        """Each service's servers, their health and who takes connections;
        with `since` (a `version`), only the services whose status changed
        after it: a failover of a thousand services must not make whoever
        follows it (metrics) redo all of them after each chunk."""
        states = self._states if since is None else [
            state for state in self._states
            if self._changed_at.get(state.index, 0) > since]
        return [state.status(state.service.datapath_id in self._connected)
                for state in states]

    def _touch(self, states) -> None:
        """These services' status changed."""
        self.version += 1
        for state in states:
            self._changed_at[state.index] = self.version

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
        self._touch([state])
        return self._reconcile(state, now, f'server {server_index} drained')

    def undrain(self, service_name: str, server_index: int, now: float
                ) -> typing.List[model.Message]:
        state = self._state_named(service_name)
        state.drained.discard(server_index)
        self._touch([state])
        return self._reconcile(state, now,
                               f'server {server_index} back in service')

    def pin_queries(self) -> typing.List[model.FlowStatsRequest]:
        """Requests for the flows that pin connections, when the strategy
        keeps its pins in flows (else none): see `count_pins`."""
        if not self.strategy.pins_in_flows:
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
            state.forget_connections()
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
            datapath_id, self._meters.apply(datapath_id, messages))

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
        self._meters.keep_adopted(datapath_id, snapshot, self.strategy)
        pins = snapshot.pins()
        states = self._states_on(datapath_id)
        for state in states:
            state.at_capacity = False
            for monitor in state.monitors:
                monitor.on_switch_connected(port_states, now)
            shown = takeover_state.state_shown(
                state, states, snapshot, port_states, self.settings,
                self.strategy, self._meters)
            if shown is None:
                LOG.warning('takeover: service %s: the switch shows no '
                            'state of ours; installing from the monitors',
                            state.service.name)
                self._start_from_monitors(state, now, 'takeover')
            else:
                self._start_from_switch(state, shown, now)
            state.connections = (
                takeover_state.pinned_in(state, pins)
                if self.strategy.pins_by_controller else {})
        changes = snapshot.changes_towards(self._meters.apply(
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
        self._port_up[datapath_id] = dict(port_states)
        return self._meters.meet(datapath_id, port_states, max_meter_id)

    def _start_from_monitors(self, state, now, why):
        state.start_from_monitors(now, self.settings.failback_hold_down)
        previous = state.active
        state.active = state.choose_active(self.settings.failback)
        self._transition(state, previous, now, why)

    def _start_from_switch(self, state, shown, now):
        state.start_from_switch(shown, now)
        self._touch([state])
        healthy, eligible, active = shown
        LOG.info('takeover: service %s as the switch shows it: active %s, '
                 'healthy %s, eligible %s', state.service.name,
                 'none' if active is None else state.server_label(active),
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
        states = self._states_on(datapath_id)
        for state in states:
            for monitor in state.monitors:
                messages += monitor.flows(datapath_id)
            messages += self.strategy.service_flows(state.view(settings))
        messages += self._redispatch.syn_copy_flows(
            [state.view(settings) for state in states
             if any(m.holds_server_resets for m in state.monitors)],
            datapath_id, switch_cookie)
        messages += stand_in.reply_fallbacks(self.strategy, settings, states,
                                             datapath_id)
        return messages + stand_in.arp_responders(settings, states)

    def on_switch_disconnected(self, datapath_id: int, now: float
                               ) -> typing.List[model.Message]:
        # The resync on reconnect removes every pin we installed.
        self._connected.discard(datapath_id)
        self._port_up.pop(datapath_id, None)
        self._touch(self._states_on(datapath_id))
        for state in self._states_on(datapath_id):
            state.forget_connections()
        return []

    def on_port_status(self, datapath_id: int, port_no: int, is_up: bool,
                       now: float) -> typing.List[model.Message]:
        """A port went up or down: every service's changes, in service
        order, closed by one barrier (see `on_port_status_in_chunks`)."""
        return [message for chunk in self.on_port_status_in_chunks(
            datapath_id, port_no, is_up, now) for message in chunk]

    def on_port_status_in_chunks(self, datapath_id: int, port_no: int,
                                 is_up: bool, now: float
                                 ) -> typing.Iterator[
                                     typing.List[model.Message]]:
        """`on_port_status`'s messages in chunks, each made only when the
        one before it is taken: the changes of 1 service, then of 2, 4,
        ... up to `MAX_CHUNK` services, the last chunk closed by the
        barrier. One link can carry a thousand services' primaries:
        sending each chunk as it comes puts the first redirects on the
        wire after their own work, not after everyone's.

        Each service's monitors hear of the port as its turn comes (with
        a thousand services, telling them all first delayed the first
        redirect by milliseconds). Other events may reach the policy
        between two chunks (a PacketIn need not wait for the whole burst):
        a service still to come that an event touches is settled there,
        its changes ahead of the event's own; its chunk then carries
        nothing for it.

        A port reported in the state it had is no news (Open vSwitch also
        reports a port's other changes, e.g. one just before its link
        goes down): nothing is made, for any service."""
        ports = self._port_up.get(datapath_id)
        if ports is not None:
            if ports.get(port_no) == is_up:
                return
            ports[port_no] = is_up
        news = (port_no, is_up, now,
                f'port {port_no} {"up" if is_up else "down"}')
        states = self._states_on(datapath_id)
        for state in states:
            earlier = self._unsettled.get(state.index)
            if earlier is not None:
                # A burst left unfinished (its handler raised): its news
                # must not be lost under this one's.
                self._tell_monitors(state, earlier)
            self._unsettled[state.index] = news
        chunk: typing.List[model.Message] = []
        in_chunk = 0
        chunk_size = 1
        changed = False
        for position, state in enumerate(states):
            changes = None
            if state.index in self._unsettled:
                changes = self._changes(state, now, None)
            if changes is not None:
                changed = True
                chunk += changes
                in_chunk += 1
            last = position == len(states) - 1
            if last and changed:
                chunk.append(model.Barrier(datapath_id))
            if chunk and (last or in_chunk >= chunk_size):
                yield chunk
                chunk, in_chunk = [], 0
                chunk_size = min(chunk_size * 2, MAX_CHUNK)

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
        for state, monitors in self._watching_packets.get(datapath_id, ()):
            answered = False
            for monitor in monitors:
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
            # A server's RST the switch held for us: redispatched or on.
            return messages + self._redispatch.on_server_reset(
                self._states_on(datapath_id), self.strategy, packet)
        if isinstance(packet, model.TcpPacket):
            if self._redispatch.syns_copied:
                # The switch pins connections: a client's packet here is
                # a copy of its SYN, kept in case its server refuses it.
                self._redispatch.remember_copy(self._states_by_port.get(
                    (datapath_id, packet.tcp_dst), ()), packet)
                return []
            return self._on_service_packet(datapath_id, packet, now)
        if isinstance(packet, model.ArpRequest):
            return stand_in.answer_arp(
                self._states_by_primary.get(
                    (datapath_id, packet.target_ip), ()),
                datapath_id, packet)
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

    def _reconcile(self, state: ServiceState, now: float, why: str
                   ) -> typing.List[model.Message]:
        """The service's changes, if any, closed by a barrier."""
        messages = self._changes(state, now, why)
        if messages is None:
            return []
        return messages + [model.Barrier(state.service.datapath_id)]

    def _changes(self, state: ServiceState, now: float,
                 why: typing.Optional[str]
                 ) -> typing.Optional[typing.List[model.Message]]:
        """Take the monitors' verdict on the service (once they have heard
        of a port change still due to them: then that is `why`); the
        messages that carry out what changed, the redirect first, without
        a barrier (None: nothing changed)."""
        news = self._unsettled.pop(state.index, None)
        if news is not None:
            why = self._tell_monitors(state, news)
        was_healthy, was_eligible = state.healthy, state.eligible
        state.update_health(now, self.settings.failback_hold_down)
        if state.healthy == was_healthy and state.eligible == was_eligible:
            return None
        messages: typing.List[model.Message] = []
        previous = state.active
        state.active = state.choose_active(self.settings.failback)
        view = state.view(self.settings)
        datapath_id = state.service.datapath_id
        self._transition(state, previous, now, why)
        messages += self.strategy.on_servers_changed(view, previous)
        if previous != state.active:
            messages += stand_in.reply_fallbacks(
                self.strategy, self.settings, self._sharing_a_port(state),
                datapath_id, involving=state.service)
        for server, (before, after) in enumerate(zip(was_healthy,
                                                     state.healthy)):
            if before and not after:
                # Connections pinned to a dead server cannot be saved;
                # removing their flows lets their packets be decided anew
                # (after the redirect above, so they are not re-pinned).
                messages.append(base.delete_connections(view, server))
                state.forget_connections_to(server)
        if was_healthy[0] != state.healthy[0]:
            messages += stand_in.update_arp_responder(
                self.settings, self._states_by_primary[
                    (datapath_id, state.service.primary.ip)], state)
        return self._meters.apply(datapath_id, messages)

    @staticmethod
    def _tell_monitors(state, news):
        """Give the service's monitors a port's change; its label."""
        port_no, is_up, when, label = news
        for monitor in state.monitors:
            monitor.on_port_status(port_no, is_up, when)
        return label

    def _on_service_packet(self, datapath_id, packet, now):
        state = self._service_for(datapath_id, packet)
        if state is None:
            return []
        if state.index in self._unsettled:
            # Between two chunks of a port's changes: this service's own
            # go first.
            changes = self._changes(state, now, None)
            return (changes or []) + self._on_service_packet(
                datapath_id, packet, now)
        key = (packet.in_port, packet.ipv4_src, packet.tcp_src,
               packet.tcp_dst)
        server = state.connections.get(key)
        view = state.view(self.settings)
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
        self._redispatch.remember(state, key, packet, server)
        return self.strategy.connection_flows(view, packet, server)

    # Helpers ------------------------------------------------------------

    def _service_for(self, datapath_id, packet):
        # Only a service of the packet's destination port can serve it.
        return next((state for state in self._states_by_port.get(
            (datapath_id, packet.tcp_dst), ()) if state.serves(packet)),
            None)

    def _transition(self, state, previous, now, why):
        """Servers changed state; maybe new connections go elsewhere."""
        self._touch([state])
        if previous == state.active:
            return
        LOG.info('t=%.6f service %s: new connections to %s (was %s): %s',
                 now, state.service.name, state.server_label(state.active),
                 state.server_label(previous), why)
        if self.observer is not None:
            self.observer.server_changed(state.service.name, previous,
                                         state.active, why)

    def _states_on(self, datapath_id):
        return self._states_by_switch.get(datapath_id, [])

    def _sharing_a_port(self, state):
        """The services on the state's switch that serve one of its TCP
        ports (itself included), in service order: the only ones its
        reply fallbacks depend on."""
        dpid = state.service.datapath_id
        ports = state.service.tcp_ports
        if len(ports) == 1:
            return self._states_by_port[(dpid, ports[0])]
        sharing = {s.index: s for port in ports
                   for s in self._states_by_port[(dpid, port)]}
        return [sharing[index] for index in sorted(sharing)]

    def _state_named(self, name):
        for state in self._states:
            if state.service.name == name:
                return state
        raise KeyError(f'no service named {name!r}')


def _bundled(datapath_id, messages):
    """The flow and group changes as one atomic bundle, then the rest in
    order: a resync deletes our flows and installs them again, and traffic
    must not fall into the gap (non-service traffic least of all)."""
    changes = [m for m in messages
               if isinstance(m, (model.FlowMod, model.GroupMod))]
    others = [m for m in messages
              if not isinstance(m, (model.FlowMod, model.GroupMod))]
    return [model.Bundle(datapath_id, tuple(changes))] + others
