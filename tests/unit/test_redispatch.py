"""Redispatch: a refused connection goes to the next server.

The switch side runs on the fake switch (OVS's rules);
tests/functional/test_beyond_the_paper.py shows it on Open vSwitch.
"""

import dataclasses
import gc

import pytest

from ha_redirect import model
from ha_redirect import testing
from tests.unit import test_passive_check as passive

PRIMARY, BACKUP = passive.PRIMARY, passive.BACKUP
CLIENT_PORT, CLIENT_MAC, CLIENT_IP = (passive.CLIENT_PORT, passive.CLIENT_MAC,
                                      passive.CLIENT_IP)
ISN = 1000


def _syn(client_port=40000):
    return model.TcpPacket(
        in_port=CLIENT_PORT, eth_src=CLIENT_MAC, eth_dst=PRIMARY.mac,
        ipv4_src=CLIENT_IP, ipv4_dst=PRIMARY.ip, tcp_src=client_port,
        tcp_dst=5001, tcp_flags=model.TCP_SYN, tcp_seq=ISN, data=b'syn')


def _refusal(server, ack=ISN + 1, client_port=40000):
    return model.TcpPacket(
        in_port=server.port, eth_src=server.mac, eth_dst=CLIENT_MAC,
        ipv4_src=server.ip, ipv4_dst=CLIENT_IP, tcp_src=5001,
        tcp_dst=client_port, tcp_flags=model.TCP_RST | model.TCP_ACK,
        tcp_seq=0, tcp_ack=ack, data=b'rst')


def _connected(**changes):
    policy = passive._policy('reactive', **changes)
    policy.on_switch_connected(1, {1: True, 2: True, 3: True}, 0.0)
    return policy


def test_servers_resets_are_held_for_the_controller_and_passed_on_as_is():
    """The switch sends a server's RST only to us; passed on, it leaves
    exactly as the switch forwards it without the check."""
    held_policy = passive._policy('reactive')
    plain_policy = passive._policy('reactive', passive_refusals=0)
    held, plain = passive._switch(held_policy), passive._switch(plain_policy)
    for seq in (0, 99):
        fields = passive._fields(passive._reset(PRIMARY, seq))
        assert [d.port for d in held.process(1, fields, dry_run=True)] == [
            testing.CONTROLLER]
        # Not a refusal of ours (no SYN dispatched): passed on.
        [out] = held_policy.on_packet(1, passive._reset(PRIMARY, seq), 1.0)
        sent = [(d.port, passive._without('reg6', d.packet))
                for d in held.packet_out(out, fields)]
        assert sent and sent == [(d.port, d.packet) for d in plain.process(
            1, fields, dry_run=True)]


def test_a_refused_syn_is_sent_again_to_the_backup_with_its_pins():
    policy = _connected()
    first = policy.on_packet(1, _syn(), 1.0)
    assert first[-1].actions[-1] == model.Output(PRIMARY.port)
    again = policy.on_packet(1, _refusal(PRIMARY), 1.001)
    # The client never sees the RST: no message carries it.
    assert not any(getattr(m, 'data', None) == b'rst' for m in again)
    flows = [m for m in again if isinstance(m, model.FlowMod)]
    forward = next(f for f in flows if f.match.in_port == CLIENT_PORT)
    assert forward.actions[-1] == model.Output(BACKUP.port)
    assert model.SetField('ipv4_dst', BACKUP.ip) in forward.actions
    assert any(f.match.in_port == BACKUP.port for f in flows)   # replies
    release = again[-1]
    assert isinstance(release, model.PacketOut) and release.data == b'syn'
    assert release.actions[-1] == model.Output(BACKUP.port)
    assert policy._states[0].connections[
        (CLIENT_PORT, CLIENT_IP, 40000, 5001)] == 1


def test_a_reset_that_does_not_answer_our_syn_is_passed_on():
    policy = _connected()
    policy.on_packet(1, _syn(), 1.0)
    [out] = policy.on_packet(1, _refusal(PRIMARY, ack=ISN + 7), 1.001)
    assert out.data == b'rst' and out.in_port == PRIMARY.port
    assert out.actions == (model.SetField('reg6', model.PASS_FORWARD),
                           model.Resubmit(0))


def test_when_every_server_refuses_the_client_gets_the_last_refusal():
    policy = _connected()
    policy.on_packet(1, _syn(), 1.0)
    policy.on_packet(1, _refusal(PRIMARY), 1.001)
    [out] = policy.on_packet(1, _refusal(BACKUP), 1.002)
    assert out.data == b'rst' and out.in_port == BACKUP.port


def test_redispatched_refusals_still_mark_the_server_down():
    policy = _connected(passive_refusals=3)
    for n in range(3):
        policy.on_packet(1, _syn(40000 + n), 1.0 + n * 0.01)
        policy.on_packet(1, _refusal(PRIMARY, client_port=40000 + n),
                         1.001 + n * 0.01)
    assert policy.active_server('web') == BACKUP


SWITCH_PINS = ('proactive', 'fast_failover', 'stateful')


def _copied(fields, syn):
    """The TcpPacket the controller decodes from the switch's copy."""
    return model.TcpPacket(
        in_port=fields['in_port'], eth_src=fields['eth_src'],
        eth_dst=fields['eth_dst'], ipv4_src=fields['ipv4_src'],
        ipv4_dst=fields['ipv4_dst'], tcp_src=fields['tcp_src'],
        tcp_dst=fields['tcp_dst'], tcp_flags=fields['tcp_flags'],
        tcp_seq=syn.tcp_seq, data=syn.data)


def _forwarded(deliveries):
    return [(d.port, passive._without('reg6', d.packet)) for d in deliveries
            if d.port != testing.CONTROLLER]


@pytest.mark.parametrize('strategy', SWITCH_PINS)
def test_where_the_switch_pins_connections_a_refused_syn_goes_on(strategy):
    """The switch forwards a client's SYN as it would without redispatch
    and copies it to us; the server's refusal comes to us only, and the
    SYN goes again to the backup, whose pins then carry the connection
    both ways, above whatever the switch pinned for it."""
    policy = passive._policy(strategy)
    switch = passive._switch(policy)
    plain = passive._switch(passive._policy(strategy, redispatch=False))
    syn = _syn()
    delivered = switch.process(1, passive._fields(syn), now=1.0)
    assert _forwarded(delivered) == _forwarded(
        plain.process(1, passive._fields(syn), now=1.0))
    [copy] = [d.packet for d in delivered if d.port == testing.CONTROLLER]
    assert policy.on_packet(1, _copied(copy, syn), 1.0) == []

    refusal = passive._fields(_refusal(PRIMARY))
    assert [d.port for d in switch.process(1, refusal, now=1.001,
                                           dry_run=True)] == [
        testing.CONTROLLER]
    again = policy.on_packet(1, _refusal(PRIMARY), 1.001)
    release = again[-1]
    assert isinstance(release, model.PacketOut) and release.data == b'syn'
    switch.apply(again[:-1], now=1.001)
    assert [d.port for d in switch.packet_out(
        release, passive._fields(syn), now=1.001)] == [BACKUP.port]

    ack = dict(passive._fields(syn), tcp_flags=model.TCP_ACK)
    [out] = switch.process(1, ack, now=1.002)
    assert (out.port, out.packet['ipv4_dst']) == (BACKUP.port, BACKUP.ip)
    reply = dict(in_port=BACKUP.port, eth_src=BACKUP.mac, eth_dst=CLIENT_MAC,
                 eth_type=model.ETH_TYPE_IPV4, ip_proto=model.IP_PROTO_TCP,
                 ipv4_src=BACKUP.ip, ipv4_dst=CLIENT_IP, tcp_src=5001,
                 tcp_dst=40000, tcp_flags=model.TCP_SYN | model.TCP_ACK)
    [back] = switch.process(1, reply, now=1.002)
    assert (back.port, back.packet['ipv4_src']) == (CLIENT_PORT, PRIMARY.ip)
    # Other connections are the switch's as before.
    other = passive._fields(_syn(40001))
    assert _forwarded(switch.process(1, other, now=1.003)) == _forwarded(
        plain.process(1, other, now=1.003))


@pytest.mark.parametrize('strategy', SWITCH_PINS)
def test_a_syn_copy_after_a_failover_is_still_recognised(strategy):
    """Once the backup is active the switch may copy the SYN as it sent it
    on, to the backup's address (proactive: a group's bucket and a ct
    recirculation change only their own copy of it); a
    refusal from the backup then still finds it (here with nowhere left to
    go: the client gets it)."""
    policy = passive._policy(strategy)
    switch = passive._switch(policy)
    switch.apply(policy.on_port_status(1, 1, False, 1.0), now=1.0)
    syn = _syn()
    delivered = switch.process(1, passive._fields(syn), now=1.1)
    [copy] = [d.packet for d in delivered if d.port == testing.CONTROLLER]
    assert copy['ipv4_dst'] == (
        BACKUP.ip if strategy == 'proactive' else PRIMARY.ip)
    policy.on_packet(1, _copied(copy, syn), 1.1)
    assert policy._redispatch._openings[0]
    [out] = policy.on_packet(1, _refusal(BACKUP), 1.101)
    assert isinstance(out, model.PacketOut) and out.in_port == BACKUP.port


def test_syns_are_not_copied_without_a_check_that_holds_refusals():
    for changes in (dict(redispatch=False), dict(passive_refusals=0)):
        policy = passive._policy('proactive', **changes)
        ports = [d.port for d in passive._switch(policy).process(
            1, passive._fields(_syn()), dry_run=True)]
        assert ports == [PRIMARY.port]


def test_syn_copies_pass_the_clients_meters():
    policy = passive._policy('proactive')
    messages = policy.on_switch_connected(1, {1: True, 2: True, 3: True},
                                          0.0, max_meter_id=1000)
    flows = [m for message in messages
             for m in getattr(message, 'messages', (message,))
             if isinstance(m, model.FlowMod)
             and m.match.tcp_flags == (model.TCP_SYN,
                                       model.TCP_SYN | model.TCP_ACK)
             and model.Output(model.SpecialPort.CONTROLLER) in m.actions]
    settings = policy.settings
    meters = {m.match.in_port: m.actions[0] for m in flows}
    assert meters == {
        None: model.Meter(settings.first_meter_id + model.METER_CLIENTS),
        CLIENT_PORT: model.Meter(model.port_meter_id(settings, CLIENT_PORT))}


def test_no_redispatch_when_turned_off():
    policy = _connected(redispatch=False)
    policy.on_packet(1, _syn(), 1.0)
    assert policy.on_packet(1, _refusal(PRIMARY), 1.001) == []


def test_the_syns_kept_for_redispatch_give_the_garbage_collector_no_work():
    """Every dispatched SYN is kept (up to max_connections_per_service):
    as objects the collector tracks, each full collection walked them all,
    a pause of tens of ms at tens of thousands of connections."""

    policy = _connected()
    gc.collect()
    before = len(gc.get_objects())
    for n in range(5000):
        policy.on_packet(1, _syn(client_port=10000 + n), 1.0)
    gc.collect()
    assert len(gc.get_objects()) - before < 500
    # And the last one is still redispatched.
    moved = policy.on_packet(1, _refusal(PRIMARY, client_port=14999), 1.1)
    assert any(isinstance(m, model.PacketOut) for m in moved)


@pytest.mark.parametrize('strategy', ('reactive',) + SWITCH_PINS)
def test_the_refusers_reset_of_a_moved_connection_is_dropped(strategy):
    """OVS's flow cache may still carry the client's next packet to the
    refuser before the new pins take hold: its RST must not end the
    connection that now lives on the backup, which gets the SYN again (to
    send its SYN-ACK again at once). A RST from the backup itself still
    reaches the client."""
    policy = passive._policy(strategy)
    switch = passive._switch(policy)
    # reactive's PacketIn (its pins to the primary), or a copy of the SYN
    # the switch pinned by itself.
    switch.apply([m for m in policy.on_packet(1, _syn(), 1.0)
                  if not isinstance(m, model.PacketOut)], now=1.0)
    if strategy != 'reactive':
        switch.process(1, passive._fields(_syn()), now=1.0)
    moved = policy.on_packet(1, _refusal(PRIMARY), 1.001)
    assert moved[-1].data == b'syn'
    switch.apply(moved[:-1], now=1.001)
    # The refuser's answer to the client's ACK: a bare RST, held.
    stale = dataclasses.replace(_refusal(PRIMARY), tcp_seq=777,
                                tcp_flags=model.TCP_RST)
    assert [d.port for d in switch.process(
        1, passive._fields(stale), now=1.002, dry_run=True)] == [
            testing.CONTROLLER]
    [again] = policy.on_packet(1, stale, 1.002)
    assert (again.data, again.actions[-1]) == (b'syn',
                                               model.Output(BACKUP.port))
    own = dataclasses.replace(stale, in_port=BACKUP.port, eth_src=BACKUP.mac,
                              ipv4_src=BACKUP.ip)
    [out] = policy.on_packet(1, own, 1.003)
    assert out.in_port == BACKUP.port
