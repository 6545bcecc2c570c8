"""Deployment settings, and the flow layout they place: meter ids,
priorities and cookies."""

import dataclasses
import typing

from ha_redirect.model.validation import normalize_ipv4
from ha_redirect.model.validation import normalize_mac
from ha_redirect.model.validation import SettingsError

__all__ = [
    'Bounds', 'SETTING_BOUNDS', 'PolicySettings', 'ALL_GROUPS',
    'ALL_TABLES', 'METER_MAX', 'METER_CLIENTS', 'METER_MONITORS',
    'METER_PORTS', 'last_shared_meter_id', 'port_meter_id',
    'PRIORITY_TABLE_MISS', 'PRIORITY_SERVICE', 'PRIORITY_SERVICE_SYN',
    'PRIORITY_SERVER_REPLY', 'PRIORITY_SERVER_BYPASS',
    'PRIORITY_ARP_RESPONDER', 'PRIORITY_PROBE_REPLY', 'PRIORITY_CONNECTION',
    'COOKIE_OURS_MASK', 'COOKIE_SERVICE_MASK', 'COOKIE_EXACT_MASK',
    'ROLE_SERVICE', 'ROLE_ARP', 'ROLE_PROBE', 'ROLE_CONNECTION_BASE',
    'COOKIE_PIN_ROLE_MASK', 'GLOBAL_SERVICE_INDEX', 'make_cookie',
    'connection_role', 'server_index_of_cookie']


class Bounds(typing.NamedTuple):
    low: float
    high: typing.Optional[float]    # None: no upper bound
    problem: str                    # what a value outside is told


def _between(low, high, unit=''):
    return Bounds(low, high, f'must be between {low} and {high}{unit}')


# The numeric settings' ranges: `PolicySettings` checks them and the
# config options (`ha_redirect.opts`) declare them, so both agree.
SETTING_BOUNDS = {
    'failback_hold_down': _between(0, 86400, ' seconds'),
    'first_group_id': Bounds(0, 0xffffff00 - 0xffff,
                             'must leave room for a group per service '
                             'below 0xffffff00'),
    'probe_interval': _between(0.001, 3600, ' seconds'),
    'probe_timeout': _between(0.001, 3600, ' seconds'),
    'probe_fall': Bounds(1, None, 'must be at least 1'),
    'probe_rise': Bounds(1, None, 'must be at least 1'),
    'table': _between(0, 253),
    'connection_table': _between(0, 253),
    'first_ct_zone': _between(1, 0xffff),
    'base_priority': _between(0, 0xffff - 100),
    # OpenFlow carries timeouts in 16 bits.
    'connection_idle_timeout': _between(1, 0xffff, ' seconds'),
    'fin_idle_timeout': _between(0, 0xffff, ' seconds'),
    'max_connections_per_service': _between(1, 10_000_000),
    'packet_in_rate': Bounds(0, 10_000_000, 'must be between 0 (no limit) '
                             'and 10000000 per second'),
}


@dataclasses.dataclass(frozen=True)
class PolicySettings:
    """Deployment choices that are not per service (the `[ha_redirect]` group).

    `cookie` fills the upper 32 bits of every flow cookie we install; the
    lower bits say which service and which server a flow belongs to, so
    deletes can be scoped to exactly the flows they concern.
    """
    strategy: str = 'reactive'
    cookie: int = 0x48415244
    table: int = 0
    connection_table: int = 1
    base_priority: int = 1000
    connection_idle_timeout: int = 30
    fin_idle_timeout: int = 2
    failback: bool = True
    # Seconds a recovered server must stay healthy before it takes new
    # connections again (a link is up before its service is ready).
    failback_hold_down: float = 0.0
    forward_non_service_traffic: bool = True
    # Fast-failover groups get ids first_group_id + service index.
    first_group_id: int = 0x48520000
    # The `stateful` strategy tracks each service's connections in conntrack
    # zone first_ct_zone + service index, and sends them to their server
    # from `route_table` (None: connection_table + 1).
    first_ct_zone: int = 0x4852
    route_table: typing.Optional[int] = None
    # In-band TCP health probes (the `tcp_probe` monitor): the controller's
    # own address on the servers' subnet, used by no client.
    probe_ip: typing.Optional[str] = None
    probe_mac: typing.Optional[str] = None
    probe_interval: float = 0.1
    # 1 s, not less: under load a probe through the userspace datapath and
    # the controller was seen to take over 300 ms (false mark-downs).
    probe_timeout: float = 1.0
    probe_fall: int = 3
    probe_rise: int = 2
    probe_jitter: float = 0.1
    # Connections one service's memory tracks (reactive); beyond it, new
    # connections are forwarded to the active server without a pin.
    max_connections_per_service: int = 10000
    # PacketIns per second each of our controller-bound flow kinds may
    # send (an OpenFlow meter, where the switch has meters); 0: no limit.
    packet_in_rate: int = 1000
    # Our meters: first_meter_id for clients' traffic, the next one for
    # the monitors' (so a client flood cannot starve health probes).
    first_meter_id: int = 72

    def __post_init__(self):
        error = SettingsError.for_field
        for field, bounds in SETTING_BOUNDS.items():
            value = getattr(self, field)
            # Written so that NaN is out of every range.
            if not (bounds.low <= value and (bounds.high is None
                                             or value <= bounds.high)):
                raise error(field, bounds.problem)
        if self.probe_ip is not None:
            object.__setattr__(self, 'probe_ip', normalize_ipv4(
                self.probe_ip, 'probe_ip', error))
        if self.probe_mac is not None:
            object.__setattr__(self, 'probe_mac', normalize_mac(
                self.probe_mac, 'probe_mac', error))
        if not 0 <= self.probe_jitter < 1:
            raise error('probe_jitter', 'must be in [0, 1)')
        if not 0 < self.cookie <= 0xffffffff:
            raise error('cookie', 'must be a non-zero 32-bit value')
        if self.table == self.connection_table:
            raise error('connection_table', 'must differ from table')
        if self.route_table is not None or self.strategy == 'stateful':
            route = self.stateful_route_table
            if not self.connection_table < route <= 254 or route == self.table:
                raise error(
                    'route_table', f'{route} must be after connection_table '
                    f'({self.connection_table}), at most 254, and differ '
                    'from table')
        if not 1 <= self.first_meter_id < METER_MAX:
            raise error('first_meter_id',
                        f'must be between 1 and {METER_MAX - 1}')

    @property
    def stateful_route_table(self) -> int:
        """The table the `stateful` strategy routes connections from."""
        if self.route_table is not None:
            return self.route_table
        return self.connection_table + 1


ALL_GROUPS = 0xfffffffc            # OFPG_ALL: a group delete that spans all
ALL_TABLES = 0xff                 # OFPTT_ALL: a delete that spans every table
METER_MAX = 0xffff0000            # OFPM_MAX
# Our meters, as offsets from PolicySettings.first_meter_id.
METER_CLIENTS = 0                 # clients' packets the controller decides
METER_MONITORS = 1                # monitors' packets: probe replies, ARP
METER_PORTS = 2                   # + switch port: one client port's packets


def last_shared_meter_id(settings: PolicySettings) -> int:
    """A switch whose meter ids reach this one can carry our meters."""
    return settings.first_meter_id + METER_MONITORS


def port_meter_id(settings: PolicySettings, port: int) -> int:
    """The meter of the clients' packets that come in on one switch port."""
    return settings.first_meter_id + METER_PORTS + port


# Flow priorities, as offsets above PolicySettings.base_priority, so an
# embedding controller can place our flows relative to its own.
PRIORITY_TABLE_MISS = 0           # absolute: the NORMAL fallback
PRIORITY_SERVICE = 10             # a client's service traffic, to be decided
PRIORITY_SERVICE_SYN = 12         # its opening SYNs, cached apart
PRIORITY_SERVER_REPLY = 15        # a backup's service replies, unpinned
PRIORITY_SERVER_BYPASS = 20       # servers' own traffic is never rewritten
PRIORITY_ARP_RESPONDER = 30       # ARP for a failed primary, answered by us
PRIORITY_PROBE_REPLY = 40         # servers' answers to our health probes
PRIORITY_CONNECTION = 50          # one TCP connection pinned to one server

# Cookie layout: [ settings.cookie : 32 | service index : 16 | role : 16 ].
COOKIE_OURS_MASK = 0xffffffff00000000
COOKIE_SERVICE_MASK = 0xffffffffffff0000
COOKIE_EXACT_MASK = 0xffffffffffffffff
ROLE_SERVICE = 0x0000             # service-wide flows
ROLE_ARP = 0x0001                 # ARP responder for the primary
ROLE_PROBE = 0x0002               # health probe replies and probe ARP
ROLE_CONNECTION_BASE = 0x0100     # + server index: flows pinned to a server
# With COOKIE_OURS_MASK: selects our flows other than pins (roles < 0x100).
COOKIE_PIN_ROLE_MASK = 0x000000000000ff00
GLOBAL_SERVICE_INDEX = 0xffff     # flows that belong to no single service


def make_cookie(base: int, service_index: int, role: int) -> int:
    return (base << 32) | (service_index << 16) | role


def connection_role(server_index: int) -> int:
    return ROLE_CONNECTION_BASE + server_index


def server_index_of_cookie(cookie: int) -> typing.Optional[int]:
    """The server a per-connection flow is pinned to, or None."""
    role = cookie & 0xffff
    if role >= ROLE_CONNECTION_BASE:
        return role - ROLE_CONNECTION_BASE
    return None
