"""One service as the policy keeps it: its servers' health, which of them
may take new connections and which does, and the connections it pinned.

`ha_redirect.policy` owns one `ServiceState` per service and decides when
it changes; the rules for reading it (who is eligible, who is active) live
here, next to the state they read.
"""

import dataclasses
import math
import typing

from ha_redirect import model
from ha_redirect.strategies import base

# (client port on the switch, client IP, client TCP port, service TCP port)
ConnectionKey = typing.Tuple[int, str, int, int]


@dataclasses.dataclass
class ServiceState:
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
    # Shared by the services on this switch with this primary address: the
    # indexes of those that see it down (see `share_primary_watch`), so
    # asking whether another still does costs the same beside 1 or 10,000.
    primary_down_in: typing.Optional[typing.Set[int]] = dataclasses.field(
        default=None, repr=False, compare=False)

    def serves(self, packet: model.TcpPacket) -> bool:
        """Is this a client's packet for the service?"""
        return (packet.ipv4_dst == self.service.primary.ip
                and self._from_a_client(packet))

    def serves_via_server(self, packet: model.TcpPacket) -> bool:
        """Is this a client's packet for the service, as the switch sent it
        on to one of its servers (rewritten to a backup's address)?"""
        return (any(packet.ipv4_dst == server.ip
                    for server in self.service.servers)
                and self._from_a_client(packet))

    def _from_a_client(self, packet):
        service = self.service
        return (packet.tcp_dst in service.tcp_ports
                and packet.in_port not in service.server_ports
                and (not service.client_ports
                     or packet.in_port in service.client_ports))

    def server_index(self, server: str) -> int:
        """Resolve 'primary', 'backupN' or a server's IP to its index."""
        service = self.service
        if server == 'primary':
            return 0
        if server.startswith('backup') and server[6:].isdigit():
            index = int(server[6:])
            if 1 <= index <= len(service.backups):
                return index
        for index, endpoint in enumerate(service.servers):
            if endpoint.ip == server:
                return index
        raise KeyError(f'service {service.name!r} has no server {server!r}')

    def view(self, settings: model.PolicySettings) -> base.ServiceView:
        """The service as its strategy sees it now."""
        return base.ServiceView(self.service, self.index, settings,
                                self.healthy, self.active, self.eligible)

    def share_primary_watch(self, primary_down_in: typing.Set[int]) -> None:
        """Keep this service's view of its primary in `primary_down_in`,
        the set every service on the switch with that primary shares."""
        self.primary_down_in = primary_down_in
        self._set_healthy(self.healthy)

    def primary_down_elsewhere(self) -> bool:
        """Does another service sharing the primary see it down?"""
        down = self.primary_down_in
        if down is None:
            raise ValueError(f'service {self.service.name!r} shares no '
                             'primary watch')
        return len(down) > (self.index in down)

    def _set_healthy(self, healthy) -> None:
        # Every change of `healthy` comes through here, so the shared set
        # never disagrees with it.
        self.healthy = healthy
        down = self.primary_down_in
        if down is not None:
            if healthy[0]:
                down.discard(self.index)
            else:
                down.add(self.index)

    def forget_connections(self) -> None:
        """The switch lost our pins (it reconnected or went away)."""
        self.connections.clear()
        self.at_capacity = False

    def start_from_monitors(self, now: float, hold_down: float) -> None:
        """Health as the monitors see it; what is healthy when we meet the
        switch takes connections at once: there is no failure to recover
        from. (The caller then chooses the active server.)"""
        self._set_healthy(self._monitors_verdict())
        self.healthy_since = {i: -math.inf for i, ok
                              in enumerate(self.healthy) if ok}
        self.eligible = self._eligible_at(now, hold_down)

    def start_from_switch(self, shown, now: float) -> None:
        """Health, eligibility and the active server as a switch another
        controller ran shows them; the monitors start from that verdict."""
        healthy, eligible, _ = shown
        for monitor in self.monitors:
            for server, ok in enumerate(healthy):
                monitor.adopt(server, ok, now)
        self._set_healthy(healthy)
        self.eligible, self.active = shown[1], shown[2]
        # A server in its hold-down starts it again.
        self.healthy_since = {
            i: -math.inf if eligible[i] else now
            for i, ok in enumerate(healthy) if ok}

    def update_health(self, now: float, hold_down: float) -> None:
        """Take the monitors' verdict now; a server that turned healthy
        starts its hold-down."""
        self._set_healthy(self._monitors_verdict())
        for server, ok in enumerate(self.healthy):
            if not ok:
                self.healthy_since.pop(server, None)
            elif server not in self.healthy_since:
                self.healthy_since[server] = now
        self.eligible = self._eligible_at(now, hold_down)

    def forget_connections_to(self, server: int) -> None:
        """The server died: its connections cannot be saved."""
        self.connections = {k: s for k, s in self.connections.items()
                            if s != server}
        self.at_capacity = False

    def _monitors_verdict(self):
        """Per server: healthy while every monitor says so."""
        return tuple(all(m.is_healthy(server) for m in self.monitors)
                     for server in range(len(self.service.servers)))

    def _eligible_at(self, now, hold_down):
        """Per server: healthy for `hold_down` seconds and not drained."""
        return tuple(
            healthy and server not in self.drained
            and now - self.healthy_since.get(server, now) >= hold_down
            for server, healthy in enumerate(self.healthy))

    def choose_active(self, failback: bool) -> typing.Optional[int]:
        """The first eligible server in order; without failback, a backup
        keeps the service until it fails or is drained itself."""
        if (not failback and self.active is not None
                and self.eligible[self.active]):
            return self.active
        for server, eligible in enumerate(self.eligible):
            if eligible:
                return server
        return None

    def server_label(self, server: typing.Optional[int]) -> str:
        """'primary 10.0.0.1', 'backup 2 10.0.0.5' or 'nobody', for logs."""
        if server is None:
            return 'nobody'
        return ('primary ' if server == 0 else f'backup {server} ') + (
            self.service.servers[server].ip)

    def status(self, connected: bool) -> typing.Dict[str, typing.Any]:
        """The service's servers, their health and who takes connections."""
        servers = []
        for index, endpoint in enumerate(self.service.servers):
            servers.append({
                'name': 'primary' if index == 0 else f'backup{index}',
                'ip': endpoint.ip, 'port': endpoint.port,
                'healthy': bool(self.healthy[index]),
                'eligible': bool(self.eligible[index])
                if self.eligible else False,
                'drained': index in self.drained,
                'active': index == self.active})
        return {'service': self.service.name,
                'datapath_id': self.service.datapath_id,
                'tracked_connections': len(self.connections),
                'connected': connected,
                'servers': servers}
