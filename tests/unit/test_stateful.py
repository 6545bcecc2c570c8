"""The `stateful` strategy through the policy and the fake switch's
conntrack: what clients see when servers fail, return and are drained."""

import dataclasses

import pytest

from ha_redirect import model
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies import stateful
from ha_redirect.strategies.stateful import StatefulStrategy
from ha_redirect import testing

from switch_harness import SimulatedSwitch
from switch_harness import tcp

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
BACKUP2 = model.Endpoint('10.0.0.5', '00:00:00:00:00:05', 5)
CLIENT = ('10.0.0.3', '00:00:00:00:00:03', 3)
OTHER = ('10.0.0.4', '00:00:00:00:00:04', 4)
PORT = 5001
ALL_UP = {1: True, 2: True, 3: True, 4: True, 5: True}
SERVICE = model.Service('web', 1, (PORT,), PRIMARY, (BACKUP, BACKUP2))


def make_switch(services=(SERVICE,), table=None, ports=None, **settings):
    policy = RedirectPolicy(services, model.PolicySettings(
        strategy='stateful', **settings), strategy=StatefulStrategy())
    switch = SimulatedSwitch(policy, table=table)
    switch.connect(ports or ALL_UP)
    return switch


def to_service(client_port, host=CLIENT, flags=model.TCP_ACK,
               service=SERVICE):
    ip, mac, port = host
    return tcp(port, ip, service.primary.ip, client_port, PORT, mac,
               service.primary.mac, flags)


def from_server(server, client_port, host=CLIENT, flags=model.TCP_ACK):
    ip, mac, _ = host
    return tcp(server.port, server.ip, ip, PORT, client_port, server.mac,
               mac, flags)


def connect(switch, client_port, host=CLIENT):
    """A handshake; returns the server the connection landed on."""
    [there] = switch.send(to_service(client_port, host, model.TCP_SYN))
    server = next(s for s in SERVICE.servers if s.port == there.port)
    assert (there.packet['ipv4_dst'], there.packet['eth_dst']) == (
        server.ip, server.mac)
    assert answered_as_primary(switch, server, client_port, host,
                               model.TCP_SYN | model.TCP_ACK)
    return server


def lands_on(switch, client_port, server, host=CLIENT):
    return [(d.port, d.packet['ipv4_dst'], d.packet['eth_dst'])
            for d in switch.send(to_service(client_port, host))] == [
        (server.port, server.ip, server.mac)]


def answered_as_primary(switch, server, client_port, host=CLIENT,
                        flags=model.TCP_ACK):
    """The server's packet reaches the client's port as the primary's."""
    back = switch.send(from_server(server, client_port, host, flags))
    return [(d.port, d.packet['ipv4_src'], d.packet['eth_src'])
            for d in back] == [(host[2], PRIMARY.ip, PRIMARY.mac)]


def test_the_switch_fails_over_before_the_controller_hears():
    switch = make_switch()
    switch.table.set_port_live(1, PRIMARY.port, False)
    assert connect(switch, 40000) == BACKUP
    assert lands_on(switch, 40000, BACKUP)
    assert answered_as_primary(switch, BACKUP, 40000)


@pytest.mark.parametrize('restart', [False, True])
def test_failback_keeps_all_five_connections_on_the_backup(restart):
    switch = make_switch()
    switch.port(PRIMARY.port, False)
    held = range(41000, 41005)
    assert [connect(switch, p) for p in held] == [BACKUP] * 5
    switch.port(PRIMARY.port, True)
    if restart:
        # A new controller: flows and group replaced, conntrack kept.
        switch = make_switch(table=switch.table)
    assert connect(switch, 41010) == PRIMARY
    for client_port in held:
        assert lands_on(switch, client_port, BACKUP)
        assert answered_as_primary(switch, BACKUP, client_port)
    assert lands_on(switch, 41010, PRIMARY)


def test_each_reply_leaves_by_its_own_clients_port():
    switch = make_switch()
    switch.port(PRIMARY.port, False)
    assert connect(switch, 42000, CLIENT) == BACKUP
    assert connect(switch, 42000, OTHER) == BACKUP
    assert answered_as_primary(switch, BACKUP, 42000, OTHER)
    assert answered_as_primary(switch, BACKUP, 42000, CLIENT)


def test_a_dead_servers_connections_are_reset_by_the_active_server():
    switch = make_switch()
    assert connect(switch, 43000) == PRIMARY
    switch.port(PRIMARY.port, False)
    # The tracker forgot it: sent on to the backup, which has never heard
    # of it, and whose RST reaches the client as the primary's.
    assert [c.reply[1] for c in switch.table.connections(1)] == []
    assert lands_on(switch, 43000, BACKUP)
    assert answered_as_primary(switch, BACKUP, 43000, flags=model.TCP_RST)


def test_without_the_flush_a_dead_servers_connections_are_still_reset():
    """A switch older than Open vSwitch 3.1 refuses NXT_CT_FLUSH."""
    switch = make_switch()
    assert connect(switch, 43001) == PRIMARY
    switch.table.set_port_live(1, PRIMARY.port, False)
    messages = switch.policy.on_port_status(1, PRIMARY.port, False, 0.0)
    assert model.ConntrackFlush(1, 0x4852, PRIMARY.ip) in messages
    switch.apply([m for m in messages
                  if not isinstance(m, model.ConntrackFlush)])
    assert lands_on(switch, 43001, BACKUP)
    [rst] = switch.send(from_server(BACKUP, 43001, flags=model.TCP_RST))
    assert (rst.port, rst.packet['ipv4_src'], rst.packet['eth_src']) == (
        testing.NORMAL, PRIMARY.ip, PRIMARY.mac)


def test_a_second_failure_moves_new_connections_down_the_list():
    switch = make_switch()
    switch.port(PRIMARY.port, False)
    assert connect(switch, 44000) == BACKUP
    switch.port(BACKUP.port, False)
    assert connect(switch, 44001) == BACKUP2
    assert lands_on(switch, 44000, BACKUP2)   # to be reset there
    switch.port(BACKUP2.port, False)
    assert switch.send(to_service(44001)) == []
    assert switch.send(to_service(44002, flags=model.TCP_SYN)) == []


def test_a_drained_primary_keeps_its_connections_and_gets_no_new_ones():
    switch = make_switch()
    assert connect(switch, 45000) == PRIMARY
    switch.apply(switch.policy.drain('web', 0, switch.now))
    assert connect(switch, 45001) == BACKUP
    assert lands_on(switch, 45000, PRIMARY)
    assert answered_as_primary(switch, PRIMARY, 45000)
    switch.apply(switch.policy.undrain('web', 0, switch.now))
    assert connect(switch, 45002) == PRIMARY


def test_hold_down_keeps_new_connections_off_a_returning_primary():
    switch = make_switch(failback_hold_down=1.0)
    switch.port(PRIMARY.port, False)
    switch.tick(0.1)
    switch.port(PRIMARY.port, True)
    # The link is up: the switch would use the primary's bucket at once,
    # but the controller keeps it out of the group until the hold-down ends.
    assert connect(switch, 46000) == BACKUP
    switch.tick(1.1)
    assert connect(switch, 46001) == PRIMARY
    assert lands_on(switch, 46000, BACKUP)


def test_each_bucket_is_one_conntrack_commit():
    switch = make_switch()
    [group] = switch.table.groups[1].values()
    assert [b.watch_port for b in group.buckets] == [1, 2, 5]
    for index, bucket in enumerate(group.buckets):
        [ct] = bucket.actions
        assert isinstance(ct, model.Conntrack) and ct.commit
        assert ct.nat_dst == (None if index == 0
                              else SERVICE.servers[index].ip)
        assert model.SetField('ct_mark', index + 1) in ct.actions


def test_services_have_their_own_zones_and_tables_are_named():
    other = dataclasses.replace(
        SERVICE, name='db', primary=model.Endpoint(
            '10.0.0.11', '00:00:00:00:00:11', 11),
        backups=(model.Endpoint('10.0.0.12', '00:00:00:00:00:12', 12),))
    switch = make_switch((SERVICE, other), connection_table=3,
                         route_table=7, first_ct_zone=100,
                         ports={**ALL_UP, 11: True, 12: True})
    connect(switch, 47000)
    switch.send(to_service(47000, service=other, flags=model.TCP_SYN))
    zones = sorted(c.zone for c in switch.table.connections(1))
    assert zones == [100, 101]
    assert {e.table for e in switch.table.flows(1)} == {0, 3, 7}


def test_route_table_and_zone_are_checked():
    with pytest.raises(model.ServiceError, match='route_table'):
        model.PolicySettings(strategy='stateful', connection_table=1,
                             route_table=1)
    with pytest.raises(model.ServiceError, match='route_table'):
        model.PolicySettings(strategy='stateful', table=2,
                             connection_table=1)
    # Other strategies do not use it, so its default cannot bother them.
    model.PolicySettings(strategy='proactive', table=2, connection_table=1)
    with pytest.raises(model.ServiceError, match='first_ct_zone'):
        model.PolicySettings(first_ct_zone=0x10000)
    settings = model.PolicySettings(first_ct_zone=0xffff)
    view = stateful.base.ServiceView(SERVICE, 1, settings, (True,) * 3, 0,
                                     (True,) * 3)
    with pytest.raises(model.ServiceError, match='16-bit conntrack zone'):
        stateful.ct_zone(view)
