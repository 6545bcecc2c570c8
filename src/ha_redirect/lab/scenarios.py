"""Ready-to-use set-ups: a testbed with its servers and its redirector.

    with RunScope() as scope:
        sdn = SdnScenario(scope, strategy='reactive').start()
        ip, port = sdn.address          # the primary's service address
        ...
        proxy = ProxyScenario(scope, profile='tuned').start()

`for_scheme` picks the one a scheme name (`schemes.Scheme`) means.  Each
server runs an identity server (it answers with its role, e.g. 'primary',
'backup1') on the service ports.
"""

import dataclasses

from ha_redirect.lab import controller as controller_mod
from ha_redirect.lab import coordinator
from ha_redirect.lab import flip as flip_mod
from ha_redirect.lab import haproxy as haproxy_mod
from ha_redirect.lab import ovs
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed as testbed_mod
from ha_redirect.lab import topology
from ha_redirect.lab import traffic
from ha_redirect import model


MAX_SERVICES = 1000


def connection_flow_limit(settings, n_services):
    """Room for each service's tracked connections (two pins each) and our
    service flows."""
    return 2 * settings.max_connections_per_service * n_services + 100


def many_services(plan, n_services, monitors=('port_status',)):
    """`n_services` services of the plan's servers, on consecutive TCP
    ports from the plan's first: their primaries all sit behind the
    primary's switch port, so one link failure moves every one.  The
    first is the plan's own service (name and port)."""
    if not 1 <= n_services <= MAX_SERVICES:
        raise ValueError(f'n_services must be 1..{MAX_SERVICES}')
    first = plan.service(monitors=monitors)
    base = first.tcp_ports[0]
    if base + n_services - 1 > 65535:
        raise ValueError(f'{n_services} services from TCP port {base} '
                         'run past 65535')
    return [first] + [
        dataclasses.replace(first, name=f'{first.name}{i + 1}',
                            tcp_ports=(base + i,))
        for i in range(1, n_services)]


class _Scenario:
    """What every scenario has: a testbed (`bed`) in a scope, and the
    identity servers it starts on the testbed's servers."""

    @property
    def address(self):
        """The primary's service address, (ip, port)."""
        return self.bed.service_address

    def _start_identity_servers(self):
        self.servers = {
            plan.role: traffic.start_identity_server(
                self.scope, self.bed.host(plan.role), plan.role,
                self.bed.plan.tcp_ports, label=f'serve-{plan.role}')
            for plan in self.bed.plan.servers}


class SdnScenario(_Scenario):
    """Figure 1(b) with `ha-redirect-controller` and identity servers."""

    def __init__(self, scope, strategy='reactive', n_clients=2, n_backups=1,
                 gateway=False, settings=None, datapath=None,
                 monitors=('port_status',), tls=False, n_services=1):
        """`tls`: OpenFlow over TLS, with certificates made for the run
        (Open vSwitch's global SSL settings are restored on close).
        `n_services`: that many services (`many_services`); the identity
        servers answer on the first one's port only."""
        self.scope = scope
        self.plan = topology.sdn_plan(scope, n_clients=n_clients,
                                      n_backups=n_backups, gateway=gateway)
        self.bed = testbed_mod.SdnTestbed(scope, self.plan, datapath)
        self.services = many_services(self.plan, n_services, monitors)
        settings = settings or model.PolicySettings()
        if 'tcp_probe' in monitors and settings.probe_ip is None:
            settings = dataclasses.replace(
                settings, probe_ip=topology.PROBE_IP,
                probe_mac=topology.PROBE_MAC)
        self.tls = (controller_mod.make_tls_files(scope.path('pki'))
                    if tls else None)
        self.controller = self._make_controller(strategy, settings)
        self.servers = {}

    def _make_controller(self, strategy, settings):
        return controller_mod.ControllerProcess(
            self.scope, self.services, strategy=strategy, settings=settings,
            tls=self.tls)

    @property
    def strategy(self):
        return self.controller.strategy

    def start(self):
        """Start the controller, then the network, then the servers.

        The controller goes first so the switch connects at once; this
        returns when the controller has seen the switch.
        """
        # The controller validates every service before it listens: give
        # many services time (about 40 ms each on a busy 2-core host).
        self.controller.start(timeout=20.0 + 0.1 * len(self.services))
        if self.tls is not None:
            # Before the bridge, so the scope deletes the bridge (and its
            # ssl: controller) before it puts the SSL settings back.
            testbed_mod.use_ovs_ssl(self.scope, self.tls.switch_key,
                                    self.tls.switch_cert, self.tls.ca_cert)
        self.bed.start()
        # As README's deployment advice: what the switch pins by itself
        # (proactive's learned flows) is capped, with eviction.
        settings = self.controller.settings
        ovs.limit_table(self.plan.bridge, settings.connection_table,
                        connection_flow_limit(settings, len(self.services)))
        self.bed.connect_controller(
            self.controller.port,
            scheme='tcp' if self.tls is None else 'ssl')
        self.controller.wait_switch_connected(self.plan.datapath_id)
        self._start_identity_servers()
        return self


class FlipScenario(SdnScenario):
    """Figure 1(b) with the controller-flip app (`lab.flip_app`) instead
    of ours: the comparison `gaps` measures strategies against."""

    def __init__(self, scope, n_clients=2, datapath=None, n_services=1):
        super().__init__(scope, strategy=None, n_clients=n_clients,
                         datapath=datapath, n_services=n_services)

    def _make_controller(self, strategy, settings):
        return flip_mod.FlipProcess(self.scope, self.services)


class HaScenario(_Scenario):
    """Figure 1(b) with several controllers, one Redis to elect a master.

    `controllers[i]` are ControllerProcess objects with the same services
    and settings; the bridge connects to all of them.
    """

    def __init__(self, scope, strategy='reactive', n_controllers=3,
                 lease=2, n_clients=2, settings=None,
                 monitors=('port_status',)):
        self.scope = scope
        self.plan = topology.sdn_plan(scope, n_clients=n_clients,
                                      n_backups=1)
        self.bed = testbed_mod.SdnTestbed(scope, self.plan)
        self.redis = coordinator.RedisServer(scope)
        settings = settings or model.PolicySettings()
        if 'tcp_probe' in monitors and settings.probe_ip is None:
            settings = dataclasses.replace(
                settings, probe_ip=topology.PROBE_IP,
                probe_mac=topology.PROBE_MAC)
        self.controllers = [
            controller_mod.ControllerProcess(
                scope, [self.plan.service(monitors=monitors)],
                strategy=strategy, settings=settings, label=f'controller{i}',
                coordination={'backend_url': self.redis.url,
                              'lease': lease, 'member_id': f'controller{i}',
                              'group': f'ha_redirect-{scope.token}'})
            for i in range(n_controllers)]
        # The same conntrack zones for all (they serve the same services):
        # ControllerProcess derives them from the scope's token.
        self.servers = {}

    def start(self):
        self.redis.start()
        for controller in self.controllers:
            controller.start()
        self.bed.start()
        settings = self.controllers[0].settings
        ovs.limit_table(self.plan.bridge, settings.connection_table,
                        connection_flow_limit(settings, 1))
        self.bed.connect_controller([c.port for c in self.controllers])
        for controller in self.controllers:
            controller.wait_switch_connected(self.plan.datapath_id)
        self.wait_master()
        self._start_identity_servers()
        return self

    def roles(self):
        """{controller label: its role of the switch} from each running
        controller's control socket ('down' if it does not answer)."""
        roles = {}
        dpid = f'{self.plan.datapath_id:#x}'
        for controller in self.controllers:
            roles[controller.label] = controller.switch_role(dpid)
        return roles

    def wait_master(self, timeout=20.0, excluding=()):
        """The controller that is MASTER of the switch, once there is
        exactly one (and it is not among `excluding`)."""
        found = []

        def one_master():
            masters = [label for label, role in self.roles().items()
                       if role == 'master']
            found[:] = masters
            return len(masters) == 1 and masters[0] not in excluding
        scope_mod.wait_until(one_master, timeout, interval=0.02,
                             what='one controller to be MASTER')
        return next(c for c in self.controllers if c.label == found[0])


class ProxyScenario(_Scenario):
    """Figure 1(a) with `haproxy` and identity servers."""

    def __init__(self, scope, profile='paper', n_clients=2, n_backups=1,
                 datapath=None):
        self.scope = scope
        self.plan = topology.proxy_plan(scope, n_clients=n_clients,
                                        n_backups=n_backups)
        self.bed = testbed_mod.ProxyTestbed(scope, self.plan, datapath)
        self.profile = profile
        self.haproxy = None
        self.servers = {}

    def start(self):
        self.bed.start()
        self._start_identity_servers()
        self.haproxy = haproxy_mod.HAProxy(self.scope, self.bed,
                                           self.profile).start()
        return self


def for_scheme(scope, scheme, n_services=1):
    """The scenario (not started) that runs a `schemes.Scheme` at its
    defaults, with `n_services` services (SDN and flip schemes only)."""
    if scheme.is_flip:
        return FlipScenario(scope, n_services=n_services)
    if scheme.is_sdn:
        return SdnScenario(scope, strategy=scheme.variant,
                           n_services=n_services)
    if n_services != 1:
        raise ValueError(f'{scheme.name}: one service only')
    return ProxyScenario(scope, profile=scheme.variant)
