"""What Open vSwitch refuses, in one place.

The renderer (`ha_redirect.openflow`) and the fake switch
(`ha_redirect.testing`) check every flow against these rules, so a flow the
fake accepts in a unit test is one OVS accepts too. Each check raises
`Refused` with the reason; the caller names the message it was checking.

Pure: no os-ken, and `model` is imported only when a flow is first checked,
since `model` may take the constants below from here.
"""

import functools
import typing

ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_ARP = 0x0806
IP_PROTO_TCP = 6

# TCP header flags, as `tcp_flags` carries them.
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

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

# Field kinds: these carry text ('00:00:5e:00:53:01', '192.0.2.1'); every
# other field is an integer.
MAC_FIELDS = frozenset(('eth_src', 'eth_dst'))
IPV4_FIELDS = frozenset(('ipv4_src', 'ipv4_dst', 'arp_spa', 'arp_tpa'))

# Fields a learn spec may name, with their width in bits: OVS's Nicira (NXM)
# headers, as `ovs-ofctl`'s learn syntax names them (NXM_OF_IP_SRC[] ...).
# NXM_OF_IN_PORT is 16 bits wide; OVS port numbers for real ports fit.
LEARN_FIELD_BITS = {
    'in_port': 16, 'eth_src': 48, 'eth_dst': 48, 'eth_type': 16,
    'ip_proto': 8, 'ipv4_src': 32, 'ipv4_dst': 32, 'tcp_src': 16,
    'tcp_dst': 16, 'arp_op': 16, 'arp_spa': 32, 'arp_tpa': 32,
}
# A move or output:field may also name the conntrack metadata.
CT_FIELD_BITS = {'ct_mark': 32, 'ct_label': 128, 'ct_zone': 16}
# Registers: per-packet scratch, zero as a packet enters the pipeline.
REGISTER_BITS = {'reg6': 32}
FIELD_BITS = {**LEARN_FIELD_BITS, **CT_FIELD_BITS, **REGISTER_BITS}
# The last table a resubmit may name (OVS: 255 means "this table").
MAX_TABLE = 254


class Refused(ValueError):
    """Open vSwitch would refuse this flow, or silently not do what it says."""


Fields = typing.Mapping[str, typing.Any]


def check_prerequisites(fields: Fields, needed: typing.Iterable[str],
                        what: str = '') -> None:
    """Refused if a field in `needed` lacks its prerequisite in `fields`.

    `fields` are those the flow's match establishes; a value of None means
    "set, value only known at run time" (a learned field). `what` prefixes
    the reason ('set_field: ...').
    """
    prefix = f'{what}: ' if what else ''
    for name in needed:
        while name in PREREQUISITES:
            pre, value = PREREQUISITES[name]
            if pre not in fields:
                raise Refused(f'{prefix}{name} needs {pre}={value:#x} in the '
                              'match')
            if fields[pre] is not None and fields[pre] != value:
                raise Refused(f'{prefix}{name} needs {pre}={value:#x}, the '
                              f'match has {pre}={fields[pre]:#x}')
            name = pre


def check_bits(field: str, ofs: int, n_bits: int) -> None:
    """Refused unless a move or output:field can use bits [ofs, ofs+n_bits)
    of `field`."""
    width = FIELD_BITS.get(field)
    if width is None:
        raise Refused(f'cannot use field {field!r} in a move or output')
    if n_bits < 1 or ofs < 0 or ofs + n_bits > width:
        raise Refused(f'bits {ofs}..{ofs + n_bits - 1} do not fit {field} '
                      f'({width} bits)')


def learn_field_bits(field: str) -> int:
    """The width of a field a learn spec names; Refused if it cannot."""
    try:
        return LEARN_FIELD_BITS[field]
    except KeyError:
        raise Refused(f'learn cannot use field {field!r}; known: '
                      f'{", ".join(LEARN_FIELD_BITS)}') from None


def check_learn(learn) -> None:
    """Refused unless OVS can install what a `model.Learn` learns."""
    learned = {name: value for name, value in learn.match_values}
    learned.update({dst: None for dst, _src in learn.match_from})
    check_prerequisites(learned, learned, 'learned match')
    check_prerequisites(learned, [name for name, _ in learn.set_values],
                        'learned set_values')
    for name, _value in learn.match_values + learn.set_values:
        learn_field_bits(name)
    for dst, src in learn.match_from:
        dst_bits, src_bits = learn_field_bits(dst), learn_field_bits(src)
        if dst_bits != src_bits:
            raise Refused(f'learn cannot copy {src} ({src_bits} bits) into '
                          f'{dst} ({dst_bits} bits)')
    if (learn.output_port is None) == (learn.output_from is None):
        raise Refused('learn needs exactly one of output_port and '
                      'output_from')
    if learn.output_from is not None:
        learn_field_bits(learn.output_from)


# The rules of each action type: rule(action, match fields or None). The
# match is None where there is none to check against (packet-outs, group
# buckets, ct's own actions).

def _check_set_field(action, match: typing.Optional[Fields]) -> None:
    if match is not None:
        check_prerequisites(match, [action.field], 'set_field')


def _check_fin_timeout(_action, match: typing.Optional[Fields]) -> None:
    if match is not None and match.get('ip_proto') != IP_PROTO_TCP:
        raise Refused('fin_timeout needs ip_proto=6 in the match')


def _check_conntrack(action, match: typing.Optional[Fields]) -> None:
    if match is not None and match.get('eth_type') != ETH_TYPE_IPV4:
        raise Refused(f'ct needs eth_type={ETH_TYPE_IPV4:#x} in the match')
    if _gotos(action.actions):
        raise Refused('goto_table inside ct')
    _check_each(action.actions, None)


def _check_move(action, _match) -> None:
    check_bits(action.src, action.src_ofs, action.n_bits)
    check_bits(action.dst, action.dst_ofs, action.n_bits)


def _check_output_from(action, _match) -> None:
    check_bits(action.field, action.ofs, action.n_bits)


def _check_resubmit(action, _match) -> None:
    if not 0 <= action.table <= MAX_TABLE:
        raise Refused(f'resubmit to table {action.table}: tables are 0 to '
                      f'{MAX_TABLE}')


@functools.lru_cache(maxsize=None)
def _model():
    # Not at the top: model may import its constants from this module.
    from ha_redirect import model
    return model


@functools.lru_cache(maxsize=None)
def _action_rules() -> typing.Dict[type, typing.Callable]:
    model = _model()
    return {
        model.SetField: _check_set_field,
        model.FinTimeout: _check_fin_timeout,
        model.Conntrack: _check_conntrack,
        model.Learn: lambda action, _match: check_learn(action),
        model.Move: _check_move,
        model.OutputFrom: _check_output_from,
        model.Resubmit: _check_resubmit,
    }


def _check_each(actions, match: typing.Optional[Fields]) -> None:
    rules = _action_rules()
    for action in actions:
        rule = rules.get(type(action))
        if rule is not None:
            rule(action, match)


def _gotos(actions) -> list:
    goto_table = _model().GotoTable
    return [a for a in actions if isinstance(a, goto_table)]


def check_flow_mod(flow, fields: typing.Optional[Fields] = None) -> None:
    """Refused if OVS would refuse a `model.FlowMod`: its match, a meter
    anywhere but first, a goto_table that is not one later table, or an
    action that does not fit the match. `fields`: `flow.match.fields()`,
    if the caller has them already (this runs for every flow sent).

    Reads only the flow's actions and table, its match's field names, and
    the values of the fields PREREQUISITES names: the encoder checks a flow
    once per such shape."""
    if fields is None:
        fields = flow.match.fields()
    check_prerequisites(fields, fields)
    model, rules = _model(), _action_rules()
    goto = None
    for position, action in enumerate(flow.actions):
        kind = type(action)
        if kind is model.Meter:
            if position:
                raise Refused('one meter, before every action')
        elif kind is model.GotoTable:
            if goto is not None:
                raise Refused('more than one goto_table')
            goto = action.table
        elif kind in rules:
            rules[kind](action, fields)
    if goto is not None and goto <= flow.table:
        raise Refused(f'goto_table:{goto} from table {flow.table}: it must '
                      'name a later table')


def check_packet_out(actions) -> None:
    """Refused if OVS would refuse a packet-out's actions."""
    if _gotos(actions):
        raise Refused('a packet-out cannot goto_table')
    _check_each(actions, None)


def check_group_mod(group) -> None:
    """Refused if OVS would refuse a `model.GroupMod`'s buckets, or run
    them other than as written."""
    conntrack = _model().Conntrack
    for bucket in group.buckets:
        if _gotos(bucket.actions):
            raise Refused('a bucket cannot goto_table')
        if (len(bucket.actions) > 1
                and any(isinstance(a, conntrack) for a in bucket.actions)):
            raise Refused('a bucket runs as an action set: OVS silently '
                          'drops its ct next to other actions')
        # A bucket's set-fields have no match to check against: the flows
        # that use the group match IPv4 TCP.
        _check_each(bucket.actions, None)
