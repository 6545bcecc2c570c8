"""Every order of port flaps, connections, failback and reconnects.

Hypothesis drives the policy through a simulated switch and, after each
step, checks what a client would see: new connections land on the first
healthy server, established ones stay on their server while it lives, every
reply looks as if the primary sent it, and flows we do not own survive.
"""

import hypothesis
from hypothesis import stateful
from hypothesis import strategies as st

from ha_redirect import model
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.fast_failover import FastFailoverStrategy
from ha_redirect.strategies.proactive import ProactiveStrategy
from ha_redirect.strategies.reactive import ReactiveStrategy
from ha_redirect.strategies.stateful import StatefulStrategy

from switch_harness import SimulatedSwitch
from switch_harness import tcp

SERVERS = (model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1),
           model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2),
           model.Endpoint('10.0.0.5', '00:00:00:00:00:05', 5))
PRIMARY = SERVERS[0]
CLIENT_IP, CLIENT_MAC, CLIENT_PORT = '10.0.0.3', '00:00:00:00:00:03', 3
SERVICE = model.Service('web', 1, (80,), PRIMARY, SERVERS[1:])
FOREIGN = model.FlowMod(1, model.FlowCommand.ADD,
                        match=model.Match(in_port=9),
                        actions=(model.Output(10),), priority=65000,
                        cookie=0xabc)


class FailoverMachine(stateful.RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.up = {1: True, 2: True, 3: True, 5: True}
        self.connections = {}      # client TCP port -> server index
        self.next_client_port = 30000
        self.switch = None

    @stateful.initialize(strategy=st.sampled_from(['reactive', 'proactive',
                                                   'fast_failover',
                                                   'stateful']),
                         failback=st.booleans())
    def start(self, strategy, failback):
        self.failback = failback
        self.make_strategy = {'reactive': ReactiveStrategy,
                              'proactive': ProactiveStrategy,
                              'fast_failover': FastFailoverStrategy,
                              'stateful': StatefulStrategy}[strategy]
        self._new_controller()
        self.switch.apply([FOREIGN])
        self.active = 0

    def _new_controller(self):
        table = self.switch.table if self.switch else None
        policy = RedirectPolicy(
            [SERVICE], model.PolicySettings(failback=self.failback),
            strategy=self.make_strategy())
        self.switch = SimulatedSwitch(policy, table=table)
        self.switch.connect(dict(self.up))

    def _expected_active(self):
        healthy = [self.up[s.port] for s in SERVERS]
        if (not self.failback and self.active is not None
                and healthy[self.active]):
            return self.active
        return next((i for i, ok in enumerate(healthy) if ok), None)

    @stateful.rule(server=st.sampled_from([0, 1, 2]), is_up=st.booleans())
    def flap(self, server, is_up):
        port = SERVERS[server].port
        if self.up[port] == is_up:
            return
        self.up[port] = is_up
        self.switch.port(port, is_up)
        if not is_up:
            # Connections on a dead server are lost: forget them.
            self.connections = {c: s for c, s in self.connections.items()
                                if s != server}
        self.active = self._expected_active()

    @stateful.rule()
    def restart_controller(self):
        self._new_controller()
        # A fresh policy cannot know connections whose flows it removed;
        # they continue on the active server (a RST if that is new to them).
        self.active = next((i for i, s in enumerate(SERVERS)
                            if self.up[s.port]), None)
        self.connections = {}

    @stateful.rule()
    def new_connection(self):
        client_port = self.next_client_port
        self.next_client_port += 1
        delivered = self.switch.send(self._to_service(client_port))
        if self.active is None:
            assert delivered == []
            return
        self._assert_reaches(delivered, SERVERS[self.active])
        self.connections[client_port] = self.active

    @stateful.rule(data=st.data())
    def established_traffic(self, data):
        if not self.connections:
            return
        if not self.switch.policy.strategy.pins_connections:
            # Stateless: every connection follows the active server.
            self.connections = {c: self.active for c in self.connections
                                if self.active is not None}
            if not self.connections:
                return
        client_port = data.draw(st.sampled_from(sorted(self.connections)))
        server = SERVERS[self.connections[client_port]]
        delivered = self.switch.send(self._to_service(client_port,
                                                      model.TCP_ACK))
        self._assert_reaches(delivered, server)
        back = self.switch.send(tcp(
            server.port, server.ip, CLIENT_IP, 80, client_port, server.mac,
            CLIENT_MAC, model.TCP_ACK))
        if self.switch.policy.strategy.pins_connections:
            expected = (CLIENT_PORT, PRIMARY.ip, PRIMARY.mac)
        else:
            expected = ('normal', PRIMARY.ip, server.mac)
        assert [(d.port, d.packet['ipv4_src'], d.packet['eth_src'])
                for d in back] == [expected]

    @stateful.invariant()
    def policy_agrees_on_the_active_server(self):
        if self.switch is None:
            return
        expected = None if self.active is None else SERVERS[self.active]
        assert self.switch.policy.active_server('web') == expected

    @stateful.invariant()
    def foreign_flows_survive(self):
        if self.switch is not None:
            assert self.switch.table.flows(1, cookie=FOREIGN.cookie)

    @staticmethod
    def _to_service(client_port, flags=model.TCP_SYN):
        return tcp(CLIENT_PORT, CLIENT_IP, PRIMARY.ip, client_port, 80,
                   CLIENT_MAC, PRIMARY.mac, flags)

    @staticmethod
    def _assert_reaches(delivered, server):
        assert [(d.port, d.packet['ipv4_dst'], d.packet['eth_dst'])
                for d in delivered] == [(server.port, server.ip, server.mac)]


TestFailover = FailoverMachine.TestCase
TestFailover.settings = hypothesis.settings(
    max_examples=300, stateful_step_count=40, deadline=None)
