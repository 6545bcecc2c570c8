"""What every redirect strategy provides, and the flow vocabulary they share.

A strategy turns the policy's decisions (which server is active, which
connection goes where) into flow data. It holds no state of its own: the
policy owns health and connection memory and hands a `ServiceView` in.
"""

import abc
import dataclasses
import typing

from ha_redirect import model
from ha_redirect.model import Match
from ha_redirect.model import Output
from ha_redirect.model import SetField


@dataclasses.dataclass(frozen=True)
class ServiceView:
    """A service as the policy sees it at one instant."""
    service: model.Service
    index: int
    settings: model.PolicySettings
    healthy: typing.Tuple[bool, ...]      # per server, primary first
    active: typing.Optional[int]          # server index new connections use
    eligible: typing.Tuple[bool, ...] = ()  # may take new connections

    @property
    def datapath_id(self) -> int:
        return self.service.datapath_id

    def priority(self, offset: int) -> int:
        return self.settings.base_priority + offset

    def cookie(self, role: int) -> int:
        return model.make_cookie(self.settings.cookie, self.index, role)

    def connection_cookie(self, server_index: int) -> int:
        return self.cookie(model.connection_role(server_index))

    def server(self, server_index: int) -> model.Endpoint:
        return self.service.servers[server_index]


class Strategy(abc.ABC):
    """Base class of the plugins in the `ha_redirect.strategies` namespace.

    The contract, all of it read by the policy or the app: a strategy is
    built with no arguments and keeps no state; it must provide
    `service_flows` and `on_servers_changed`; every other attribute and
    hook below has a default that suits a strategy whose pins are flows
    the switch installs itself.
    """

    pins_connections: typing.ClassVar[bool] = True
    """Whether a connection stays on its server until it ends (a failback
    loses nothing), rather than following the active server. The policy
    refuses to drain a server when False: its connections would be reset.
    Default True."""

    pins_in_flows: typing.ClassVar[bool] = True
    """Whether those pins are flows (one forward pin per connection, with
    the server's connection cookie), so the policy can count open
    connections from the switch's flows (`pin_queries`, `count_pins`).
    Default True."""

    pins_by_controller: typing.ClassVar[bool] = False
    """Whether the controller installs the pins itself, one PacketIn per
    connection (`connection_flows`), and so must remember them, also
    after a takeover, where the app reads them from the switch. Default
    False."""

    def reply_fallback_table(self, settings: model.PolicySettings
                             ) -> typing.Optional[int]:
        """The table where the policy puts flows for backups' service
        replies that no pin claims (the active backup's are sent as the
        primary's), or None (the default) if the strategy rewrites every
        reply itself."""
        return None

    def check_services(self, services: typing.Sequence[model.Service],
                       settings: model.PolicySettings) -> None:
        """Raise model.ServiceError, naming the culprit, if these services
        cannot work with this strategy: checked once, before anything is
        installed, so a bad config stops the controller at start. The
        default accepts any."""

    def switch_flows(self, settings: model.PolicySettings, datapath_id: int,
                     cookie: int) -> typing.List[model.Message]:
        """Flows the strategy needs once per switch, whatever the services
        (default: none)."""
        return []

    @abc.abstractmethod
    def service_flows(self, view: ServiceView) -> typing.List[model.Message]:
        """Service-wide flows for a freshly (re)connected switch."""

    @abc.abstractmethod
    def on_servers_changed(self, view: ServiceView,
                           previous: typing.Optional[int]
                           ) -> typing.List[model.Message]:
        """Servers' health or eligibility changed; new connections now go
        to `view.active` (before: `previous`, perhaps the same)."""

    def connection_flows(self, view: ServiceView, packet: model.TcpPacket,
                         server_index: int,
                         priority_offset: int = model.PRIORITY_CONNECTION
                         ) -> typing.List[model.Message]:
        """Pin one client connection to a server, both directions, then let
        the packet that revealed it continue on the same path. Called for
        the client packets the strategy's flows send to the controller, and
        for the connections redispatch moves (above the switch's own pins,
        `model.PRIORITY_REDISPATCHED`, where the switch pins them)."""
        service = view.service
        server = view.server(server_index)
        cookie = view.connection_cookie(server_index)
        priority = view.priority(priority_offset)
        timeout = view.settings.connection_idle_timeout
        actions = _connection_actions(view, server)
        forward = model.FlowMod(
            view.datapath_id, model.FlowCommand.ADD,
            match=Match(in_port=packet.in_port, eth_src=packet.eth_src,
                        eth_dst=service.primary.mac,
                        eth_type=model.ETH_TYPE_IPV4,
                        ip_proto=model.IP_PROTO_TCP,
                        ipv4_src=packet.ipv4_src,
                        ipv4_dst=service.primary.ip,
                        tcp_src=packet.tcp_src, tcp_dst=packet.tcp_dst),
            actions=actions.forward, table=view.settings.table,
            priority=priority, cookie=cookie, idle_timeout=timeout,
            notify_removed=True)
        reverse = model.FlowMod(
            view.datapath_id, model.FlowCommand.ADD,
            match=Match(in_port=server.port, eth_src=server.mac,
                        eth_dst=packet.eth_src,
                        eth_type=model.ETH_TYPE_IPV4,
                        ip_proto=model.IP_PROTO_TCP,
                        ipv4_src=server.ip, ipv4_dst=packet.ipv4_src,
                        tcp_src=packet.tcp_dst, tcp_dst=packet.tcp_src),
            actions=actions.reply(packet.in_port),
            table=view.settings.table, priority=priority, cookie=cookie,
            idle_timeout=timeout)
        # The first packet follows its flows, never overtakes them.
        return [forward, reverse, model.Barrier(view.datapath_id),
                self.release(view, packet, server_index)]

    def release(self, view: ServiceView, packet: model.TcpPacket,
                server_index: int) -> model.PacketOut:
        """Send a packet of a pinned connection on to its server (also one
        the policy forwards without a pin, past its connection limit)."""
        return model.PacketOut(
            view.datapath_id,
            _connection_actions(view, view.server(server_index)).release,
            in_port=packet.in_port,
            data=b'' if packet.buffer_id is not None else packet.data,
            buffer_id=packet.buffer_id)


class _ConnectionActions:
    """The actions of a service's connections to one server. They depend
    only on the service, the server, the FIN timeout and the client's port,
    so they are made once, not for each new connection (each action is an
    object to build, and the encoder hashes and compares the tuples)."""

    def __init__(self, service, server, fin_timeout):
        self.service, self.server = service, server
        # Closed connections leave the table soon after their FIN or RST.
        fin = (model.FinTimeout(fin_timeout),) if fin_timeout else ()
        self.release = rewrite_towards(service, server) + (
            Output(server.port),)
        self.forward = fin + self.release
        self._back = fin + rewrite_back(service, server)
        self._replies: typing.Dict[typing.Any, tuple] = {}

    def reply(self, client_port) -> tuple:
        """The reply flow's actions, out to the client's port."""
        actions = self._replies.get(client_port)
        if actions is None:
            if len(self._replies) >= _MADE_ACTIONS_SIZE:
                self._replies.clear()
            actions = self._replies[client_port] = self._back + (
                Output(client_port),)
        return actions


# By (id(service), id(server), FIN timeout); each keeps its service and
# server, so an id is never another object's while its entry lives.
_made_actions: typing.Dict[tuple, _ConnectionActions] = {}
_MADE_ACTIONS_SIZE = 4096


def _connection_actions(view: ServiceView, server: model.Endpoint
                        ) -> _ConnectionActions:
    service = view.service
    fin_timeout = view.settings.fin_idle_timeout
    key = (id(service), id(server), fin_timeout)
    made = _made_actions.get(key)
    if made is None or made.service is not service or (
            made.server is not server):
        if len(_made_actions) >= _MADE_ACTIONS_SIZE:
            _made_actions.clear()
        made = _made_actions[key] = _ConnectionActions(service, server,
                                                       fin_timeout)
    return made


def rewrite_towards(service: model.Service, server: model.Endpoint
                    ) -> typing.Tuple[SetField, ...]:
    """Actions that readdress a packet meant for the primary to `server`."""
    if server == service.primary:
        return ()
    return (SetField('eth_dst', server.mac), SetField('ipv4_dst', server.ip))


def rewrite_back(service: model.Service, server: model.Endpoint
                 ) -> typing.Tuple[SetField, ...]:
    """Actions that make `server`'s reply look as if the primary sent it."""
    if server == service.primary:
        return ()
    return (SetField('eth_src', service.primary.mac),
            SetField('ipv4_src', service.primary.ip))


def reply_as_primary(service: model.Service, server: model.Endpoint
                     ) -> typing.Tuple[model.Action, ...]:
    """Actions that send a backup's service reply, whose connection no
    flow pins, to its client as the primary's. With one client port (a
    gateway, as in the paper) it goes straight there, as the primary's in
    every header. Otherwise only the switch's MAC learning knows the
    client's port: the reply keeps the backup's MAC, since NORMAL would
    learn the primary's MAC on the backup's port and send the primary's own
    traffic there after failback."""
    if len(service.client_ports) == 1:
        return rewrite_back(service, server) + (
            Output(service.client_ports[0]),)
    return (SetField('ipv4_src', service.primary.ip),
            Output(model.SpecialPort.NORMAL))


def service_flow(view: ServiceView, table: int, match: Match,
                 actions: typing.Tuple[model.Action, ...], offset: int
                 ) -> model.FlowMod:
    """A service-wide flow (not one connection's pin) at priority `offset`
    above the base, with the service's cookie."""
    return model.FlowMod(
        view.datapath_id, model.FlowCommand.ADD, match=match,
        actions=actions, table=table, priority=view.priority(offset),
        cookie=view.cookie(model.ROLE_SERVICE))


def client_service_matches(service: model.Service, tcp_port: int
                           ) -> typing.List[Match]:
    """Client traffic to the primary's service port, per client port."""
    template = dict(eth_dst=service.primary.mac,
                    eth_type=model.ETH_TYPE_IPV4, ip_proto=model.IP_PROTO_TCP,
                    ipv4_dst=service.primary.ip, tcp_dst=tcp_port)
    if service.client_ports:
        return [Match(in_port=port, **template)
                for port in service.client_ports]
    return [Match(**template)]


def server_reply_match(server: model.Endpoint, tcp_port: int) -> Match:
    """A server's replies from the service's TCP port."""
    return Match(in_port=server.port, eth_src=server.mac,
                 eth_type=model.ETH_TYPE_IPV4, ip_proto=model.IP_PROTO_TCP,
                 ipv4_src=server.ip, tcp_src=tcp_port)


def divert_service_traffic(view: ServiceView,
                           actions: typing.Tuple[model.Action, ...]
                           ) -> typing.List[model.FlowMod]:
    """Clients' service traffic and every server's replies take `actions`
    (to where the strategy looks connections up); the servers' own
    traffic to the primary does not (see `server_bypass_flows`)."""
    service = view.service
    flows = server_bypass_flows(view)
    for tcp_port in service.tcp_ports:
        matches = client_service_matches(service, tcp_port) + [
            server_reply_match(server, tcp_port)
            for server in service.servers]
        flows += [service_flow(view, view.settings.table, match, actions,
                               model.PRIORITY_SERVICE) for match in matches]
    return flows


def server_bypass_flows(view: ServiceView) -> typing.List[model.FlowMod]:
    """With "any port is a client port", the servers' own ports must still
    never be treated as clients: their traffic to the primary stays NORMAL."""
    service = view.service
    if service.client_ports:
        return []
    flows = []
    for tcp_port in service.tcp_ports:
        for server_port in service.server_ports:
            match = dataclasses.replace(
                client_service_matches(service, tcp_port)[0],
                in_port=server_port)
            flows.append(service_flow(
                view, view.settings.table, match,
                (Output(model.SpecialPort.NORMAL),),
                model.PRIORITY_SERVER_BYPASS))
    return flows


def delete_connections(view: ServiceView, server_index: int
                       ) -> model.FlowMod:
    """Every flow pinning a connection of this service to one server."""
    return model.FlowMod(
        view.datapath_id, model.FlowCommand.DELETE,
        table=model.ALL_TABLES,
        cookie=view.connection_cookie(server_index),
        cookie_mask=model.COOKIE_EXACT_MASK)
