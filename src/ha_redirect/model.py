"""Frozen value types shared by the policy core, the OpenFlow layer and tests.

Nothing here knows about os-ken: a flow is plain data with value equality, so
the policy can be tested by comparing what it returns, and the OpenFlow layer
(`ha_redirect.openflow`) is the only place that turns it into wire messages.
"""

import dataclasses
import enum
import ipaddress
import re
import typing

_MAC_RE = re.compile(r'^[0-9a-f]{2}(:[0-9a-f]{2}){5}$')

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
IP_PROTO_TCP = 6
ARP_REQUEST = 1
ARP_REPLY = 2


class ServiceError(ValueError):
    """A service definition that cannot work; the message names the culprit."""


def normalize_mac(value: str, what: str = 'mac') -> str:
    mac = str(value).strip().lower()
    if not _MAC_RE.match(mac):
        raise ServiceError(f'{what}: {value!r} is not a MAC address')
    return mac


def normalize_ipv4(value: str, what: str = 'ip') -> str:
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise ServiceError(
            f'{what}: {value!r} is not an IPv4 address') from None


def _check_port(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not (
            1 <= value <= 0xffffff00):
        raise ServiceError(f'{what}: {value!r} is not a switch port number')
    return value


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A server as the switch sees it: its addresses and its switch port."""
    ip: str
    mac: str
    port: int

    def __post_init__(self):
        object.__setattr__(self, 'ip', normalize_ipv4(self.ip))
        object.__setattr__(self, 'mac', normalize_mac(self.mac))
        _check_port(self.port, 'port')


@dataclasses.dataclass(frozen=True)
class Service:
    """One highly available TCP service on one switch.

    Clients address the primary; while the primary is unavailable the switch
    rewrites their traffic to the first available backup, in order.
    `client_ports` empty means "any port that is not a server's".
    """
    name: str
    datapath_id: int
    tcp_ports: typing.Tuple[int, ...]
    primary: Endpoint
    backups: typing.Tuple[Endpoint, ...]
    client_ports: typing.Tuple[int, ...] = ()
    monitors: typing.Tuple[str, ...] = ('port_status',)

    def __post_init__(self):
        object.__setattr__(self, 'tcp_ports', tuple(self.tcp_ports))
        object.__setattr__(self, 'monitors', tuple(self.monitors))
        object.__setattr__(self, 'backups', tuple(self.backups))
        object.__setattr__(self, 'client_ports', tuple(self.client_ports))
        where = f'service {self.name!r}'
        if not self.name:
            raise ServiceError('service: name must not be empty')
        if not isinstance(self.datapath_id, int) or self.datapath_id < 0:
            raise ServiceError(f'{where}: datapath_id {self.datapath_id!r} '
                               'is not a datapath id')
        if not self.tcp_ports:
            raise ServiceError(f'{where}: tcp_ports must not be empty')
        for port in self.tcp_ports:
            if isinstance(port, bool) or not isinstance(port, int) or not (
                    1 <= port <= 65535):
                raise ServiceError(f'{where}: tcp_ports: {port!r} is not a '
                                   'TCP port')
        if len(set(self.tcp_ports)) != len(self.tcp_ports):
            raise ServiceError(f'{where}: tcp_ports: duplicate TCP port')
        if not self.backups:
            raise ServiceError(f'{where}: backups: at least one backup is '
                               'required')
        servers = self.servers
        for backup in self.backups:
            if backup.ip == self.primary.ip or backup.mac == self.primary.mac:
                raise ServiceError(
                    f'{where}: backup {backup.ip} repeats the primary\'s '
                    'address')
        for attr in ('ip', 'mac', 'port'):
            values = [getattr(s, attr) for s in servers]
            if len(set(values)) != len(values):
                raise ServiceError(f'{where}: two servers share the same '
                                   f'{attr}')
        for port in self.client_ports:
            _check_port(port, f'{where}: client_ports')
            if port in self.server_ports:
                raise ServiceError(f'{where}: client_ports: port {port} is '
                                   'also a server port')
        if len(set(self.client_ports)) != len(self.client_ports):
            raise ServiceError(f'{where}: client_ports: duplicate port')
        if not self.monitors:
            raise ServiceError(f'{where}: monitors: at least one monitor is '
                               'required')
        if len(set(self.monitors)) != len(self.monitors):
            raise ServiceError(f'{where}: monitors: a monitor is listed '
                               'twice')

    @property
    def servers(self) -> typing.Tuple[Endpoint, ...]:
        """Primary first, then the backups in failover order."""
        return (self.primary,) + self.backups

    @property
    def server_ports(self) -> typing.Tuple[int, ...]:
        return tuple(s.port for s in self.servers)


class SpecialPort(enum.Enum):
    CONTROLLER = 'controller'
    NORMAL = 'normal'
    IN_PORT = 'in_port'


PortRef = typing.Union[int, SpecialPort]

# What a match field needs earlier in the same match (OpenFlow 1.3 spec,
# section 7.2.3.8); Open vSwitch refuses matches, set-fields and learn specs
# without it (OFPBMC_BAD_PREREQ / OFPBAC_MATCH_INCONSISTENT).
PREREQUISITES = {
    'ip_proto': ('eth_type', ETH_TYPE_IPV4),
    'ipv4_src': ('eth_type', ETH_TYPE_IPV4),
    'ipv4_dst': ('eth_type', ETH_TYPE_IPV4),
    'tcp_src': ('ip_proto', IP_PROTO_TCP),
    'tcp_dst': ('ip_proto', IP_PROTO_TCP),
    'tcp_flags': ('ip_proto', IP_PROTO_TCP),
    'arp_op': ('eth_type', ETH_TYPE_ARP),
    'arp_spa': ('eth_type', ETH_TYPE_ARP),
    'arp_tpa': ('eth_type', ETH_TYPE_ARP),
}

# Match field names follow OXM (and os-ken's OFPMatch keywords).
MATCH_FIELDS = ('in_port', 'eth_src', 'eth_dst', 'eth_type', 'ip_proto',
                'ipv4_src', 'ipv4_dst', 'tcp_src', 'tcp_dst', 'tcp_flags',
                'arp_op',
                'arp_spa', 'arp_tpa', 'ct_state', 'ct_zone', 'ct_mark')

# Connection tracking state bits (Open vSwitch's ct_state field).
CT_NEW = 0x01    # the first packet(s) of a connection not yet answered
CT_EST = 0x02    # a connection that has seen traffic both ways
CT_REL = 0x04    # related to a tracked connection (e.g. ICMP errors)
CT_RPL = 0x08    # in the reply direction
CT_INV = 0x10    # the tracker could not make sense of the packet
CT_TRK = 0x20    # the packet has been through the tracker


def ct_state(on: int, off: int = 0) -> typing.Tuple[int, int]:
    """A `Match.ct_state` (value, mask): bits `on` set, bits `off` clear;
    `ct_state(CT_TRK | CT_RPL, CT_INV)` is OVS's `+trk+rpl-inv`."""
    if on & off:
        raise ServiceError(f'ct_state: {on & off:#x} both set and clear')
    return (on, on | off)


@dataclasses.dataclass(frozen=True)
class Match:
    """An OpenFlow match; a field left as None is wildcarded."""
    in_port: typing.Optional[int] = None
    eth_src: typing.Optional[str] = None
    eth_dst: typing.Optional[str] = None
    eth_type: typing.Optional[int] = None
    ip_proto: typing.Optional[int] = None
    ipv4_src: typing.Optional[str] = None
    ipv4_dst: typing.Optional[str] = None
    tcp_src: typing.Optional[int] = None
    tcp_dst: typing.Optional[int] = None
    # (value, mask), as ct_state: see TCP_OPENING.
    tcp_flags: typing.Optional[typing.Tuple[int, int]] = None
    arp_op: typing.Optional[int] = None
    arp_spa: typing.Optional[str] = None
    arp_tpa: typing.Optional[str] = None
    # Conntrack fields, valid after a Conntrack action with a `table`:
    # ct_state is (value, mask) -- see `ct_state()`.
    ct_state: typing.Optional[typing.Tuple[int, int]] = None
    ct_zone: typing.Optional[int] = None
    ct_mark: typing.Optional[int] = None

    def fields(self) -> typing.Dict[str, typing.Any]:
        """The fields that are set, in a stable order."""
        return {name: getattr(self, name) for name in MATCH_FIELDS
                if getattr(self, name) is not None}


@dataclasses.dataclass(frozen=True)
class Output:
    port: PortRef


@dataclasses.dataclass(frozen=True)
class SetField:
    field: str
    value: typing.Any


@dataclasses.dataclass(frozen=True)
class GotoTable:
    table: int


@dataclasses.dataclass(frozen=True)
class Learn:
    """OVS `learn`: the packet installs a flow derived from its own headers.

    `match_from` pairs (field of the learned match, field of this packet);
    `match_values` and `set_values` are constants; the learned flow outputs to
    `output_port`, or to the port named by the packet field `output_from`.
    """
    table: int
    priority: int
    cookie: int
    idle_timeout: int = 0
    fin_idle_timeout: int = 0
    match_values: typing.Tuple[typing.Tuple[str, typing.Any], ...] = ()
    match_from: typing.Tuple[typing.Tuple[str, str], ...] = ()
    set_values: typing.Tuple[typing.Tuple[str, typing.Any], ...] = ()
    output_port: typing.Optional[int] = None
    output_from: typing.Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Group:
    """Hand the packet to a group (ours are fast-failover groups)."""
    group_id: int


@dataclasses.dataclass(frozen=True)
class Move:
    """Copy `n_bits` of packet field `src` (from bit `src_ofs`) into `dst`
    (from bit `dst_ofs`): OVS `move`. Inside a Conntrack's actions it writes
    the connection's `ct_mark` or `ct_label`."""
    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclasses.dataclass(frozen=True)
class OutputFrom:
    """Output to the port number held in bits [ofs, ofs + n_bits) of a
    packet field (OVS `output:NXM_NX_CT_LABEL[0..15]`)."""
    field: str
    n_bits: int = 16
    ofs: int = 0


@dataclasses.dataclass(frozen=True)
class Conntrack:
    """OVS `ct`: send the packet through the connection tracker.

    `zone` separates connection tables (one per service). With `table`, a
    copy of the packet continues in that table carrying ct_state, ct_zone,
    ct_mark and ct_label (and translated addresses, with `nat`); without it
    the packet only passes through the tracker. `commit` remembers a new
    connection; `nat_dst` (needs `commit`) gives it a destination NAT, and
    `nat` applies the connection's existing translation (forward packets
    are readdressed, replies un-translated). `actions` (need `commit`) set
    the connection's ct_mark/ct_label: SetField or Move into them.
    """
    zone: int
    table: typing.Optional[int] = None
    commit: bool = False
    nat: bool = False
    nat_dst: typing.Optional[str] = None
    actions: typing.Tuple[typing.Union[SetField, Move], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, 'actions', tuple(self.actions))
        if not 0 <= self.zone <= 0xffff:
            raise ServiceError(f'conntrack zone {self.zone!r}: not 16 bits')
        if self.nat_dst is not None:
            object.__setattr__(self, 'nat_dst',
                               normalize_ipv4(self.nat_dst, 'nat_dst'))
        if (self.nat_dst is not None or self.actions) and not self.commit:
            raise ServiceError('conntrack: nat_dst and actions need commit')
        for action in self.actions:
            target = action.field if isinstance(action, SetField) else (
                action.dst if isinstance(action, Move) else None)
            if target not in ('ct_mark', 'ct_label'):
                raise ServiceError(f'conntrack: {action!r} must set ct_mark '
                                   'or ct_label')


@dataclasses.dataclass(frozen=True)
class FinTimeout:
    """OVS `fin_timeout`: once the flow sees a FIN or RST, it expires after
    `idle_timeout` idle seconds, so closed connections leave the table."""
    idle_timeout: int


@dataclasses.dataclass(frozen=True)
class Meter:
    """Pass the packet through an OpenFlow meter first (ours drop what
    exceeds a packet rate, so a flood cannot swamp the controller)."""
    meter_id: int


Action = typing.Union[Output, SetField, GotoTable, Learn, Group, Move,
                      OutputFrom, Conntrack, FinTimeout, Meter]


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One way out of a fast-failover group, live while `watch_port` is."""
    actions: typing.Tuple[Action, ...]
    watch_port: int

    def __post_init__(self):
        object.__setattr__(self, 'actions', tuple(self.actions))


class GroupCommand(enum.Enum):
    ADD = 'add'
    MODIFY = 'modify'
    DELETE = 'delete'


@dataclasses.dataclass(frozen=True)
class GroupMod:
    """A fast-failover group: the switch uses the first live bucket, on
    its own, the moment a watched port goes down."""
    datapath_id: int
    command: GroupCommand
    group_id: int
    buckets: typing.Tuple[Bucket, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, 'buckets', tuple(self.buckets))


class MeterCommand(enum.Enum):
    ADD = 'add'
    MODIFY = 'modify'
    DELETE = 'delete'


@dataclasses.dataclass(frozen=True)
class MeterMod:
    """A meter that drops packets above `rate` per second (bursts of up to
    `burst` packets pass)."""
    datapath_id: int
    command: MeterCommand
    meter_id: int
    rate: int = 0
    burst: int = 0


class FlowCommand(enum.Enum):
    ADD = 'add'
    MODIFY_STRICT = 'modify_strict'
    DELETE = 'delete'
    DELETE_STRICT = 'delete_strict'


@dataclasses.dataclass(frozen=True)
class FlowMod:
    """Add, change or remove flows; deletes are always scoped by cookie."""
    datapath_id: int
    command: FlowCommand
    match: Match = Match()
    actions: typing.Tuple[Action, ...] = ()
    table: int = 0
    priority: int = 0
    cookie: int = 0
    cookie_mask: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    notify_removed: bool = False

    def __post_init__(self):
        object.__setattr__(self, 'actions', tuple(self.actions))


@dataclasses.dataclass(frozen=True)
class PacketOut:
    """Send a packet the switch already has (buffer_id) or the given bytes."""
    datapath_id: int
    actions: typing.Tuple[Action, ...]
    in_port: PortRef = SpecialPort.CONTROLLER
    data: bytes = b''
    buffer_id: typing.Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, 'actions', tuple(self.actions))


@dataclasses.dataclass(frozen=True)
class ArpReply:
    """Answer an ARP request on a server's behalf, out of `out_port`."""
    datapath_id: int
    out_port: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


@dataclasses.dataclass(frozen=True)
class TcpSegment:
    """A TCP segment the controller originates (health probes and the RST
    that closes them), sent out of `out_port`."""
    datapath_id: int
    out_port: int
    eth_src: str
    eth_dst: str
    ipv4_src: str
    ipv4_dst: str
    tcp_src: int
    tcp_dst: int
    tcp_flags: int
    tcp_seq: int = 0
    tcp_ack: int = 0


@dataclasses.dataclass(frozen=True)
class FlowStatsRequest:
    """Ask the switch for its flows with this cookie (under the mask)."""
    datapath_id: int
    cookie: int
    cookie_mask: int


@dataclasses.dataclass(frozen=True)
class ConntrackFlush:
    """Forget the tracked connections of one zone whose replies come from
    `reply_src` (Open vSwitch 3.1+ NXT_CT_FLUSH): a dead server's."""
    datapath_id: int
    zone: int
    reply_src: str

    def __post_init__(self):
        object.__setattr__(self, 'reply_src',
                           normalize_ipv4(self.reply_src, 'reply_src'))
        if not 0 <= self.zone <= 0xffff:
            raise ServiceError(f'conntrack zone {self.zone!r}: not 16 bits')


@dataclasses.dataclass(frozen=True)
class Barrier:
    """Everything before this is applied before anything after it."""
    datapath_id: int


@dataclasses.dataclass(frozen=True)
class Bundle:
    """Flow and group changes the switch applies all at once (an atomic,
    ordered OpenFlow bundle): no packet sees the state halfway."""
    datapath_id: int
    messages: typing.Tuple[typing.Union[FlowMod, GroupMod], ...]

    def __post_init__(self):
        object.__setattr__(self, 'messages', tuple(self.messages))
        for message in self.messages:
            if not isinstance(message, (FlowMod, GroupMod)):
                raise ServiceError(f'bundle: {type(message).__name__} '
                                   'cannot be bundled')


Message = typing.Union[
    FlowMod, GroupMod, MeterMod, PacketOut, ArpReply, TcpSegment,
    FlowStatsRequest, ConntrackFlush, Barrier, Bundle]


# What the switch saw, as the OpenFlow layer decodes it for the policy.

@dataclasses.dataclass(frozen=True)
class TcpPacket:
    in_port: int
    eth_src: str
    eth_dst: str
    ipv4_src: str
    ipv4_dst: str
    tcp_src: int
    tcp_dst: int
    tcp_flags: int = 0
    buffer_id: typing.Optional[int] = None
    data: bytes = b''
    tcp_seq: int = 0
    tcp_ack: int = 0


@dataclasses.dataclass(frozen=True)
class ArpRequest:
    in_port: int
    sender_mac: str
    sender_ip: str
    target_ip: str


Packet = typing.Union[TcpPacket, ArpRequest]

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10
# A Match.tcp_flags for a client's opening SYN (SYN set, ACK clear).
TCP_OPENING = (TCP_SYN, TCP_SYN | TCP_ACK)


@dataclasses.dataclass(frozen=True)
class PolicySettings:
    """Deployment choices that are not per service (the `[ha_redirect]` group).

    `cookie` fills the upper 32 bits of every flow cookie we install; the
    lower bits say which service and which server a flow belongs to, so
    deletes can be scoped to exactly the flows they concern.
    """
    strategy: str = 'reactive'
    cookie: int = 0x48415244
    table: int = 0
    connection_table: int = 1
    base_priority: int = 1000
    connection_idle_timeout: int = 30
    fin_idle_timeout: int = 2
    failback: bool = True
    # Seconds a recovered server must stay healthy before it takes new
    # connections again (a link is up before its service is ready).
    failback_hold_down: float = 0.0
    forward_non_service_traffic: bool = True
    # Fast-failover groups get ids first_group_id + service index.
    first_group_id: int = 0x48520000
    # The `stateful` strategy tracks each service's connections in conntrack
    # zone first_ct_zone + service index, and sends them to their server
    # from `route_table` (None: connection_table + 1).
    first_ct_zone: int = 0x4852
    route_table: typing.Optional[int] = None
    # In-band TCP health probes (the `tcp_probe` monitor): the controller's
    # own address on the servers' subnet, used by no client.
    probe_ip: typing.Optional[str] = None
    probe_mac: typing.Optional[str] = None
    probe_interval: float = 0.1
    # 1 s, not less: under load a probe through the userspace datapath and
    # the controller was seen to take over 300 ms (false mark-downs).
    probe_timeout: float = 1.0
    probe_fall: int = 3
    probe_rise: int = 2
    probe_jitter: float = 0.1
    # Connections one service's memory tracks (reactive); beyond it, new
    # connections are forwarded to the active server without a pin.
    max_connections_per_service: int = 10000
    # PacketIns per second each of our controller-bound flow kinds may
    # send (an OpenFlow meter, where the switch has meters); 0: no limit.
    packet_in_rate: int = 1000
    # Our meters: first_meter_id for clients' traffic, the next one for
    # the monitors' (so a client flood cannot starve health probes).
    first_meter_id: int = 72

    def __post_init__(self):
        if not 0 <= self.failback_hold_down <= 86400:
            raise ServiceError('failback_hold_down: must be between 0 and '
                               '86400 seconds')
        if not 0 <= self.first_group_id <= 0xffffff00 - 0xffff:
            raise ServiceError('first_group_id: must leave room for a group '
                               'per service below 0xffffff00')
        if self.probe_ip is not None:
            object.__setattr__(self, 'probe_ip',
                               normalize_ipv4(self.probe_ip, 'probe_ip'))
        if self.probe_mac is not None:
            object.__setattr__(self, 'probe_mac',
                               normalize_mac(self.probe_mac, 'probe_mac'))
        if not 0.001 <= self.probe_interval <= 3600:
            raise ServiceError('probe_interval: must be between 0.001 and '
                               '3600 seconds')
        if not 0.001 <= self.probe_timeout <= 3600:
            raise ServiceError('probe_timeout: must be between 0.001 and '
                               '3600 seconds')
        if self.probe_fall < 1 or self.probe_rise < 1:
            raise ServiceError('probe_fall, probe_rise: must be at least 1')
        if not 0 <= self.probe_jitter < 1:
            raise ServiceError('probe_jitter: must be in [0, 1)')
        if not 0 < self.cookie <= 0xffffffff:
            raise ServiceError('cookie: must be a non-zero 32-bit value')
        if not 0 <= self.table < 254 or not 0 <= self.connection_table < 254:
            raise ServiceError('table: must be between 0 and 253')
        if self.table == self.connection_table:
            raise ServiceError('connection_table: must differ from table')
        if not 1 <= self.first_ct_zone <= 0xffff:
            raise ServiceError('first_ct_zone: must be between 1 and 65535')
        if self.route_table is not None or self.strategy == 'stateful':
            route = self.stateful_route_table
            if not self.connection_table < route <= 254 or route == self.table:
                raise ServiceError(
                    f'route_table: {route} must be after connection_table '
                    f'({self.connection_table}), at most 254, and differ '
                    'from table')
        if not 0 <= self.base_priority <= 0xffff - 100:
            raise ServiceError('base_priority: must be between 0 and 65435')
        # OpenFlow carries timeouts in 16 bits.
        if not 1 <= self.connection_idle_timeout <= 0xffff:
            raise ServiceError('connection_idle_timeout: must be between 1 '
                               'and 65535 seconds')
        if not 0 <= self.fin_idle_timeout <= 0xffff:
            raise ServiceError('fin_idle_timeout: must be between 0 and '
                               '65535 seconds')
        if not 1 <= self.max_connections_per_service <= 10_000_000:
            raise ServiceError('max_connections_per_service: must be '
                               'between 1 and 10000000')
        if not 0 <= self.packet_in_rate <= 10_000_000:
            raise ServiceError('packet_in_rate: must be between 0 (no '
                               'limit) and 10000000 per second')
        if not 1 <= self.first_meter_id < METER_MAX:
            raise ServiceError(f'first_meter_id: must be between 1 and '
                               f'{METER_MAX - 1}')

    @property
    def stateful_route_table(self) -> int:
        """The table the `stateful` strategy routes connections from."""
        if self.route_table is not None:
            return self.route_table
        return self.connection_table + 1


# Flow priorities, as offsets above PolicySettings.base_priority, so an
# embedding controller can place our flows relative to its own.
ALL_GROUPS = 0xfffffffc            # OFPG_ALL: a group delete that spans all
ALL_TABLES = 0xff                 # OFPTT_ALL: a delete that spans every table
METER_MAX = 0xffff0000            # OFPM_MAX
# Our meters, as offsets from PolicySettings.first_meter_id.
METER_CLIENTS = 0                 # clients' packets the controller decides
METER_MONITORS = 1                # monitors' packets: probe replies, ARP
METER_PORTS = 2                   # + switch port: one client port's packets


def last_shared_meter_id(settings: PolicySettings) -> int:
    """A switch whose meter ids reach this one can carry our meters."""
    return settings.first_meter_id + METER_MONITORS


def port_meter_id(settings: PolicySettings, port: int) -> int:
    """The meter of the clients' packets that come in on one switch port."""
    return settings.first_meter_id + METER_PORTS + port


PRIORITY_TABLE_MISS = 0           # absolute: the NORMAL fallback
PRIORITY_SERVICE = 10             # a client's service traffic, to be decided
PRIORITY_SERVICE_SYN = 12         # its opening SYNs, cached apart
PRIORITY_SERVER_REPLY = 15        # a backup's service replies, unpinned
PRIORITY_SERVER_BYPASS = 20       # servers' own traffic is never rewritten
PRIORITY_ARP_RESPONDER = 30       # ARP for a failed primary, answered by us
PRIORITY_PROBE_REPLY = 40         # servers' answers to our health probes
PRIORITY_CONNECTION = 50          # one TCP connection pinned to one server

# Cookie layout: [ settings.cookie : 32 | service index : 16 | role : 16 ].
COOKIE_OURS_MASK = 0xffffffff00000000
COOKIE_SERVICE_MASK = 0xffffffffffff0000
COOKIE_EXACT_MASK = 0xffffffffffffffff
ROLE_SERVICE = 0x0000             # service-wide flows
ROLE_ARP = 0x0001                 # ARP responder for the primary
ROLE_PROBE = 0x0002               # health probe replies and probe ARP
ROLE_CONNECTION_BASE = 0x0100     # + server index: flows pinned to a server
# With COOKIE_OURS_MASK: selects our flows other than pins (roles < 0x100).
COOKIE_PIN_ROLE_MASK = 0x000000000000ff00
GLOBAL_SERVICE_INDEX = 0xffff     # flows that belong to no single service


def make_cookie(base: int, service_index: int, role: int) -> int:
    return (base << 32) | (service_index << 16) | role


def connection_role(server_index: int) -> int:
    return ROLE_CONNECTION_BASE + server_index


def server_index_of_cookie(cookie: int) -> typing.Optional[int]:
    """The server a per-connection flow is pinned to, or None."""
    role = cookie & 0xffff
    if role >= ROLE_CONNECTION_BASE:
        return role - ROLE_CONNECTION_BASE
    return None
