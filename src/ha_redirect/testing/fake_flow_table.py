"""A small fake OpenFlow pipeline that runs the model's flow data.

Tests (ours, and those of controllers that embed ha_redirect) apply the
messages a policy returns and then ask what happens to a packet, instead of
comparing flow text: `table.is_output(1, packet, port=2)`. It follows
Faucet's `clib/fakeoftable.py`, but works on `ha_redirect.model` values and
imports nothing from os-ken.

What it models, per datapath id:
- flow tables with OpenFlow 1.3 FlowMod semantics: ADD replaces a flow with
  the same table, priority and match; MODIFY_STRICT replaces the actions of
  that flow (and adds nothing if there is none, as in OpenFlow 1.2+);
  DELETE removes the flows of the table whose match is at least as specific
  as the given one; DELETE_STRICT only the identical one; both delete and
  modify honour cookie/cookie_mask;
- Open vSwitch's refusals, from `ha_redirect.ovs_constraints` (the rules
  the renderer applies too): e.g. a match, set-field or learned flow that
  uses an IPv4/TCP/ARP field without `eth_type`/`ip_proto`, a ct action
  without an IPv4 match, a fast-failover bucket that combines ct with other
  actions (OVS runs a bucket's actions as an action set and silently drops
  the commit), a goto_table to an earlier table; applying such a flow,
  group or packet-out raises FakeFlowTableError;
- packet processing: highest-priority match wins (two matching flows of the
  same top priority raise FakeFlowTableError, the switch's choice would be
  arbitrary); apply-actions run in order on the packet as rewritten so far:
  Output copies the packet out, SetField rewrites it, Learn installs a flow
  (from the packet as rewritten so far, as OVS does); GotoTable continues in
  a later table; a table miss drops;
- idle and hard timeouts against the `now` the caller passes, and the
  fin_idle_timeout of learned flows (a FIN or RST in `tcp_flags` shortens
  the idle timeout, as OVS's fin_timeout action does);
- FlowRemoved notifications for flows with notify_removed, on timeout and
  on delete (OpenFlow 1.3 sends them for deletes too), in `removed`;
- fast-failover groups (GroupMod ADD/MODIFY/DELETE, with OVS's errors for
  adding an existing group or changing a missing one): a Group action runs
  the first bucket whose watch port is live, on a copy of the packet;
  deleting a group deletes the flows that use it, as OVS does. Ports are
  live unless `set_port_live(dpid, port, False)` says otherwise;
- connection tracking (`model.Conntrack`, OVS `ct`), per datapath: see
  `fake_conntrack`; the entries survive any flow or group change, as in a
  datapath;
- Move and OutputFrom (OVS `move` and `output:field[...]`) on packet fields;
  fields never set read as 0;
- PacketOut, ArpReply and TcpSegment messages are recorded in `sent`, not
  processed.

What it does not model: counters, packet buffers, other group types,
meters, queues, conntrack timeouts, TCP window and flag validation beyond
the SYN-ACK rule, FIN-driven closing, source NAT, port translation, ALGs,
related (+rel) traffic, ct_state's +snat/+dnat bits,
VLANs, table-miss flows other than drop, OFPP_TABLE, output to a port that
does not exist (every port exists and is up), and NORMAL: a packet output
to NORMAL is reported with port 'normal' and followed no further, as is one
sent to the controller ('controller'). Barrier is ignored (the fake applies
messages in order anyway).
"""

import dataclasses
import functools
import typing

from ha_redirect import model
from ha_redirect import ovs_constraints
from ha_redirect.testing.fake_conntrack import ConnectionTracker
from ha_redirect.testing.fake_conntrack import TrackedConnection
from ha_redirect.testing.fake_fields import FakeFlowTableError
from ha_redirect.testing.fake_fields import normalize as _normalize
from ha_redirect.testing.fake_fields import read_bits as _read_bits
from ha_redirect.testing.fake_fields import write_bits as _write_bits

CONTROLLER = 'controller'
NORMAL = 'normal'

# TCP flags, where this module has always offered them.
TCP_FIN = ovs_constraints.TCP_FIN
TCP_SYN = ovs_constraints.TCP_SYN
TCP_RST = ovs_constraints.TCP_RST
TCP_ACK = ovs_constraints.TCP_ACK

# Fields of the tracker's metadata, 0 on a packet that has not been tracked.
_CT_FIELDS = ('ct_state', 'ct_zone', 'ct_mark', 'ct_label')
# Fields that are zero until set: connection metadata and registers.
_ZERO_UNTIL_SET = _CT_FIELDS + ('reg6',)

_ALL_ONES = 0xffffffffffffffff


def _check(check, where: str, *args) -> None:
    """Run an `ovs_constraints` check, as the renderer does before OVS."""
    try:
        check(*args)
    except ovs_constraints.Refused as exc:
        raise FakeFlowTableError(f'{where}: {exc}') from None


@dataclasses.dataclass
class FlowEntry:
    """A flow as installed; `last_used` moves when a packet hits it."""
    table: int
    priority: int
    match: typing.Dict[str, typing.Any]
    actions: typing.Tuple[model.Action, ...]
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    notify_removed: bool = False
    fin_idle_timeout: int = 0
    installed_at: float = 0.0
    last_used: float = 0.0
    learned: bool = False

    def as_match(self) -> model.Match:
        return model.Match(**self.match)

    def matches(self, packet: typing.Mapping[str, typing.Any]) -> bool:
        return all(_field_matches(packet, k, v)
                   for k, v in self.match.items())

    def expired(self, now: float) -> typing.Optional[str]:
        """Why the flow has timed out at `now`, or None."""
        if self.hard_timeout and now - self.installed_at >= self.hard_timeout:
            return 'hard_timeout'
        if self.idle_timeout and now - self.last_used >= self.idle_timeout:
            return 'idle_timeout'
        return None


def _field_matches(packet, field, value) -> bool:
    if field in ('ct_state', 'tcp_flags'):
        bits, mask = value
        return packet.get(field, 0) & mask == bits
    if field in _ZERO_UNTIL_SET:
        return packet.get(field, 0) == value
    return packet.get(field) == value


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A packet leaving the switch; port: int, 'controller' or 'normal'."""
    port: typing.Union[int, str]
    packet: typing.Dict[str, typing.Any]


@dataclasses.dataclass(frozen=True)
class FlowRemoved:
    """What the switch would report with an OFPFlowRemoved message."""
    datapath_id: int
    cookie: int
    match: model.Match
    reason: str  # 'idle_timeout', 'hard_timeout' or 'delete'


def _cookie_selects(entry: FlowEntry, cookie: int, cookie_mask: int) -> bool:
    return entry.cookie & cookie_mask == cookie & cookie_mask


class FakeFlowTable:
    """The flow tables of any number of datapaths, fed with model messages."""

    MAX_GOTO = 64
    MAX_RECIRCULATIONS = 8

    def __init__(self):
        self.tables: typing.Dict[int, typing.List[FlowEntry]] = {}
        self.groups: typing.Dict[int, typing.Dict[int, model.GroupMod]] = {}
        self.dead_ports: typing.Set[typing.Tuple[int, int]] = set()
        self.sent: typing.List[model.Message] = []
        self.removed: typing.List[FlowRemoved] = []
        self.tracker = ConnectionTracker()
        # The tracker's entries, by dpid, under their old name.
        self.conntrack: typing.Dict[int, typing.List[TrackedConnection]] = (
            self.tracker.entries)
        # dpid -> meter id -> the last MeterMod (rates are not enforced)
        self.meters: typing.Dict[int, typing.Dict[int, model.MeterMod]] = {}

    def set_port_live(self, datapath_id: int, port: int, live: bool) -> None:
        """A port's link state, as fast-failover groups watch it."""
        if live:
            self.dead_ports.discard((datapath_id, port))
        else:
            self.dead_ports.add((datapath_id, port))

    # Applying messages.

    def apply(self, messages: typing.Iterable[model.Message],
              now: float = 0.0) -> None:
        """Apply FlowMods in order; record PacketOut/ArpReply; skip Barrier."""
        for message in messages:
            _apply_message(message, self, now)

    def _apply_flow_mod(self, flow: model.FlowMod, now: float) -> None:
        entries = self.tables.setdefault(flow.datapath_id, [])
        match = {k: _normalize(k, v) for k, v in flow.match.fields().items()}
        _check(ovs_constraints.check_flow_mod,
               f'dpid {flow.datapath_id:#x} table {flow.table}', flow)
        strict = [e for e in entries if e.table == flow.table and
                  e.priority == flow.priority and e.match == match]
        command = flow.command
        if command is model.FlowCommand.ADD:
            for entry in strict:
                entries.remove(entry)
            entries.append(FlowEntry(
                table=flow.table, priority=flow.priority, match=match,
                actions=flow.actions, cookie=flow.cookie,
                idle_timeout=flow.idle_timeout,
                hard_timeout=flow.hard_timeout,
                notify_removed=flow.notify_removed,
                fin_idle_timeout=max(
                    [a.idle_timeout for a in flow.actions
                     if isinstance(a, model.FinTimeout)], default=0),
                installed_at=now, last_used=now))
            return
        mask = flow.cookie_mask
        if command is model.FlowCommand.MODIFY_STRICT:
            for entry in strict:
                if _cookie_selects(entry, flow.cookie, mask):
                    entry.actions = flow.actions
            return
        # OFPTT_ALL: a delete that spans every table.
        in_table = (lambda e: True) if flow.table == model.ALL_TABLES else (
            lambda e: e.table == flow.table)
        if command is model.FlowCommand.DELETE_STRICT:
            doomed = [e for e in entries if in_table(e) and
                      e.priority == flow.priority and e.match == match]
        else:
            doomed = [e for e in entries if in_table(e) and
                      all(e.match.get(k) == v for k, v in match.items())]
        for entry in doomed:
            if _cookie_selects(entry, flow.cookie, mask):
                self._remove(flow.datapath_id, entry, 'delete')

    def _apply_group_mod(self, group: model.GroupMod) -> None:
        groups = self.groups.setdefault(group.datapath_id, {})
        where = f'dpid {group.datapath_id:#x} group {group.group_id:#x}'
        _check(ovs_constraints.check_group_mod, where, group)
        if group.command is model.GroupCommand.ADD:
            if group.group_id in groups:
                raise FakeFlowTableError(f'{where}: exists (GROUP_EXISTS)')
            groups[group.group_id] = group
        elif group.command is model.GroupCommand.MODIFY:
            if group.group_id not in groups:
                raise FakeFlowTableError(f'{where}: unknown (UNKNOWN_GROUP)')
            groups[group.group_id] = group
        else:
            doomed = (set(groups) if group.group_id == model.ALL_GROUPS
                      else {group.group_id} & set(groups))
            for group_id in doomed:
                del groups[group_id]
            for entry in list(self.tables.get(group.datapath_id, ())):
                if any(isinstance(a, model.Group) and a.group_id in doomed
                       for a in entry.actions):
                    self._remove(group.datapath_id, entry, 'group_delete')

    def _run_group(self, datapath_id, group_id, packet, now, dry_run,
                   depth):
        group = self.groups.get(datapath_id, {}).get(group_id)
        if group is None:
            raise FakeFlowTableError(f'dpid {datapath_id:#x}: no group '
                                     f'{group_id:#x}')
        for bucket in group.buckets:
            if (datapath_id, bucket.watch_port) in self.dead_ports:
                continue
            deliveries, _goto = self._execute(
                datapath_id, bucket.actions, dict(packet), now, dry_run,
                depth)
            return deliveries
        return []   # no live bucket: dropped

    def _remove(self, datapath_id: int, entry: FlowEntry,
                reason: str) -> None:
        self.tables[datapath_id].remove(entry)
        if entry.notify_removed:
            self.removed.append(FlowRemoved(datapath_id, entry.cookie,
                                            entry.as_match(), reason))

    def expire(self, now: float) -> typing.List[FlowRemoved]:
        """Remove the flows that have timed out at `now`.

        Returns the FlowRemoved notifications this produced (they are also
        appended to `removed`).
        """
        before = len(self.removed)
        for datapath_id, entries in self.tables.items():
            for entry in list(entries):
                reason = entry.expired(now)
                if reason:
                    self._remove(datapath_id, entry, reason)
        return self.removed[before:]

    # Looking at the tables.

    def flows(self, datapath_id: int, cookie: typing.Optional[int] = None,
              cookie_mask: int = _ALL_ONES,
              table: typing.Optional[int] = None) -> typing.List[FlowEntry]:
        """Installed flows, by table then descending priority."""
        found = [e for e in self.tables.get(datapath_id, ())
                 if (cookie is None or _cookie_selects(e, cookie, cookie_mask))
                 and (table is None or e.table == table)]
        return sorted(found, key=lambda e: (e.table, -e.priority))

    def lookup(self, datapath_id: int, table: int,
               packet: typing.Mapping[str, typing.Any]
               ) -> typing.Optional[FlowEntry]:
        """The flow a packet hits in one table, or None on a miss."""
        hits = [e for e in self.tables.get(datapath_id, ())
                if e.table == table and e.matches(packet)]
        if not hits:
            return None
        best = max(e.priority for e in hits)
        top = [e for e in hits if e.priority == best]
        if len(top) > 1:
            raise FakeFlowTableError(
                f'dpid {datapath_id:#x} table {table}: {len(top)} flows of '
                f'priority {best} match {dict(packet)}: '
                f'{[e.match for e in top]}')
        return top[0]

    # Running packets.

    def process(self, datapath_id: int,
                packet_fields: typing.Mapping[str, typing.Any],
                now: float = 0.0, dry_run: bool = False
                ) -> typing.List[Delivery]:
        """Run a packet through the pipeline from table 0.

        `packet_fields` uses OXM names (in_port, eth_src, ..., tcp_flags).
        Flows expire at `now` first; the flows hit are marked used at `now`
        and Learn actions install flows, unless `dry_run`.
        """
        if not dry_run:
            self.expire(now)
        packet = {k: _normalize(k, v) for k, v in packet_fields.items()}
        return self._pipeline(datapath_id, packet, 0, now, dry_run, 0)

    def _pipeline(self, datapath_id, packet, table, now, dry_run, depth):
        if depth > self.MAX_RECIRCULATIONS:
            raise FakeFlowTableError('ct recirculation loop')
        deliveries = []
        for _ in range(self.MAX_GOTO):
            entry = self.lookup(datapath_id, table, packet)
            if entry is None or (dry_run and entry.expired(now)):
                return deliveries
            if not dry_run:
                self._hit(entry, packet, now)
            more, next_table = self._execute(
                datapath_id, entry.actions, packet, now, dry_run, depth)
            deliveries += more
            if next_table is None:
                return deliveries
            table = next_table
        raise FakeFlowTableError('goto_table loop')

    def packet_out(self, message: model.PacketOut,
                   packet_fields: typing.Mapping[str, typing.Any],
                   now: float = 0.0) -> typing.List[Delivery]:
        """Run a packet-out's actions on the packet it carries (given as
        fields: the fake does not parse `data`), from its `in_port`."""
        _check(ovs_constraints.check_packet_out,
               f'dpid {message.datapath_id:#x} packet-out', message.actions)
        packet = {k: _normalize(k, v) for k, v in packet_fields.items()}
        if isinstance(message.in_port, int):
            packet['in_port'] = message.in_port
        deliveries, _ = self._execute(message.datapath_id, message.actions,
                                      packet, now, True, 0)
        return deliveries

    def _resubmit(self, datapath_id, packet, table, now, dry_run, depth):
        return self._pipeline(datapath_id, packet, table, now, dry_run,
                              depth + 1)

    def _execute(self, datapath_id, actions, packet, now, dry_run, depth):
        """Run an action list on `packet` (changed in place); returns the
        deliveries and the goto_table, if any."""
        run = _Run(self, datapath_id, packet, now, dry_run, depth)
        for action in actions:
            _run_action(action, run)
        return run.deliveries, run.next_table

    def connections(self, datapath_id: int,
                    zone: typing.Optional[int] = None
                    ) -> typing.List[TrackedConnection]:
        """The committed connections of a datapath (of one zone)."""
        return self.tracker.connections(datapath_id, zone)

    def flush_conntrack(self, datapath_id: int,
                        zone: typing.Optional[int] = None) -> None:
        """Forget the connections of a datapath (of one zone)."""
        self.tracker.flush(datapath_id, zone)

    def is_output(self, datapath_id: int,
                  packet_fields: typing.Mapping[str, typing.Any],
                  port: typing.Union[int, str, None] = None,
                  now: float = 0.0, **expected) -> bool:
        """Would the packet leave by `port` (any port if None)?

        Keyword arguments name fields the packet must carry as it leaves,
        e.g. `ipv4_dst='10.0.0.2'`. Has no side effects (no learning).
        """
        expected = {k: _normalize(k, v) for k, v in expected.items()}
        return any(
            (port is None or d.port == port) and
            all(d.packet.get(k) == v for k, v in expected.items())
            for d in self.process(datapath_id, packet_fields, now=now,
                                  dry_run=True))

    @staticmethod
    def _out_port(port: model.PortRef, packet) -> typing.Union[int, str]:
        if port is model.SpecialPort.CONTROLLER:
            return CONTROLLER
        if port is model.SpecialPort.NORMAL:
            return NORMAL
        if port is model.SpecialPort.IN_PORT:
            return packet['in_port']
        return port

    @staticmethod
    def _hit(entry: FlowEntry, packet, now: float) -> None:
        entry.last_used = now
        if entry.fin_idle_timeout and packet.get('tcp_flags', 0) & (
                TCP_FIN | TCP_RST):
            if entry.idle_timeout:
                entry.idle_timeout = min(entry.idle_timeout,
                                         entry.fin_idle_timeout)
            else:
                entry.idle_timeout = entry.fin_idle_timeout

    def _learn(self, datapath_id: int, learn: model.Learn, packet,
               now: float) -> None:
        match = dict(learn.match_values)
        for dst, src in learn.match_from:
            if src not in packet:
                raise FakeFlowTableError(
                    f'learn reads {src}, which the packet lacks: {packet}')
            match[dst] = packet[src]
        if learn.output_from is not None:
            out = packet[learn.output_from]
        else:
            out = learn.output_port
        actions = tuple(model.SetField(k, v) for k, v in learn.set_values)
        self._apply_flow_mod(model.FlowMod(
            datapath_id=datapath_id, command=model.FlowCommand.ADD,
            match=model.Match(**match),
            actions=actions + (model.Output(out),), table=learn.table,
            priority=learn.priority, cookie=learn.cookie,
            idle_timeout=learn.idle_timeout), now)
        entry = self.lookup_strict(datapath_id, learn.table, learn.priority,
                                   model.Match(**match))
        entry.fin_idle_timeout = learn.fin_idle_timeout
        entry.learned = True

    def lookup_strict(self, datapath_id: int, table: int, priority: int,
                      match: model.Match) -> typing.Optional[FlowEntry]:
        """The flow with exactly this table, priority and match, or None."""
        fields = {k: _normalize(k, v) for k, v in match.fields().items()}
        for entry in self.tables.get(datapath_id, ()):
            if (entry.table, entry.priority, entry.match) == (
                    table, priority, fields):
                return entry
        return None


# Messages: what applying each type does.

@functools.singledispatch
def _apply_message(message, table: FakeFlowTable, now: float) -> None:
    raise FakeFlowTableError(f'unknown message {message!r}')


@_apply_message.register
def _(message: model.Bundle, table: FakeFlowTable, now: float) -> None:
    # Applied in order; a packet never runs in between here.
    table.apply(message.messages, now)


@_apply_message.register
def _(message: model.FlowMod, table: FakeFlowTable, now: float) -> None:
    table._apply_flow_mod(message, now)


@_apply_message.register
def _(message: model.GroupMod, table: FakeFlowTable, now: float) -> None:
    table._apply_group_mod(message)


@_apply_message.register
def _(message: model.ConntrackFlush, table: FakeFlowTable,
      now: float) -> None:
    table.tracker.flush_replies_from(message.datapath_id, message.zone,
                                     message.reply_src)


@_apply_message.register
def _(message: model.PacketOut, table: FakeFlowTable, now: float) -> None:
    _check(ovs_constraints.check_packet_out,
           f'dpid {message.datapath_id:#x} packet-out', message.actions)
    table.sent.append(message)


@_apply_message.register(model.ArpReply)
@_apply_message.register(model.TcpSegment)
@_apply_message.register(model.FlowStatsRequest)
def _(message, table: FakeFlowTable, now: float) -> None:
    table.sent.append(message)


@_apply_message.register
def _(message: model.MeterMod, table: FakeFlowTable, now: float) -> None:
    table.meters.setdefault(message.datapath_id, {})[
        message.meter_id] = message


@_apply_message.register
def _(message: model.Barrier, table: FakeFlowTable, now: float) -> None:
    pass    # messages are applied in order anyway


# Actions: what each type does to a packet.

@dataclasses.dataclass
class _Run:
    """One action list running on one packet (changed in place)."""
    table: FakeFlowTable
    datapath_id: int
    packet: typing.Dict[str, typing.Any]
    now: float
    dry_run: bool
    depth: int
    deliveries: typing.List[Delivery] = dataclasses.field(
        default_factory=list)
    next_table: typing.Optional[int] = None


@functools.singledispatch
def _run_action(action, run: _Run) -> None:
    raise FakeFlowTableError(f'unsupported action {action!r}')


@_run_action.register
def _(action: model.Output, run: _Run) -> None:
    run.deliveries.append(Delivery(
        FakeFlowTable._out_port(action.port, run.packet), dict(run.packet)))


@_run_action.register
def _(action: model.SetField, run: _Run) -> None:
    run.packet[action.field] = _normalize(action.field, action.value)


@_run_action.register
def _(action: model.Learn, run: _Run) -> None:
    if not run.dry_run:
        run.table._learn(run.datapath_id, action, run.packet, run.now)


@_run_action.register
def _(action: model.GotoTable, run: _Run) -> None:
    run.next_table = action.table


@_run_action.register
def _(action: model.Group, run: _Run) -> None:
    run.deliveries += run.table._run_group(
        run.datapath_id, action.group_id, run.packet, run.now, run.dry_run,
        run.depth)


@_run_action.register
def _(action: model.Move, run: _Run) -> None:
    run.packet[action.dst] = _write_bits(
        run.packet.get(action.dst, 0), action.dst_ofs, action.n_bits,
        _read_bits(run.packet, action.src, action.src_ofs, action.n_bits))


@_run_action.register
def _(action: model.OutputFrom, run: _Run) -> None:
    run.deliveries.append(Delivery(
        _read_bits(run.packet, action.field, action.ofs, action.n_bits),
        dict(run.packet)))


@_run_action.register
def _(action: model.Conntrack, run: _Run) -> None:
    tracked = run.table.tracker.track(run.datapath_id, action,
                                      run.packet, run.dry_run)
    if action.table is not None:
        run.deliveries += run.table._pipeline(
            run.datapath_id, tracked, action.table, run.now, run.dry_run,
            run.depth + 1)


@_run_action.register
def _(action: model.Resubmit, run: _Run) -> None:
    # OVS: the packet as changed so far, its changes kept afterwards.
    run.deliveries += run.table._resubmit(
        run.datapath_id, run.packet, action.table, run.now, run.dry_run,
        run.depth)


@_run_action.register(model.FinTimeout)     # applied when the flow is hit
@_run_action.register(model.Meter)  # rates are not modelled: all packets pass
def _(action, run: _Run) -> None:
    pass
