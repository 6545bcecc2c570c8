"""Deployment settings, and the flow layout they place: meter ids,
priorities and cookies."""

import dataclasses
import typing

from ha_redirect.model.validation import normalize_ipv4
from ha_redirect.model.validation import normalize_mac
from ha_redirect.model.validation import SettingsError

__all__ = [
    'Bounds', 'SETTING_BOUNDS', 'SETTING_HELP', 'PolicySettings',
    'ALL_GROUPS', 'ALL_TABLES', 'METER_MAX', 'METER_CLIENTS',
    'METER_MONITORS', 'METER_PORTS', 'METER_PASSIVE', 'last_shared_meter_id',
    'port_meter_id',
    'PRIORITY_TABLE_MISS', 'PRIORITY_SERVICE', 'PRIORITY_SERVICE_SYN',
    'PRIORITY_SERVER_REPLY', 'PRIORITY_SERVER_BYPASS',
    'PRIORITY_ARP_RESPONDER', 'PRIORITY_PROBE_REPLY', 'PRIORITY_CONNECTION',
    'PRIORITY_REDISPATCHED', 'PRIORITY_PASSIVE_COPY',
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


def _setting(default, help, bounds=None):
    """A `PolicySettings` field: its default, what it means (the help of
    its config option, `ha_redirect.opts`) and, for a number, its range
    (the field checks it, the option declares it)."""
    return dataclasses.field(default=default,
                             metadata={'help': help, 'bounds': bounds})


@dataclasses.dataclass(frozen=True)
class PolicySettings:
    """Deployment choices that are not per service (the `[ha_redirect]` group).

    `cookie` fills the upper 32 bits of every flow cookie we install; the
    lower bits say which service and which server a flow belongs to, so
    deletes can be scoped to exactly the flows they concern. What each
    field does is its help (`SETTING_HELP`), the config option's too.
    """
    strategy: str = _setting(
        'reactive',
        'How redirect flows are installed: the name of a plugin in the '
        '"ha_redirect.strategies" entry-point namespace. Built in: '
        '"reactive" (the paper\'s Algorithm 1: a new connection goes to the '
        'controller, which installs its rewrite flows), "proactive" (flows '
        'installed in advance; the switch pins connections with OVS learn), '
        '"fast_failover" (an OpenFlow fast-failover group: the switch fails '
        'over by itself; stateless) and "stateful" (the group plus OVS '
        'conntrack: switch-local failover, lossless failback).')
    cookie: int = _setting(
        0x48415244,
        'Upper 32 bits of the cookie of every flow ha_redirect installs (hex '
        'or decimal, non-zero). Flows are deleted by this cookie only, so '
        'other controllers\' flows on the same switch are left alone.')
    table: int = _setting(
        0, 'OpenFlow table that receives the service traffic.',
        _between(0, 253))
    connection_table: int = _setting(
        1, 'OpenFlow table for per-connection flows; must differ from '
        '"table".', _between(0, 253))
    base_priority: int = _setting(
        1000, 'Lowest priority of our flows; ours use up to base_priority + '
        '100.', _between(0, 0xffff - 100))
    # OpenFlow carries timeouts in 16 bits.
    connection_idle_timeout: int = _setting(
        30, 'Seconds an idle per-connection flow stays installed.',
        _between(1, 0xffff, ' seconds'))
    fin_idle_timeout: int = _setting(
        2, 'Seconds a learned per-connection flow stays after the switch '
        'sees a FIN or RST (OVS learn fin_idle_timeout; 0: only the idle '
        'timeout applies).', _between(0, 0xffff, ' seconds'))
    failback: bool = _setting(
        True,
        'When the primary returns, send new connections back to it '
        '(established ones keep their server). Without failback a healthy '
        'backup keeps the service until it fails itself.')
    failback_hold_down: float = _setting(
        0.0,
        'Seconds a recovered server must stay healthy before it takes new '
        'connections again: a link comes up before its service is ready. '
        '0: at once.', _between(0, 86400, ' seconds'))
    forward_non_service_traffic: bool = _setting(
        True,
        'Forward traffic that belongs to no service with the NORMAL action '
        '(the switch acts as a learning switch). Disable when another app '
        'handles that traffic.')
    first_group_id: int = _setting(
        0x48520000,
        'OpenFlow group id of the first service\'s fast-failover group '
        '(fast_failover, stateful); the next services use the following '
        'ids.', Bounds(0, 0xffffff00 - 0xffff, 'must leave room for a group '
                       'per service below 0xffffff00'))
    first_ct_zone: int = _setting(
        0x4852,
        'Conntrack zone of the first service under the "stateful" strategy; '
        'the next services use the following zones. Use zones nothing else '
        'on the switch uses: the bridges of a userspace datapath share one '
        'connection table.', _between(1, 0xffff))
    route_table: typing.Optional[int] = _setting(
        None,
        'OpenFlow table where "stateful" sends committed connections to '
        'their server; unset: connection_table + 1.')
    # In-band TCP health probes (the `tcp_probe` monitor).
    probe_ip: typing.Optional[str] = _setting(
        None,
        'Source address of the tcp_probe monitor\'s health probes: an '
        'unused address in the servers\' subnet that no client uses. '
        'Required when a service uses tcp_probe.')
    probe_mac: typing.Optional[str] = _setting(
        None,
        'MAC address of the health probes (answered by the controller when '
        'servers ARP for probe_ip).')
    probe_interval: float = _setting(
        0.1, 'Seconds between two probes of one server.',
        _between(0.001, 3600, ' seconds'))
    # 1 s, not less: under load a probe through the userspace datapath and
    # the controller was seen to take over 300 ms (false mark-downs).
    probe_timeout: float = _setting(
        1.0, 'Seconds to wait for a probe\'s SYN-ACK before it counts as '
        'failed.', _between(0.001, 3600, ' seconds'))
    probe_fall: int = _setting(
        3, 'Failed probes in a row that mark a server down.',
        Bounds(1, None, 'must be at least 1'))
    probe_rise: int = _setting(
        2, 'Good probes in a row that mark a server up again.',
        Bounds(1, None, 'must be at least 1'))
    probe_jitter: float = _setting(
        0.1, 'Random spread of the probe interval, as a fraction, so '
        'servers are not probed in lockstep.')
    passive_refusals: int = _setting(
        3, 'tcp_probe\'s passive check, as HAProxy\'s "observe layer4": '
        'this many connections refused by a server (its RST answering a '
        'SYN, copied to the controller by the switch) within '
        'passive_window mark it down at once; probes still decide when it '
        'comes back. 0: off.', Bounds(0, None, 'must be 0 (off) or more'))
    passive_window: float = _setting(
        1.0, 'Seconds over which passive_refusals are counted.',
        _between(0.001, 3600, ' seconds'))
    passive_aborts: int = _setting(
        0, 'tcp_probe\'s passive check: this many established connections '
        'reset by one server (its RST carrying its own sequence number, as '
        'a dying process\'s kernel sends for each connection with data '
        'unread) within passive_abort_window mark it down at once: a crash '
        'resets its connections together, often before any client\'s new '
        'connection reaches it to be refused. Probes still decide when it '
        'comes back. Off (0) by default: healthy servers that close '
        'connections with data unread (iperf3 at the end of each test) '
        'were seen to reset 3 within 20 ms. 0: off, as is all of the '
        'passive check when passive_refusals is 0.',
        Bounds(0, None, 'must be 0 (off) or more'))
    passive_abort_window: float = _setting(
        0.02, 'Seconds over which passive_aborts are counted: short, so '
        'that only resets together, not an application\'s occasional ones, '
        'add up.', _between(0.001, 3600, ' seconds'))
    redispatch: bool = _setting(
        True, 'As HAProxy\'s "option redispatch": a connection a server '
        'refuses is sent to the next eligible server instead of failing. '
        'Where tcp_probe\'s passive check is on: servers\' RSTs of the '
        'service that carry an ACK (refusals, resets) then pass through the '
        'controller. Under reactive the '
        'controller has each connection\'s SYN; under the other strategies '
        'the switch copies each client\'s SYN to it as well (one PacketIn '
        'per new connection, off its path, within packet_in_rate: a SYN '
        'whose copy was dropped is not rescued).')
    max_connections_per_service: int = _setting(
        10000,
        'Connections the controller tracks per service (reactive pins them '
        'one by one). At the cap, new connections are still forwarded to '
        'the active server, but unpinned: each of their packets passes '
        'through the controller until tracked connections expire.',
        _between(1, 10_000_000))
    packet_in_rate: int = _setting(
        1000,
        'PacketIns per second that our flows may send to the controller, '
        'enforced by OpenFlow meters (packets above it are dropped in the '
        'switch): one meter for clients\' packets (reactive\'s new '
        'connections, ARP for a failed primary), one for health probes and '
        'one for servers\' RSTs copied for the passive check, so a flood '
        'cannot starve the others. Used where the switch has meters; '
        '0: no limit.', Bounds(0, 10_000_000, 'must be between 0 (no limit) '
                               'and 10000000 per second'))
    first_meter_id: int = _setting(
        72,
        'OpenFlow meter id for clients\' PacketIns; the next id is the '
        'health probes\', the one after the servers\' RSTs copied for the '
        'passive check, then one per switch port (first_meter_id + 2 + '
        'port): a client port\'s PacketIns, or the bare RSTs held from a '
        'server port for redispatch. Use ids no other app on the switch '
        'uses.')

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
        if not 1 <= self.first_meter_id < METER_MAX - METER_PASSIVE:
            raise error('first_meter_id', 'must be between 1 and '
                        f'{METER_MAX - 1 - METER_PASSIVE}')

    @property
    def stateful_route_table(self) -> int:
        """The table the `stateful` strategy routes connections from."""
        if self.route_table is not None:
            return self.route_table
        return self.connection_table + 1


# Each setting's meaning, and the numeric settings' ranges: `PolicySettings`
# checks the ranges and the config options (`ha_redirect.opts`) declare
# both, so they agree.
SETTING_HELP = {field.name: field.metadata['help']
                for field in dataclasses.fields(PolicySettings)}
SETTING_BOUNDS = {field.name: field.metadata['bounds']
                  for field in dataclasses.fields(PolicySettings)
                  if field.metadata['bounds'] is not None}


ALL_GROUPS = 0xfffffffc            # OFPG_ALL: a group delete that spans all
ALL_TABLES = 0xff                 # OFPTT_ALL: a delete that spans every table
METER_MAX = 0xffff0000            # OFPM_MAX
# Our meters, as offsets from PolicySettings.first_meter_id.
METER_CLIENTS = 0                 # clients' packets the controller decides
METER_MONITORS = 1                # monitors' packets: probe replies, ARP
METER_PORTS = 2                   # + switch port: one client port's packets
# Servers' RSTs copied for the passive check. Port 0 does not exist, so its
# would-be meter is free; apart from the probes', so that a flood of resets
# cannot starve the probe replies and mark healthy servers down.
METER_PASSIVE = METER_PORTS + 0


def last_shared_meter_id(settings: PolicySettings) -> int:
    """A switch whose meter ids reach this one can carry our meters."""
    return settings.first_meter_id + METER_PASSIVE


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
PRIORITY_REDISPATCHED = 51        # one the controller moved after a refusal,
#                                   above the pin the switch learned for it
PRIORITY_PASSIVE_COPY = 60        # a server's RSTs: copied, then forwarded

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
