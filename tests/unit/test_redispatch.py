"""Redispatch: under reactive, a refused connection goes to the next server.

The switch side runs on the fake switch (OVS's rules);
tests/functional/test_beyond_the_paper.py shows it on Open vSwitch.
"""

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


@pytest.mark.parametrize('strategy', ['proactive', 'fast_failover',
                                      'stateful'])
def test_only_a_strategy_whose_syns_come_to_us_redispatches(strategy):
    policy = passive._policy(strategy)
    assert policy.settings.redispatch is False
    table = passive._switch(policy)
    fields = passive._fields(passive._reset(PRIMARY))
    ports = [d.port for d in table.process(1, fields, dry_run=True)]
    assert testing.CONTROLLER in ports and len(ports) == 2   # copy + on


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
