"""The paper's Figure 1 as Mininet topologies, with a fixed addressing plan.

Figure 1(b), SDN (`SdnTopo`)::

    primary  10.0.0.1   00:00:00:00:00:01  switch port 1
    backup k 10.0.0.1+k 00:00:00:00:00:0k  switch port 1+k
    clients  10.0.0.11, .12, ...           the ports after the servers
    (or, with a gateway: the gateway 10.0.0.254 on the port after the
     servers -- the paper's p3 -- and the clients on 10.0.1.0/24 behind it,
     on a second bridge)

  One OVS bridge speaks OpenFlow 1.3 with fail_mode=secure, so nothing is
  forwarded until our controller says so.

Figure 1(a), HAProxy (`ProxyTopo`)::

    clients 10.0.0.11, ...  --- bridge ---  10.0.0.100  proxy
    proxy 10.0.1.254 ---- 10.0.1.1 primary
    proxy 10.0.2.254 ---- 10.0.2.2 backup     (backup k: 10.0.(1+k).(1+k))

  The proxy host routes between all of them (the paper's "layer 3
  connectivity"); HAProxy listens on the front-end address.  The clients'
  bridge is fail_mode=secure too, with one NORMAL flow installed by the
  testbed, as no controller is involved in this scheme.

Every node name carries the run's token, so interface names (`<node>-ethN`)
and the bridge are unique per run.
"""

import dataclasses
import typing

from mininet.topo import Topo

from ha_redirect import model

SERVICE_NAME = 'web'
DEFAULT_TCP_PORT = 5001
# Source of the controller's in-band health probes (the tcp_probe
# monitor): in the servers' subnet, used by no host.
PROBE_IP = '10.0.0.250'
PROBE_MAC = '00:00:00:00:00:fa'


@dataclasses.dataclass(frozen=True)
class HostPlan:
    """One emulated host: its role, Mininet name and first interface."""
    role: str
    name: str
    ip: str                  # address/prefix of the first interface
    mac: typing.Optional[str]
    switch_port: typing.Optional[int] = None
    default_route: typing.Optional[str] = None

    @property
    def address(self):
        return self.ip.split('/')[0]


def _mac(last_octets):
    return '00:00:00:00:' + ':'.join(f'{b:02x}' for b in last_octets)


@dataclasses.dataclass(frozen=True)
class SdnPlan:
    """Names, addresses and switch ports of Figure 1(b)."""
    bridge: str
    client_bridge: typing.Optional[str]
    datapath_id: int
    tcp_ports: typing.Tuple[int, ...]
    primary: HostPlan
    backups: typing.Tuple[HostPlan, ...]
    clients: typing.Tuple[HostPlan, ...]
    gateway: typing.Optional[HostPlan] = None
    gateway_inner_ip: typing.Optional[str] = None

    @property
    def servers(self):
        return (self.primary,) + self.backups

    def service(self, name=SERVICE_NAME, monitors=('port_status',)):
        """The service the controller protects, as the core models it."""
        def endpoint(h):
            return model.Endpoint(ip=h.address, mac=h.mac, port=h.switch_port)
        return model.Service(
            name=name, datapath_id=self.datapath_id,
            tcp_ports=self.tcp_ports, primary=endpoint(self.primary),
            backups=tuple(endpoint(b) for b in self.backups),
            monitors=tuple(monitors))


def sdn_plan(scope, n_clients=2, n_backups=1, tcp_ports=(DEFAULT_TCP_PORT,),
             gateway=False, datapath_id=None):
    """The SDN addressing plan for one run (names from `scope`)."""
    if not 1 <= n_clients <= 200 or not 1 <= n_backups <= 8:
        raise ValueError('n_clients must be 1..200 and n_backups 1..8')
    primary = HostPlan('primary', scope.name('pri', 5), '10.0.0.1/24',
                       _mac([0, 1]), switch_port=1)
    backups = tuple(
        HostPlan(f'backup{k}', scope.name(f'bk{k}', 5), f'10.0.0.{1 + k}/24',
                 _mac([0, 1 + k]), switch_port=1 + k)
        for k in range(1, n_backups + 1))
    next_port = 2 + n_backups
    gw = None
    if gateway:
        gw = HostPlan('gateway', scope.name('gw', 5), '10.0.0.254/24',
                      _mac([0, 0xfe]), switch_port=next_port)
        clients = tuple(
            HostPlan(f'client{i}', scope.name(f'c{i}', 5),
                     f'10.0.1.{10 + i}/24', _mac([1, 10 + i]),
                     default_route='10.0.1.254')
            for i in range(1, n_clients + 1))
        servers_route = '10.0.0.254'
    else:
        clients = tuple(
            HostPlan(f'client{i}', scope.name(f'c{i}', 5),
                     f'10.0.0.{10 + i}/24', _mac([0, 10 + i]),
                     switch_port=next_port + i - 1)
            for i in range(1, n_clients + 1))
        servers_route = None
    if servers_route:
        primary = dataclasses.replace(primary, default_route=servers_route)
        backups = tuple(dataclasses.replace(b, default_route=servers_route)
                        for b in backups)
    if datapath_id is None:
        datapath_id = int(scope.token, 16) + 0x4852_0000
    return SdnPlan(
        bridge=scope.name('hrs', 6),
        client_bridge=scope.name('hrc', 6) if gateway else None,
        datapath_id=datapath_id, tcp_ports=tuple(tcp_ports),
        primary=primary, backups=backups, clients=clients, gateway=gw,
        gateway_inner_ip='10.0.1.254/24' if gateway else None)


class SdnTopo(Topo):
    """Figure 1(b): clients (or a gateway), primary and backups on one OVS."""

    def build(self, plan, datapath):
        switch = self.addSwitch(
            plan.bridge, dpid=f'{plan.datapath_id:016x}', datapath=datapath,
            failMode='secure', protocols='OpenFlow13')
        for h in plan.servers:
            self.addHost(h.name, ip=h.ip, mac=h.mac,
                         defaultRoute=_route(h))
            self.addLink(h.name, switch, port2=h.switch_port)
        if plan.gateway is None:
            for h in plan.clients:
                self.addHost(h.name, ip=h.ip, mac=h.mac)
                self.addLink(h.name, switch, port2=h.switch_port)
            return
        gw = plan.gateway
        self.addHost(gw.name, ip=gw.ip, mac=gw.mac)
        self.addLink(gw.name, switch, port2=gw.switch_port)
        inner = self.addSwitch(
            plan.client_bridge, dpid=f'{plan.datapath_id + 1:016x}',
            datapath=datapath, failMode='secure', protocols='OpenFlow13')
        self.addLink(gw.name, inner, port2=1,
                     params1={'ip': plan.gateway_inner_ip})
        for port, h in enumerate(plan.clients, start=2):
            self.addHost(h.name, ip=h.ip, mac=h.mac, defaultRoute=_route(h))
            self.addLink(h.name, inner, port2=port)


@dataclasses.dataclass(frozen=True)
class ProxyPlan:
    """Names and addresses of Figure 1(a)."""
    bridge: str
    tcp_ports: typing.Tuple[int, ...]
    proxy: HostPlan                       # front-end interface
    proxy_backend_ips: typing.Tuple[str, ...]  # one per server, in order
    primary: HostPlan
    backups: typing.Tuple[HostPlan, ...]
    clients: typing.Tuple[HostPlan, ...]

    @property
    def servers(self):
        return (self.primary,) + self.backups

    @property
    def frontend_ip(self):
        return self.proxy.address

    def service(self, name=SERVICE_NAME):
        """The same service as the SDN one, with the proxy's back-end view.

        Endpoint ports are the proxy's back-end interface numbers (1 for
        the primary, 2 for the first backup, ...); HAProxy ignores them.
        """
        def endpoint(h, port):
            return model.Endpoint(ip=h.address, mac=h.mac, port=port)
        return model.Service(
            name=name, datapath_id=0, tcp_ports=self.tcp_ports,
            primary=endpoint(self.primary, 1),
            backups=tuple(endpoint(b, 1 + k)
                          for k, b in enumerate(self.backups, start=1)))


def proxy_plan(scope, n_clients=2, n_backups=1,
               tcp_ports=(DEFAULT_TCP_PORT,)):
    """The HAProxy addressing plan for one run (names from `scope`)."""
    if not 1 <= n_clients <= 200 or not 1 <= n_backups <= 8:
        raise ValueError('n_clients must be 1..200 and n_backups 1..8')
    servers = []
    backend_ips = []
    for k in range(0, n_backups + 1):
        if k == 0:
            role, short = 'primary', 'pri'
        else:
            role, short = f'backup{k}', f'bk{k}'
        servers.append(HostPlan(
            role, scope.name(short, 5), f'10.0.{1 + k}.{1 + k}/24',
            _mac([0, 1 + k]), default_route=f'10.0.{1 + k}.254'))
        backend_ips.append(f'10.0.{1 + k}.254/24')
    clients = tuple(
        HostPlan(f'client{i}', scope.name(f'c{i}', 5), f'10.0.0.{10 + i}/24',
                 _mac([0, 10 + i]), switch_port=1 + i,
                 default_route='10.0.0.100')
        for i in range(1, n_clients + 1))
    proxy = HostPlan('proxy', scope.name('px', 5), '10.0.0.100/24',
                     _mac([0, 100]), switch_port=1)
    return ProxyPlan(
        bridge=scope.name('hrp', 6), tcp_ports=tuple(tcp_ports), proxy=proxy,
        proxy_backend_ips=tuple(backend_ips), primary=servers[0],
        backups=tuple(servers[1:]), clients=clients)


class ProxyTopo(Topo):
    """Figure 1(a): clients -- bridge -- proxy -- primary / backups."""

    def build(self, plan, datapath):
        switch = self.addSwitch(
            plan.bridge, dpid='00000000000000a1', datapath=datapath,
            failMode='secure', protocols='OpenFlow13')
        px = plan.proxy
        self.addHost(px.name, ip=px.ip, mac=px.mac)
        self.addLink(px.name, switch, port2=px.switch_port)
        for h in plan.clients:
            self.addHost(h.name, ip=h.ip, mac=h.mac, defaultRoute=_route(h))
            self.addLink(h.name, switch, port2=h.switch_port)
        for h, backend_ip in zip(plan.servers, plan.proxy_backend_ips):
            self.addHost(h.name, ip=h.ip, mac=h.mac, defaultRoute=_route(h))
            self.addLink(px.name, h.name, params1={'ip': backend_ip})


def _route(h):
    return f'via {h.default_route}' if h.default_route else None
