"""One link failure that moves many services: the first service's redirect
must not wait for everyone's work (issue 12, item 4)."""

import dataclasses

import pytest

from ha_redirect import model
from ha_redirect import policy as policy_mod
from ha_redirect.policy import RedirectPolicy
from ha_redirect import service_state
from ha_redirect import stand_in
from ha_redirect.strategies.fast_failover import FastFailoverStrategy
from ha_redirect.strategies.proactive import ProactiveStrategy
from ha_redirect.strategies.reactive import ReactiveStrategy
from ha_redirect.strategies.stateful import StatefulStrategy

from switch_harness import SimulatedSwitch
from switch_harness import tcp

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
OTHER_PRIMARY = model.Endpoint('10.0.0.6', '00:00:00:00:00:06', 6)
# A second primary address behind the first primary's port.
SECOND_PRIMARY = model.Endpoint('10.0.0.7', '00:00:00:00:00:07', 1)
CLIENT = ('10.0.0.3', '00:00:00:00:00:03', 3)
ALL_UP = {1: True, 2: True, 3: True, 6: True}
FIRST_PORT = 5001
STRATEGIES = {'reactive': ReactiveStrategy, 'proactive': ProactiveStrategy,
              'fast_failover': FastFailoverStrategy,
              'stateful': StatefulStrategy}


def behind_one_port(count):
    """`count` services whose primaries sit behind port 1, one TCP port
    each, as `ha-redirect-lab gaps --services N` sets them up."""
    first = model.Service('web', 1, (FIRST_PORT,), PRIMARY, (BACKUP,),
                          client_ports=(CLIENT[2],))
    return [first] + [dataclasses.replace(first, name=f'web{i}',
                                          tcp_ports=(FIRST_PORT + i,))
                      for i in range(1, count)]


def connected(strategy, services, ports=ALL_UP):
    policy = RedirectPolicy(services, model.PolicySettings(),
                            strategy=STRATEGIES[strategy]())
    switch = SimulatedSwitch(policy)
    switch.connect(ports)
    return switch


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request):
    return request.param


def test_the_first_chunk_is_the_first_services_change_alone(strategy):
    """With 30 services, the first chunk is what the first service sends
    when it is alone (the redirect first), less the barrier."""
    alone = connected(strategy, behind_one_port(1))
    expected = alone.policy.on_port_status(1, PRIMARY.port, False, 1.0)
    assert isinstance(expected[-1], model.Barrier)
    many = connected(strategy, behind_one_port(30))
    chunks = many.policy.on_port_status_in_chunks(1, PRIMARY.port, False,
                                                  1.0)
    assert next(chunks) == expected[:-1]


class _Moves:
    """An observer that counts the services moved so far."""
    def __init__(self):
        self.moved = []

    def server_changed(self, service_name, previous, active, why):
        self.moved.append(service_name)


def test_chunks_are_made_only_when_taken_doubling(strategy):
    switch = connected(strategy, behind_one_port(20))
    moves = _Moves()
    switch.policy.set_observer(moves)
    per_chunk = []
    chunks = []
    for chunk in switch.policy.on_port_status_in_chunks(
            1, PRIMARY.port, False, 1.0):
        per_chunk.append(len(moves.moved) - sum(per_chunk))
        chunks.append(chunk)
    assert per_chunk == [1, 2, 4, 8, 5]
    assert moves.moved == [s.name for s in behind_one_port(20)]
    # One barrier, closing the last chunk.
    barriers = [(c, i) for c, chunk in enumerate(chunks)
                for i, m in enumerate(chunk) if isinstance(m, model.Barrier)]
    assert barriers == [(len(chunks) - 1, len(chunks[-1]) - 1)]


def test_on_port_status_is_the_chunks_in_order(strategy):
    one = connected(strategy, behind_one_port(7))
    other = connected(strategy, behind_one_port(7))
    assert one.policy.on_port_status(1, PRIMARY.port, False, 1.0) == [
        m for chunk in other.policy.on_port_status_in_chunks(
            1, PRIMARY.port, False, 1.0) for m in chunk]


def test_a_port_no_service_uses_sends_nothing(strategy):
    switch = connected(strategy, behind_one_port(5))
    assert list(switch.policy.on_port_status_in_chunks(1, 3, False,
                                                       1.0)) == []


def test_every_service_fails_over_and_back(strategy):
    switch = connected(strategy, behind_one_port(30))
    ip, mac, port = CLIENT
    for is_up, server in ((False, BACKUP), (True, PRIMARY)):
        switch.port(PRIMARY.port, is_up)
        for i in (0, 17, 29):
            deliveries = switch.send(tcp(
                port, ip, PRIMARY.ip, 40000 + i + 100 * is_up,
                FIRST_PORT + i, mac, PRIMARY.mac))
            assert [(d.port, d.packet['ipv4_dst']) for d in deliveries] == [
                (server.port, server.ip)]


def _our_flows(switch):
    """The switch's flows but connections' pins."""
    return sorted((e.table, e.priority, sorted(e.match.items()),
                   e.actions, e.cookie)
                  for e in switch.table.flows(1) if not e.learned
                  and not e.cookie & model.COOKIE_PIN_ROLE_MASK)


# Services sharing TCP ports, a backup and primaries, in every mix: the
# stand-ins' flows after a failover are those a switch that meets the
# controller in that state gets (the failover computes them from the
# services that share a port or a primary only).
MIXED = [
    # a and b fail together and share a backup on port 80: ambiguous.
    model.Service('a', 1, (80,), PRIMARY, (BACKUP,)),
    model.Service('b', 1, (80, 443), SECOND_PRIMARY, (BACKUP,)),
    model.Service('c', 1, (443,), OTHER_PRIMARY, (BACKUP,)),
    # The backup is d's primary on 8080: e's replies from it pass as they are.
    model.Service('d', 1, (8080,), BACKUP, (OTHER_PRIMARY,)),
    model.Service('e', 1, (8080,), PRIMARY, (BACKUP,)),
    model.Service('f', 1, (9090,), PRIMARY, (BACKUP,)),
]


@pytest.mark.parametrize('port', [PRIMARY.port, OTHER_PRIMARY.port])
def test_after_a_failover_the_flows_are_a_fresh_switchs(strategy, port):
    failed = connected(strategy, MIXED)
    failed.port(port, False)
    fresh = connected(strategy, MIXED, {**ALL_UP, port: False})
    assert _our_flows(failed) == _our_flows(fresh)
    failed.port(port, True)
    assert _our_flows(failed) == _our_flows(connected(strategy, MIXED))


def test_a_failover_looks_only_at_the_services_it_depends_on(monkeypatch):
    """The cost per service does not grow with the services beside it."""
    seen = []
    for name in ('reply_fallbacks', 'update_arp_responder'):
        original = getattr(stand_in, name)

        def spy(*args, original=original, name=name, **kwargs):
            # The services it was given: its `states` argument.
            seen.append(len(args[1] if name == 'update_arp_responder'
                            else args[2]))
            return original(*args, **kwargs)
        monkeypatch.setattr(stand_in, name, spy)
    services = behind_one_port(50) + [
        model.Service(f'other{i}', 1, (7000 + i,), OTHER_PRIMARY, (BACKUP,))
        for i in range(50)]
    switch = connected('reactive', services)
    seen.clear()
    switch.policy.on_port_status(1, PRIMARY.port, False, 1.0)
    # Each reply fallback reads its own port's one service; the ARP
    # responder the 50 services with that primary (not the 100).
    assert sorted(set(seen)) == [1, 50]


def _syn(i, client_port):
    ip, mac, port = CLIENT
    return tcp(port, ip, PRIMARY.ip, client_port, FIRST_PORT + i, mac,
               PRIMARY.mac)


def test_a_packet_in_between_chunks_waits_only_for_its_own_service():
    switch = connected('reactive', behind_one_port(10))
    policy = switch.policy
    switch.table.set_port_live(1, PRIMARY.port, False)
    chunks = policy.on_port_status_in_chunks(1, PRIMARY.port, False, 1.0)
    switch.apply(next(chunks))
    # Service 7's chunk is still to come; its SYN is decided as if the
    # whole port's changes were in: its own go first, then its pins.
    [out] = switch.send(_syn(7, 41000))
    assert (out.port, out.packet['ipv4_dst']) == (BACKUP.port, BACKUP.ip)
    rest = [m for chunk in chunks for m in chunk]
    services = {(m.cookie >> 16) & 0xffff for m in rest
                if isinstance(m, model.FlowMod)}
    assert 7 not in services and {1, 2, 9} <= services
    assert [type(m) for m in rest].count(model.Barrier) == 1
    assert isinstance(rest[-1], model.Barrier)
    switch.apply(rest)
    assert _our_flows(switch) == _our_flows(connected(
        'reactive', behind_one_port(10), {**ALL_UP, PRIMARY.port: False}))


def test_a_port_coming_back_between_chunks_wins(strategy):
    switch = connected(strategy, behind_one_port(10))
    policy = switch.policy
    down = policy.on_port_status_in_chunks(1, PRIMARY.port, False, 1.0)
    switch.apply(next(down))
    switch.apply(policy.on_port_status(1, PRIMARY.port, True, 2.0))
    switch.apply([m for chunk in down for m in chunk])
    assert _our_flows(switch) == _our_flows(connected(
        strategy, behind_one_port(10)))
    for i in range(10):
        assert policy.active_server(f'web{i}' if i else 'web') == PRIMARY


def test_chunks_stop_growing_at_max_chunk():
    switch = connected('reactive', behind_one_port(40))
    moves = _Moves()
    switch.policy.set_observer(moves)
    per_chunk = []
    for _ in switch.policy.on_port_status_in_chunks(1, PRIMARY.port, False,
                                                    1.0):
        per_chunk.append(len(moves.moved) - sum(per_chunk))
    assert policy_mod.MAX_CHUNK == 8
    assert per_chunk == [1, 2, 4, 8, 8, 8, 8, 1]


def test_a_port_reported_in_the_state_it_had_costs_no_service_anything(
        strategy):
    """Open vSwitch reports a port's other changes too (one comes just
    before its link goes down): with 1,000 services behind it, handling
    that as news held the real link-down back by 20 ms."""
    switch = connected(strategy, behind_one_port(300))
    policy = switch.policy
    visited = []
    changes = policy._changes
    policy._changes = lambda state, *args: visited.append(state) or (
        changes(state, *args))
    assert list(policy.on_port_status_in_chunks(1, PRIMARY.port, True,
                                                1.0)) == []
    assert visited == []
    # A port the switch had not reported (one just added) is news.
    assert list(policy.on_port_status_in_chunks(1, 42, True, 1.0)) == []
    assert len(visited) == 300
    # The real change still moves every service.
    down = policy.on_port_status(1, PRIMARY.port, False, 2.0)
    assert all(policy.active_server(s.name) == BACKUP
               for s in policy.services)
    assert policy.on_port_status(1, PRIMARY.port, False, 3.0) == []
    assert down and policy.on_port_status(1, PRIMARY.port, True, 4.0)


def test_after_a_reconnect_the_ports_are_as_the_switch_shows_them():
    switch = connected('reactive', behind_one_port(1))
    policy = switch.policy
    policy.on_switch_disconnected(1, 2.0)
    policy.on_switch_connected(1, {**ALL_UP, PRIMARY.port: False}, 3.0)
    assert policy.active_server('web') == BACKUP
    assert policy.on_port_status(1, PRIMARY.port, False, 4.0) == []
    assert policy.on_port_status(1, PRIMARY.port, True, 5.0)
    assert policy.active_server('web') == PRIMARY


def test_status_since_a_version_holds_only_the_services_that_changed():
    """What the metrics refresh after each event: with 1,000 services,
    redoing all of them after each chunk of a failover cost ~50 ms."""
    switch = connected('reactive', behind_one_port(3))
    policy = switch.policy
    before = policy.version
    policy.drain('web2', 1, 2.0)
    assert [s['service'] for s in policy.status(since=before)] == ['web2']
    assert policy.status(since=policy.version) == []
    assert [s['service'] for s in policy.status()] == ['web', 'web1', 'web2']
    before = policy.version
    policy.on_port_status(1, PRIMARY.port, False, 3.0)
    assert [s['service'] for s in policy.status(since=before)] == [
        'web', 'web1', 'web2']
    before = policy.version
    policy.on_switch_disconnected(1, 4.0)
    changed = policy.status(since=before)
    assert len(changed) == 3 and not any(s['connected'] for s in changed)


def test_each_service_hears_of_the_port_as_its_turn_comes(strategy):
    """The first redirect does not wait for a thousand services' monitors
    to be told; a service settled early by a PacketIn is told then, and
    its move names the port."""
    switch = connected(strategy, behind_one_port(20))
    policy = switch.policy
    told = []
    for state in policy._states:
        for monitor in state.monitors:
            def on_port_status(port_no, is_up, now, monitor=monitor,
                               name=state.service.name):
                told.append(name)
                type(monitor).on_port_status(monitor, port_no, is_up, now)
            monitor.on_port_status = on_port_status
    whys = {}

    class Reasons:
        def server_changed(self, service_name, previous, active, why):
            whys[service_name] = why

    policy.set_observer(Reasons())
    chunks = policy.on_port_status_in_chunks(1, PRIMARY.port, False, 1.0)
    next(chunks)
    assert told == ['web']
    policy._changes(policy._states[10], 1.5, 'health probes')
    assert told == ['web', 'web10'] and policy.active_server(
        'web10') == BACKUP
    assert whys['web10'] == 'port 1 down'
    rest = list(chunks)
    assert sorted(told) == sorted(s.name for s in policy.services)
    assert all(policy.active_server(s.name) == BACKUP
               for s in policy.services)
    assert rest[-1][-1] == model.Barrier(1)


def test_a_burst_left_unfinished_loses_no_port_change():
    """The handler of a link-down raised after the first chunk; the next
    port change still finds every service's monitors told of both."""
    switch = connected('reactive', behind_one_port(20))
    policy = switch.policy
    chunks = policy.on_port_status_in_chunks(1, PRIMARY.port, False, 1.0)
    next(chunks)
    chunks.close()
    policy.on_port_status(1, BACKUP.port, False, 2.0)
    assert all(policy.active_server(s.name) is None
               for s in policy.services)


def _arp_responder_changes(messages):
    return [m.command for m in messages if isinstance(m, model.FlowMod)
            and m.cookie & 0xffff == model.ROLE_ARP]


def test_one_arp_responder_comes_with_the_first_service_and_goes_with_the_last(
        strategy):
    """Services sharing a primary share its ARP responder: the failover's
    first chunk adds it, the failback's last chunk removes it, and no
    chunk between touches it."""
    switch = connected(strategy, behind_one_port(30))
    for is_up, command, which in ((False, model.FlowCommand.ADD, 0),
                                  (True, model.FlowCommand.DELETE_STRICT,
                                   -1)):
        chunks = list(switch.policy.on_port_status_in_chunks(
            1, PRIMARY.port, is_up, 1.0 + is_up))
        assert [_arp_responder_changes(c) for c in chunks] == [
            [command] if c is chunks[which] else [] for c in chunks]
        switch.apply([m for c in chunks for m in c])


class _Verdict:
    """A monitor whose verdict on each server the test sets."""
    def __init__(self, healthy):
        self.healthy = list(healthy)

    def is_healthy(self, server):
        return self.healthy[server]

    def adopt(self, server, healthy, now):
        self.healthy[server] = healthy


def test_services_sharing_a_primary_know_whether_another_sees_it_down():
    shared = set()
    states = [service_state.ServiceState(
        service, index, healthy=(False, False), monitors=[_Verdict(
            (False, True))]) for index, service in enumerate(
                behind_one_port(3))]
    for state in states:
        state.share_primary_watch(shared)
        state.start_from_monitors(0.0, 0.0)
    assert shared == {0, 1, 2}
    assert all(s.primary_down_elsewhere() for s in states)
    for state in states[:2]:
        state.monitors[0].healthy[0] = True
        state.update_health(1.0, 0.0)
    assert shared == {2}
    assert [s.primary_down_elsewhere() for s in states] == [
        True, True, False]
    # Health shown by a switch another controller ran counts as well.
    states[2].start_from_switch(((True, True), (True, True), 0), 2.0)
    assert shared == set()
    assert not any(s.primary_down_elsewhere() for s in states)
