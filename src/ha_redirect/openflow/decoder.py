"""What the switch reports, as our model's values.

`decode_packet_in` reads the TCP segment or ARP request in a PacketIn
(`parse_packet_in` and `decode_fields` the same from a PacketIn's bytes);
`decode_flow_removed` and `decode_flow_stats` the cookie and match of
flows; `port_states_from_desc` which ports can carry traffic;
`is_expected_error` which errors our own messages provoke on purpose.
"""

import socket
import struct
import typing

from os_ken.lib.packet import arp
from os_ken.lib.packet import ether_types
from os_ken.lib.packet import in_proto

from ha_redirect import model
from ha_redirect.openflow import wire


class MalformedPacket(ValueError):
    """A PacketIn whose bytes are not the frame their headers announce."""


def is_expected_error(error_msg, culprit) -> bool:
    """An error our own messages provoke on purpose: re-adding a meter the
    switch kept (we follow it with a modify)."""
    ofproto = error_msg.datapath.ofproto
    return (isinstance(culprit, model.MeterMod)
            and culprit.command is model.MeterCommand.ADD
            and error_msg.type == ofproto.OFPET_METER_MOD_FAILED
            and error_msg.code == ofproto.OFPMMFC_METER_EXISTS)


_ETH = struct.Struct('!6s6sH')
_VLAN_TPIDS = (0x8100, 0x88a8, 0x9100)
_MAX_VLAN_TAGS = 2
_ARP = struct.Struct('!HHBBH6s4s6s4s')
_IPV4 = struct.Struct('!BBHHHBBH4s4s')
_TCP = struct.Struct('!HHIIBB')


def _mac_text(raw: bytes) -> str:
    return raw.hex(':')


_ip_text = socket.inet_ntoa

# A PacketIn's fixed part after the OpenFlow header (1.3 to 1.5): buffer
# id, total length, reason, table id, cookie; its match follows.
_PACKET_IN = struct.Struct('!IHBBQ')
_MATCH_HEADER = struct.Struct('!HH')
_OXM_HEADER = struct.Struct('!I')
_OFPMT_OXM = 1
_OXM_IN_PORT = 0x80000004       # OpenFlow basic, in_port, 4 bytes, no mask
_IN_PORT = struct.Struct('!I')
_NO_BUFFER = 0xffffffff


class PacketInFields(typing.NamedTuple):
    """What we use of a PacketIn: read from its bytes by `parse_packet_in`
    (os-ken's objects carry the same as `buffer_id`, `cookie`,
    `match['in_port']` and `data`)."""
    buffer_id: int
    cookie: int
    in_port: int
    data: bytes


def parse_packet_in(message: bytes) -> PacketInFields:
    """The fields of a PacketIn's bytes (OpenFlow 1.3 to 1.5 share its
    layout), checked as far as we read them: its match must be OXM, fit
    the message and hold an in_port. Raises MalformedPacket otherwise."""
    if len(message) < 8 + _PACKET_IN.size + _MATCH_HEADER.size:
        raise MalformedPacket(f'{len(message)}-byte PacketIn is too short')
    buffer_id, _total_len, _reason, _table, cookie = _PACKET_IN.unpack_from(
        message, 8)
    match_type, match_length = _MATCH_HEADER.unpack_from(message, 24)
    match_end = 24 + match_length
    data_start = 24 + (match_length + 7) // 8 * 8 + 2
    if match_type != _OFPMT_OXM or match_length < 4 or (
            data_start > len(message)):
        raise MalformedPacket(f'PacketIn match (type {match_type}, '
                              f'{match_length} bytes) does not fit')
    in_port = None
    offset = 28
    while offset + 4 <= match_end:
        (oxm,) = _OXM_HEADER.unpack_from(message, offset)
        end = offset + 4 + (oxm & 0xff)
        if end > match_end:
            raise MalformedPacket('PacketIn match field overruns the match')
        if oxm == _OXM_IN_PORT:
            (in_port,) = _IN_PORT.unpack_from(message, offset + 4)
        offset = end
    if offset != match_end:
        raise MalformedPacket('PacketIn match ends inside a field header')
    if in_port is None:
        raise MalformedPacket('PacketIn match has no in_port')
    return PacketInFields(buffer_id, cookie, in_port,
                          bytes(message[data_start:]))


def decode_packet_in(msg) -> typing.Optional[model.Packet]:
    """The TCP segment or ARP request in an os-ken PacketIn, or None if
    irrelevant (see `decode_frame`)."""
    in_port = msg.match['in_port']
    buffer_id = msg.buffer_id
    if buffer_id == msg.datapath.ofproto.OFP_NO_BUFFER:
        buffer_id = None
    return decode_frame(bytes(msg.data), in_port, buffer_id)


def decode_fields(fields: PacketInFields) -> typing.Optional[model.Packet]:
    """`decode_frame` of what `parse_packet_in` read."""
    buffer_id = fields.buffer_id
    return decode_frame(fields.data, fields.in_port,
                        None if buffer_id == _NO_BUFFER else buffer_id)


def decode_frame(data: bytes, in_port: int, buffer_id: typing.Optional[int]
                 ) -> typing.Optional[model.Packet]:
    """The TCP segment or ARP request in a PacketIn's frame, or None if
    irrelevant.

    Reads only the fixed headers we use, with `struct`: hosts' frames never
    reach a general parser (os-ken's loops forever on a zero-length TCP
    option, and decodes some ports' payloads as BGP or OpenFlow). Up to two
    VLAN tags are skipped: the switch's flows match tagged frames too, and
    the packet is released with its tags. IPv4 TCP (first or only fragment)
    and ARP requests are relevant; anything else is None. Raises
    MalformedPacket, naming the port, if a header the frame announces is
    short or inconsistent.
    """

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
    known = {}
    for name in model.MATCH_FIELDS:
        value = ofp_match.get(name)
        if name in ('ct_state', 'tcp_flags'):
            if value is not None:
                known[name] = (value if isinstance(value, tuple)
                               else (value, 0xffffffff))
            continue
        if isinstance(value, tuple):
            value, mask = value
            if wire.as_int(name, mask) != (
                    1 << wire.oxm_bits(name)) - 1:
                continue
        if value is not None:
            known[name] = value
    return model.Match(**known)


def decode_flow_stats(body) -> typing.List[typing.Tuple[int, model.Match]]:
    """(cookie, match) of each flow in a FlowStats reply body."""
    return [(stats.cookie, match_from_ofp(stats.match)) for stats in body]


def decode_flow_removed(msg) -> typing.Tuple[int, model.Match]:
    """(cookie, match) of an OFPFlowRemoved."""
    return msg.cookie, match_from_ofp(msg.match)


# Switches (manufacturer, hardware) that carry out the messages of one
# OpenFlow connection one by one, each to its end, in the order sent: Open
# vSwitch ("everything executes synchronously", its barrier handler only
# replies). A barrier orders nothing there.
_IN_ORDER_SWITCHES = frozenset({('Nicira, Inc.', 'Open vSwitch')})


def _desc_text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode('ascii', 'replace')
    return value.rstrip('\0')


def switch_description(desc) -> str:
    """A switch's OFPDescStats, as one line for logs."""
    return ' '.join(filter(None, (_desc_text(desc.mfr_desc),
                                  _desc_text(desc.hw_desc),
                                  _desc_text(desc.sw_desc))))


def executes_in_order(desc) -> bool:
    """Whether the switch whose OFPDescStats is `desc` carries out each
    connection's messages in order (a barrier between them adds nothing)."""
    return (_desc_text(desc.mfr_desc),
            _desc_text(desc.hw_desc)) in _IN_ORDER_SWITCHES


def is_port_up(ofp_port, ofproto) -> bool:
    """Administratively up and with link: the port can carry traffic."""
    return not (ofp_port.config & ofproto.OFPPC_PORT_DOWN or
                ofp_port.state & ofproto.OFPPS_LINK_DOWN)


def port_states_from_desc(ports, ofproto) -> typing.Dict[int, bool]:
    """{port_no: up} of a PortDesc reply body, without reserved ports."""
    return {port.port_no: is_port_up(port, ofproto) for port in ports
            if port.port_no <= ofproto.OFPP_MAX}
