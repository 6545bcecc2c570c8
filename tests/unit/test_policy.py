"""What clients experience, through the policy and a simulated switch."""

import dataclasses

import pytest

from ha_redirect import model
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.fast_failover import FastFailoverStrategy
from ha_redirect.strategies.proactive import ProactiveStrategy
from ha_redirect.strategies.reactive import ReactiveStrategy
from ha_redirect.strategies.stateful import StatefulStrategy
from ha_redirect import testing

from switch_harness import arp_request
from switch_harness import SimulatedSwitch
from switch_harness import tcp

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
BACKUP2 = model.Endpoint('10.0.0.5', '00:00:00:00:00:05', 5)
CLIENT = ('10.0.0.3', '00:00:00:00:00:03', 3)
OTHER = ('10.0.0.4', '00:00:00:00:00:04', 4)
SERVICE_PORT = 5001
ALL_UP = {1: True, 2: True, 3: True, 4: True, 5: True}
STRATEGIES = {'reactive': ReactiveStrategy, 'proactive': ProactiveStrategy,
              'fast_failover': FastFailoverStrategy,
              'stateful': StatefulStrategy}


def make_service(**changes):
    service = model.Service('web', 1, (SERVICE_PORT,), PRIMARY, (BACKUP,))
    return dataclasses.replace(service, **changes)


def make_switch(strategy, service=None, ports=None, **settings):
    policy = RedirectPolicy([service or make_service()],
                            model.PolicySettings(strategy=strategy,
                                                 **settings),
                            strategy=STRATEGIES[strategy]())
    switch = SimulatedSwitch(policy)
    switch.connect(ports or ALL_UP)
    return switch


def syn(client_port, host=CLIENT, flags=model.TCP_SYN):
    ip, mac, port = host
    return tcp(port, ip, PRIMARY.ip, client_port, SERVICE_PORT, mac,
               PRIMARY.mac, flags)


def reply(server, client_port, host=CLIENT):
    ip, mac, _ = host
    return tcp(server.port, server.ip, ip, SERVICE_PORT, client_port,
               server.mac, mac, model.TCP_SYN | model.TCP_ACK)


def lands_on(switch, packet, server):
    """The packet reaches `server`, readdressed to it, and nowhere else."""
    deliveries = switch.send(packet)
    return [(d.port, d.packet['ipv4_dst'], d.packet['eth_dst'])
            for d in deliveries] == [(server.port, server.ip, server.mac)]


def returns_as_primary(switch, packet, host=CLIENT):
    """The reply reaches the client as if the primary sent it: by its port,
    or by NORMAL for a strategy that does not know the client's port."""
    deliveries = switch.send(packet)
    if switch.policy.strategy.pins_connections or (
            len(switch.policy.services[0].client_ports) == 1):
        expected = (host[2], PRIMARY.ip, PRIMARY.mac)
    else:
        # Stateless, to NORMAL: the primary's IP, the sender's own MAC
        # (so the switch never learns the primary's MAC elsewhere).
        expected = (testing.NORMAL, PRIMARY.ip, packet['eth_src'])
    return [(d.port, d.packet['ipv4_src'], d.packet['eth_src'])
            for d in deliveries] == [expected]


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request):
    return request.param


def test_normal_service_goes_to_the_primary(strategy):
    switch = make_switch(strategy)
    assert lands_on(switch, syn(40000), PRIMARY)
    assert returns_as_primary(switch, reply(PRIMARY, 40000))


def test_after_the_primary_fails_new_connections_reach_the_backup(strategy):
    switch = make_switch(strategy)
    switch.port(PRIMARY.port, False)
    assert switch.policy.active_server('web') == BACKUP
    assert lands_on(switch, syn(40001), BACKUP)
    assert returns_as_primary(switch, reply(BACKUP, 40001))


def test_connections_to_the_failed_primary_are_not_blackholed(strategy):
    switch = make_switch(strategy)
    assert lands_on(switch, syn(40002), PRIMARY)
    switch.port(PRIMARY.port, False)
    # Its next packet is decided anew; the backup answers with a RST.
    assert lands_on(switch, syn(40002, flags=model.TCP_ACK), BACKUP)


def test_arp_for_the_failed_primary_is_answered_with_its_mac(strategy):
    switch = make_switch(strategy)
    request = arp_request(CLIENT[2], CLIENT[1], CLIENT[0], PRIMARY.ip)
    assert switch.out_ports(request) == [testing.NORMAL]
    switch.port(PRIMARY.port, False)
    [answer] = switch.send(request)
    assert answer.port == CLIENT[2]
    assert (answer.packet['arp_op'], answer.packet['arp_sha'],
            answer.packet['arp_spa'], answer.packet['arp_tpa']) == (
        model.ARP_REPLY, PRIMARY.mac, PRIMARY.ip, CLIENT[0])
    switch.port(PRIMARY.port, True)
    assert switch.out_ports(request) == [testing.NORMAL]


def test_failback_sends_new_connections_home_and_keeps_old_ones(strategy):
    switch = make_switch(strategy)
    switch.port(PRIMARY.port, False)
    assert lands_on(switch, syn(40003), BACKUP)
    switch.port(PRIMARY.port, True)
    assert lands_on(switch, syn(40004), PRIMARY)
    if switch.policy.strategy.pins_connections:
        assert lands_on(switch, syn(40003, flags=model.TCP_ACK), BACKUP)
        assert returns_as_primary(switch, reply(BACKUP, 40003))
    else:
        # Stateless: the connection follows the service home (and the
        # primary resets it). This is what `stateful` exists to avoid.
        assert lands_on(switch, syn(40003, flags=model.TCP_ACK), PRIMARY)


def test_without_failback_the_backup_keeps_the_service(strategy):
    switch = make_switch(strategy, failback=False)
    switch.port(PRIMARY.port, False)
    switch.port(PRIMARY.port, True)
    assert lands_on(switch, syn(40005), BACKUP)
    switch.port(BACKUP.port, False)
    assert lands_on(switch, syn(40006), PRIMARY)


def test_ordered_backups_take_over_in_turn(strategy):
    switch = make_switch(strategy, make_service(backups=(BACKUP, BACKUP2)))
    switch.port(PRIMARY.port, False)
    assert lands_on(switch, syn(40007), BACKUP)
    switch.port(BACKUP.port, False)
    assert lands_on(switch, syn(40008), BACKUP2)
    assert returns_as_primary(switch, reply(BACKUP2, 40008))


def test_with_no_server_left_new_connections_go_nowhere(strategy):
    switch = make_switch(strategy)
    switch.port(PRIMARY.port, False)
    switch.port(BACKUP.port, False)
    assert switch.policy.active_server('web') is None
    assert switch.out_ports(syn(40009)) == []


@pytest.mark.parametrize('forged', [BACKUP, PRIMARY])
def test_forged_server_replies_from_a_client_port_are_not_rewritten(
        strategy, forged):
    switch = make_switch(strategy)
    switch.port(PRIMARY.port, False)
    assert lands_on(switch, syn(40010), BACKUP)
    # Another client forges the backup's (or primary's) reply to CLIENT.
    forgery = dict(reply(forged, 40010), in_port=OTHER[2])
    for delivery in switch.send(forgery):
        assert delivery.port == testing.NORMAL
        assert delivery.packet['ipv4_src'] == forged.ip
        assert delivery.packet['eth_src'] == forged.mac


def test_server_ports_are_never_treated_as_clients(strategy):
    switch = make_switch(strategy)
    switch.port(PRIMARY.port, False)
    from_backup = tcp(BACKUP.port, BACKUP.ip, PRIMARY.ip, 40011,
                      SERVICE_PORT, BACKUP.mac, PRIMARY.mac)
    assert switch.out_ports(from_backup) == [testing.NORMAL]


def test_explicit_client_ports_limit_who_is_redirected(strategy):
    switch = make_switch(strategy, make_service(client_ports=(3,)))
    switch.port(PRIMARY.port, False)
    assert lands_on(switch, syn(40012), BACKUP)
    assert switch.out_ports(syn(40013, host=OTHER)) == [testing.NORMAL]


def test_non_service_traffic_goes_normal_unless_left_to_another_app(
        strategy):
    ping = dict(in_port=3, eth_src=CLIENT[1], eth_dst=OTHER[1],
                eth_type=model.ETH_TYPE_IPV4, ip_proto=1,
                ipv4_src=CLIENT[0], ipv4_dst=OTHER[0])
    assert make_switch(strategy).out_ports(ping) == [testing.NORMAL]
    embedded = make_switch(strategy, forward_non_service_traffic=False)
    assert embedded.out_ports(ping) == []


def test_every_flow_carries_our_cookie_and_foreign_flows_survive(strategy):
    switch = make_switch(strategy)
    foreign = model.FlowMod(1, model.FlowCommand.ADD,
                            match=model.Match(in_port=9),
                            actions=(model.Output(10),), priority=5,
                            cookie=0x1234)
    switch.apply([foreign])
    switch.port(PRIMARY.port, False)
    switch.send(syn(40014))
    switch.port(PRIMARY.port, True)
    switch.connect(ALL_UP)
    ours = model.PolicySettings().cookie
    for entry in switch.table.flows(1):
        assert entry.cookie >> 32 == ours or entry.cookie == 0x1234
    assert switch.table.flows(1, cookie=0x1234)
    assert switch.out_ports(dict(in_port=9)) == [10]


def test_reconnect_during_failover_keeps_redirecting(strategy):
    switch = make_switch(strategy)
    switch.port(PRIMARY.port, False)
    assert lands_on(switch, syn(40015), BACKUP)
    # A restarted controller: a fresh policy meets the switch's old flows.
    restarted = make_switch(strategy)
    restarted.table = switch.table
    restarted.connect({**ALL_UP, PRIMARY.port: False})
    assert lands_on(restarted, syn(40016), BACKUP)
    assert lands_on(restarted, syn(40015, flags=model.TCP_ACK), BACKUP)
    assert returns_as_primary(restarted, reply(BACKUP, 40016))


@pytest.mark.parametrize('strategy', ['reactive', 'proactive'])
def test_connection_flows_expire_when_idle(strategy):
    switch = make_switch(strategy, connection_idle_timeout=7)
    assert lands_on(switch, syn(40017), PRIMARY)
    pinned = [e for e in switch.table.flows(1)
              if model.server_index_of_cookie(e.cookie) is not None]
    assert pinned and all(e.idle_timeout == 7 for e in pinned)
    switch.now = 8.0
    switch.table.expire(switch.now)
    assert not [e for e in switch.table.flows(1)
                if model.server_index_of_cookie(e.cookie) is not None]


def test_reactive_policy_forgets_connections_the_switch_expired():
    switch = make_switch('reactive', connection_idle_timeout=5)
    switch.send(syn(40018))
    assert len(switch.policy.pinned_connections('web')) == 1
    switch.now = 6.0
    switch.table.expire(switch.now)
    switch.apply([])  # hands the switch's FlowRemoved to the policy
    assert switch.policy.pinned_connections('web') == {}


def test_reactive_sends_each_new_connection_to_the_controller_once():
    switch = make_switch('reactive')
    assert switch.table.process(1, syn(40019))[0].port == testing.CONTROLLER
    switch.send(syn(40019))
    assert testing.CONTROLLER not in [
        d.port for d in switch.table.process(1, syn(40019, flags=0x10))]


def test_proactive_never_needs_the_controller_for_connections():
    switch = make_switch('proactive')
    switch.port(PRIMARY.port, False)
    deliveries = switch.table.process(1, syn(40020))
    assert [d.port for d in deliveries] == [BACKUP.port]


def test_failover_from_the_primary_is_one_change_closed_by_a_barrier(
        strategy):
    switch = make_switch(strategy)
    messages = switch.policy.on_port_status(1, PRIMARY.port, False, 1.0)
    assert isinstance(messages[-1], model.Barrier)
    assert not any(isinstance(m, model.Barrier) for m in messages[:-1])


def test_unknown_switches_are_left_alone(strategy):
    switch = make_switch(strategy)
    assert switch.policy.on_switch_connected(2, ALL_UP, 0.0) == []


def test_two_services_cannot_claim_the_same_address_and_port():
    other = make_service(name='other')
    with pytest.raises(model.ServiceError, match="'other'"):
        RedirectPolicy([make_service(), other],
                       strategy=ReactiveStrategy())


def test_fast_failover_needs_no_controller_to_fail_over():
    switch = make_switch('fast_failover')
    # The switch sees the link go; the controller has not heard yet.
    switch.table.set_port_live(1, PRIMARY.port, False)
    assert switch.table.process(1, syn(40021))[0].port == BACKUP.port
    assert lands_on(switch, syn(40022), BACKUP)
    assert returns_as_primary(switch, reply(BACKUP, 40022))


def test_hold_down_keeps_a_recovered_primary_out_until_it_expires(strategy):
    switch = make_switch(strategy, failback_hold_down=1.0)
    switch.port(PRIMARY.port, False)
    switch.tick(0.1)
    switch.port(PRIMARY.port, True)    # the link is back; the service?
    switch.tick(0.5)
    assert lands_on(switch, syn(40023), BACKUP)
    switch.tick(0.6)
    assert switch.policy.active_server('web') == PRIMARY
    assert lands_on(switch, syn(40024), PRIMARY)
    if switch.policy.strategy.pins_connections:
        assert lands_on(switch, syn(40023, flags=model.TCP_ACK), BACKUP)


def test_hold_down_does_not_delay_the_first_connect(strategy):
    switch = make_switch(strategy, failback_hold_down=30.0)
    assert lands_on(switch, syn(40025), PRIMARY)


def test_fast_failover_group_lists_eligible_servers_in_order():
    switch = make_switch('fast_failover',
                         make_service(backups=(BACKUP, BACKUP2)))
    [group] = switch.table.groups[1].values()
    assert [b.watch_port for b in group.buckets] == [1, 2, 5]
    switch.port(BACKUP.port, False)
    [group] = switch.table.groups[1].values()
    assert [b.watch_port for b in group.buckets] == [1, 5]


def test_fast_failover_reverse_pins_leave_the_backups_own_traffic_alone():
    switch = make_switch('fast_failover')
    switch.port(PRIMARY.port, False)
    lands_on(switch, syn(40026), BACKUP)
    # The backup talks to the same client from another port of its own.
    own = tcp(BACKUP.port, BACKUP.ip, CLIENT[0], 22, 40026, BACKUP.mac,
              CLIENT[1], model.TCP_ACK)
    [delivery] = switch.send(own)
    assert delivery.port == testing.NORMAL
    assert delivery.packet['ipv4_src'] == BACKUP.ip


@pytest.mark.parametrize('strategy', ['reactive', 'proactive'])
def test_closed_connections_leave_the_table_after_the_fin_timeout(strategy):
    switch = make_switch(strategy, connection_idle_timeout=30,
                         fin_idle_timeout=2)
    assert lands_on(switch, syn(40030), PRIMARY)
    assert returns_as_primary(switch, reply(PRIMARY, 40030))

    def pins():
        return [e for e in switch.table.flows(1)
                if model.server_index_of_cookie(e.cookie) is not None]
    assert pins()
    switch.now = 1.0
    switch.send(syn(40030, flags=model.TCP_ACK | model.TCP_FIN))
    switch.send(dict(reply(PRIMARY, 40030),
                     tcp_flags=model.TCP_ACK | model.TCP_FIN))
    switch.now = 4.0
    switch.table.expire(switch.now)
    switch.apply([])
    assert pins() == []
    assert switch.policy.pinned_connections('web') == {}


def test_fast_failover_replies_go_straight_to_a_single_client_port():
    switch = make_switch('fast_failover', make_service(client_ports=(3,)))
    switch.port(PRIMARY.port, False)
    assert lands_on(switch, syn(40040), BACKUP)
    [delivery] = switch.send(reply(BACKUP, 40040))
    assert (delivery.port, delivery.packet['ipv4_src'],
            delivery.packet['eth_src']) == (3, PRIMARY.ip, PRIMARY.mac)
