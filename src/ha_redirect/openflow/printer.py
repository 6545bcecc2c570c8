"""Our flow data and the switch's errors as one ovs-ofctl-like line, for logs.

`describe` names a message (e.g. the flow a switch refused);
`describe_error` names an OFPErrorMsg's type and code. A new action or
message type is described by registering it with `describe_action` or
`describe`.
"""

import functools

from ha_redirect import model


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


def _bits(field: str, ofs: int, n_bits: int) -> str:
    return f'{field}[{ofs}..{ofs + n_bits - 1}]'


def _describe_actions(actions) -> str:
    return ','.join(describe_action(a) for a in actions)


@functools.singledispatch
def describe_action(action) -> str:
    """One action as ovs-ofctl would write it (roughly)."""
    return repr(action)


# The actions one expression describes; ct and learn follow.
_ACTION_TEXTS = {
    model.Output: lambda a: f'output:{_describe_port(a.port)}',
    model.SetField: lambda a: (
        f'set_field:{a.field}={_describe_value(a.value)}'),
    model.GotoTable: lambda a: f'goto_table:{a.table}',
    model.Group: lambda a: f'group:{a.group_id:#x}',
    model.FinTimeout: lambda a: f'fin_timeout(idle_timeout={a.idle_timeout})',
    model.Meter: lambda a: f'meter:{a.meter_id}',
    model.Move: lambda a: (f'move:{_bits(a.src, a.src_ofs, a.n_bits)}->'
                           f'{_bits(a.dst, a.dst_ofs, a.n_bits)}'),
    model.OutputFrom: lambda a: f'output:{_bits(a.field, a.ofs, a.n_bits)}',
    model.Resubmit: lambda a: f'resubmit(,{a.table})',
}
for _type, _text in _ACTION_TEXTS.items():
    describe_action.register(_type, _text)


@describe_action.register
def _(action: model.Conntrack) -> str:
    parts = ['commit'] if action.commit else []
    if action.table is not None:
        parts.append(f'table={action.table}')
    parts.append(f'zone={action.zone}')
    if action.nat_dst is not None:
        parts.append(f'nat(dst={action.nat_dst})')
    elif action.nat:
        parts.append('nat')
    if action.actions:
        parts.append(f'exec({_describe_actions(action.actions)})')
    return f'ct({",".join(parts)})'


@describe_action.register
def _(action: model.Learn) -> str:
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


@functools.singledispatch
def describe(message: model.Message) -> str:
    """One line, ovs-ofctl-like, for logs (e.g. the flow a switch refused)."""
    return repr(message)


@describe.register
def _(message: model.FlowMod) -> str:
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
        text += f' actions={_describe_actions(message.actions)}'
    return text


@describe.register
def _(message: model.PacketOut) -> str:
    source = (f'buffer_id={message.buffer_id}'
              if message.buffer_id is not None
              else f'{len(message.data)} bytes')
    return (f'packet_out dpid={message.datapath_id:#x} '
            f'in_port={_describe_port(message.in_port)} {source} '
            f'actions={_describe_actions(message.actions)}')


@describe.register
def _(message: model.GroupMod) -> str:
    buckets = '; '.join(
        f'watch_port={b.watch_port} {_describe_actions(b.actions)}'
        for b in message.buckets)
    return (f'group_{message.command.value} '
            f'dpid={message.datapath_id:#x} group_id='
            f'{message.group_id:#x} type=ff buckets=[{buckets}]')


@describe.register
def _(message: model.Bundle) -> str:
    return (f'bundle dpid={message.datapath_id:#x} of '
            f'{len(message.messages)} changes: '
            + '; '.join(describe(m) for m in message.messages[:3])
            + (' ...' if len(message.messages) > 3 else ''))


# The messages one template describes (str.format, the message as `m`).
_MESSAGE_TEMPLATES = {
    model.ArpReply: 'arp_reply dpid={m.datapath_id:#x} out_port={m.out_port} '
                    '{m.sender_ip} is-at {m.sender_mac} to {m.target_ip} '
                    '({m.target_mac})',
    model.MeterMod: 'meter_{m.command.value} dpid={m.datapath_id:#x} '
                    'meter={m.meter_id} pktps drop rate={m.rate} '
                    'burst={m.burst}',
    model.TcpSegment: 'tcp_segment dpid={m.datapath_id:#x} '
                      'out_port={m.out_port} {m.ipv4_src}:{m.tcp_src} > '
                      '{m.ipv4_dst}:{m.tcp_dst} flags={m.tcp_flags:#x} '
                      'seq={m.tcp_seq}',
    model.FlowStatsRequest: 'flow_stats_request dpid={m.datapath_id:#x} '
                            'cookie={m.cookie:#x}/{m.cookie_mask:#x}',
    model.ConntrackFlush: 'ct_flush dpid={m.datapath_id:#x} zone={m.zone} '
                          'reply_src={m.reply_src}',
    model.Barrier: 'barrier dpid={m.datapath_id:#x}',
}
for _type, _template in _MESSAGE_TEMPLATES.items():
    describe.register(_type, lambda m, template=_template: template.format(
        m=m))


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
