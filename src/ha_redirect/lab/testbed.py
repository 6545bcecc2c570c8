"""Build, run and tear down the Figure 1 topologies in Mininet.

    with RunScope() as scope:
        bed = SdnTestbed(scope, sdn_plan(scope, n_clients=2))
        bed.start()
        bed.connect_controller(6653)
        ...

Everything a testbed creates is registered with the scope, which removes it
on close: Mininet's own stop first, then, by name, any bridge or switch-side
interface it left, and by PID any host shell still alive.
"""

import logging
import os

from mininet.link import Link
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host
from mininet.node import OVSSwitch

from ha_redirect.lab import ovs
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import topology

LOG = logging.getLogger(__name__)

OFP_VERSION = 'OpenFlow13'


def kernel_datapath_available():
    """True when the openvswitch kernel module is loaded or loadable."""
    if os.path.isdir('/sys/module/openvswitch'):
        return True
    return scope_mod.run(['modprobe', '-q', 'openvswitch'],
                         check=False).returncode == 0


def choose_datapath():
    """'kernel' where the kernel has the OVS datapath, else 'user'."""
    return 'kernel' if kernel_datapath_available() else 'user'


def check_host():
    """Raise LabError with what is missing for a testbed on this host."""
    if os.geteuid() != 0:
        raise scope_mod.LabError('the testbed needs root (network '
                                 'namespaces and Open vSwitch)')
    for tool in ('mnexec', 'ovs-vsctl', 'ovs-ofctl', 'ethtool', 'ip'):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in os.environ.get('PATH', '').split(':') + [
                       '/usr/sbin', '/sbin', '/usr/bin']):
            raise scope_mod.LabError(f'{tool} not found; run '
                                     'devtools/setup-host')
    if scope_mod.run(['ovs-vsctl', '--timeout=5', 'show'],
                     check=False).returncode != 0:
        raise scope_mod.LabError('Open vSwitch is not running; run '
                                 'devtools/setup-host')


class Testbed:
    """A running Mininet network owned by a RunScope."""

    topo_class = None

    def __init__(self, scope, plan, datapath=None):
        self.scope = scope
        self.plan = plan
        self.datapath = datapath or choose_datapath()
        self.net = None
        self._hosts = {}

    @property
    def bridges(self):
        return [b for b in (getattr(self.plan, 'bridge', None),
                            getattr(self.plan, 'client_bridge', None)) if b]

    def start(self):
        """Create hosts, links and bridges; configure addresses."""
        check_host()
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            setLogLevel('warning')
        topo = self.topo_class(plan=self.plan, datapath=self.datapath)
        self.net = Mininet(topo=topo, switch=OVSSwitch, host=Host, link=Link,
                           controller=None, autoSetMacs=False, build=False)
        self.scope.on_close('remove leftovers by name', self._remove_leftovers)
        self.scope.on_close('stop mininet', self.net.stop)
        self.net.build()
        with ovs.port_buffers(userspace=self.datapath == 'user'):
            self.net.start()
        for h in self._all_host_plans():
            self._hosts[h.role] = self.net.get(h.name)
        for node in self.net.hosts:
            # IPv6 autoconfiguration would add chatter to captures and
            # packet-ins; the paper's testbed is IPv4 only.
            node.cmd('sysctl -qw net.ipv6.conf.all.disable_ipv6=1')
            if self.datapath == 'user':
                # The userspace datapath does not complete partial
                # checksums: without this TCP through OVS fails.
                for intf in node.intfList():
                    node.cmd(f'ethtool -K {intf} tx off rx off')
        self._configure()
        return self

    def _configure(self):
        """Topology-specific set-up after the network is up."""

    def _all_host_plans(self):
        raise NotImplementedError

    def host(self, role):
        """The Mininet host for a role ('primary', 'backup1', 'client1'...)."""
        return self._hosts[role]

    @property
    def primary(self):
        return self.host('primary')

    @property
    def backups(self):
        return [self.host(b.role) for b in self.plan.backups]

    @property
    def clients(self):
        return [self.host(c.role) for c in self.plan.clients]

    def server_interface(self, role='primary'):
        """The server's own end of its link (the one the paper takes down)."""
        return str(self.host(role).defaultIntf())

    def install_normal_flow(self, bridge):
        """Let a controller-less secure bridge act as a learning switch."""
        scope_mod.run(['ovs-ofctl', '-O', OFP_VERSION, 'add-flow', bridge,
                       'priority=0,actions=NORMAL'])

    def _remove_leftovers(self):
        for bridge in self.bridges:
            scope_mod.run(['ovs-vsctl', '--timeout=10', '--if-exists',
                           'del-br', bridge], check=False)
        prefixes = tuple(f'{b}-eth' for b in self.bridges)
        for name in os.listdir('/sys/class/net'):
            if name.startswith(prefixes):
                scope_mod.run(['ip', 'link', 'del', name], check=False)
        for node in (self.net.hosts if self.net else []):
            shell = getattr(node, 'shell', None)
            if shell is not None and shell.poll() is None:
                scope_mod.stop_process(shell, 2, node.name)


class SdnTestbed(Testbed):
    """Figure 1(b): the service switch waits for our controller."""

    topo_class = topology.SdnTopo

    def _all_host_plans(self):
        plan = self.plan
        extra = (plan.gateway,) if plan.gateway else ()
        return plan.servers + plan.clients + extra

    def _configure(self):
        if self.plan.gateway is not None:
            self.install_normal_flow(self.plan.client_bridge)
            self.host('gateway').cmd('sysctl -qw net.ipv4.ip_forward=1')

    @property
    def gateway(self):
        return self.host('gateway') if self.plan.gateway else None

    @property
    def service(self):
        """The `model.Service` the controller must protect."""
        return self.plan.service()

    @property
    def service_address(self):
        """(ip, port) the clients use: the primary's."""
        return self.plan.primary.address, self.plan.tcp_ports[0]

    def connect_controller(self, port, host='127.0.0.1', scheme='tcp'):
        """Point the service bridge at a controller on loopback, or at
        several (`port` a list): OpenFlow roles decide who writes.
        `scheme` 'ssl' connects over TLS (see `use_ovs_ssl`)."""
        ports = port if isinstance(port, (list, tuple)) else [port]
        argv = ['ovs-vsctl', '--timeout=10']
        for index, each in enumerate(ports):
            argv += ['--', f'--id=@c{index}', 'create', 'Controller',
                     f'target="{scheme}:{host}:{each}"', 'max_backoff=1000']
        argv += ['--', 'set', 'Bridge', self.plan.bridge,
                 'controller=[' + ','.join(
                     f'@c{i}' for i in range(len(ports))) + ']']
        scope_mod.run(argv)


SSL_COLUMNS = ('private_key', 'certificate', 'ca_cert')


def use_ovs_ssl(scope, private_key, certificate, ca_cert):
    """Give Open vSwitch the switch's key, certificate and CA for `ssl:`
    controllers, and put back on close exactly what was there.

    The SSL settings are global to the Open vSwitch instance (the
    Open_vSwitch table's `ssl` column); `tcp:` controllers of other
    bridges do not use them. Unset before: unset again (`del-ssl`). Set
    before (someone's own SSL row): that row's three file columns get our
    files for the run and their old values back afterwards.
    """
    vsctl = ['ovs-vsctl', '--timeout=10']
    row = scope_mod.run(vsctl + ['get', 'Open_vSwitch', '.',
                                 'ssl']).stdout.strip()
    ours = dict(zip(SSL_COLUMNS, (private_key, certificate, ca_cert)))
    if row in ('', '[]'):
        scope.on_close('ovs-vsctl del-ssl (it was unset)',
                       lambda: scope_mod.run(vsctl + ['del-ssl']))
        scope_mod.run(vsctl + ['set-ssl', private_key, certificate, ca_cert])
        return
    before = {column: scope_mod.run(vsctl + ['get', 'SSL', row, column])
              .stdout.strip() for column in SSL_COLUMNS}
    LOG.warning('Open vSwitch has SSL settings already (%s); using ours '
                'for this run and restoring them afterwards', before)
    scope.on_close('restore the SSL settings of Open vSwitch', lambda: (
        scope_mod.run(vsctl + ['set', 'SSL', row] + [
            f'{column}={value}' for column, value in before.items()])))
    scope_mod.run(vsctl + ['set', 'SSL', row] + [
        f'{column}="{value}"' for column, value in ours.items()])


class ProxyTestbed(Testbed):
    """Figure 1(a): the proxy host routes between clients and servers."""

    topo_class = topology.ProxyTopo

    def _all_host_plans(self):
        return (self.plan.proxy,) + self.plan.servers + self.plan.clients

    def _configure(self):
        self.install_normal_flow(self.plan.bridge)
        self.proxy.cmd('sysctl -qw net.ipv4.ip_forward=1')

    @property
    def proxy(self):
        return self.host('proxy')

    @property
    def service(self):
        return self.plan.service()

    @property
    def service_address(self):
        """(ip, port) the clients use: the proxy's front end."""
        return self.plan.frontend_ip, self.plan.tcp_ports[0]
