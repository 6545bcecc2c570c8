"""The bytes `openflow.to_wire` sends are the bytes os-ken would send.

The encoder packs a reactive connection's FlowMods, Barrier and PacketOut
itself, the learns and fast-failover groups of a failover burst, and the
bundle of a switch's full state; every other message goes through os-ken.
These tests hold the packed bytes to os-ken's serialization of the same
message, with the same xid, over every message the four strategies emit
and over randomized reactive connections, in OpenFlow 1.3 and 1.4.
"""

import dataclasses
import itertools
import random
import types

import pytest

from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser
from os_ken.ofproto import ofproto_v1_4
from os_ken.ofproto import ofproto_v1_4_parser
from os_ken.ofproto import ofproto_v1_5
from os_ken.ofproto import ofproto_v1_5_parser

from ha_redirect import model
from ha_redirect import openflow
from ha_redirect.openflow import encoder
from ha_redirect.openflow import renderer
from ha_redirect.policy import RedirectPolicy

from test_flows_ovs_accepts import messages_seen
from test_flows_ovs_accepts import SETUPS
from test_flows_ovs_accepts import STATES
from test_flows_ovs_accepts import STRATEGIES
from test_flows_ovs_accepts import unique

DATAPATHS = {
    '1.3': types.SimpleNamespace(id=1, ofproto=ofproto_v1_3,
                                 ofproto_parser=ofproto_v1_3_parser),
    '1.4': types.SimpleNamespace(id=1, ofproto=ofproto_v1_4,
                                 ofproto_parser=ofproto_v1_4_parser),
}
PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUPS = (model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2),
           model.Endpoint('10.0.0.3', '00:00:00:00:00:0a', 7))


def os_ken_bytes(datapath, message, first_xid):
    """What os-ken serializes for `message`, xids from `first_xid` on."""
    renderer._bundle_ids = itertools.count(1)    # as wire_bytes renders
    out = []
    for xid, ofp_msg in zip(itertools.count(first_xid),
                            openflow.to_ofp_messages(datapath, message)):
        ofp_msg.set_xid(xid)
        ofp_msg.serialize()
        out.append((xid, bytes(ofp_msg.buf)))
    return out


def wire_bytes(datapath, message, first_xid):
    renderer._bundle_ids = itertools.count(1)
    xids = itertools.count(first_xid)
    return openflow.to_wire(datapath, message, lambda: next(xids))


def packed_here(message, version):
    """Whether the encoder packs `message` itself (not through os-ken)."""
    if isinstance(message, model.Bundle):
        return version in encoder._VERSIONS
    packer = encoder._PACKERS.get(type(message))
    if packer is None:
        return False
    try:
        packer(message, version, lambda: 0)
    except encoder._NotPacked:
        return False
    return True


@pytest.fixture(autouse=True)
def bundle_ids(monkeypatch):
    """Bundle ids count from 1 at each render, so both sides agree."""
    monkeypatch.setattr(renderer, '_bundle_ids', itertools.count(1))


@pytest.mark.parametrize('of_version', sorted(DATAPATHS))
@pytest.mark.parametrize('strategy', sorted(STRATEGIES))
def test_every_strategy_message_is_byte_identical(strategy, of_version):
    datapath = DATAPATHS[of_version]
    packed = set()
    for setup in sorted(SETUPS):
        seen = messages_seen(strategy, setup)
        for state in STATES:
            for n, message in enumerate(unique(seen[state])):
                xid = 0x10000 * n + 1
                try:
                    expected = os_ken_bytes(datapath, message, xid)
                except openflow.UnsupportedFlow:
                    continue
                assert wire_bytes(datapath, message, xid) == expected, (
                    openflow.describe(message))
                if packed_here(message, datapath.ofproto.OFP_VERSION):
                    packed.add(type(message))
    # The reactive path's own shapes are packed here, not left to os-ken,
    # and so is the full state a switch gets when it meets us.
    if strategy == 'reactive':
        assert packed == {model.FlowMod, model.Barrier, model.PacketOut,
                          model.Bundle}
    else:
        assert {model.FlowMod, model.Bundle} <= packed
    if strategy == 'fast_failover':
        # Its failover rewrites a group per service.
        assert model.GroupMod in packed


def _random_mac(rng):
    return ':'.join(f'{rng.randrange(256):02x}' for _ in range(6))


def _random_ip(rng):
    return '.'.join(str(rng.randrange(256)) for _ in range(4))


@pytest.mark.parametrize('of_version', sorted(DATAPATHS))
def test_random_reactive_connections_are_byte_identical(of_version):
    datapath = DATAPATHS[of_version]
    rng = random.Random(12)
    service = model.Service('web', 1, (5001, 443), PRIMARY, BACKUPS)
    policy = RedirectPolicy([service], model.PolicySettings(
        strategy='reactive'))
    policy.on_switch_connected(1, {1: True, 2: True, 7: True, 3: True},
                               0.0)
    compared = 0
    for n in range(600):
        if n == 200:
            policy.on_port_status(1, PRIMARY.port, False, 1.0)
        if n == 400:
            policy.on_port_status(1, BACKUPS[0].port, False, 2.0)
        frame = bytes(rng.randrange(256)
                      for _ in range(rng.choice((54, 60, 74, 1514))))
        packet = model.TcpPacket(
            in_port=rng.randrange(3, 0xfffff), eth_src=_random_mac(rng),
            eth_dst=PRIMARY.mac, ipv4_src=_random_ip(rng),
            ipv4_dst=PRIMARY.ip, tcp_src=rng.randrange(1, 65536),
            tcp_dst=rng.choice((5001, 443)), tcp_flags=model.TCP_SYN,
            buffer_id=rng.choice((None, rng.randrange(1 << 32 - 1))),
            data=frame)
        for message in policy.on_packet(1, packet, 3.0 + n):
            xid = rng.randrange(1 << 32)
            assert packed_here(message, datapath.ofproto.OFP_VERSION), (
                message)
            assert wire_bytes(datapath, message, xid) == os_ken_bytes(
                datapath, message, xid), openflow.describe(message)
            compared += 1
    assert compared >= 600 * 4 - 10


def test_what_os_ken_must_serialize_still_goes_through_it():
    """OpenFlow 1.5, and fields the encoder does not pack: os-ken's
    bytes."""
    flow = model.FlowMod(
        1, model.FlowCommand.ADD,
        model.Match(eth_type=0x0800, ip_proto=6, tcp_dst=80,
                    tcp_flags=(model.TCP_SYN, model.TCP_SYN)),
        (model.Output(2),), priority=5)
    of13 = DATAPATHS['1.3']
    assert not packed_here(flow, 4)
    assert wire_bytes(of13, flow, 9) == os_ken_bytes(of13, flow, 9)
    of15 = types.SimpleNamespace(id=1, ofproto=ofproto_v1_5,
                                 ofproto_parser=ofproto_v1_5_parser)
    simple = dataclasses.replace(flow, match=model.Match(in_port=3))
    assert wire_bytes(of15, simple, 9) == os_ken_bytes(of15, simple, 9)


def test_a_flow_ovs_refuses_is_refused_before_taking_an_xid():
    taken = []
    refused = model.FlowMod(1, model.FlowCommand.ADD,
                            model.Match(tcp_dst=80), (model.Output(2),))
    with pytest.raises(openflow.UnsupportedFlow, match='tcp_dst'):
        openflow.to_wire(DATAPATHS['1.3'], refused,
                         lambda: taken.append(1) or 1)
    assert taken == []


def test_a_refused_flow_is_refused_though_its_actions_were_packed_before():
    """The checks run once per flow shape: a flow whose match differs in a
    value the checks read is a shape of its own."""
    actions = (model.SetField('ipv4_dst', '10.0.0.2'), model.Output(2))
    datapath, xids = DATAPATHS['1.3'], itertools.count(1)
    accepted = model.FlowMod(1, model.FlowCommand.ADD, model.Match(
        eth_type=0x0800, ip_proto=6, tcp_dst=80), actions)
    openflow.to_wire(datapath, accepted, lambda: next(xids))
    udp = dataclasses.replace(accepted, match=model.Match(
        eth_type=0x0800, ip_proto=17, tcp_dst=80))
    with pytest.raises(openflow.UnsupportedFlow, match='ip_proto'):
        openflow.to_wire(datapath, udp, lambda: next(xids))
    arp = dataclasses.replace(accepted, match=model.Match(
        eth_type=0x0806, ip_proto=6, tcp_dst=80))
    with pytest.raises(openflow.UnsupportedFlow, match='eth_type'):
        openflow.to_wire(datapath, arp, lambda: next(xids))


def test_match_fields_come_in_the_declared_order():
    assert tuple(f.name for f in dataclasses.fields(model.Match)) == (
        model.MATCH_FIELDS)
    match = model.Match(reg6=1, tcp_dst=80, ip_proto=6, eth_type=0x0800,
                        in_port=3)
    assert list(match.fields().items()) == [
        ('in_port', 3), ('eth_type', 0x0800), ('ip_proto', 6),
        ('tcp_dst', 80), ('reg6', 1)]


@pytest.mark.parametrize('changes', [
    dict(tcp_src=70000), dict(tcp_src=-1), dict(in_port=1 << 32),
    dict(tcp_src=True), dict(tcp_src='40000'), dict(ip_proto=6.0)],
    ids=['port too big', 'negative', 'in_port too big', 'bool', 'text',
         'float'])
def test_a_match_value_the_encoder_cannot_pack_goes_to_os_ken(changes):
    """Out of range or not an int: the encoder leaves the message to
    os-ken's path, which says what it makes of it, as it did before."""
    values = dict(in_port=3, eth_type=0x0800, ip_proto=6,
                  ipv4_src='10.1.0.1', tcp_src=40000, tcp_dst=80)
    values.update(changes)
    flow = model.FlowMod(1, model.FlowCommand.ADD, model.Match(**values),
                         (model.Output(2),), priority=5)
    datapath = DATAPATHS['1.3']
    assert not packed_here(flow, 4)
    try:
        expected = os_ken_bytes(datapath, flow, 9)
    except Exception as exc:
        with pytest.raises(type(exc)):
            wire_bytes(datapath, flow, 9)
    else:
        assert wire_bytes(datapath, flow, 9) == expected


@pytest.mark.parametrize('of_version', sorted(DATAPATHS))
def test_learn_actions_are_packed_here_byte_for_byte(of_version):
    """proactive's flows carry learns; a failover of many services rewrites
    one such flow per service, so the encoder packs them (os-ken took
    ~0.6 ms a flow). Every kind of spec, both kinds of output, odd widths,
    the values repeated and not."""
    datapath = DATAPATHS[of_version]
    rng = random.Random(7)
    for n in range(50):
        server_mac, server_ip = _random_mac(rng), _random_ip(rng)
        common = dict(table=rng.randrange(1, 250),
                      priority=rng.randrange(1 << 16),
                      cookie=rng.randrange(1 << 64),
                      idle_timeout=rng.randrange(1 << 16),
                      fin_idle_timeout=rng.randrange(1 << 16))
        fixed = (('eth_type', 0x0800), ('ip_proto', 6))
        forward = model.Learn(
            match_values=fixed + (('eth_dst', _random_mac(rng)),
                                  ('ipv4_dst', _random_ip(rng)),
                                  ('tcp_dst', rng.randrange(1 << 16))),
            match_from=(('in_port', 'in_port'), ('eth_src', 'eth_src'),
                        ('ipv4_src', 'ipv4_src'), ('tcp_src', 'tcp_src')),
            set_values=(('eth_dst', server_mac), ('ipv4_dst', server_ip)),
            output_port=rng.randrange(1, 1 << 16), **common)
        reverse = model.Learn(
            match_values=fixed + (('in_port', rng.randrange(1, 100)),
                                  ('ipv4_src', server_ip)),
            match_from=(('eth_dst', 'eth_src'), ('tcp_dst', 'tcp_src')),
            set_values=(('ipv4_src', _random_ip(rng)),),
            output_from='in_port', **common)
        flow = model.FlowMod(
            1, model.FlowCommand.ADD,
            model.Match(eth_type=0x0800, ip_proto=6,
                        ipv4_dst=_random_ip(rng), tcp_dst=80),
            (forward, reverse, model.SetField('ipv4_dst', server_ip),
             model.Output(rng.randrange(1, 100))),
            table=common['table'], priority=5, cookie=n)
        assert packed_here(flow, datapath.ofproto.OFP_VERSION)
        assert wire_bytes(datapath, flow, n + 1) == os_ken_bytes(
            datapath, flow, n + 1), openflow.describe(flow)
