"""Translate between our flow data and os-ken OpenFlow messages.

The only package that imports os-ken's OpenFlow classes. Three jobs, one
module each:
- `renderer`: `ha_redirect.model` messages -> os-ken messages for one
  datapath (OpenFlow 1.3, 1.4 and 1.5), refusing what Open vSwitch would
  (`ha_redirect.ovs_constraints`); `encoder` -> the bytes to send, packing
  a reactive connection's messages itself;
- `decoder`: what the switch reports (PacketIn, FlowRemoved, flow stats, port
  descriptions, errors) -> model values;
- `printer`: one ovs-ofctl-like line per message, for logs.
(Not named after their jobs' functions, so that `openflow.render` and
`openflow.describe` stay the functions.) Every public name is importable
from here, as `openflow.X`.
"""

from ha_redirect.openflow import decoder
from ha_redirect.openflow import encoder
from ha_redirect.openflow import printer
from ha_redirect.openflow import renderer
from ha_redirect.openflow import wire
from ha_redirect import ovs_constraints

UnsupportedFlow = renderer.UnsupportedFlow
MalformedPacket = decoder.MalformedPacket

PREREQUISITES = ovs_constraints.PREREQUISITES
NXM_FIELDS = wire.NXM_FIELDS
LEARN_OUTPUT_REGISTER = wire.LEARN_OUTPUT_REGISTER
NX_EXPERIMENTER_ID = renderer.NX_EXPERIMENTER_ID
NXT_CT_FLUSH = renderer.NXT_CT_FLUSH

check_prerequisites = renderer.check_prerequisites
to_ofp_messages = renderer.to_ofp_messages
render = renderer.render
to_wire = encoder.to_wire
arp_reply_frame = renderer.arp_reply_frame
async_config = renderer.async_config
tcp_segment_frame = renderer.tcp_segment_frame

describe = printer.describe
describe_action = printer.describe_action
describe_error = printer.describe_error

decode_packet_in = decoder.decode_packet_in
match_from_ofp = decoder.match_from_ofp
decode_flow_stats = decoder.decode_flow_stats
decode_flow_removed = decoder.decode_flow_removed
is_expected_error = decoder.is_expected_error
is_port_up = decoder.is_port_up
executes_in_order = decoder.executes_in_order
switch_description = decoder.switch_description
port_states_from_desc = decoder.port_states_from_desc

__all__ = [
    'UnsupportedFlow', 'MalformedPacket', 'PREREQUISITES', 'NXM_FIELDS',
    'LEARN_OUTPUT_REGISTER', 'NX_EXPERIMENTER_ID', 'NXT_CT_FLUSH',
    'check_prerequisites', 'to_ofp_messages', 'render', 'to_wire',
    'arp_reply_frame', 'async_config', 'tcp_segment_frame', 'describe',
    'describe_action',
    'describe_error',
    'decode_packet_in', 'match_from_ofp', 'decode_flow_stats',
    'decode_flow_removed', 'is_expected_error', 'is_port_up',
    'port_states_from_desc', 'executes_in_order', 'switch_description',
]
