"""Our flow data -> os-ken OpenFlow messages.

This is the only module that builds os-ken messages. The core returns plain
`ha_redirect.model` values; `render` / `to_ofp_messages` turn them into
messages for one datapath, using that datapath's `ofproto` and
`ofproto_parser`, so OpenFlow 1.3, 1.4 and 1.5 switches all work.

A message Open vSwitch would refuse (`ha_redirect.ovs_constraints`: an IPv4
field without `eth_type=0x0800`, a TCP port without `ip_proto=6`, ...)
raises `UnsupportedFlow` here, before it reaches the switch: we never add
match fields behind the policy's back, since the switch reports them back in
FlowRemoved and the policy compares matches. A new action type is rendered
by registering it with `_render_action`, a new message type with
`to_ofp_messages`.
"""

import enum
import functools
import ipaddress
import itertools
import struct
import typing

from os_ken.lib.packet import arp
from os_ken.lib.packet import ether_types
from os_ken.lib.packet import ethernet
from os_ken.lib.packet import in_proto
from os_ken.lib.packet import ipv4
from os_ken.lib.packet import packet as packet_lib
from os_ken.lib.packet import tcp
from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3

from ha_redirect import model
from ha_redirect.openflow.printer import describe
from ha_redirect.openflow import wire
from ha_redirect import ovs_constraints


class UnsupportedFlow(ValueError):
    """A model message that cannot be rendered as a valid OpenFlow message."""


class _Where:
    """Names a message in errors; described only if an error is raised, since
    describing every flow would cost more than rendering it."""

    def __init__(self, message):
        self.message = message

    def __str__(self):
        return describe(self.message)


def _check(check, where, *args) -> None:
    """Run an `ovs_constraints` check; its refusal names the message."""
    try:
        check(*args)
    except ovs_constraints.Refused as exc:
        raise UnsupportedFlow(f'{where}: {exc}') from None


def check_prerequisites(fields: typing.Mapping[str, typing.Any],
                        needed: typing.Iterable[str], where: str) -> None:
    """Raise UnsupportedFlow if a field in `needed` lacks its prerequisite
    (see `ovs_constraints.check_prerequisites`)."""
    _check(ovs_constraints.check_prerequisites, where, fields, needed)


def check_flow_mod(flow: model.FlowMod, fields) -> None:
    """Raise UnsupportedFlow if Open vSwitch would refuse `flow` (whose
    match has `fields`)."""
    _check(ovs_constraints.check_flow_mod, _Where(flow), flow, fields)


def check_packet_out(message, actions) -> None:
    """Raise UnsupportedFlow if Open vSwitch would refuse to run `actions`
    on the packet `message` releases."""
    _check(ovs_constraints.check_packet_out, _Where(message), actions)


def check_group_mod(group: model.GroupMod) -> None:
    """Raise UnsupportedFlow if Open vSwitch would refuse `group`."""
    _check(ovs_constraints.check_group_mod, _Where(group), group)


def _port_number(port: model.PortRef, ofproto) -> int:
    if port is model.SpecialPort.CONTROLLER:
        return ofproto.OFPP_CONTROLLER
    if port is model.SpecialPort.NORMAL:
        return ofproto.OFPP_NORMAL
    if port is model.SpecialPort.IN_PORT:
        return ofproto.OFPP_IN_PORT
    return port


# Actions: each type renders to a list of os-ken actions, already checked
# against ovs_constraints with the message that carries it.

_NX_CT_F_COMMIT = 1
_NX_NAT_F_DST = 1 << 1           # OVS's nx-match.h; os-ken lacks the name
_NX_CT_RECIRC_NONE = 0xff


@functools.singledispatch
def _render_action(action, ofproto, parser) -> list:
    raise UnsupportedFlow(f'unknown action {action!r}')


@_render_action.register
def _(action: model.Output, ofproto, parser) -> list:
    if action.port is model.SpecialPort.CONTROLLER:
        return [parser.OFPActionOutput(ofproto.OFPP_CONTROLLER,
                                       ofproto.OFPCML_NO_BUFFER)]
    return [parser.OFPActionOutput(_port_number(action.port, ofproto))]


@_render_action.register
def _(action: model.SetField, ofproto, parser) -> list:
    return [parser.OFPActionSetField(**{action.field: action.value})]


@_render_action.register
def _(action: model.Resubmit, ofproto, parser) -> list:
    # OVS reads the 16-bit OpenFlow 1.0 form of OFPP_IN_PORT here.
    return [parser.NXActionResubmitTable(in_port=0xfff8,
                                         table_id=action.table)]


@_render_action.register
def _(action: model.Group, ofproto, parser) -> list:
    return [parser.OFPActionGroup(action.group_id)]


@_render_action.register
def _(action: model.FinTimeout, ofproto, parser) -> list:
    return [parser.NXActionFinTimeout(fin_idle_timeout=action.idle_timeout,
                                      fin_hard_timeout=0)]


@_render_action.register
def _(action: model.Move, ofproto, parser) -> list:
    return [parser.NXActionRegMove(
        src_field=wire.nxm_name(action.src),
        dst_field=wire.nxm_name(action.dst), n_bits=action.n_bits,
        src_ofs=action.src_ofs, dst_ofs=action.dst_ofs)]


@_render_action.register
def _(action: model.OutputFrom, ofproto, parser) -> list:
    return [parser.NXActionOutputReg(
        ofs_nbits=nicira_ext.ofs_nbits(action.ofs,
                                       action.ofs + action.n_bits - 1),
        src=wire.nxm_name(action.field), max_len=0)]


@_render_action.register
def _(ct: model.Conntrack, ofproto, parser) -> list:
    nested = []
    if ct.nat_dst is not None:
        nested.append(parser.NXActionNAT(
            flags=_NX_NAT_F_DST, range_ipv4_min=ct.nat_dst,
            range_ipv4_max=ct.nat_dst))
    elif ct.nat:
        nested.append(parser.NXActionNAT(flags=0))
    exec_actions, _goto = _actions(ct.actions, ofproto, parser)
    return [parser.NXActionCT(
        flags=_NX_CT_F_COMMIT if ct.commit else 0, zone_src='',
        zone_ofs_nbits=ct.zone,
        recirc_table=_NX_CT_RECIRC_NONE if ct.table is None else ct.table,
        alg=0, actions=nested + exec_actions)]


@_render_action.register
def _(learn: model.Learn, ofproto, parser) -> list:
    specs = []
    for name, value in learn.match_values:
        nxm, n_bits = wire.NXM_FIELDS[name]
        specs.append(parser.NXFlowSpecMatch(
            src=wire.as_int(name, value), dst=(nxm, 0),
            n_bits=n_bits))
    for dst, src in learn.match_from:
        dst_nxm, n_bits = wire.NXM_FIELDS[dst]
        specs.append(parser.NXFlowSpecMatch(
            src=(wire.NXM_FIELDS[src][0], 0), dst=(dst_nxm, 0),
            n_bits=n_bits))
    for name, value in learn.set_values:
        nxm, n_bits = wire.NXM_FIELDS[name]
        specs.append(parser.NXFlowSpecLoad(
            src=wire.as_int(name, value), dst=(nxm, 0),
            n_bits=n_bits))
    actions = []
    if learn.output_from is not None:
        nxm, n_bits = wire.NXM_FIELDS[learn.output_from]
        specs.append(parser.NXFlowSpecOutput(src=(nxm, 0), n_bits=n_bits))
    else:
        register = wire.LEARN_OUTPUT_REGISTER
        actions.append(parser.OFPActionSetField(
            **{register: learn.output_port}))
        specs.append(parser.NXFlowSpecOutput(src=(register, 0), n_bits=32))
    actions.append(parser.NXActionLearn(
        table_id=learn.table, specs=specs, idle_timeout=learn.idle_timeout,
        priority=learn.priority, cookie=learn.cookie,
        fin_idle_timeout=learn.fin_idle_timeout))
    return actions


def _actions(actions, ofproto, parser):
    """(apply-actions list, goto table or None) for model actions."""
    apply_actions = []
    goto = None
    for action in actions:
        if isinstance(action, model.GotoTable):
            goto = action.table     # an instruction, not an action
        else:
            apply_actions += _render_action(action, ofproto, parser)
    return apply_actions, goto


# Messages.

def _command(ofproto, prefix: str, command: enum.Enum) -> int:
    """OFPFC_ADD, OFPGC_DELETE, ...: our commands are named as OpenFlow's."""
    return getattr(ofproto, prefix + command.name)


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


def to_ofp_messages(datapath, message: model.Message) -> list:
    """The os-ken messages that carry out one model message on `datapath`.

    `datapath` needs only `ofproto` and `ofproto_parser` (an os-ken Datapath
    has both). Raises UnsupportedFlow for a message the switch would refuse.
    """
    return _render_message(message, datapath)


def render(datapath, messages: typing.Iterable[model.Message]
           ) -> typing.List[typing.Tuple[model.Message, typing.Any]]:
    """(model message, os-ken message) pairs, in order, for sending.

    The pairs let the caller remember which model message each xid carries:
    `datapath.set_xid(msg)` then keep `{msg.xid: model_message}`, so an
    OFPErrorMsg can be logged with `describe(model_message)`.
    """
    return [(message, ofp_msg) for message in messages
            for ofp_msg in to_ofp_messages(datapath, message)]


@functools.singledispatch
def _render_message(message, datapath) -> list:
    raise UnsupportedFlow(f'cannot render {message!r}')


@_render_message.register
def _(flow: model.FlowMod, datapath) -> list:
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    fields = flow.match.fields()
    check_flow_mod(flow, fields)
    actions = flow.actions
    meter = actions[0] if actions and isinstance(
        actions[0], model.Meter) else None
    apply_actions, goto = _actions(actions[1:] if meter else actions,
                                   ofproto, parser)
    instructions = []
    if meter and ofproto.OFP_VERSION >= 0x06:
        # OpenFlow 1.5 made the meter an action.
        apply_actions.insert(0, parser.OFPActionMeter(meter.meter_id))
    elif meter:
        instructions.append(parser.OFPInstructionMeter(meter.meter_id))
    if apply_actions:
        instructions.append(parser.OFPInstructionActions(
            ofproto.OFPIT_APPLY_ACTIONS, apply_actions))
    if goto is not None:
        instructions.append(parser.OFPInstructionGotoTable(goto))
    deleting = flow.command in (model.FlowCommand.DELETE,
                                model.FlowCommand.DELETE_STRICT)
    return [parser.OFPFlowMod(
        datapath=datapath,
        cookie=flow.cookie,
        cookie_mask=flow.cookie_mask,
        table_id=flow.table,
        command=_command(ofproto, 'OFPFC_', flow.command),
        idle_timeout=flow.idle_timeout,
        hard_timeout=flow.hard_timeout,
        priority=flow.priority,
        buffer_id=ofproto.OFP_NO_BUFFER,
        out_port=ofproto.OFPP_ANY,
        out_group=ofproto.OFPG_ANY,
        flags=ofproto.OFPFF_SEND_FLOW_REM if flow.notify_removed else 0,
        match=_match(parser, ofproto, fields),
        instructions=[] if deleting else instructions)]


@_render_message.register
def _(meter: model.MeterMod, datapath) -> list:
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    bands = []
    if meter.command is not model.MeterCommand.DELETE:
        bands = [parser.OFPMeterBandDrop(rate=meter.rate,
                                         burst_size=meter.burst)]
    return [parser.OFPMeterMod(
        datapath, command=_command(ofproto, 'OFPMC_', meter.command),
        flags=ofproto.OFPMF_PKTPS | ofproto.OFPMF_BURST,
        meter_id=meter.meter_id, bands=bands)]


@_render_message.register
def _(group: model.GroupMod, datapath) -> list:
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    where = _Where(group)
    if ofproto.OFP_VERSION >= 0x06:
        # OpenFlow 1.5 moved watch ports into bucket properties.
        raise UnsupportedFlow(f'{where}: fast-failover groups are rendered '
                              'for OpenFlow 1.3 and 1.4 only')
    _check(ovs_constraints.check_group_mod, where, group)
    buckets = []
    if group.command is not model.GroupCommand.DELETE:
        buckets = [parser.OFPBucket(
            watch_port=_port_number(bucket.watch_port, ofproto),
            watch_group=ofproto.OFPG_ANY,
            actions=_actions(bucket.actions, ofproto, parser)[0])
            for bucket in group.buckets]
    return [parser.OFPGroupMod(
        datapath, command=_command(ofproto, 'OFPGC_', group.command),
        type_=ofproto.OFPGT_FF, group_id=group.group_id, buckets=buckets)]


def _packet_out(datapath, message, in_port: model.PortRef, actions,
                data: bytes, buffer_id: typing.Optional[int]) -> list:
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    check_packet_out(message, actions)
    if buffer_id is None:
        if not data:
            raise UnsupportedFlow(f'{_Where(message)}: neither data nor '
                                  'buffer_id')
        buffer_id = ofproto.OFP_NO_BUFFER
    else:
        data = None
    apply_actions, _goto = _actions(actions, ofproto, parser)
    port = _port_number(in_port, ofproto)
    if ofproto.OFP_VERSION >= 0x06:  # OpenFlow 1.5 carries in_port in a match
        return [parser.OFPPacketOut(
            datapath=datapath, buffer_id=buffer_id,
            match=parser.OFPMatch(in_port=port), actions=apply_actions,
            data=data)]
    return [parser.OFPPacketOut(
        datapath=datapath, buffer_id=buffer_id, in_port=port,
        actions=apply_actions, data=data)]


@_render_message.register
def _(message: model.PacketOut, datapath) -> list:
    return _packet_out(datapath, message, message.in_port, message.actions,
                       message.data, message.buffer_id)


@_render_message.register
def _(message: model.ArpReply, datapath) -> list:
    return _packet_out(datapath, message, model.SpecialPort.CONTROLLER,
                       (model.Output(message.out_port),),
                       arp_reply_frame(message), None)


@_render_message.register
def _(message: model.TcpSegment, datapath) -> list:
    return _packet_out(datapath, message, model.SpecialPort.CONTROLLER,
                       (model.Output(message.out_port),),
                       tcp_segment_frame(message), None)


@_render_message.register
def _(message: model.FlowStatsRequest, datapath) -> list:
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    return [parser.OFPFlowStatsRequest(
        datapath, 0, ofproto.OFPTT_ALL, ofproto.OFPP_ANY, ofproto.OFPG_ANY,
        message.cookie, message.cookie_mask, parser.OFPMatch())]


@_render_message.register
def _(message: model.ConntrackFlush, datapath) -> list:
    return [datapath.ofproto_parser.OFPExperimenter(
        datapath, experimenter=NX_EXPERIMENTER_ID, exp_type=NXT_CT_FLUSH,
        data=_ct_flush_body(message))]


@_render_message.register
def _(message: model.Barrier, datapath) -> list:
    return [datapath.ofproto_parser.OFPBarrierRequest(datapath)]


_bundle_ids = itertools.count(1)


@_render_message.register
def _(bundle: model.Bundle, datapath) -> list:
    """Open, add each change, commit: OpenFlow 1.4+ bundles, or on 1.3
    the ONF extension that Open vSwitch implements."""
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    bundle_id = next(_bundle_ids) & 0xffffffff
    inner = [msg for message in bundle.messages
             for msg in to_ofp_messages(datapath, message)]
    if ofproto.OFP_VERSION >= 0x05:
        ctrl, add, prefix = (parser.OFPBundleCtrlMsg, parser.OFPBundleAddMsg,
                             'OFP')
    else:
        ctrl, add, prefix = (parser.ONFBundleCtrlMsg, parser.ONFBundleAddMsg,
                             'ONF_')
    flags = (getattr(ofproto, prefix + 'BF_ATOMIC')
             | getattr(ofproto, prefix + 'BF_ORDERED'))
    return ([ctrl(datapath, bundle_id,
                  getattr(ofproto, prefix + 'BCT_OPEN_REQUEST'), flags, [])]
            + [add(datapath, bundle_id, flags, msg, []) for msg in inner]
            + [ctrl(datapath, bundle_id,
                    getattr(ofproto, prefix + 'BCT_COMMIT_REQUEST'), flags,
                    [])])


# Frames the controller originates.

def async_config(datapath):
    """The message that keeps the switch from reporting the flows our own
    deletes remove. A failover deletes every pin of a dead server, each
    with a FlowRemoved that would tell us nothing (the policy forgot those
    connections as it sent the delete), yet costs a message to read ahead
    of the next PacketIns: a thousand pins made the reactive gap's
    connections wait 100 ms or more. Pins that idle out are still reported.
    Everything else keeps Open vSwitch's default."""
    ofproto, parser = datapath.ofproto, datapath.ofproto_parser
    removed = (1 << ofproto.OFPRR_IDLE_TIMEOUT
               | 1 << ofproto.OFPRR_HARD_TIMEOUT)
    if ofproto.OFP_VERSION == ofproto_v1_3.OFP_VERSION:
        # One message sets every mask: the others as the switch has them.
        port_status = (1 << ofproto.OFPPR_ADD | 1 << ofproto.OFPPR_DELETE
                       | 1 << ofproto.OFPPR_MODIFY)
        return parser.OFPSetAsync(
            datapath,
            [1 << ofproto.OFPR_NO_MATCH | 1 << ofproto.OFPR_ACTION, 0],
            [port_status, port_status], [removed, 0])
    return parser.OFPSetAsync(datapath, [parser.OFPAsyncConfigPropReasons(
        ofproto.OFPACPT_FLOW_REMOVED_MASTER, 8, removed)])


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
