"""ovs_constraints: one set of OVS's rules, which the renderer and the fake
switch both apply, with the same reason."""

import subprocess
import sys
import textwrap
import types

import pytest

from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser

from ha_redirect import model
from ha_redirect import openflow
from ha_redirect import ovs_constraints
from ha_redirect import testing

DPID = 1
ADD = model.FlowCommand.ADD
IPV4 = model.ETH_TYPE_IPV4
TCP = dict(eth_type=IPV4, ip_proto=model.IP_PROTO_TCP)
DATAPATH = types.SimpleNamespace(id=DPID, ofproto=ofproto_v1_3,
                                 ofproto_parser=ofproto_v1_3_parser)


def flow(match=model.Match(), actions=(), table=0):
    return model.FlowMod(DPID, ADD, match, actions, table=table)


def learn(**changes):
    return model.Learn(**{'table': 1, 'priority': 1, 'cookie': 1,
                          'output_from': 'in_port', **changes})


REFUSED = [
    (flow(model.Match(ipv4_dst='10.0.0.1')), 'ipv4_dst needs eth_type'),
    (flow(model.Match(eth_type=IPV4, tcp_dst=80)), 'tcp_dst needs ip_proto'),
    (flow(model.Match(eth_type=model.ETH_TYPE_ARP, ipv4_dst='10.0.0.1')),
     'the match has eth_type=0x806'),
    (flow(model.Match(in_port=1), (model.SetField('ipv4_dst', '10.0.0.2'),)),
     'set_field: ipv4_dst needs eth_type'),
    (flow(actions=(model.GotoTable(1), model.GotoTable(2))),
     'more than one goto_table'),
    (flow(actions=(model.GotoTable(1),), table=1), 'a later table'),
    (flow(actions=(model.Output(1), model.Meter(3))), 'one meter'),
    (flow(model.Match(in_port=3), (model.FinTimeout(2), model.Output(1))),
     'fin_timeout needs ip_proto=6'),
    (flow(model.Match(in_port=3), (model.Conntrack(7, table=1),)),
     'ct needs eth_type=0x800'),
    (flow(model.Match(**TCP), (model.Move('in_port', 'ct_mark', 17),)),
     'do not fit in_port'),
    (flow(model.Match(**TCP), (model.OutputFrom('vlan_vid', 12),)),
     "field 'vlan_vid'"),
    (flow(model.Match(**TCP), (learn(match_from=(('ipv4_dst',
                                                  'ipv4_src'),)),)),
     'learned match: ipv4_dst needs eth_type'),
    (flow(model.Match(**TCP), (learn(match_values=(('eth_type', IPV4),),
                                     set_values=(('tcp_src', 1),)),)),
     'learned set_values: tcp_src needs ip_proto'),
    (flow(model.Match(**TCP), (learn(output_from=None),)),
     'exactly one of output_port and output_from'),
    (model.GroupMod(DPID, model.GroupCommand.ADD, 1, (model.Bucket((
        model.Conntrack(7, table=1, commit=True), model.Output(2)), 2),)),
     'action set'),
    (model.GroupMod(DPID, model.GroupCommand.ADD, 1, (model.Bucket((
        model.GotoTable(1),), 2),)), 'a bucket cannot goto_table'),
    (model.PacketOut(DPID, (model.GotoTable(1),), data=b'x'),
     'a packet-out cannot goto_table'),
]


@pytest.mark.parametrize('message, reason', REFUSED)
def test_renderer_and_fake_refuse_alike(message, reason):
    with pytest.raises(ovs_constraints.Refused, match=reason):
        if isinstance(message, model.FlowMod):
            ovs_constraints.check_flow_mod(message)
        elif isinstance(message, model.GroupMod):
            ovs_constraints.check_group_mod(message)
        else:
            ovs_constraints.check_packet_out(message.actions)
    with pytest.raises(openflow.UnsupportedFlow, match=reason):
        openflow.to_ofp_messages(DATAPATH, message)
    with pytest.raises(testing.FakeFlowTableError, match=reason):
        testing.FakeFlowTable().apply([message])


def test_imports_neither_os_ken_nor_model_at_load():
    # model may take its constants from here: no import cycle.
    assert not hasattr(ovs_constraints, 'model')
    script = textwrap.dedent('''
        import sys
        sys.modules['os_ken'] = None
        from ha_redirect import ovs_constraints
        print('ok')
    ''')
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == 'ok', result.stderr


def test_model_takes_its_protocol_constants_from_ovs_constraints():
    for name in ('ETH_TYPE_IPV4', 'ETH_TYPE_ARP', 'IP_PROTO_TCP', 'TCP_FIN',
                 'TCP_SYN', 'TCP_RST', 'TCP_ACK', 'PREREQUISITES'):
        assert getattr(model, name) is getattr(ovs_constraints, name), name
