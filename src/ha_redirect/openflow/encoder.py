"""Our messages -> the bytes on the wire, with xids, ready to send.

`to_wire` is what the app sends: for each OpenFlow message that carries out
one model message, its xid and its bytes. The messages a reactive
connection costs (its FlowMods, a Barrier, the PacketOut) are packed here
with `struct`, byte for byte as os-ken would serialize them (a unit test
holds the two to it over every message the strategies emit); building and
serializing os-ken's objects for them was most of the controller's time per
connection. So are the flows with learn actions and the fast-failover groups
that a failover rewrites per service (with a thousand services, os-ken's
serializer made the burst 4-5 times longer). Anything else, and any field or
action not packed here, goes through `renderer` and os-ken. Both paths
refuse what Open vSwitch would, with the same `ovs_constraints` checks.
"""

import socket
import struct
import typing

from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser

from ha_redirect import model
from ha_redirect.openflow import renderer
from ha_redirect.openflow import wire

# OpenFlow 1.3 and 1.4 share these layouts (1.4's importance takes 1.3's
# padding, and os-ken leaves it 0); 1.5 goes through os-ken.
_VERSIONS = (0x04, 0x05)
_OFPT_FLOW_MOD, _OFPT_PACKET_OUT, _OFPT_BARRIER_REQUEST = 14, 13, 20
_OFPT_GROUP_MOD, _OFPGT_FF = 15, 3
_OFPFF_SEND_FLOW_REM = 1
_OFPIT_APPLY_ACTIONS = 4
_OFPAT_OUTPUT, _OFPAT_GROUP, _OFPAT_SET_FIELD = 0, 22, 25
_OFPAT_EXPERIMENTER = 0xffff
_OFPCML_MAX, _OFPCML_NO_BUFFER = 0xffe5, 0xffff
_OFP_NO_BUFFER = 0xffffffff
_OFPP_ANY, _OFPG_ANY = 0xffffffff, 0xffffffff
_NX_EXPERIMENTER_ID, _NXAST_FIN_TIMEOUT, _NXAST_LEARN = 0x2320, 19, 16

_HEADER = struct.Struct('!BBHI')
_FLOW_MOD = struct.Struct('!BBHIQQBBHHHIIIH2x')
_PACKET_OUT = struct.Struct('!BBHIIIH6x')
_INSTRUCTION = struct.Struct('!HH4x')
_OUTPUT = struct.Struct('!HHIH6x')
_GROUP = struct.Struct('!HHI')
_GROUP_MOD = struct.Struct('!BBHIHBxI')
_BUCKET = struct.Struct('!HHII4x')     # length, weight, watch port, group
_FIN_TIMEOUT = struct.Struct('!HHIHHH2x')
# An NXAST_LEARN up to its specs: experimenter action header, subtype, then
# idle and hard timeouts, priority, cookie, flags, table, fin timeouts.
_LEARN = struct.Struct('!HHIHHHHQHBxHH')
_SPEC_HEADER = struct.Struct('!H')
# A learn spec's source and destination types (its header's bits 13, 11-12).
_SPEC_FIELD, _SPEC_IMMEDIATE = 0, 1
_SPEC_MATCH, _SPEC_LOAD, _SPEC_OUTPUT = 0, 1, 2

# (1.4 numbers them as 1.3 does)
_COMMANDS = {command: getattr(ofproto_v1_3, 'OFPFC_' + command.name)
             for command in model.FlowCommand}
_GROUP_COMMANDS = {command: getattr(ofproto_v1_3, 'OFPGC_' + command.name)
                   for command in model.GroupCommand}
_DELETING = (model.FlowCommand.DELETE, model.FlowCommand.DELETE_STRICT)
_PORTS = {model.SpecialPort.CONTROLLER: 0xfffffffd,
          model.SpecialPort.NORMAL: 0xfffffffa,
          model.SpecialPort.IN_PORT: 0xfffffff8}


# A memo that reaches this size starts over: none grows without bound.
_MEMO_SIZE = 1 << 16


def _memoized(store, key, compute):
    """`store[key]`, computed by `compute()` the first time (what it
    raises is not kept); a key that does not hash is computed each time."""
    try:
        value = store.get(key)
    except TypeError:
        return compute()
    if value is None:
        value = compute()
        if len(store) >= _MEMO_SIZE:
            store.clear()
        store[key] = value
    return value


# Packed values by their text: a switch's clients and servers repeat.
_macs: typing.Dict[str, bytes] = {}


def _mac(text) -> bytes:
    raw = _macs.get(text)
    if raw is None:
        raw = bytes.fromhex(text.replace(':', ''))
        if len(raw) != 6:
            raise _NotPacked
        if len(_macs) >= _MEMO_SIZE:
            _macs.clear()
        _macs[text] = raw
    return raw


_ipv4s: typing.Dict[str, bytes] = {}


def _ipv4(text) -> bytes:
    raw = _ipv4s.get(text) if type(text) is str else None
    if raw is None:
        if not isinstance(text, str) or text.count('.') != 3:
            raise _NotPacked
        raw = socket.inet_aton(text)
        if len(_ipv4s) >= _MEMO_SIZE:
            _ipv4s.clear()
        _ipv4s[text] = raw
    return raw


def _int(width):
    limit = 1 << (8 * width)

    def pack(value):
        if type(value) is not int or not 0 <= value < limit:
            raise _NotPacked
        return value.to_bytes(width, 'big')
    return pack


class _NotPacked(Exception):
    """A value this module does not pack: os-ken's path takes the
    message."""


def _oxm(field, length):
    return struct.pack('!I', (0x8000 << 16) | (field << 9) | length)


# OpenFlow basic-class (OXM) fields we pack, in the order os-ken's OFPMatch
# writes them (by field number): name -> (OXM header, value packer).
_FIELDS = {
    'in_port': (_oxm(0, 4), _int(4)),
    'eth_dst': (_oxm(3, 6), _mac),
    'eth_src': (_oxm(4, 6), _mac),
    'eth_type': (_oxm(5, 2), _int(2)),
    'ip_proto': (_oxm(10, 1), _int(1)),
    'ipv4_src': (_oxm(11, 4), _ipv4),
    'ipv4_dst': (_oxm(12, 4), _ipv4),
    'tcp_src': (_oxm(13, 2), _int(2)),
    'tcp_dst': (_oxm(14, 2), _int(2)),
}


def _pad8(length: int) -> int:
    return (length + 7) // 8 * 8


def _set_field_layout(header, pack):
    """(action header + OXM header, value packer, padding) of a set_field
    of this field: its value is the OXM header's last byte long."""
    length = _pad8(8 + header[3])
    return (struct.pack('!HH', _OFPAT_SET_FIELD, length) + header, pack,
            bytes(length - 8 - header[3]))


_SET_FIELDS = {name: _set_field_layout(header, pack)
               for name, (header, pack) in _FIELDS.items()}
# Output actions to a numbered port, by port.
_outputs: typing.Dict[int, bytes] = {}


# How each field's value goes into a struct: its format code, and what
# turns our value into what that code takes (None: the int itself, which
# struct range-checks).
_VALUE_CODES = {_mac: '6s', _ipv4: '4s'}
_INT_CODES = {1: 'B', 2: 'H', 4: 'I'}


def _match_plan(names):
    """A match with exactly these fields set: (one struct for all of it,
    header and padding included, and per field in wire order its name,
    OXM header and value converter)."""
    fields, fmt, length = [], ['!HH'], 4
    for name, (header, pack) in _FIELDS.items():
        if name not in names:
            continue
        width = header[3]
        code = _VALUE_CODES.get(pack) or _INT_CODES[width]
        convert = pack if pack in _VALUE_CODES else None
        fields.append((name, int.from_bytes(header, 'big'), convert))
        fmt.append('I' + code)
        length += 4 + width
    fmt.append(f'{_pad8(length) - length}x')
    return struct.Struct(''.join(fmt)), length, fields


# The set fields' names, as `Match.fields()` orders them -> their plan.
_match_plans: typing.Dict[tuple, tuple] = {}


def _match(fields) -> bytes:
    names = tuple(fields)
    plan = _match_plans.get(names)
    if plan is None:
        plan = _match_plans[names] = _match_plan(names)
    packer, length, planned = plan
    values = [1, length]
    for name, header, convert in planned:
        value = fields[name]
        if convert is not None:
            value = convert(value)
        elif type(value) is not int:
            raise _NotPacked
        values += (header, value)
    try:
        return packer.pack(*values)
    except struct.error:
        raise _NotPacked from None      # out of range: os-ken's path says


def _port(port) -> int:
    if isinstance(port, model.SpecialPort):
        return _PORTS[port]
    if type(port) is not int:
        raise _NotPacked
    return port


def _action(action) -> bytes:
    kind = type(action)
    if kind is model.Output:
        port = action.port
        if type(port) is int:
            packed = _outputs.get(port)
            if packed is None:
                packed = _OUTPUT.pack(_OFPAT_OUTPUT, 16, port, _OFPCML_MAX)
                if len(_outputs) >= _MEMO_SIZE:
                    _outputs.clear()
                _outputs[port] = packed
            return packed
        if port is model.SpecialPort.CONTROLLER:
            return _OUTPUT.pack(_OFPAT_OUTPUT, 16, _PORTS[port],
                                _OFPCML_NO_BUFFER)
        return _OUTPUT.pack(_OFPAT_OUTPUT, 16, _port(port), _OFPCML_MAX)
    if kind is model.SetField:
        layout = _SET_FIELDS.get(action.field)
        if layout is not None:
            head, pack, padding = layout
            return head + pack(action.value) + padding
    if kind is model.FinTimeout:
        return _FIN_TIMEOUT.pack(_OFPAT_EXPERIMENTER, 16,
                                 _NX_EXPERIMENTER_ID, _NXAST_FIN_TIMEOUT,
                                 action.idle_timeout, 0)
    if kind is model.Learn:
        return _learn(action)
    if kind is model.Group:
        if type(action.group_id) is not int:
            raise _NotPacked
        return _GROUP.pack(_OFPAT_GROUP, 8, action.group_id)
    raise _NotPacked


# Learn ---------------------------------------------------------------------
# proactive's flows carry two learns each; a failover of a thousand services
# rewrites a thousand such flows, and os-ken's serializer took ~0.6 ms each.

# An NXM field (os-ken's name, as `wire` spells it) -> its 4-byte header and
# a 0 bit offset: what a learn spec names a field by. Made by os-ken once.
_subfields: typing.Dict[str, bytes] = {}


def _subfield(nxm_name) -> bytes:
    return _memoized(_subfields, nxm_name, lambda: _subfield_of(nxm_name))


def _subfield_of(nxm_name) -> bytes:
    header = bytearray()
    ofproto_v1_3.oxm_serialize_header(
        ofproto_v1_3.oxm_from_user_header(nxm_name), header, 0)
    if len(header) != 4:
        raise _NotPacked
    return bytes(header) + b'\0\0'


def _spec(src_type, dst_type, n_bits) -> bytes:
    return _SPEC_HEADER.pack((src_type << 13) | (dst_type << 11) | n_bits)


# By (field, value, width): a switch's services share their servers'
# addresses, which take a parse each to convert.
_immediates: typing.Dict[tuple, bytes] = {}


def _immediate(field, value, n_bits) -> bytes:
    """A constant as a learn spec carries it: big-endian, in whole 16-bit
    words."""
    return _memoized(_immediates, (field, value, n_bits),
                     lambda: _immediate_of(field, value, n_bits))


def _immediate_of(field, value, n_bits) -> bytes:
    try:
        return wire.as_int(field, value).to_bytes((n_bits + 15) // 16 * 2,
                                                  'big')
    except (ValueError, OverflowError, TypeError):
        raise _NotPacked from None      # os-ken's path names the fault


# The set_field that loads a learn's constant output port into the register
# its learned output reads, by port: os-ken packs each once.
_register_loads: typing.Dict[int, bytes] = {}


def _register_load(port) -> bytes:
    if type(port) is not int:
        raise _NotPacked
    return _memoized(_register_loads, port, lambda: _register_load_of(port))


def _register_load_of(port) -> bytes:
    buf = bytearray()
    ofproto_v1_3_parser.OFPActionSetField(
        **{wire.LEARN_OUTPUT_REGISTER: port}).serialize(buf, 0)
    return bytes(buf)


def _learn(learn: model.Learn) -> bytes:
    """The learn action (after the register load its output needs), byte
    for byte as `renderer` and os-ken's NXActionLearn make it."""
    nxm = wire.NXM_FIELDS
    specs = []
    for name, value in learn.match_values:
        field, n_bits = nxm[name]
        specs += (_spec(_SPEC_IMMEDIATE, _SPEC_MATCH, n_bits),
                  _immediate(name, value, n_bits), _subfield(field))
    for dst, src in learn.match_from:
        field, n_bits = nxm[dst]
        specs += (_spec(_SPEC_FIELD, _SPEC_MATCH, n_bits),
                  _subfield(nxm[src][0]), _subfield(field))
    for name, value in learn.set_values:
        field, n_bits = nxm[name]
        specs += (_spec(_SPEC_IMMEDIATE, _SPEC_LOAD, n_bits),
                  _immediate(name, value, n_bits), _subfield(field))
    load = b''
    if learn.output_from is not None:
        field, n_bits = nxm[learn.output_from]
        specs += (_spec(_SPEC_FIELD, _SPEC_OUTPUT, n_bits), _subfield(field))
    else:
        load = _register_load(learn.output_port)
        specs += (_spec(_SPEC_FIELD, _SPEC_OUTPUT, 32),
                  _subfield(wire.LEARN_OUTPUT_REGISTER))
    body = b''.join(specs)
    length = _pad8(_LEARN.size + len(body))
    try:
        head = _LEARN.pack(
            _OFPAT_EXPERIMENTER, length, _NX_EXPERIMENTER_ID, _NXAST_LEARN,
            learn.idle_timeout, 0, learn.priority, learn.cookie, 0,
            learn.table, learn.fin_idle_timeout, 0)
    except struct.error:
        raise _NotPacked from None
    return load + head + body + bytes(length - _LEARN.size - len(body))


# A flow's checks and instructions depend on its actions, table and
# command, and on its match's field names and the values the checks read
# (`model.PREREQUISITES`), not on the values that set one connection apart:
# both are done once per such shape (a switch's connections repeat them).
_CHECKED_FIELDS = tuple(sorted({pre for pre, _ in
                                model.PREREQUISITES.values()}))
_flow_shapes: typing.Dict[tuple, bytes] = {}


def _instructions(flow: model.FlowMod, fields) -> bytes:
    """The flow's instructions, once it passed the checks."""
    if not fields.keys() <= _FIELDS.keys():
        raise _NotPacked
    renderer.check_flow_mod(flow, fields)
    if flow.command in _DELETING or not flow.actions:
        return b''
    actions = b''.join(_action(action) for action in flow.actions)
    return _INSTRUCTION.pack(_OFPIT_APPLY_ACTIONS, 8 + len(actions)) + actions


def _flow_mod(flow: model.FlowMod, version: int, new_xid) -> tuple:
    fields = flow.match.fields()
    shape = (flow.actions, flow.table, flow.command, tuple(fields),
             *[fields.get(name) for name in _CHECKED_FIELDS])
    instructions = _memoized(_flow_shapes, shape,
                             lambda: _instructions(flow, fields))
    match = _match(fields)
    length = _FLOW_MOD.size + len(match) + len(instructions)
    xid = new_xid()     # (the checks are passed: only the header is left)
    return xid, _FLOW_MOD.pack(
        version, _OFPT_FLOW_MOD, length, xid, flow.cookie, flow.cookie_mask,
        flow.table, _COMMANDS[flow.command], flow.idle_timeout,
        flow.hard_timeout, flow.priority, _OFP_NO_BUFFER, _OFPP_ANY,
        _OFPG_ANY, _OFPFF_SEND_FLOW_REM if flow.notify_removed else 0
    ) + match + instructions


# A packet-out's actions, checked and packed, by the actions.
_packet_out_actions: typing.Dict[tuple, bytes] = {}


def _packet_out_actions_of(message: model.PacketOut) -> bytes:
    renderer.check_packet_out(message, message.actions)
    return b''.join(_action(action) for action in message.actions)


def _packet_out(message: model.PacketOut, version: int, new_xid) -> tuple:
    actions = _memoized(_packet_out_actions, message.actions,
                        lambda: _packet_out_actions_of(message))
    buffer_id, data = message.buffer_id, message.data
    if buffer_id is None:
        if not data:
            raise _NotPacked    # os-ken's path names the fault
        buffer_id = _OFP_NO_BUFFER
    else:
        data = b''
    length = _PACKET_OUT.size + len(actions) + len(data)
    in_port = _port(message.in_port)
    xid = new_xid()
    return xid, _PACKET_OUT.pack(
        version, _OFPT_PACKET_OUT, length, xid, buffer_id, in_port,
        len(actions)) + actions + bytes(data)


def _group_mod(group: model.GroupMod, version: int, new_xid) -> tuple:
    """A fast-failover group (OpenFlow 1.3 and 1.4 lay it out alike)."""
    renderer.check_group_mod(group)
    group_id = group.group_id
    if type(group_id) is not int or not 0 <= group_id <= 0xffffff00:
        raise _NotPacked        # os-ken's path says what is wrong
    buckets = []
    if group.command is not model.GroupCommand.DELETE:
        for bucket in group.buckets:
            actions = b''.join([_action(a) for a in bucket.actions])
            try:
                buckets += (_BUCKET.pack(_BUCKET.size + len(actions), 0,
                                         _port(bucket.watch_port),
                                         _OFPG_ANY), actions)
            except struct.error:
                raise _NotPacked from None
    body = b''.join(buckets)
    xid = new_xid()
    return xid, _GROUP_MOD.pack(
        version, _OFPT_GROUP_MOD, _GROUP_MOD.size + len(body), xid,
        _GROUP_COMMANDS[group.command], _OFPGT_FF, group_id) + body


def _barrier(message: model.Barrier, version: int, new_xid) -> tuple:
    xid = new_xid()
    return xid, _HEADER.pack(version, _OFPT_BARRIER_REQUEST, 8, xid)


# A bundle's framing: OpenFlow 1.4's own messages, or on 1.3 the ONF
# extension Open vSwitch implements (an experimenter message each).
_BCT_OPEN_REQUEST, _BCT_COMMIT_REQUEST = 0, 4
_BF_ATOMIC_ORDERED = 1 | 2
_EXPERIMENTER = struct.Struct('!BBHIII')
_BUNDLE_CTRL = struct.Struct('!IHH')
_BUNDLE_ADD = struct.Struct('!I2xH')
_XID = struct.Struct('!I')


def _bundle(bundle: model.Bundle, datapath, new_xid) -> list:
    """Open, add each change, commit, as os-ken would serialize them:
    each change packed as above where it can be (else by os-ken), so the
    full state a switch gets when it meets us (thousands of flows with a
    thousand services) is not all serialized by os-ken."""
    version = datapath.ofproto.OFP_VERSION
    # Each change's bytes with xid 0: its bundle add message's is patched
    # in below. (Changes are never bundles: no recursion.)
    inner = [data for message in bundle.messages
             for _, data in to_wire(datapath, message, lambda: 0)]
    bundle_id = next(renderer._bundle_ids) & 0xffffffff

    def framed(is_control, body, tail=b''):
        xid = new_xid()
        length = len(body) + len(tail)
        if version == 0x04:
            head = _EXPERIMENTER.pack(
                version, wire.OFPT_EXPERIMENTER, _EXPERIMENTER.size + length,
                xid, wire.ONF_EXPERIMENTER_ID,
                wire.ONF_ET_BUNDLE_CONTROL if is_control
                else wire.ONF_ET_BUNDLE_ADD_MESSAGE)
        else:
            head = _HEADER.pack(
                version, wire.OFPT_BUNDLE_CONTROL if is_control
                else wire.OFPT_BUNDLE_ADD_MESSAGE, _HEADER.size + length, xid)
        if tail:
            tail = tail[:4] + _XID.pack(xid) + tail[8:]
        return xid, head + body + tail

    def control(command):
        return framed(True, _BUNDLE_CTRL.pack(bundle_id, command,
                                              _BF_ATOMIC_ORDERED))

    add = _BUNDLE_ADD.pack(bundle_id, _BF_ATOMIC_ORDERED)
    return ([control(_BCT_OPEN_REQUEST)]
            + [framed(False, add, message) for message in inner]
            + [control(_BCT_COMMIT_REQUEST)])


_PACKERS = {model.FlowMod: _flow_mod, model.PacketOut: _packet_out,
            model.GroupMod: _group_mod, model.Barrier: _barrier}


def to_wire(datapath, message: model.Message,
            new_xid: typing.Callable[[], int]
            ) -> typing.List[typing.Tuple[int, bytes]]:
    """(xid, bytes) of each OpenFlow message that carries out `message` on
    `datapath`, in order; `new_xid()` gives each its xid.

    Raises UnsupportedFlow, as `renderer.to_ofp_messages` does, for a
    message the switch would refuse (before any xid is taken).
    """
    version = datapath.ofproto.OFP_VERSION
    packer = _PACKERS.get(type(message))
    if packer is not None and version in _VERSIONS:
        # A packer takes its xid last, once nothing can refuse the
        # message or leave it to os-ken's path.
        try:
            return [packer(message, version, new_xid)]
        except _NotPacked:
            pass
    if isinstance(message, model.Bundle) and version in _VERSIONS:
        return _bundle(message, datapath, new_xid)
    wire = []
    for ofp_msg in renderer.to_ofp_messages(datapath, message):
        ofp_msg.set_xid(new_xid())
        ofp_msg.serialize()
        wire.append((ofp_msg.xid, bytes(ofp_msg.buf)))
    return wire
