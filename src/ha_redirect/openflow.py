"""Translate between the model's flow data and os-ken OpenFlow messages.

This is the only module that builds os-ken messages. The core returns plain
`ha_redirect.model` values; `render` / `to_ofp_messages` turn them into
messages for one datapath, using that datapath's `ofproto` and
`ofproto_parser`, so OpenFlow 1.3, 1.4 and 1.5 switches all work. In the
other direction, `decode_packet_in`, `decode_flow_removed` and
`port_states_from_desc` turn what the switch reports into model values.

A flow that Open vSwitch would refuse because a match or set-field lacks its
prerequisite (an IPv4 field without `eth_type=0x0800`, a TCP port without
`ip_proto=6`, ...) raises `UnsupportedFlow` here, before it reaches the
switch: we never add match fields behind the policy's back, since the switch
reports them back in FlowRemoved and the policy compares matches.
"""

import ipaddress
import itertools
import logging
import struct
import typing

from os_ken.lib import addrconv
from os_ken.lib.packet import arp
from os_ken.lib.packet import ether_types
from os_ken.lib.packet import ethernet
from os_ken.lib.packet import in_proto
from os_ken.lib.packet import ipv4
from os_ken.lib.packet import packet as packet_lib
from os_ken.lib.packet import tcp
from os_ken.ofproto import nicira_ext

from ha_redirect import model

LOG = logging.getLogger(__name__)


class UnsupportedFlow(ValueError):
    """A model message that cannot be rendered as a valid OpenFlow message."""


class MalformedPacket(ValueError):
    """A PacketIn whose bytes are not the frame their headers announce."""


PREREQUISITES = model.PREREQUISITES

# Learn specs name fields with Nicira (NXM) headers, as `ovs-ofctl`'s learn
# syntax does (NXM_OF_IP_SRC[] ...): (os-ken field name, width in bits).
# NXM_OF_IN_PORT is 16 bits wide; OVS port numbers for real ports fit.
NXM_FIELDS = {
    'in_port': ('in_port_nxm', 16),
    'eth_src': ('eth_src_nxm', 48),
    'eth_dst': ('eth_dst_nxm', 48),
    'eth_type': ('eth_type_nxm', 16),
    'ip_proto': ('ip_proto_nxm', 8),
    'ipv4_src': ('ipv4_src_nxm', 32),
    'ipv4_dst': ('ipv4_dst_nxm', 32),
    'tcp_src': ('tcp_src_nxm', 16),
    'tcp_dst': ('tcp_dst_nxm', 16),
    'arp_op': ('arp_op_nxm', 16),
    'arp_spa': ('arp_spa_nxm', 32),
    'arp_tpa': ('arp_tpa_nxm', 32),
}

# A Learn with a constant `output_port` loads the port into this register of
# the packet being processed and learns `output:<register>` from it (OVS
# accepts learned outputs only from a field, never as an immediate value).
LEARN_OUTPUT_REGISTER = 'reg7'


class _Where:
    """Names a message in errors; described only if an error is raised, since
    describing every flow would cost more than rendering it."""

    def __init__(self, message, suffix=''):
        self.message, self.suffix = message, suffix

    def __add__(self, suffix):
        return _Where(self.message, self.suffix + suffix)

    def __str__(self):
        return describe(self.message) + self.suffix


def check_prerequisites(fields: typing.Mapping[str, typing.Any],
                        needed: typing.Iterable[str], where: str) -> None:
    """Raise UnsupportedFlow if a field in `needed` lacks its prerequisite.

    `fields` are the fields the flow's match establishes; a value of None
    means "set, value only known at run time" (a learned field).
    """
    for name in needed:
        while name in PREREQUISITES:
            pre, value = PREREQUISITES[name]
            if pre not in fields:
                raise UnsupportedFlow(
                    f'{where}: {name} needs {pre}={value:#x} in the match')
            if fields[pre] is not None and fields[pre] != value:
                raise UnsupportedFlow(
                    f'{where}: {name} needs {pre}={value:#x}, the match has '
                    f'{pre}={fields[pre]:#x}')
            name = pre


def _port_number(port: model.PortRef, ofproto) -> int:
    if port is model.SpecialPort.CONTROLLER:
        return ofproto.OFPP_CONTROLLER
    if port is model.SpecialPort.NORMAL:
        return ofproto.OFPP_NORMAL
    if port is model.SpecialPort.IN_PORT:
        return ofproto.OFPP_IN_PORT
    return port


def _output_action(port: model.PortRef, ofproto, parser):
    if port is model.SpecialPort.CONTROLLER:
        return parser.OFPActionOutput(ofproto.OFPP_CONTROLLER,
                                      ofproto.OFPCML_NO_BUFFER)
    return parser.OFPActionOutput(_port_number(port, ofproto))


def _immediate(field: str, value) -> int:
    """A field value as the integer a learn spec carries on the wire."""
    if field in ('eth_src', 'eth_dst'):
        return int.from_bytes(addrconv.mac.text_to_bin(
            model.normalize_mac(value, field)), 'big')
    if field in ('ipv4_src', 'ipv4_dst', 'arp_spa', 'arp_tpa'):
        return int(ipaddress.IPv4Address(value))
    return int(value)


def _nxm(field: str, where: str):
    try:
        return NXM_FIELDS[field]
    except KeyError:
        raise UnsupportedFlow(f'{where}: learn cannot use field {field!r}; '
                              f'known: {", ".join(NXM_FIELDS)}') from None


def _learn_actions(learn: model.Learn, parser, where: str) -> list:
    learned = {name: value for name, value in learn.match_values}
    learned.update({dst: None for dst, _src in learn.match_from})
    check_prerequisites(learned, learned, where + ': learned match')
    check_prerequisites(learned, [name for name, _ in learn.set_values],
                        where + ': learned set_values')
    specs = []
    for name, value in learn.match_values:
        nxm, n_bits = _nxm(name, where)
        specs.append(parser.NXFlowSpecMatch(
            src=_immediate(name, value), dst=(nxm, 0), n_bits=n_bits))
    for dst, src in learn.match_from:
        dst_nxm, dst_bits = _nxm(dst, where)
        src_nxm, src_bits = _nxm(src, where)
        if dst_bits != src_bits:
            raise UnsupportedFlow(f'{where}: learn cannot copy {src} '
                                  f'({src_bits} bits) into {dst} '
                                  f'({dst_bits} bits)')
        specs.append(parser.NXFlowSpecMatch(
            src=(src_nxm, 0), dst=(dst_nxm, 0), n_bits=dst_bits))
    for name, value in learn.set_values:
        nxm, n_bits = _nxm(name, where)
        specs.append(parser.NXFlowSpecLoad(
            src=_immediate(name, value), dst=(nxm, 0), n_bits=n_bits))
    actions = []
    if (learn.output_port is None) == (learn.output_from is None):
        raise UnsupportedFlow(f'{where}: learn needs exactly one of '
                              'output_port and output_from')
    if learn.output_from is not None:
        nxm, n_bits = _nxm(learn.output_from, where)
        specs.append(parser.NXFlowSpecOutput(src=(nxm, 0), n_bits=n_bits))
    else:
        actions.append(parser.OFPActionSetField(
            **{LEARN_OUTPUT_REGISTER: learn.output_port}))
        specs.append(parser.NXFlowSpecOutput(
            src=(LEARN_OUTPUT_REGISTER, 0), n_bits=32))
    actions.append(parser.NXActionLearn(
        table_id=learn.table, specs=specs, idle_timeout=learn.idle_timeout,
        priority=learn.priority, cookie=learn.cookie,
        fin_idle_timeout=learn.fin_idle_timeout))
    return actions


# Fields a Move or OutputFrom may name beyond NXM_FIELDS: (os-ken, bits).
_REGISTER_FIELDS = {'ct_mark': ('ct_mark', 32), 'ct_label': ('ct_label', 128),
                    'ct_zone': ('ct_zone', 16)}
_NX_CT_F_COMMIT = 1
_NX_NAT_F_DST = 1 << 1           # OVS's nx-match.h; os-ken lacks the name
_NX_CT_RECIRC_NONE = 0xff


def _bit_field(field: str, ofs: int, n_bits: int, where: str) -> str:
    """The os-ken name of a field whose bits [ofs, ofs + n_bits) an action
    reads or writes; raises UnsupportedFlow if they do not fit."""
    name, width = _REGISTER_FIELDS.get(field) or NXM_FIELDS.get(
        field, (None, 0))
    if name is None:
        raise UnsupportedFlow(f'{where}: cannot use field {field!r} in a '
                              'move or output')
    if n_bits < 1 or ofs < 0 or ofs + n_bits > width:
        raise UnsupportedFlow(f'{where}: bits {ofs}..{ofs + n_bits - 1} do '
                              f'not fit {field} ({width} bits)')
    return name


def _conntrack_action(ct: model.Conntrack, ofproto, parser, where):
    nested = []
    if ct.nat_dst is not None:
        nested.append(parser.NXActionNAT(
            flags=_NX_NAT_F_DST, range_ipv4_min=ct.nat_dst,
            range_ipv4_max=ct.nat_dst))
    elif ct.nat:
        nested.append(parser.NXActionNAT(flags=0))
    exec_actions, goto = _actions(ct.actions, ofproto, parser, None, where)
    if goto is not None:
        raise UnsupportedFlow(f'{where}: goto_table inside ct')
    return parser.NXActionCT(
        flags=_NX_CT_F_COMMIT if ct.commit else 0, zone_src='',
        zone_ofs_nbits=ct.zone,
        recirc_table=_NX_CT_RECIRC_NONE if ct.table is None else ct.table,
        alg=0, actions=nested + exec_actions)


def _actions(actions, ofproto, parser, match_fields, where: str):
    """(apply-actions list, goto table or None) for model actions."""
    apply_actions = []
    goto = None
    for action in actions:
        if isinstance(action, model.Output):
            apply_actions.append(_output_action(action.port, ofproto, parser))
        elif isinstance(action, model.SetField):
            if match_fields is not None:
                check_prerequisites(match_fields, [action.field],
                                    where + ': set_field')
            apply_actions.append(
                parser.OFPActionSetField(**{action.field: action.value}))
        elif isinstance(action, model.Learn):
            apply_actions.extend(_learn_actions(action, parser, where))
        elif isinstance(action, model.Group):
            apply_actions.append(parser.OFPActionGroup(action.group_id))
        elif isinstance(action, model.FinTimeout):
            if (match_fields is not None
                    and match_fields.get('ip_proto') != model.IP_PROTO_TCP):
                raise UnsupportedFlow(f'{where}: fin_timeout needs '
                                      'ip_proto=6 in the match')
            apply_actions.append(parser.NXActionFinTimeout(
                fin_idle_timeout=action.idle_timeout, fin_hard_timeout=0))
        elif isinstance(action, model.Conntrack):
            apply_actions.append(
                _conntrack_action(action, ofproto, parser, where))
        elif isinstance(action, model.Move):
            apply_actions.append(parser.NXActionRegMove(
                src_field=_bit_field(action.src, action.src_ofs,
                                     action.n_bits, where),
                dst_field=_bit_field(action.dst, action.dst_ofs,
                                     action.n_bits, where),
                n_bits=action.n_bits, src_ofs=action.src_ofs,
                dst_ofs=action.dst_ofs))
        elif isinstance(action, model.OutputFrom):
            apply_actions.append(parser.NXActionOutputReg(
                ofs_nbits=nicira_ext.ofs_nbits(
                    action.ofs, action.ofs + action.n_bits - 1),
                src=_bit_field(action.field, action.ofs, action.n_bits,
                               where),
                max_len=0))
        elif isinstance(action, model.GotoTable):
            if goto is not None:
                raise UnsupportedFlow(f'{where}: more than one goto_table')
            goto = action.table
        else:
            raise UnsupportedFlow(f'{where}: unknown action {action!r}')
    return apply_actions, goto


_FLOW_COMMANDS = {
    model.FlowCommand.ADD: 'OFPFC_ADD',
    model.FlowCommand.MODIFY_STRICT: 'OFPFC_MODIFY_STRICT',
    model.FlowCommand.DELETE: 'OFPFC_DELETE',
    model.FlowCommand.DELETE_STRICT: 'OFPFC_DELETE_STRICT',
}


_OXM_ORDER = {}


def _match(parser, ofproto, fields):
    """An OFPMatch built straight from our already-normalised values.

    OFPMatch(**fields) converts each value to wire form and back, which is
    most of the cost of rendering a flow; our values are canonical already,
    so only the OXM order (what that conversion also produced) is needed.
    """
    order = _OXM_ORDER.setdefault(ofproto, {})
    for name in fields:
        if name not in order:
            probe = parser.OFPMatch(**{name: fields[name]})
            if probe._fields2 != [(name, fields[name])]:
                return parser.OFPMatch(**fields)   # not canonical: slow path
            number = ofproto.oxm_from_user(name, fields[name])[0]
            # As OFPMatch sorts: experimenter fields by their class.
            order[name] = number[0] if isinstance(number, tuple) else number
    return parser.OFPMatch(_ordered_fields=sorted(
        fields.items(), key=lambda item: order[item[0]]))


def _flow_mod(datapath, flow: model.FlowMod):
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    where = _Where(flow)
    fields = flow.match.fields()
    check_prerequisites(fields, fields, where)
    deleting = flow.command in (model.FlowCommand.DELETE,
                                model.FlowCommand.DELETE_STRICT)
    meters = [a for a in flow.actions if isinstance(a, model.Meter)]
    if len(meters) > 1 or meters and flow.actions[0] != meters[0]:
        raise UnsupportedFlow(f'{where}: one meter, before every action')
    apply_actions, goto = _actions(flow.actions[len(meters):], ofproto,
                                   parser, fields, where)
    instructions = []
    if meters and ofproto.OFP_VERSION >= 0x06:
        # OpenFlow 1.5 made the meter an action.
        apply_actions.insert(0, parser.OFPActionMeter(meters[0].meter_id))
    elif meters:
        instructions.append(parser.OFPInstructionMeter(meters[0].meter_id))
    if apply_actions:
        instructions.append(parser.OFPInstructionActions(
            ofproto.OFPIT_APPLY_ACTIONS, apply_actions))
    if goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(goto))
    return parser.OFPFlowMod(
        datapath=datapath,
        cookie=flow.cookie,
        cookie_mask=flow.cookie_mask,
        table_id=flow.table,
        command=getattr(ofproto, _FLOW_COMMANDS[flow.command]),
        idle_timeout=flow.idle_timeout,
        hard_timeout=flow.hard_timeout,
        priority=flow.priority,
        buffer_id=ofproto.OFP_NO_BUFFER,
        out_port=ofproto.OFPP_ANY,
        out_group=ofproto.OFPG_ANY,
        flags=ofproto.OFPFF_SEND_FLOW_REM if flow.notify_removed else 0,
        match=_match(parser, datapath.ofproto, fields),
        instructions=[] if deleting else instructions)


_METER_COMMANDS = {
    model.MeterCommand.ADD: 'OFPMC_ADD',
    model.MeterCommand.MODIFY: 'OFPMC_MODIFY',
    model.MeterCommand.DELETE: 'OFPMC_DELETE',
}


def _meter_mod(datapath, meter: model.MeterMod):
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    bands = []
    if meter.command is not model.MeterCommand.DELETE:
        bands = [parser.OFPMeterBandDrop(rate=meter.rate,
                                         burst_size=meter.burst)]
    return parser.OFPMeterMod(
        datapath, command=getattr(ofproto, _METER_COMMANDS[meter.command]),
        flags=ofproto.OFPMF_PKTPS | ofproto.OFPMF_BURST,
        meter_id=meter.meter_id, bands=bands)


_GROUP_COMMANDS = {
    model.GroupCommand.ADD: 'OFPGC_ADD',
    model.GroupCommand.MODIFY: 'OFPGC_MODIFY',
    model.GroupCommand.DELETE: 'OFPGC_DELETE',
}


def _group_mod(datapath, group: model.GroupMod):
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    where = _Where(group)
    if ofproto.OFP_VERSION >= 0x06:
        # OpenFlow 1.5 moved watch ports into bucket properties.
        raise UnsupportedFlow(f'{where}: fast-failover groups are rendered '
                              'for OpenFlow 1.3 and 1.4 only')
    buckets = []
    for bucket in group.buckets:
        # A bucket's set-fields have no match to check against: the flows
        # that use the group match IPv4 TCP.
        actions, goto = _actions(bucket.actions, ofproto, parser, None,
                                 where)
        if goto is not None:
            raise UnsupportedFlow(f'{where}: a bucket cannot goto_table')
        buckets.append(parser.OFPBucket(
            watch_port=_port_number(bucket.watch_port, ofproto),
            watch_group=ofproto.OFPG_ANY, actions=actions))
    return parser.OFPGroupMod(
        datapath, command=getattr(ofproto, _GROUP_COMMANDS[group.command]),
        type_=ofproto.OFPGT_FF, group_id=group.group_id,
        buckets=[] if group.command is model.GroupCommand.DELETE
        else buckets)


def _packet_out(datapath, in_port: model.PortRef, actions, data: bytes,
                buffer_id: typing.Optional[int], where: str):
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    apply_actions, goto = _actions(actions, ofproto, parser, None, where)
    if goto is not None:
        raise UnsupportedFlow(f'{where}: a packet-out cannot goto_table')
    if buffer_id is None:
        if not data:
            raise UnsupportedFlow(f'{where}: neither data nor buffer_id')
        buffer_id = ofproto.OFP_NO_BUFFER
    else:
        data = None
    port = _port_number(in_port, ofproto)
    if ofproto.OFP_VERSION >= 0x06:  # OpenFlow 1.5 carries in_port in a match
        return parser.OFPPacketOut(
            datapath=datapath, buffer_id=buffer_id,
            match=parser.OFPMatch(in_port=port), actions=apply_actions,
            data=data)
    return parser.OFPPacketOut(
        datapath=datapath, buffer_id=buffer_id, in_port=port,
        actions=apply_actions, data=data)


def arp_reply_frame(reply: model.ArpReply) -> bytes:
    """The Ethernet frame of an ARP reply, ready to send."""
    frame = packet_lib.Packet()
    frame.add_protocol(ethernet.ethernet(
        dst=reply.target_mac, src=reply.sender_mac,
        ethertype=ether_types.ETH_TYPE_ARP))
    frame.add_protocol(arp.arp(
        opcode=arp.ARP_REPLY, src_mac=reply.sender_mac,
        src_ip=reply.sender_ip, dst_mac=reply.target_mac,
        dst_ip=reply.target_ip))
    frame.serialize()
    return bytes(frame.data)


def tcp_segment_frame(segment: model.TcpSegment) -> bytes:
    """The Ethernet frame of a TCP segment the controller originates."""
    frame = packet_lib.Packet()
    frame.add_protocol(ethernet.ethernet(
        dst=segment.eth_dst, src=segment.eth_src,
        ethertype=ether_types.ETH_TYPE_IP))
    frame.add_protocol(ipv4.ipv4(src=segment.ipv4_src, dst=segment.ipv4_dst,
                                 proto=in_proto.IPPROTO_TCP, ttl=64))
    frame.add_protocol(tcp.tcp(
        src_port=segment.tcp_src, dst_port=segment.tcp_dst,
        seq=segment.tcp_seq, ack=segment.tcp_ack, bits=segment.tcp_flags,
        window_size=1024 if segment.tcp_flags & model.TCP_SYN else 0))
    frame.serialize()
    return bytes(frame.data)


NX_EXPERIMENTER_ID = 0x2320
NXT_CT_FLUSH = 32                 # Open vSwitch 3.1+; os-ken has no class
_NXT_CT_REPLY_TUPLE = 1
_NXT_CT_ZONE_ID = 2
_NXT_CT_TUPLE_SRC = 0


def _ct_flush_body(flush: model.ConntrackFlush) -> bytes:
    """struct nx_ct_flush (any protocol and family) and its properties,
    laid out as `ovs-ofctl ct-flush SWITCH zone=Z '' ct_nw_src=IP` sends
    them: a reply tuple (its nested properties 8-byte aligned) holding the
    source address as IPv4-mapped IPv6, then the zone."""
    address = ipaddress.IPv6Address(f'::ffff:{flush.reply_src}').packed
    source = struct.pack('!HH', _NXT_CT_TUPLE_SRC, 4 + len(address)) + (
        address + bytes(4))
    reply = struct.pack('!HH4x', _NXT_CT_REPLY_TUPLE, 8 + len(source)) + (
        source)
    zone = struct.pack('!HHH2x', _NXT_CT_ZONE_ID, 8, flush.zone)
    return struct.pack('!BB6x', 0, 0) + reply + zone


_bundle_ids = itertools.count(1)


def _bundle(datapath, bundle: model.Bundle):
    """Open, add each change, commit: OpenFlow 1.4+ bundles, or on 1.3
    the ONF extension that Open vSwitch implements."""
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    bundle_id = next(_bundle_ids) & 0xffffffff
    inner = [msg for message in bundle.messages
             for msg in to_ofp_messages(datapath, message)]
    if ofproto.OFP_VERSION >= 0x05:
        flags = ofproto.OFPBF_ATOMIC | ofproto.OFPBF_ORDERED
        return ([parser.OFPBundleCtrlMsg(
            datapath, bundle_id, ofproto.OFPBCT_OPEN_REQUEST, flags, [])]
            + [parser.OFPBundleAddMsg(datapath, bundle_id, flags, msg, [])
               for msg in inner]
            + [parser.OFPBundleCtrlMsg(
                datapath, bundle_id, ofproto.OFPBCT_COMMIT_REQUEST, flags,
                [])])
    flags = ofproto.ONF_BF_ATOMIC | ofproto.ONF_BF_ORDERED
    return ([parser.ONFBundleCtrlMsg(
        datapath, bundle_id, ofproto.ONF_BCT_OPEN_REQUEST, flags, [])]
        + [parser.ONFBundleAddMsg(datapath, bundle_id, flags, msg, [])
           for msg in inner]
        + [parser.ONFBundleCtrlMsg(
            datapath, bundle_id, ofproto.ONF_BCT_COMMIT_REQUEST, flags, [])])


def to_ofp_messages(datapath, message: model.Message) -> list:
    """The os-ken messages that carry out one model message on `datapath`.

    `datapath` needs only `ofproto` and `ofproto_parser` (an os-ken Datapath
    has both). Raises UnsupportedFlow for a message the switch would refuse.
    """
    if isinstance(message, model.FlowMod):
        return [_flow_mod(datapath, message)]
    if isinstance(message, model.PacketOut):
        return [_packet_out(datapath, message.in_port, message.actions,
                            message.data, message.buffer_id,
                            _Where(message))]
    if isinstance(message, model.ArpReply):
        return [_packet_out(datapath, model.SpecialPort.CONTROLLER,
                            (model.Output(message.out_port),),
                            arp_reply_frame(message), None,
                            _Where(message))]
    if isinstance(message, model.GroupMod):
        return [_group_mod(datapath, message)]
    if isinstance(message, model.MeterMod):
        return [_meter_mod(datapath, message)]
    if isinstance(message, model.TcpSegment):
        return [_packet_out(datapath, model.SpecialPort.CONTROLLER,
                            (model.Output(message.out_port),),
                            tcp_segment_frame(message), None,
                            _Where(message))]
    if isinstance(message, model.Bundle):
        return _bundle(datapath, message)
    if isinstance(message, model.FlowStatsRequest):
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        return [parser.OFPFlowStatsRequest(
            datapath, 0, ofproto.OFPTT_ALL, ofproto.OFPP_ANY,
            ofproto.OFPG_ANY, message.cookie, message.cookie_mask,
            parser.OFPMatch())]
    if isinstance(message, model.ConntrackFlush):
        return [datapath.ofproto_parser.OFPExperimenter(
            datapath, experimenter=NX_EXPERIMENTER_ID,
            exp_type=NXT_CT_FLUSH, data=_ct_flush_body(message))]
    if isinstance(message, model.Barrier):
        return [datapath.ofproto_parser.OFPBarrierRequest(datapath)]
    raise UnsupportedFlow(f'cannot render {message!r}')


def render(datapath, messages: typing.Iterable[model.Message]
           ) -> typing.List[typing.Tuple[model.Message, typing.Any]]:
    """(model message, os-ken message) pairs, in order, for sending.

    The pairs let the caller remember which model message each xid carries:
    `datapath.set_xid(msg)` then keep `{msg.xid: model_message}`, so an
    OFPErrorMsg can be logged with `describe(model_message)`.
    """
    return [(message, ofp_msg) for message in messages
            for ofp_msg in to_ofp_messages(datapath, message)]


def _describe_port(port: model.PortRef) -> str:
    if isinstance(port, model.SpecialPort):
        return port.value
    return str(port)


def _describe_value(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f'{value:#x}' if value > 9 else str(value)
    return str(value)


def _describe_fields(pairs) -> str:
    return ','.join(
        f'{k}={_describe_value(v[0])}/{_describe_value(v[1])}'
        if isinstance(v, tuple) else f'{k}={_describe_value(v)}'
        for k, v in pairs)


def _describe_action(action) -> str:
    if isinstance(action, model.Output):
        return f'output:{_describe_port(action.port)}'
    if isinstance(action, model.SetField):
        return f'set_field:{action.field}={_describe_value(action.value)}'
    if isinstance(action, model.GotoTable):
        return f'goto_table:{action.table}'
    if isinstance(action, model.Group):
        return f'group:{action.group_id:#x}'
    if isinstance(action, model.FinTimeout):
        return f'fin_timeout(idle_timeout={action.idle_timeout})'
    if isinstance(action, model.Meter):
        return f'meter:{action.meter_id}'
    if isinstance(action, model.Move):
        return (f'move:{action.src}[{action.src_ofs}..'
                f'{action.src_ofs + action.n_bits - 1}]->{action.dst}'
                f'[{action.dst_ofs}..{action.dst_ofs + action.n_bits - 1}]')
    if isinstance(action, model.OutputFrom):
        return (f'output:{action.field}[{action.ofs}..'
                f'{action.ofs + action.n_bits - 1}]')
    if isinstance(action, model.Conntrack):
        parts = ['commit'] if action.commit else []
        if action.table is not None:
            parts.append(f'table={action.table}')
        parts.append(f'zone={action.zone}')
        if action.nat_dst is not None:
            parts.append(f'nat(dst={action.nat_dst})')
        elif action.nat:
            parts.append('nat')
        if action.actions:
            parts.append('exec(' + ','.join(
                _describe_action(a) for a in action.actions) + ')')
        return f'ct({",".join(parts)})'
    if isinstance(action, model.Learn):
        parts = [f'table={action.table}', f'priority={action.priority}',
                 f'cookie={action.cookie:#x}',
                 f'idle_timeout={action.idle_timeout}']
        if action.fin_idle_timeout:
            parts.append(f'fin_idle_timeout={action.fin_idle_timeout}')
        parts += [f'{k}={_describe_value(v)}' for k, v in action.match_values]
        parts += [f'{dst}=packet.{src}' for dst, src in action.match_from]
        parts += [f'load:{_describe_value(v)}->{k}'
                  for k, v in action.set_values]
        if action.output_from is not None:
            parts.append(f'output:packet.{action.output_from}')
        else:
            parts.append(f'output:{action.output_port}')
        return f'learn({",".join(parts)})'
    return repr(action)


def describe(message: model.Message) -> str:
    """One line, ovs-ofctl-like, for logs (e.g. the flow a switch refused)."""
    if isinstance(message, model.FlowMod):
        text = (f'flow_mod {message.command.value} '
                f'dpid={message.datapath_id:#x} table={message.table} '
                f'priority={message.priority} cookie={message.cookie:#x}')
        if message.cookie_mask:
            text += f'/{message.cookie_mask:#x}'
        if message.idle_timeout:
            text += f' idle_timeout={message.idle_timeout}'
        if message.hard_timeout:
            text += f' hard_timeout={message.hard_timeout}'
        if message.notify_removed:
            text += ' send_flow_rem'
        text += f' match={_describe_fields(message.match.fields().items())}'
        if message.actions:
            text += ' actions=' + ','.join(
                _describe_action(a) for a in message.actions)
        return text
    if isinstance(message, model.PacketOut):
        source = (f'buffer_id={message.buffer_id}'
                  if message.buffer_id is not None
                  else f'{len(message.data)} bytes')
        return (f'packet_out dpid={message.datapath_id:#x} '
                f'in_port={_describe_port(message.in_port)} {source} '
                'actions=' + ','.join(_describe_action(a)
                                      for a in message.actions))
    if isinstance(message, model.ArpReply):
        return (f'arp_reply dpid={message.datapath_id:#x} '
                f'out_port={message.out_port} {message.sender_ip} is-at '
                f'{message.sender_mac} to {message.target_ip} '
                f'({message.target_mac})')
    if isinstance(message, model.GroupMod):
        buckets = '; '.join(
            f'watch_port={b.watch_port} '
            + ','.join(_describe_action(a) for a in b.actions)
            for b in message.buckets)
        return (f'group_{message.command.value} '
                f'dpid={message.datapath_id:#x} group_id='
                f'{message.group_id:#x} type=ff buckets=[{buckets}]')
    if isinstance(message, model.MeterMod):
        return (f'meter_{message.command.value} '
                f'dpid={message.datapath_id:#x} meter={message.meter_id} '
                f'pktps drop rate={message.rate} burst={message.burst}')
    if isinstance(message, model.TcpSegment):
        return (f'tcp_segment dpid={message.datapath_id:#x} '
                f'out_port={message.out_port} {message.ipv4_src}:'
                f'{message.tcp_src} > {message.ipv4_dst}:{message.tcp_dst} '
                f'flags={message.tcp_flags:#x} seq={message.tcp_seq}')
    if isinstance(message, model.Bundle):
        return (f'bundle dpid={message.datapath_id:#x} of '
                f'{len(message.messages)} changes: '
                + '; '.join(describe(m) for m in message.messages[:3])
                + (' ...' if len(message.messages) > 3 else ''))
    if isinstance(message, model.FlowStatsRequest):
        return (f'flow_stats_request dpid={message.datapath_id:#x} '
                f'cookie={message.cookie:#x}/{message.cookie_mask:#x}')
    if isinstance(message, model.ConntrackFlush):
        return (f'ct_flush dpid={message.datapath_id:#x} '
                f'zone={message.zone} reply_src={message.reply_src}')
    if isinstance(message, model.Barrier):
        return f'barrier dpid={message.datapath_id:#x}'
    return repr(message)


def describe_error(error_msg) -> str:
    """An OFPErrorMsg's type and code by name: 'OFPET_BAD_MATCH(4)/...'."""
    ofproto = error_msg.datapath.ofproto
    if error_msg.type == getattr(ofproto, 'OFPET_EXPERIMENTER', None):
        # OVS reports e.g. bundle failures on OpenFlow 1.3 this way; the
        # message has no `code`, but an experimenter id and type.
        experimenter = getattr(error_msg, 'experimenter', None)
        return (f'OFPET_EXPERIMENTER experimenter='
                f'{_describe_value(experimenter)} exp_type='
                f'{getattr(error_msg, "exp_type", None)}')
    try:
        names = ofproto.ofp_error_to_jsondict(error_msg.type, error_msg.code)
        return f'{names["type"]}/{names["code"]}'
    except Exception:   # whatever os-ken raises on codes it does not know
        return f'type={error_msg.type} code={error_msg.code}'


def is_expected_error(error_msg, culprit) -> bool:
    """An error our own messages provoke on purpose: re-adding a meter the
    switch kept (we follow it with a modify)."""
    ofproto = error_msg.datapath.ofproto
    return (isinstance(culprit, model.MeterMod)
            and culprit.command is model.MeterCommand.ADD
            and error_msg.type == ofproto.OFPET_METER_MOD_FAILED
            and error_msg.code == ofproto.OFPMMFC_METER_EXISTS)


# What the switch reports.

_ETH = struct.Struct('!6s6sH')
_VLAN_TPIDS = (0x8100, 0x88a8, 0x9100)
_MAX_VLAN_TAGS = 2
_ARP = struct.Struct('!HHBBH6s4s6s4s')
_IPV4 = struct.Struct('!BBHHHBBH4s4s')
_TCP = struct.Struct('!HHIIBB')


def _mac_text(raw: bytes) -> str:
    return ':'.join(f'{b:02x}' for b in raw)


def _ip_text(raw: bytes) -> str:
    return '.'.join(str(b) for b in raw)


def decode_packet_in(msg) -> typing.Optional[model.Packet]:
    """The TCP segment or ARP request in a PacketIn, or None if irrelevant.

    Reads only the fixed headers we use, with `struct`: hosts' frames never
    reach a general parser (os-ken's loops forever on a zero-length TCP
    option, and decodes some ports' payloads as BGP or OpenFlow). Up to two
    VLAN tags are skipped: the switch's flows match tagged frames too, and
    the packet is released with its tags. IPv4 TCP (first or only fragment)
    and ARP requests are relevant; anything else is None. Raises
    MalformedPacket, naming the port, if a header the frame announces is
    short or inconsistent.
    """
    data = bytes(msg.data)
    in_port = msg.match['in_port']
    buffer_id = msg.buffer_id
    if buffer_id == msg.datapath.ofproto.OFP_NO_BUFFER:
        buffer_id = None

    def bad(why):
        return MalformedPacket(f'in_port {in_port}: {why}')

    if len(data) < _ETH.size:
        raise bad(f'{len(data)}-byte frame is shorter than an Ethernet '
                  'header')
    eth_dst, eth_src, ethertype = _ETH.unpack_from(data)
    offset = _ETH.size
    tags = 0
    while ethertype in _VLAN_TPIDS:
        tags += 1
        if tags > _MAX_VLAN_TAGS or len(data) < offset + 4:
            raise bad('truncated or too many VLAN tags')
        (ethertype,) = struct.unpack_from('!H', data, offset + 2)
        offset += 4
    if ethertype == ether_types.ETH_TYPE_ARP:
        if tags:
            return None     # our answers would leave untagged
        if len(data) < offset + _ARP.size:
            raise bad('truncated ARP packet')
        (htype, ptype, hlen, plen, opcode, sha, spa, _tha,
         tpa) = _ARP.unpack_from(data, offset)
        if (htype, ptype, hlen, plen) != (1, ether_types.ETH_TYPE_IP, 6, 4):
            raise bad('ARP for other than Ethernet and IPv4')
        if opcode != arp.ARP_REQUEST:
            return None
        return model.ArpRequest(in_port=in_port, sender_mac=_mac_text(sha),
                                sender_ip=_ip_text(spa),
                                target_ip=_ip_text(tpa))
    if ethertype != ether_types.ETH_TYPE_IP:
        return None
    if len(data) < offset + _IPV4.size:
        raise bad('truncated IPv4 header')
    (version_ihl, _tos, total_length, _ident, flags_fragment, _ttl, proto,
     _csum, src, dst) = _IPV4.unpack_from(data, offset)
    header_length = (version_ihl & 0x0f) * 4
    if version_ihl >> 4 != 4 or header_length < _IPV4.size:
        raise bad(f'bad IPv4 version/header length {version_ihl:#04x}')
    if total_length < header_length or len(data) < offset + header_length:
        raise bad('IPv4 lengths do not fit the frame')
    if proto != in_proto.IPPROTO_TCP or flags_fragment & 0x1fff:
        return None
    offset += header_length
    if len(data) < offset + 20:
        raise bad('truncated TCP header')
    tcp_src, tcp_dst, seq, ack, data_offset, flags = _TCP.unpack_from(
        data, offset)
    if data_offset >> 4 < 5:
        raise bad(f'TCP data offset {data_offset >> 4} is under 5 words')
    return model.TcpPacket(
        in_port=in_port, eth_src=_mac_text(eth_src),
        eth_dst=_mac_text(eth_dst), ipv4_src=_ip_text(src),
        ipv4_dst=_ip_text(dst), tcp_src=tcp_src, tcp_dst=tcp_dst,
        tcp_flags=flags, buffer_id=buffer_id, data=data, tcp_seq=seq,
        tcp_ack=ack)


def match_from_ofp(ofp_match) -> model.Match:
    """A model.Match of the fields the model knows; others are left out.

    A masked field is kept only if its mask covers the whole field.
    """
    fields = {}
    for name in model.MATCH_FIELDS:
        value = ofp_match.get(name)
        if name in ('ct_state', 'tcp_flags'):
            if value is not None:
                fields[name] = (value if isinstance(value, tuple)
                                else (value, 0xffffffff))
            continue
        if name in ('ct_zone', 'ct_mark') and isinstance(value, tuple):
            value, mask = value
            if mask != (1 << _REGISTER_FIELDS[name][1]) - 1:
                continue
        elif isinstance(value, tuple):
            value, mask = value
            bits = 32 if name == 'in_port' else NXM_FIELDS[name][1]
            if _immediate(name, mask) != (1 << bits) - 1:
                continue
        if value is not None:
            fields[name] = value
    return model.Match(**fields)


def decode_flow_stats(body) -> typing.List[typing.Tuple[int, model.Match]]:
    """(cookie, match) of each flow in a FlowStats reply body."""
    return [(stats.cookie, match_from_ofp(stats.match)) for stats in body]


def decode_flow_removed(msg) -> typing.Tuple[int, model.Match]:
    """(cookie, match) of an OFPFlowRemoved."""
    return msg.cookie, match_from_ofp(msg.match)


def is_port_up(ofp_port, ofproto) -> bool:
    """Administratively up and with link: the port can carry traffic."""
    return not (ofp_port.config & ofproto.OFPPC_PORT_DOWN or
                ofp_port.state & ofproto.OFPPS_LINK_DOWN)


def port_states_from_desc(ports, ofproto) -> typing.Dict[int, bool]:
    """{port_no: up} of a PortDesc reply body, without reserved ports."""
    return {port.port_no: is_port_up(port, ofproto) for port in ports
            if port.port_no <= ofproto.OFPP_MAX}
