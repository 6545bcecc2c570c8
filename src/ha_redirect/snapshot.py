"""What a switch holds of ours, compared in OpenFlow's own terms.

A controller that takes over a switch must not disturb it: it reads our
flows (by cookie) and groups, and changes only what differs from what it
would install. Flows are compared as the switch reports them: our model
flow is rendered, serialised and parsed back with os-ken's parser, so both
sides are in the same normal form (match fields in any order, actions as
encoded on the wire).

This is part of the thin OpenFlow layer; the policy sees only
`SwitchSnapshot.contains`, `pins` and `changes_towards`, all in model terms.
"""

import typing

from ha_redirect import model
from ha_redirect import openflow


def _instructions_key(instructions) -> bytes:
    buf = bytearray()
    for instruction in instructions:
        instruction.serialize(buf, len(buf))
    return bytes(buf)


def _match_key(ofp_match) -> tuple:
    return tuple(sorted((name, repr(value))
                        for name, value in ofp_match.items()))


def _identity(table_id, priority, ofp_match) -> tuple:
    """What OpenFlow calls the same flow: an ADD with it replaces one."""
    return (table_id, priority, _match_key(ofp_match))


def _content(entry, send_flow_rem_flag) -> tuple:
    return (entry.cookie, entry.idle_timeout, entry.hard_timeout,
            bool(entry.flags & send_flow_rem_flag),
            _instructions_key(entry.instructions))


def _round_trip(datapath, ofp_msg):
    """`ofp_msg` as the switch would report it: serialised and parsed."""
    ofp_msg.serialize()
    return type(ofp_msg).parser(
        datapath, ofp_msg.version, ofp_msg.msg_type, ofp_msg.msg_len,
        ofp_msg.xid or 0, ofp_msg.buf)


def _buckets_key(buckets) -> bytes:
    buf = bytearray()
    for bucket in buckets:
        bucket.serialize(buf, len(buf))
    return bytes(buf)


class SwitchSnapshot:
    """Our flows and the groups on one switch, at one moment.

    `flow_stats`: OFPFlowStats entries (our cookie's); `group_descs`:
    OFPGroupDescStats entries; `datapath`: where they came from (only its
    ofproto and parser are used).
    """

    def __init__(self, datapath, flow_stats, group_descs):
        self._datapath = datapath
        self._rem = datapath.ofproto.OFPFF_SEND_FLOW_REM
        self._flows = {}        # identity -> (content, stats entry)
        for entry in flow_stats:
            self._flows[_identity(entry.table_id, entry.priority,
                                  entry.match)] = (
                _content(entry, self._rem), entry)
        self._groups = {g.group_id: (g.type, _buckets_key(g.buckets))
                        for g in group_descs}
        self._cache = {}

    @property
    def flow_count(self) -> int:
        return len(self._flows)

    def _rendered(self, message):
        parsed = self._cache.get(message)
        if parsed is None:
            ofp_msg = openflow.to_ofp_messages(self._datapath, message)[0]
            # os-ken parses a FlowMod back whole, but not a GroupMod's
            # buckets: those are compared as built.
            if isinstance(message, model.FlowMod):
                ofp_msg = _round_trip(self._datapath, ofp_msg)
            parsed = self._cache[message] = ofp_msg
        return parsed

    def contains(self, message: model.Message) -> bool:
        """Whether the switch already holds what `message` would install:
        a FlowMod ADD (same match and priority, same actions, cookie and
        timeouts) or a GroupMod ADD (same buckets). Other messages: True."""
        if isinstance(message, model.FlowMod):
            if message.command is not model.FlowCommand.ADD:
                return True
            mod = self._rendered(message)
            held = self._flows.get(_identity(mod.table_id, mod.priority,
                                             mod.match))
            return held is not None and held[0] == _content(mod, self._rem)
        if isinstance(message, model.GroupMod):
            if message.command is not model.GroupCommand.ADD:
                return True
            mod = self._rendered(message)
            return self._groups.get(mod.group_id) == (
                mod.type, _buckets_key(mod.buckets))
        return True

    def pins(self) -> typing.List[typing.Tuple[int, model.Match]]:
        """(cookie, match) of each per-connection flow."""
        return [(entry.cookie, openflow.match_from_ofp(entry.match))
                for _, entry in self._flows.values()
                if entry.cookie & 0xffff >= model.ROLE_CONNECTION_BASE]

    def changes_towards(self, desired: typing.Sequence[model.Message]
                        ) -> typing.List[model.Message]:
        """The fewest messages that make the switch hold `desired` (the
        flows and groups a fresh switch would get): ADD what is missing or
        different, MODIFY a group that differs, delete what we hold that is
        not desired. Per-connection flows are left alone; so are groups
        not desired (they carry no cookie to prove they are ours)."""
        changes = []
        wanted = set()
        for message in desired:
            if isinstance(message, model.FlowMod):
                if message.command is not model.FlowCommand.ADD:
                    continue
                mod = self._rendered(message)
                wanted.add(_identity(mod.table_id, mod.priority, mod.match))
                if not self.contains(message):
                    changes.append(message)
            elif isinstance(message, model.GroupMod):
                if message.command is not model.GroupCommand.ADD:
                    continue
                if self.contains(message):
                    continue
                if message.group_id in self._groups:
                    message = model.GroupMod(
                        message.datapath_id, model.GroupCommand.MODIFY,
                        message.group_id, message.buckets)
                changes.append(message)
            elif isinstance(message, model.MeterMod):
                changes.append(message)
        datapath_id = next((m.datapath_id for m in desired), None)
        for identity, (_, entry) in self._flows.items():
            if identity in wanted or (
                    entry.cookie & 0xffff >= model.ROLE_CONNECTION_BASE):
                continue
            changes.append(model.FlowMod(
                datapath_id, model.FlowCommand.DELETE_STRICT,
                match=openflow.match_from_ofp(entry.match),
                table=entry.table_id, priority=entry.priority,
                cookie=entry.cookie, cookie_mask=model.COOKIE_EXACT_MASK))
        return changes
