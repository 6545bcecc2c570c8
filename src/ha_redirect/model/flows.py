"""The flow vocabulary: matches, actions, the messages the policy returns
for the switch, and the packets it is shown.

Plain frozen data with value equality; `ha_redirect.openflow` is the only
place that turns it into OpenFlow messages.
"""

import dataclasses
import enum
import functools
import typing

from ha_redirect.model.validation import FlowError
from ha_redirect.model.validation import freeze_tuples
from ha_redirect.model.validation import normalize_ipv4
# What OVS requires of a match has its home there; model re-exports it.
from ha_redirect.ovs_constraints import ETH_TYPE_ARP
from ha_redirect.ovs_constraints import ETH_TYPE_IPV4
from ha_redirect.ovs_constraints import IP_PROTO_TCP
from ha_redirect.ovs_constraints import PREREQUISITES
from ha_redirect.ovs_constraints import TCP_ACK
from ha_redirect.ovs_constraints import TCP_FIN
from ha_redirect.ovs_constraints import TCP_RST
from ha_redirect.ovs_constraints import TCP_SYN

__all__ = [
    'ETH_TYPE_IPV4', 'ETH_TYPE_ARP', 'IP_PROTO_TCP', 'ARP_REQUEST',
    'ARP_REPLY', 'SpecialPort', 'PortRef', 'PREREQUISITES', 'MATCH_FIELDS',
    'CT_NEW', 'CT_EST', 'CT_REL', 'CT_RPL', 'CT_INV', 'CT_TRK', 'ct_state',
    'Match', 'Output', 'SetField', 'GotoTable', 'Learn', 'Group', 'Move',
    'OutputFrom', 'Conntrack', 'FinTimeout', 'Meter', 'Resubmit', 'Action',
    'Bucket', 'PASS_FORWARD', 'PASS_COPY',
    'GroupOrMeterCommand', 'GroupCommand', 'GroupMod', 'MeterCommand',
    'MeterMod', 'FlowCommand', 'FlowMod', 'PacketOut', 'ArpReply',
    'TcpHeader', 'TcpSegment', 'FlowStatsRequest', 'ConntrackFlush',
    'Barrier', 'Bundle', 'Message', 'TcpPacket', 'ArpRequest', 'Packet',
    'TCP_FIN', 'TCP_SYN', 'TCP_RST', 'TCP_ACK', 'TCP_OPENING']

ARP_REQUEST = 1
ARP_REPLY = 2


class SpecialPort(enum.Enum):
    CONTROLLER = 'controller'
    NORMAL = 'normal'
    IN_PORT = 'in_port'


PortRef = typing.Union[int, SpecialPort]

# Match field names follow OXM (and os-ken's OFPMatch keywords).
MATCH_FIELDS = ('in_port', 'eth_src', 'eth_dst', 'eth_type', 'ip_proto',
                'ipv4_src', 'ipv4_dst', 'tcp_src', 'tcp_dst', 'tcp_flags',
                'arp_op',
                'arp_spa', 'arp_tpa', 'ct_state', 'ct_zone', 'ct_mark', 'reg6')

# What a packet's `reg6` says when one of our flows resubmits it to its own
# table: every packet enters with 0; PASS_FORWARD is its pass through the
# forwarding flows, PASS_COPY the pass that copies it to the controller.
PASS_FORWARD = 1
PASS_COPY = 2

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
        raise FlowError.for_field('ct_state',
                                  f'{on & off:#x} both set and clear')
    return (on, on | off)


def _filled_at_once(cls):
    """Give a frozen dataclass an `__init__` that fills the instance's dict
    in one step (the generated one sets each field through
    `object.__setattr__`: a Match's eighteen cost more than packing its
    bytes). Same parameters, order, defaults and `__post_init__` call, so
    `Match(...)` and `dataclasses.replace` read as before. For dataclasses
    whose fields have plain defaults (or none)."""
    names, namespace = [], {'_fill': object.__setattr__}
    params = {False: [], True: []}     # by kw_only
    for field in dataclasses.fields(cls):
        if not field.init or (
                field.default_factory is not dataclasses.MISSING):
            raise TypeError(f'{cls.__name__}.{field.name}: not a plain field')
        names.append(field.name)
        if field.default is dataclasses.MISSING:
            params[field.kw_only].append(field.name)
        else:
            namespace[f'_default_{field.name}'] = field.default
            params[field.kw_only].append(
                f'{field.name}=_default_{field.name}')
    # (As dataclasses does: keyword-only fields come after the rest.)
    params = params[False] + (['*'] + params[True] if params[True] else [])
    entries = ', '.join(f'{name!r}: {name}' for name in names)
    body = f'    _fill(self, "__dict__", {{{entries}}})\n'
    if hasattr(cls, '__post_init__'):
        body += '    self.__post_init__()\n'
    exec(f'def __init__(self, {", ".join(params)}):\n{body}', namespace)
    init = namespace['__init__']
    init.__qualname__ = f'{cls.__qualname__}.__init__'
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init
    return cls


@_filled_at_once
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
    # OVS register 6, zero as a packet enters: see PASS_FORWARD.
    reg6: typing.Optional[int] = None

    def fields(self) -> typing.Dict[str, typing.Any]:
        """The fields that are set, in a stable order (MATCH_FIELDS')."""
        # The instance's dict holds the fields in their declared order,
        # which is MATCH_FIELDS' (a unit test holds the two together); it
        # is read for every flow sent.
        return {name: value for name, value in self.__dict__.items()
                if value is not None}


@_filled_at_once
@dataclasses.dataclass(frozen=True)
class Output:
    port: PortRef


@_filled_at_once
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


def _check_zone(zone, error):
    if not 0 <= zone <= 0xffff:
        raise error('zone', f'{zone!r} is not 16 bits')


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
        freeze_tuples(self, 'actions')
        error = functools.partial(FlowError.for_field, owner='conntrack')
        _check_zone(self.zone, error)
        if self.nat_dst is not None:
            object.__setattr__(self, 'nat_dst',
                               normalize_ipv4(self.nat_dst, 'nat_dst', error))
        if self.nat_dst is not None and not self.commit:
            raise error('nat_dst', 'needs commit')
        if self.actions and not self.commit:
            raise error('actions', 'need commit')
        for action in self.actions:
            target = action.field if isinstance(action, SetField) else (
                action.dst if isinstance(action, Move) else None)
            if target not in ('ct_mark', 'ct_label'):
                raise error('actions',
                            f'{action!r} must set ct_mark or ct_label')


@_filled_at_once
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


@dataclasses.dataclass(frozen=True)
class Resubmit:
    """OVS `resubmit(,table)`: look the packet up in `table` (any table,
    this one too) and run that flow's actions, then carry on with ours."""
    table: int


Action = typing.Union[Output, SetField, GotoTable, Learn, Group, Move,
                      OutputFrom, Conntrack, FinTimeout, Meter, Resubmit]


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One way out of a fast-failover group, live while `watch_port` is."""
    actions: typing.Tuple[Action, ...]
    watch_port: int

    def __post_init__(self):
        freeze_tuples(self, 'actions')


class GroupOrMeterCommand(enum.Enum):
    """OpenFlow gives group mods and meter mods the same three commands."""
    ADD = 'add'
    MODIFY = 'modify'
    DELETE = 'delete'


GroupCommand = MeterCommand = GroupOrMeterCommand


@dataclasses.dataclass(frozen=True)
class GroupMod:
    """A fast-failover group: the switch uses the first live bucket, on
    its own, the moment a watched port goes down."""
    datapath_id: int
    command: GroupCommand
    group_id: int
    buckets: typing.Tuple[Bucket, ...] = ()

    def __post_init__(self):
        freeze_tuples(self, 'buckets')


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


@_filled_at_once
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
        freeze_tuples(self, 'actions')


@_filled_at_once
@dataclasses.dataclass(frozen=True)
class PacketOut:
    """Send a packet the switch already has (buffer_id) or the given bytes."""
    datapath_id: int
    actions: typing.Tuple[Action, ...]
    in_port: PortRef = SpecialPort.CONTROLLER
    data: bytes = b''
    buffer_id: typing.Optional[int] = None

    def __post_init__(self):
        freeze_tuples(self, 'actions')


@dataclasses.dataclass(frozen=True)
class ArpReply:
    """Answer an ARP request on a server's behalf, out of `out_port`."""
    datapath_id: int
    out_port: int
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class TcpHeader:
    """What a TCP segment says of itself: addresses, ports and TCP fields.
    By keyword only, so a source is never taken for a destination."""
    eth_src: str
    eth_dst: str
    ipv4_src: str
    ipv4_dst: str
    tcp_src: int
    tcp_dst: int
    tcp_flags: int = 0
    tcp_seq: int = 0
    tcp_ack: int = 0


@dataclasses.dataclass(frozen=True)
class TcpSegment(TcpHeader):
    """A TCP segment the controller originates (health probes and the RST
    that closes them), sent out of `out_port`."""
    datapath_id: int
    out_port: int


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
        error = functools.partial(FlowError.for_field, owner='conntrack flush')
        object.__setattr__(self, 'reply_src',
                           normalize_ipv4(self.reply_src, 'reply_src', error))
        _check_zone(self.zone, error)


@_filled_at_once
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
        freeze_tuples(self, 'messages')
        for message in self.messages:
            if not isinstance(message, (FlowMod, GroupMod)):
                raise FlowError.for_field(
                    'messages', f'{type(message).__name__} cannot be bundled',
                    owner='bundle')


Message = typing.Union[
    FlowMod, GroupMod, MeterMod, PacketOut, ArpReply, TcpSegment,
    FlowStatsRequest, ConntrackFlush, Barrier, Bundle]


# What the switch saw, as the OpenFlow layer decodes it for the policy.

@_filled_at_once
@dataclasses.dataclass(frozen=True)
class TcpPacket(TcpHeader):
    """A TCP packet the switch sent us, from `in_port`: in its buffer
    `buffer_id` (None: not buffered), `data` its bytes."""
    in_port: int
    buffer_id: typing.Optional[int] = None
    data: bytes = b''


@dataclasses.dataclass(frozen=True)
class ArpRequest:
    in_port: int
    sender_mac: str
    sender_ip: str
    target_ip: str


Packet = typing.Union[TcpPacket, ArpRequest]

# A Match.tcp_flags for a client's opening SYN (SYN set, ACK clear).
TCP_OPENING = (TCP_SYN, TCP_SYN | TCP_ACK)
