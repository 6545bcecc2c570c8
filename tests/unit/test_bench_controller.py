"""devtools/bench_controller: which client connection a FlowMod is about,
read from the bytes our encoder sends for real reactive connections."""

import types

from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser

from ha_redirect import model
from ha_redirect import openflow
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.reactive import ReactiveStrategy

import devtools_scripts

bench = devtools_scripts.load('bench_controller')


def _flow_mods_for(client_port):
    """The FlowMods the controller sends for a SYN of the bench's client
    10.1.0.5 from `client_port`."""
    primary = model.Endpoint(bench.SERVICE_IP, bench.MACS[1], 1)
    backup = model.Endpoint('10.0.0.2', bench.MACS[2], 2)
    policy = RedirectPolicy([model.Service(
        'web', 1, (bench.SERVICE_PORT,), primary, (backup,))],
        strategy=ReactiveStrategy())
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    syn = model.TcpPacket(
        in_port=3, eth_src=bench.MACS[3], eth_dst=primary.mac,
        ipv4_src='10.1.0.5', ipv4_dst=primary.ip, tcp_src=client_port,
        tcp_dst=bench.SERVICE_PORT, tcp_flags=model.TCP_SYN, data=b'x')
    datapath = types.SimpleNamespace(id=1, ofproto=ofproto_v1_3,
                                     ofproto_parser=ofproto_v1_3_parser)
    wire = [data for message in policy.on_packet(1, syn, 1.0)
            if isinstance(message, model.FlowMod)
            for _, data in openflow.to_wire(datapath, message, lambda: 1)]
    assert len(wire) == 2       # forward and reply
    return wire


def test_both_flow_mods_of_a_connection_are_counted_for_its_client():
    client = (bytes((10, 1, 0, 5)), 40000)
    assert [bench.flow_mod_connection(m) for m in _flow_mods_for(40000)] == [
        client, client]


def test_a_client_port_equal_to_the_service_port_is_still_the_client():
    """It once counted the reply flow for the server (1 connection in
    16,384), which showed as a PacketOut before both FlowMods."""
    port = bench.SERVICE_PORT
    client = (bytes((10, 1, 0, 5)), port)
    assert [bench.flow_mod_connection(m) for m in _flow_mods_for(port)] == [
        client, client]
