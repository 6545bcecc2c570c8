"""Several controllers: the election's lease, the app's OpenFlow roles, and
a takeover that leaves a switch exactly as its last master left it.

The switch a new master reads is the fake switch its predecessor ran, as
OpenFlow flow statistics: each flow rendered by os-ken, serialised and
parsed back, as Open vSwitch would report it. (The functional suite does
the same against real Open vSwitch.)
"""

import dataclasses

import pytest

from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ha_redirect import app as app_mod
from ha_redirect import coordination
from ha_redirect import model
from ha_redirect import openflow
from ha_redirect.policy import RedirectPolicy
from ha_redirect import snapshot as snapshot_mod

from os_ken_fakes import RecordingDatapath
from switch_harness import SimulatedSwitch
from switch_harness import tcp

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
BACKUP2 = model.Endpoint('10.0.0.5', '00:00:00:00:00:05', 5)
WEB = model.Service('web', 1, (5001,), PRIMARY, (BACKUP, BACKUP2))
ALL_UP = {1: True, 2: True, 3: True, 4: True, 5: True}
STRATEGIES = ['reactive', 'proactive', 'fast_failover', 'stateful']


def snapshot_of(table, dpid=1):
    """What the switch would report of our flows and groups."""
    datapath = RecordingDatapath(dpid)
    stats = []
    for entry in table.flows(dpid):
        if entry.learned:
            continue
        flow = model.FlowMod(
            dpid, model.FlowCommand.ADD, match=entry.as_match(),
            actions=entry.actions, table=entry.table,
            priority=entry.priority, cookie=entry.cookie,
            idle_timeout=entry.idle_timeout,
            hard_timeout=entry.hard_timeout,
            notify_removed=entry.notify_removed)
        mod = snapshot_mod._round_trip(
            datapath, openflow.to_ofp_messages(datapath, flow)[0])
        stats.append(parser.OFPFlowStats(
            table_id=mod.table_id, duration_sec=1, duration_nsec=0,
            priority=mod.priority, idle_timeout=mod.idle_timeout,
            hard_timeout=mod.hard_timeout, flags=mod.flags,
            cookie=mod.cookie, packet_count=0, byte_count=0,
            match=mod.match, instructions=mod.instructions))
    groups = [parser.OFPGroupDescStats(
        ofp.OFPGT_FF, group_id,
        openflow.to_ofp_messages(datapath, group)[0].buckets)
        for group_id, group in table.groups.get(dpid, {}).items()]
    return snapshot_mod.SwitchSnapshot(datapath, stats, groups)


def policy(strategy, **settings):
    return RedirectPolicy([WEB], model.PolicySettings(strategy=strategy,
                                                      **settings))


def writes(messages):
    """The messages that change flows or groups (bundled ones counted)."""
    found = []
    for m in messages:
        if isinstance(m, model.Bundle):
            found += writes(m.messages)
        elif isinstance(m, (model.FlowMod, model.GroupMod)):
            found.append(m)
    return found


def decisions(a_policy):
    return [(s['service'], [(x['active'], x['healthy'], x['eligible'])
                            for x in s['servers']])
            for s in a_policy.status()]


# As Open vSwitch's userspace datapath: meters for every client port.
METERS = 1000


def old_master(strategy, state, **settings):
    switch = SimulatedSwitch(policy(strategy, **settings))
    for port_no in ALL_UP:
        switch.table.set_port_live(1, port_no, True)
    switch.apply(switch.policy.on_switch_connected(1, dict(ALL_UP), 0.0,
                                                   max_meter_id=METERS))
    ports = dict(ALL_UP)
    if state in ('failed over', 'back, held down'):
        switch.port(1, False)
        ports[1] = False
    if state == 'back, held down':
        switch.tick(1.0)
        switch.port(1, True)
        ports[1] = True
    if state == 'two down':
        switch.port(1, False)
        switch.port(2, False)
        ports.update({1: False, 2: False})
    return switch, ports


# A new master changes nothing ------------------------------------------------

@pytest.mark.parametrize('state', ['normal', 'failed over', 'two down',
                                   'back, held down'])
@pytest.mark.parametrize('strategy', STRATEGIES)
def test_a_new_master_changes_nothing_its_predecessor_left(strategy, state):
    switch, ports = old_master(strategy, state, failback_hold_down=30.0)
    new = policy(strategy, failback_hold_down=30.0)
    messages = new.on_switch_adopted(1, ports, switch.now,
                                     snapshot_of(switch.table),
                                     max_meter_id=METERS)
    assert writes(messages) == []
    assert decisions(new) == decisions(switch.policy)


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_after_a_takeover_a_failure_is_still_redirected(strategy):
    switch, ports = old_master(strategy, 'normal')
    new = policy(strategy)
    successor = SimulatedSwitch(new, table=switch.table)
    successor.apply(new.on_switch_adopted(1, ports, 0.0,
                                          snapshot_of(switch.table),
                                          max_meter_id=METERS))
    successor.port(1, False)
    syn = tcp(3, '10.0.0.3', PRIMARY.ip, 40000, 5001, '00:00:00:00:00:03',
              PRIMARY.mac, model.TCP_SYN)
    assert successor.out_ports(syn) == [BACKUP.port]


def test_reactive_keeps_the_connections_pinned_before_the_takeover():
    switch, ports = old_master('reactive', 'normal')
    for client_port in (40001, 40002):
        switch.send(tcp(3, '10.0.0.3', PRIMARY.ip, client_port, 5001,
                        '00:00:00:00:00:03', PRIMARY.mac, model.TCP_SYN))
    assert len(switch.policy.pinned_connections('web')) == 2
    new = policy('reactive')
    messages = new.on_switch_adopted(1, ports, 0.0, snapshot_of(switch.table),
                                     max_meter_id=METERS)
    assert writes(messages) == []
    assert new.pinned_connections('web') == (
        switch.policy.pinned_connections('web'))


def test_a_switch_that_differs_gets_only_the_difference():
    switch, ports = old_master('proactive', 'normal')
    table = switch.table
    ours = [e for e in table.flows(1) if e.cookie & 0xffff == 0]
    missing = ours[0]
    table.tables[1].remove(missing)
    stray = model.FlowMod(
        1, model.FlowCommand.ADD,
        match=model.Match(eth_type=model.ETH_TYPE_IPV4, ipv4_dst='10.9.9.9'),
        actions=(), table=0, priority=1234, cookie=missing.cookie)
    table.apply([stray])
    new = policy('proactive')
    changes = writes(new.on_switch_adopted(1, ports, 0.0,
                                           snapshot_of(table)))
    added = [c for c in changes if c.command is model.FlowCommand.ADD]
    deleted = [c for c in changes
               if c.command is model.FlowCommand.DELETE_STRICT]
    assert [(a.table, a.priority, a.match) for a in added] == [
        (missing.table, missing.priority, missing.as_match())]
    assert [(d.priority, d.match) for d in deleted] == [
        (1234, stray.match)]
    assert len(changes) == 2


def test_a_primary_that_failed_while_no_one_was_master_is_failed_over():
    switch, _ = old_master('proactive', 'normal')
    new = policy('proactive')
    messages = new.on_switch_adopted(1, {**ALL_UP, 1: False}, 0.0,
                                     snapshot_of(switch.table))
    assert writes(messages)
    assert new.active_server('web') == BACKUP


def test_an_empty_switch_gets_everything():
    switch, ports = old_master('fast_failover', 'normal')
    fresh = SimulatedSwitch(policy('fast_failover'))
    new = policy('fast_failover')
    fresh.apply(new.on_switch_adopted(1, ports, 0.0,
                                      snapshot_of(fresh.table)))
    assert sorted(map(repr, fresh.table.flows(1))) == sorted(
        map(repr, switch.table.flows(1)))
    assert fresh.table.groups == switch.table.groups


# The election's lease --------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeLock:
    def __init__(self, server):
        self.server = server
        self.mine = False

    def acquire(self, blocking=False):
        if self.server.holder is None:
            self.server.holder = self
            self.mine = True
        return self.server.holder is self

    def heartbeat(self):
        if self.server.down:
            raise OSError('connection refused')
        return self.server.holder is self

    def is_still_owner(self):
        return self.server.holder is self

    def release(self):
        self.server.releases += 1
        if self.server.holder is self:
            self.server.holder = None


class _Done:
    def __init__(self, value=None):
        self.value = value

    def get(self):
        return self.value


class FakeServer:
    """tooz coordinator and Redis client in one, for one member."""

    def __init__(self):
        self.holder = None
        self.releases = 0
        self.down = False
        self.counter = 0
        self.keys = {}
        self.lock = FakeLock(self)

    def get_lock(self, name):
        return self.lock

    def heartbeat(self):
        if self.down:
            raise OSError('connection refused')

    def create_group(self, group):
        return _Done()

    join_group = create_group

    def get_members(self, group):
        return _Done({b'me'})

    def eval(self, script, numkeys, key, floor):
        self.counter = max(self.counter + 1, int(floor))
        return self.counter

    def set(self, key, value, px=None):
        self.keys[key] = value.encode()

    def get(self, key):
        return self.keys.get(key)


def election(server=None, clock=None, lease=3):
    clock = clock or FakeClock()
    server = server or FakeServer()
    elected = coordination.Election('redis://127.0.0.1:6379', 'me',
                                    lease=lease, clock=clock)
    elected.start(coordinator=server, redis_client=server)
    return elected, server, clock


def test_a_leader_stops_writing_before_its_lock_can_expire():
    elected, server, clock = election()
    assert elected.step() == [('elected', 1)]
    assert elected.may_write()
    server.down = True
    clock.now += 3 * (1 - coordination.LEASE_MARGIN) - 0.01
    assert elected.step() == [] and elected.may_write()
    # Without a renewal the lock expires in the server after 3 s; writing
    # stops before, even if nothing calls step().
    clock.now += 0.02
    assert not elected.may_write()
    assert elected.step() == [('lost', 'lease expired')]
    assert elected.generation is None


def test_the_lease_counts_from_before_the_renewal_was_sent():
    elected, server, clock = election()
    elected.step()

    def slow_heartbeat():
        clock.now += 1.0            # the renewal took a second to answer
    server.heartbeat = slow_heartbeat
    t_sent = clock.now
    elected.step()
    assert elected.lease_deadline == pytest.approx(
        t_sent + 3 * (1 - coordination.LEASE_MARGIN))


def test_a_leader_whose_lock_is_taken_steps_down_at_once():
    elected, server, clock = election()
    elected.step()
    server.holder = object()        # expired, and someone else has it
    assert elected.step() == [('lost', 'lock lost')]
    assert not elected.may_write()


def test_each_new_leader_takes_a_generation_above_any_a_switch_showed():
    elected, server, clock = election()
    elected.note_switch_generation(41)
    elected.note_switch_generation((1 << 64) - 1)   # "none yet": ignored
    assert elected.step() == [('elected', 42)]
    elected.resign('test')
    assert elected.step() == [('elected', 43)]


def test_only_redis_urls_are_accepted():
    with pytest.raises(coordination.CoordinationError, match='only redis'):
        coordination.check_backend_url('zookeeper://127.0.0.1:2181')
    with pytest.raises(coordination.CoordinationError, match='no host'):
        coordination.check_backend_url('redis://')


# The app's roles -------------------------------------------------------------

@dataclasses.dataclass
class StubElection:
    leading: bool = False
    generation: int = None
    seen_generation: int = 0
    resigned: list = dataclasses.field(default_factory=list)
    member_id: str = 'me'
    group: str = 'g'
    lease_deadline: float = 0.0
    members: dict = dataclasses.field(default_factory=dict)
    master: str = ''
    last_error: str = ''

    def may_write(self, now=None):
        return self.leading

    def resign(self, why):
        self.leading = False
        self.generation = None
        self.resigned.append(why)

    def note_switch_generation(self, generation):
        if generation < 1 << 63:
            self.seen_generation = max(self.seen_generation, generation)

    def stop(self):
        pass


def ha_app(leading=False):
    stub = StubElection(leading=leading, generation=7 if leading else None)
    app = app_mod.RedirectApp(redirect_policy=policy('fast_failover'),
                              election=stub)
    return app, stub


def connect(app, datapath):
    reply = parser.OFPPortDescStatsReply(datapath)
    reply.flags = 0
    reply.body = [parser.OFPPort(no, f'00:00:00:00:aa:{no:02x}', f'p{no}',
                                 0, 0, 0, 0, 0, 0, 0, 0) for no in ALL_UP]
    app.on_port_desc(ofp_event.EventOFPPortDescStatsReply(reply))


def role_requests(datapath):
    return [(m.role, m.generation_id) for m in datapath.sent
            if isinstance(m, parser.OFPRoleRequest)]


def reply_role(app, datapath, role, generation):
    request = [m for m in datapath.sent
               if isinstance(m, parser.OFPRoleRequest)][-1]
    reply = parser.OFPRoleReply(datapath, role, generation)
    reply.xid = request.xid
    app.on_role_reply(ofp_event.EventOFPRoleReply(reply))


def test_a_slave_asks_the_generation_then_becomes_slave_and_writes_nothing():
    app, stub = ha_app(leading=False)
    datapath = RecordingDatapath()
    connect(app, datapath)
    assert role_requests(datapath) == [(ofp.OFPCR_ROLE_NOCHANGE, 0)]
    reply_role(app, datapath, ofp.OFPCR_ROLE_EQUAL, 5)
    assert role_requests(datapath)[-1] == (ofp.OFPCR_ROLE_SLAVE, 5)
    reply_role(app, datapath, ofp.OFPCR_ROLE_SLAVE, 5)
    port = parser.OFPPortStatus(datapath, ofp.OFPPR_MODIFY, parser.OFPPort(
        1, '00:00:00:00:aa:01', 'p1', 0, ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0,
        0))
    app.on_port_status(ofp_event.EventOFPPortStatus(port))
    assert not datapath.flow_mods()
    assert app._status(None)['controller']['role'] == 'slave'


def test_an_elected_master_claims_the_switch_then_reads_before_writing():
    app, stub = ha_app(leading=True)
    datapath = RecordingDatapath()
    connect(app, datapath)
    assert role_requests(datapath) == [(ofp.OFPCR_ROLE_MASTER, 7)]
    assert not datapath.flow_mods()
    reply_role(app, datapath, ofp.OFPCR_ROLE_MASTER, 7)
    requests = [type(m).__name__ for m in datapath.sent]
    assert requests[-2:] == ['OFPFlowStatsRequest', 'OFPGroupDescStatsRequest']
    flows, groups = datapath.sent[-2:]
    for request, reply_class, event in (
            (flows, parser.OFPFlowStatsReply,
             ofp_event.EventOFPFlowStatsReply),
            (groups, parser.OFPGroupDescStatsReply,
             ofp_event.EventOFPGroupDescStatsReply)):
        reply = reply_class(datapath)
        reply.xid, reply.flags, reply.body = request.xid, 0, []
        handler = (app.on_flow_stats if event is
                   ofp_event.EventOFPFlowStatsReply else app.on_group_desc)
        handler(event(reply))
    # An empty switch: everything is installed.
    assert datapath.flow_mods(ofp.OFPFC_ADD)
    assert app._status(None)['controller']['switches'] == {'0x1': 'master'}


def test_a_master_refused_as_stale_steps_down():
    app, stub = ha_app(leading=True)
    datapath = RecordingDatapath()
    connect(app, datapath)
    request = datapath.sent[-1]
    error = parser.OFPErrorMsg(datapath, ofp.OFPET_ROLE_REQUEST_FAILED,
                               ofp.OFPRRFC_STALE, b'')
    error.xid = request.xid
    app.on_switch_error(ofp_event.EventOFPErrorMsg(error))
    assert stub.resigned and 'stale' in stub.resigned[0]
    assert role_requests(datapath)[-1] == (ofp.OFPCR_ROLE_NOCHANGE, 0)
    assert not datapath.flow_mods()


def test_a_master_out_of_lease_writes_nothing_and_steps_down():
    app, stub = ha_app(leading=True)
    datapath = RecordingDatapath()
    app._datapaths[datapath.id] = datapath
    app._roles[datapath.id] = 'master'
    stub.leading = False        # the lease ran out (SIGSTOP, lost Redis)
    app._send(datapath, [model.Barrier(1), model.FlowMod(
        1, model.FlowCommand.ADD, table=0, priority=1)])
    assert not datapath.flow_mods()
    assert app._roles[datapath.id] == 'slave'
    assert role_requests(datapath) == [(ofp.OFPCR_ROLE_NOCHANGE, 0)]


@pytest.mark.parametrize('strategy', STRATEGIES)
def test_a_service_found_dead_on_a_live_link_stays_failed_over(strategy):
    """Only the old master's probes saw the primary die (its link is up):
    the new master learns it from the switch, not from its own monitors,
    which start out trusting every server."""
    settings = model.PolicySettings(strategy=strategy, probe_ip='10.0.0.250',
                                    probe_mac='00:00:00:00:00:fa')
    services = [dataclasses.replace(WEB,
                                    monitors=('port_status', 'tcp_probe'))]
    old = RedirectPolicy(services, settings)
    switch = SimulatedSwitch(old)
    switch.connect(dict(ALL_UP))
    [probe] = [m for m in old._states[0].monitors if m.name == 'tcp_probe']
    probe._up[0] = False            # as after probe_fall failed probes
    switch.apply(old.on_tick(switch.now))
    assert old.active_server('web') == BACKUP
    new = RedirectPolicy(services, settings)
    messages = new.on_switch_adopted(1, dict(ALL_UP), switch.now,
                                     snapshot_of(switch.table))
    assert writes(messages) == []
    assert new.active_server('web') == BACKUP
    assert decisions(new) == decisions(old)


def test_a_port_added_since_the_old_master_met_the_switch_changes_nothing():
    """Per-port meters: the old master metered the ports it knew; a port
    added later shared the first meter, and still does after a takeover
    (the state is read right, so the hold-down goes on)."""
    settings = dict(failback_hold_down=30.0)
    old = policy('reactive', **settings)
    switch = SimulatedSwitch(old)
    ports = dict(ALL_UP)
    switch.apply(old.on_switch_connected(1, ports, 0.0, max_meter_id=1000))
    switch.port(1, False)
    switch.tick(1.0)
    switch.port(1, True)          # back, but held down: backup active
    assert old.active_server('web') == BACKUP
    ports[6] = True               # a new client port (a VM's tap)
    new = policy('reactive', **settings)
    messages = new.on_switch_adopted(1, ports, switch.now,
                                     snapshot_of(switch.table),
                                     max_meter_id=1000)
    assert writes(messages) == []
    assert decisions(new) == decisions(old)


class LockNotOwnedError(Exception):
    """Named as redis-py's: what tooz's error is caused by."""


def test_a_renewal_that_finds_the_lock_gone_steps_down_at_once():
    elected, server, clock = election()
    elected.step()

    def lock_gone():
        try:
            raise LockNotOwnedError('Cannot reacquire a lock that is no '
                                    'longer owned')
        except LockNotOwnedError as exc:
            raise RuntimeError('tooz error') from exc
    server.lock.heartbeat = lock_gone
    assert elected.step() == [('lost', 'lock lost')]
    assert not elected.may_write()


def test_resigning_on_another_thread_leaves_the_release_to_the_election():
    elected, server, clock = election()
    elected.step()
    elected.resign('the lease ran out')      # e.g. the app's thread
    assert not elected.may_write()
    assert server.releases == 0              # no Redis call made here
    assert elected.step() == [('elected', 2)]
    assert server.releases == 1              # released, then re-acquired
