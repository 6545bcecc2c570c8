"""Every message the strategies emit passes the renderer, the fake switch
and Open vSwitch's own decoder alike.

`ha_redirect.ovs_constraints` is the one home of OVS's rules, which the
renderer and FakeFlowTable both apply; this test checks those rules against
OVS itself, so unit tests cannot pass on flows OVS refuses. For each of the
four strategies, with the port_status monitor alone and with tcp_probe (and
meters), in the normal, failed-over and failed-back states, every message
the policy returns is
- applied to FakeFlowTable, through a simulated switch (packets run too);
- rendered by `openflow.to_ofp_messages` for OpenFlow 1.3 (no
  UnsupportedFlow);
- where `ovs-ofctl` is installed, serialized and read by `ovs-ofctl
  ofp-parse`. Its decoder of a FLOW_MOD is the one ovs-vswitchd runs before
  adding a flow (ofputil_decode_flow_mod with ofpacts_check_consistency):
  it refuses a match field without its prerequisite (OFPBMC_BAD_PREREQ), a
  set_field, fin_timeout, ct or learn that does not fit the match
  (OFPBAC_MATCH_INCONSISTENT) and a goto_table that is not a later table
  (OFPBIC_BAD_TABLE_ID), and prints "decode error". (What needs switch
  state, such as a group or meter that must exist, is for the functional
  tests on a real bridge.)
"""

import collections
import functools
import re
import shutil
import subprocess
import types

import pytest

from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser

from ha_redirect import model
from ha_redirect.monitors.port_status import PortStatusMonitor
from ha_redirect.monitors.tcp_probe import TcpProbeMonitor
from ha_redirect import openflow
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.fast_failover import FastFailoverStrategy
from ha_redirect.strategies.proactive import ProactiveStrategy
from ha_redirect.strategies.reactive import ReactiveStrategy
from ha_redirect.strategies.stateful import StatefulStrategy

from switch_harness import arp_request
from switch_harness import SimulatedSwitch
from switch_harness import tcp

OFCTL = shutil.which('ovs-ofctl')
DPID = 1
PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
CLIENT = ('10.0.0.3', '00:00:00:00:00:03', 3)
SERVICE_PORT = 5001
ALL_UP = {1: True, 2: True, 3: True}
STRATEGIES = {'reactive': ReactiveStrategy, 'proactive': ProactiveStrategy,
              'fast_failover': FastFailoverStrategy,
              'stateful': StatefulStrategy}
MONITORS = {'port_status': PortStatusMonitor, 'tcp_probe': TcpProbeMonitor}
# (monitors, the switch's highest meter id: 0 means no meters)
SETUPS = {'port_status': (('port_status',), 0),
          'port_status+tcp_probe+meters': (('port_status', 'tcp_probe'),
                                           0xffff)}
STATES = ('normal', 'failed_over', 'failed_back')
DATAPATH = types.SimpleNamespace(id=DPID, ofproto=ofproto_v1_3,
                                 ofproto_parser=ofproto_v1_3_parser)


class RecordingSwitch(SimulatedSwitch):
    """The simulated switch, keeping every message the policy returns
    (FlowRemoved answers included) under the state it was in."""

    def __init__(self, policy):
        super().__init__(policy, DPID)
        self.state = 'normal'
        self.seen = collections.defaultdict(list)
        self.up = {}

    def port(self, port_no, is_up):
        self.up[port_no] = is_up
        super().port(port_no, is_up)

    def connect(self, port_states, max_meter_id=0):
        self.up = dict(port_states)
        for port_no, is_up in port_states.items():
            self.table.set_port_live(DPID, port_no, is_up)
        self.apply(self.policy.on_switch_connected(
            DPID, port_states, self.now, max_meter_id=max_meter_id))

    def apply(self, messages):
        messages = list(messages)
        self.seen[self.state] += messages
        self.table.apply(messages, now=self.now)
        removed, self.table.removed[:] = list(self.table.removed), []
        for flow in removed:
            self.apply(self.policy.on_flow_removed(
                flow.datapath_id, flow.cookie, flow.match, self.now))

    def run(self, seconds):
        """Let time pass in 10 ms ticks; live servers answer probes."""
        for _ in range(round(seconds / 0.01)):
            sent_before = len(self.table.sent)
            self.tick(0.01)
            for probe in self.table.sent[sent_before:]:
                if (isinstance(probe, model.TcpSegment)
                        and probe.tcp_flags == model.TCP_SYN
                        and self.up.get(probe.out_port)):
                    self.apply(self.policy.on_packet(DPID, model.TcpPacket(
                        in_port=probe.out_port, eth_src=probe.eth_dst,
                        eth_dst=probe.eth_src, ipv4_src=probe.ipv4_dst,
                        ipv4_dst=probe.ipv4_src, tcp_src=probe.tcp_dst,
                        tcp_dst=probe.tcp_src,
                        tcp_flags=model.TCP_SYN | model.TCP_ACK,
                        tcp_seq=99, tcp_ack=probe.tcp_seq + 1), self.now))


def traffic(switch, client_port):
    """A connection's handshake and data both ways, and an ARP request for
    the primary."""
    ip, mac, port = CLIENT
    server = switch.policy.active_server('web') or PRIMARY
    for flags in (model.TCP_SYN, model.TCP_ACK):
        switch.send(tcp(port, ip, PRIMARY.ip, client_port, SERVICE_PORT,
                        mac, PRIMARY.mac, flags))
        switch.send(tcp(server.port, server.ip, ip, SERVICE_PORT,
                        client_port, server.mac, mac,
                        flags | model.TCP_ACK))
    switch.send(arp_request(port, mac, ip, PRIMARY.ip))


@functools.lru_cache(maxsize=None)
def messages_seen(strategy, setup):
    """{state: [message, ...]} of one strategy through all three states."""
    monitors, max_meter_id = SETUPS[setup]
    service = model.Service('web', DPID, (SERVICE_PORT,), PRIMARY,
                            (BACKUP,), monitors=monitors)
    settings = model.PolicySettings(
        strategy=strategy, probe_ip='10.0.0.250',
        probe_mac='00:00:00:00:00:fa', failback_hold_down=0.05)
    switch = RecordingSwitch(RedirectPolicy(
        [service], settings, strategy=STRATEGIES[strategy](),
        monitor_classes=MONITORS))
    switch.connect(ALL_UP, max_meter_id)
    switch.run(0.5)
    traffic(switch, 40000)
    switch.state = 'failed_over'
    switch.port(PRIMARY.port, False)
    assert switch.policy.active_server('web') == BACKUP
    traffic(switch, 40001)
    switch.run(0.2)
    switch.state = 'failed_back'
    switch.port(PRIMARY.port, True)
    switch.run(0.5)
    assert switch.policy.active_server('web') == PRIMARY
    traffic(switch, 40002)
    switch.run(31)     # pins time out: FlowRemoved and what answers it
    return {state: switch.seen[state] for state in STATES}


def unique(messages):
    """Each message once, bundles opened (their messages are checked on
    their own too); of the health probes, one per server and flags."""
    found = {}
    for message in messages:
        if isinstance(message, model.TcpSegment):
            found.setdefault((message.out_port, message.tcp_flags), message)
            continue
        found.setdefault(message, message)
        if isinstance(message, model.Bundle):
            found.update((m, m) for m in message.messages)
    return list(found.values())


def ovs_decode_errors(ofp_msgs, tmp_path) -> dict:
    """{index: OVS's error} of the messages ovs-ofctl's decoder refuses.

    One `ovs-ofctl ofp-parse` reads them all from a file; each carries its
    index as xid, so an error names its message."""
    stream = bytearray()
    for xid, ofp_msg in enumerate(ofp_msgs):
        ofp_msg.set_xid(xid)
        ofp_msg.serialize()
        stream += ofp_msg.buf
    path = tmp_path / 'messages.of'
    path.write_bytes(bytes(stream))
    text = subprocess.run([OFCTL, 'ofp-parse', str(path)], check=True,
                          capture_output=True, text=True).stdout
    headers = re.findall(r'^\S+ \(OF1\.3\) \(xid=(0x[0-9a-f]+)\): ?(.*)$',
                         text, re.MULTILINE)
    # (a bundle's add repeats its xid on the message it carries)
    assert sorted({int(xid, 16) for xid, _ in headers}) == list(
        range(len(ofp_msgs))), text
    return {int(xid, 16): line for xid, line in headers
            if 'decode error' in line}


@pytest.fixture(params=sorted(SETUPS))
def setup(request):
    return request.param


@pytest.mark.parametrize('strategy', sorted(STRATEGIES))
def test_every_flow_passes_renderer_fake_and_ovs(strategy, setup,
                                                 tmp_path):
    seen = messages_seen(strategy, setup)   # FakeFlowTable took them all
    refused, rendered = [], []
    for state in STATES:
        assert any(isinstance(m, (model.FlowMod, model.Bundle))
                   for m in seen[state]), state
        for message in unique(seen[state]):
            try:
                ofp_msgs = openflow.to_ofp_messages(DATAPATH, message)
            except openflow.UnsupportedFlow as exc:
                refused.append(f'{state}: renderer: {exc}')
                continue
            rendered += [(state, message, m) for m in ofp_msgs]
    if OFCTL is not None:
        errors = ovs_decode_errors([m for _, _, m in rendered], tmp_path)
        refused += [f'{rendered[i][0]}: ovs-ofctl: {error}: '
                    f'{openflow.describe(rendered[i][1])}'
                    for i, error in sorted(errors.items())]
    assert not refused, '\n'.join(refused)


def test_the_states_emit_the_flows_that_make_them():
    """The scenario does reach each state's flows: groups for
    fast_failover, ct for stateful, meters and probes where set up."""
    seen = messages_seen('fast_failover', 'port_status+tcp_probe+meters')
    normal = unique(seen['normal'])
    assert any(isinstance(m, model.GroupMod) for m in normal)
    assert any(isinstance(m, model.MeterMod) for m in normal)
    assert any(isinstance(m, model.TcpSegment) for m in normal)
    stateful = unique(messages_seen('stateful', 'port_status')['failed_over'])
    assert any(isinstance(a, model.Conntrack) for m in stateful
               if isinstance(m, model.GroupMod)
               for b in m.buckets for a in b.actions)
    reactive = unique(messages_seen('reactive', 'port_status')['failed_back'])
    assert any(isinstance(m, model.PacketOut) for m in reactive)
    proactive = unique(messages_seen('proactive', 'port_status')['normal'])
    assert any(isinstance(a, model.Learn) for m in proactive
               if isinstance(m, model.FlowMod) for a in m.actions)
