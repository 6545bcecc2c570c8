"""oslo.config options for ha_redirect, and their translation to the model.

Nothing is registered at import time: callers pass their own `ConfigOpts`
to `register_opts` (os-ken apps pass `os_ken.cfg.CONF`). The `[ha_redirect]`
group holds deployment settings and lists the services; each service has a
group `[service:NAME]` (as Cinder's `enabled_backends` does), registered on
demand by `load_policy_config`.

Every problem is reported as one `ConfigError` whose message names the group
and the option, e.g. ``[service:web] primary_mac: 'zz' is not a MAC address``.
"""

import dataclasses
import glob
import os
import typing

from oslo_config import cfg
from oslo_config import types

from ha_redirect import model
from ha_redirect import plugins

GROUP = 'ha_redirect'
SERVICE_GROUP_PREFIX = 'service:'
SAMPLE_SERVICE_GROUP = SERVICE_GROUP_PREFIX + 'example'

_MAC_REGEX = r'^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$'
_SWITCH_PORT_MAX = 0xffffff00
_DEFAULTS = model.PolicySettings()


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line."""


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """What `RedirectPolicy` needs, built once from the configuration."""
    settings: model.PolicySettings
    services: typing.Tuple[model.Service, ...]


def _switch_port():
    return types.Integer(min=1, max=_SWITCH_PORT_MAX)


def _tcp_port():
    return types.Port(min=1, max=65535)


def _mac():
    return types.String(regex=_MAC_REGEX)


_POLICY_OPTS = [
    cfg.StrOpt('strategy', default=_DEFAULTS.strategy,
               help='How redirect flows are installed: the name of a plugin '
                    'in the "ha_redirect.strategies" entry-point namespace. '
                    'Built in: "reactive" (the paper\'s Algorithm 1: a new '
                    'connection goes to the controller, which installs its '
                    'rewrite flows), "proactive" (flows installed in '
                    'advance; the switch pins connections with OVS learn), '
                    '"fast_failover" (an OpenFlow fast-failover group: the '
                    'switch fails over by itself; stateless) and "stateful" '
                    '(the group plus OVS conntrack: switch-local failover, '
                    'lossless failback).'),
    cfg.StrOpt('cookie', default=hex(_DEFAULTS.cookie),
               help='Upper 32 bits of the cookie of every flow ha_redirect '
                    'installs (hex or decimal, non-zero). Flows are deleted '
                    'by this cookie only, so other controllers\' flows on '
                    'the same switch are left alone.'),
    cfg.IntOpt('table', default=_DEFAULTS.table, min=0, max=253,
               help='OpenFlow table that receives the service traffic.'),
    cfg.IntOpt('connection_table', default=_DEFAULTS.connection_table,
               min=0, max=253,
               help='OpenFlow table for per-connection flows; must differ '
                    'from "table".'),
    cfg.IntOpt('base_priority', default=_DEFAULTS.base_priority,
               min=0, max=0xffff - 100,
               help='Lowest priority of our flows; ours use up to '
                    'base_priority + 100.'),
    cfg.IntOpt('connection_idle_timeout',
               default=_DEFAULTS.connection_idle_timeout, min=1,
               max=0xffff,
               help='Seconds an idle per-connection flow stays installed.'),
    cfg.IntOpt('fin_idle_timeout', default=_DEFAULTS.fin_idle_timeout,
               min=0, max=0xffff,
               help='Seconds a learned per-connection flow stays after the '
                    'switch sees a FIN or RST (OVS learn fin_idle_timeout; '
                    '0: only the idle timeout applies).'),
    cfg.BoolOpt('failback', default=_DEFAULTS.failback,
                help='When the primary returns, send new connections back to '
                     'it (established ones keep their server). Without '
                     'failback a healthy backup keeps the service until it '
                     'fails itself.'),
    cfg.FloatOpt('failback_hold_down',
                 default=_DEFAULTS.failback_hold_down, min=0, max=86400,
                 help='Seconds a recovered server must stay healthy before '
                      'it takes new connections again: a link comes up '
                      'before its service is ready. 0: at once.'),
    cfg.IntOpt('first_group_id', default=_DEFAULTS.first_group_id, min=0,
               max=0xffffff00 - 0xffff,
               help='OpenFlow group id of the first service\'s '
                    'fast-failover group (fast_failover, stateful); the '
                    'next services use the following ids.'),
    cfg.IntOpt('first_ct_zone', default=_DEFAULTS.first_ct_zone, min=1,
               max=0xffff,
               help='Conntrack zone of the first service under the '
                    '"stateful" strategy; the next services use the '
                    'following zones. Use zones nothing else on the switch '
                    'uses: the bridges of a userspace datapath share one '
                    'connection table.'),
    cfg.IntOpt('route_table', min=1, max=253,
               help='OpenFlow table where "stateful" sends committed '
                    'connections to their server; unset: connection_table '
                    '+ 1.'),
    cfg.BoolOpt('forward_non_service_traffic',
                default=_DEFAULTS.forward_non_service_traffic,
                help='Forward traffic that belongs to no service with the '
                     'NORMAL action (the switch acts as a learning switch). '
                     'Disable when another app handles that traffic.'),
    cfg.IntOpt('max_connections_per_service',
               default=_DEFAULTS.max_connections_per_service, min=1,
               max=10_000_000,
               help='Connections the controller tracks per service '
                    '(reactive pins them one by one). At the cap, new '
                    'connections are still forwarded to the active server, '
                    'but unpinned: each of their packets passes through '
                    'the controller until tracked connections expire.'),
    cfg.IntOpt('packet_in_rate', default=_DEFAULTS.packet_in_rate, min=0,
               max=10_000_000,
               help='PacketIns per second that our flows may send to the '
                    'controller, enforced by OpenFlow meters (packets '
                    'above it are dropped in the switch): one meter for '
                    'clients\' packets (reactive\'s new connections, ARP '
                    'for a failed primary) and one for health probes, so a '
                    'flood cannot starve them. Used where the switch has '
                    'meters; 0: no limit.'),
    cfg.IntOpt('first_meter_id', default=_DEFAULTS.first_meter_id, min=1,
               max=model.METER_MAX - 2,
               help='OpenFlow meter id for clients\' PacketIns; the next '
                    'id is the health probes\'. Use ids no other app on '
                    'the switch uses.'),
    cfg.ListOpt('services', default=[],
                help='Names of the services to keep available; each name '
                     'needs a group [service:NAME].'),
    cfg.StrOpt('control_socket', default='/run/ha_redirect/control.sock',
               help='Unix socket for operator requests (ha-redirect-ctl: '
                    'status, drain, undrain); mode 0600, so only the '
                    'controller\'s user can use it. Empty: no socket.'),
    cfg.IPOpt('probe_ip', version=4,
              help='Source address of the tcp_probe monitor\'s health '
                   'probes: an unused address in the servers\' subnet that '
                   'no client uses. Required when a service uses tcp_probe.'),
    cfg.StrOpt('probe_mac', regex=_MAC_REGEX,
               help='MAC address of the health probes (answered by the '
                    'controller when servers ARP for probe_ip).'),
    cfg.FloatOpt('probe_interval', default=_DEFAULTS.probe_interval,
                 min=0.001,
                 help='Seconds between two probes of one server.'),
    cfg.FloatOpt('probe_timeout', default=_DEFAULTS.probe_timeout,
                 min=0.001,
                 help='Seconds to wait for a probe\'s SYN-ACK before it '
                      'counts as failed.'),
    cfg.IntOpt('probe_fall', default=_DEFAULTS.probe_fall, min=1,
               help='Failed probes in a row that mark a server down.'),
    cfg.IntOpt('probe_rise', default=_DEFAULTS.probe_rise, min=1,
               help='Good probes in a row that mark a server up again.'),
    cfg.FloatOpt('probe_jitter', default=_DEFAULTS.probe_jitter, min=0,
                 max=0.99,
                 help='Random spread of the probe interval, as a fraction, '
                      'so servers are not probed in lockstep.'),
]

_SERVICE_OPTS = [
    cfg.StrOpt('datapath_id', required=True,
               help='Switch that carries the service: hex with 0x prefix, '
                    'decimal, or 16 hex digits as ovs-ofctl prints it.'),
    cfg.ListOpt('tcp_ports', item_type=_tcp_port(), required=True,
                help='TCP ports of the service (e.g. 5001 for iperf).'),
    cfg.IPOpt('primary_ip', version=4, required=True,
              help='IPv4 address clients use to reach the service.'),
    cfg.StrOpt('primary_mac', regex=_MAC_REGEX, required=True,
               help='MAC address of the primary server.'),
    cfg.IntOpt('primary_port', min=1, max=_SWITCH_PORT_MAX, required=True,
               help='Switch port of the primary server.'),
    cfg.ListOpt('backup_ips', item_type=types.IPAddress(version=4),
                required=True,
                help='IPv4 addresses of the backup servers, in failover '
                     'order.'),
    cfg.ListOpt('backup_macs', item_type=_mac(), required=True,
                help='MAC addresses of the backups, in the order of '
                     'backup_ips.'),
    cfg.ListOpt('backup_ports', item_type=_switch_port(), required=True,
                help='Switch ports of the backups, in the order of '
                     'backup_ips.'),
    cfg.ListOpt('client_ports', item_type=_switch_port(), default=[],
                help='Switch ports clients arrive on; empty means any port '
                     'that is not a server\'s.'),
    cfg.ListOpt('monitors', default=['port_status'],
                help='Health monitors of the service, by name in the '
                     '"ha_redirect.monitors" entry-point namespace; a server '
                     'takes new connections while all of them say it is '
                     'healthy. Built in: "port_status" (the switch port is '
                     'up: the paper\'s trigger) and "tcp_probe" (in-band '
                     'TCP SYN probes from the controller: catches a dead '
                     'service on a live link).'),
]

COORDINATION_GROUP = 'coordination'

_COORDINATION_OPTS = [
    cfg.StrOpt('backend_url', default='',
               help='Several controllers for the same switches: the tooz '
                    'URL of the coordination server that elects which one '
                    'is MASTER, e.g. redis://127.0.0.1:6379. Only Redis is '
                    'supported (it also keeps the OpenFlow generation id '
                    'counter). Empty: this is the only controller.'),
    cfg.IntOpt('lease', default=3, min=1, max=60,
               help='Seconds: the elected controller renews its leadership '
                    'every lease/6 s; one that could not renew for about '
                    '0.85 x lease stops writing to the switches, before '
                    'another can be elected (the lock expires after lease '
                    's). A SLAVE takes over at most about lease + lease/6 '
                    's after the master died.'),
    cfg.StrOpt('member_id', default='',
               help='This controller\'s name in the coordination group '
                    '(default: hostname:pid).'),
    cfg.StrOpt('group', default='ha_redirect',
               help='The coordination group: controllers that share the '
                    'same switches use the same group.'),
]

METRICS_GROUP = 'metrics'

_METRICS_OPTS = [
    cfg.PortOpt('port', default=0,
                help='Serve Prometheus metrics over HTTP on this TCP port '
                     '(/metrics); 0, the default, serves none. Off by '
                     'default: several controllers may share a host (see '
                     '[coordination]) and would contend for one port, and '
                     'the metrics name the services and their servers.'),
    cfg.HostAddressOpt('host', default='127.0.0.1',
                       help='Address the metrics endpoint listens on: '
                            'loopback by default, so only local scrapers '
                            '(or a local Prometheus agent) see them.'),
]

_OPTS_BY_GROUP = {
    GROUP: {opt.dest: opt for opt in _POLICY_OPTS},
    SERVICE_GROUP_PREFIX: {opt.dest: opt for opt in _SERVICE_OPTS},
    COORDINATION_GROUP: {opt.dest: opt for opt in _COORDINATION_OPTS},
    METRICS_GROUP: {opt.dest: opt for opt in _METRICS_OPTS},
}


def register_opts(conf):
    """Register the `[ha_redirect]`, `[coordination]` and `[metrics]`
    options on `conf` (safe to repeat)."""
    conf.register_opts(_POLICY_OPTS, group=GROUP)
    conf.register_opts(_COORDINATION_OPTS, group=COORDINATION_GROUP)
    conf.register_opts(_METRICS_OPTS, group=METRICS_GROUP)


def list_opts():
    """Options for oslo-config-generator.

    The per-service options are shown under `[service:example]`: a service
    group's name is the service's name, listed in `[ha_redirect] services`.
    """
    return [
        (GROUP, list(_POLICY_OPTS)),
        (COORDINATION_GROUP, list(_COORDINATION_OPTS)),
        (METRICS_GROUP, list(_METRICS_OPTS)),
        (SAMPLE_SERVICE_GROUP, list(_SERVICE_OPTS)),
    ]


def service_group(name):
    return SERVICE_GROUP_PREFIX + name


def load_policy_config(conf):
    """Build a `PolicyConfig` from `conf`, or raise one `ConfigError`.

    Registers `[ha_redirect]` and the `[service:NAME]` group of each listed
    service, rejects unknown keys in those groups and unlisted service
    groups, then converts the values into model objects.
    """
    register_opts(conf)
    files = _ConfigFiles(conf)
    names = _get(conf, files, GROUP, 'services')
    if not names:
        raise ConfigError(f'[{GROUP}] services: no services listed; name at '
                          'least one and describe it in [service:NAME]')
    if not all(names):
        raise ConfigError(f'[{GROUP}] services: a service name is empty')
    if len(set(names)) != len(names):
        raise ConfigError(f'[{GROUP}] services: a service is listed twice')
    for name in names:
        conf.register_opts(_SERVICE_OPTS, group=service_group(name))
    files.check_unknown(conf, only_ours=True)

    settings = _build_settings(conf, files)
    services = tuple(_build_service(conf, files, name) for name in names)
    return PolicyConfig(settings=settings, services=services)


def validate_config_files(conf):
    """Reject any section or key in the config files that no option reads.

    Call after every option is registered (after `load_policy_config` and
    after importing the apps). os-ken's own options live in [DEFAULT].
    """
    _ConfigFiles(conf).check_unknown(conf, only_ours=False)


def parse_datapath_id(value):
    """0x-prefixed hex, decimal, or 16 hex digits (as ovs-ofctl shows)."""
    text = str(value).strip()
    try:
        dpid = int(text, 0)
    except ValueError:
        dpid = None
        if len(text) == 16:
            try:
                dpid = int(text, 16)
            except ValueError:
                pass
    if dpid is None or not 0 <= dpid < 1 << 64:
        raise ValueError(f'{value!r} is not a datapath id (0x-prefixed hex, '
                         'decimal, or 16 hex digits)')
    return dpid


class _ConfigFiles:
    """The raw sections of the config files `conf` read, for diagnostics.

    oslo.config ignores keys it has no option for; we read the files again
    to find such keys, and to quote the raw text of a value it rejected.
    """

    def __init__(self, conf):
        self.sections = {}
        for path in self._paths(conf):
            parsed = {}
            try:
                cfg.ConfigParser(path, parsed).parse()
            except (OSError, cfg.iniparser.ParseError):
                continue  # oslo.config itself reports unreadable files
            for section, values in parsed.items():
                merged = self.sections.setdefault(section, {})
                for key, vals in values.items():
                    merged[key] = vals[-1]

    @staticmethod
    def _paths(conf):
        paths = []
        try:
            paths.extend(conf.config_file or [])
            dirs = conf.config_dir or []
        except cfg.NoSuchOptError:
            return paths  # ConfigOpts never called: no files
        if isinstance(dirs, str):
            dirs = [dirs]
        for directory in dirs:
            paths.extend(sorted(glob.glob(os.path.join(directory, '*.conf'))))
        return paths

    def raw(self, group, name):
        return self.sections.get(group, {}).get(name)

    def check_unknown(self, conf, only_ours):
        for section, values in self.sections.items():
            ours = (section in (GROUP, COORDINATION_GROUP, METRICS_GROUP) or
                    section.startswith(SERVICE_GROUP_PREFIX))
            if only_ours and not ours:
                continue
            if section == 'DEFAULT':
                known = conf
            elif section in conf:
                known = conf[section]
            elif section.startswith(SERVICE_GROUP_PREFIX):
                raise ConfigError(
                    f'[{section}]: service '
                    f'{section[len(SERVICE_GROUP_PREFIX):]!r} is not listed '
                    f'in [{GROUP}] services')
            else:
                raise ConfigError(f'[{section}]: unknown section')
            for key in values:
                if key not in known:
                    raise ConfigError(f'[{section}] {key}: unknown option')


def _describe(opt):
    kind = _kind(opt.type)
    if isinstance(opt.type, types.List):
        kind = _kind(opt.type.item_type)
    return kind


def _kind(type_):
    if isinstance(type_, types.IPAddress):
        return 'an IPv4 address'
    if isinstance(type_, types.String) and type_.regex is not None:
        return 'a MAC address'
    if isinstance(type_, types.Port):
        return 'a TCP port (1-65535)'
    if isinstance(type_, types.Integer):
        if type_.max == _SWITCH_PORT_MAX:
            return f'a switch port number (1-{_SWITCH_PORT_MAX})'
        if type_.max is None:
            return f'an integer of at least {type_.min}'
        return f'an integer from {type_.min} to {type_.max}'
    if isinstance(type_, types.Boolean):
        return 'true or false'
    return 'valid'


def _bad_value(opt, raw):
    """The offending text: the bad item of a list, else the whole value."""
    if raw is not None and isinstance(opt.type, types.List):
        for item in raw.split(','):
            item = item.strip()
            try:
                opt.type.item_type(item)
            except ValueError:
                return item
    return raw


def _get(conf, files, group, name):
    try:
        return conf[group][name]
    except (cfg.ConfigSourceValueError, ValueError):
        key = SERVICE_GROUP_PREFIX if group != GROUP else GROUP
        opt = _OPTS_BY_GROUP[key][name]
        bad = _bad_value(opt, files.raw(group, name))
        raise ConfigError(f'[{group}] {name}: {bad!r} is not '
                          f'{_describe(opt)}') from None


def _build_settings(conf, files):
    group = conf[GROUP]
    values = {opt.dest: _get(conf, files, GROUP, opt.dest)
              for opt in _POLICY_OPTS
              if opt.dest not in ('services', 'control_socket')}
    try:
        values['cookie'] = int(str(values['cookie']).strip(), 0)
    except ValueError:
        raise ConfigError(f'[{GROUP}] cookie: {group.cookie!r} is not an '
                          'integer (hex with 0x prefix, or decimal)') from None
    available = plugins.strategy_names()
    if values['strategy'] not in available:
        raise ConfigError(
            f'[{GROUP}] strategy: {values["strategy"]!r} is not a known '
            f'strategy (available: {", ".join(available) or "none"})')
    try:
        return model.PolicySettings(**values)
    except model.ServiceError as exc:
        raise ConfigError(f'[{GROUP}] {exc}') from None


def _build_service(conf, files, name):
    group = service_group(name)
    values = {}
    for opt in _SERVICE_OPTS:
        value = _get(conf, files, group, opt.dest)
        if opt.required and value in (None, []):
            raise ConfigError(f'[{group}] {opt.dest}: required option is '
                              'missing')
        values[opt.dest] = value

    try:
        dpid = parse_datapath_id(values['datapath_id'])
    except ValueError as exc:
        raise ConfigError(f'[{group}] datapath_id: {exc}') from None

    backups = len(values['backup_ips'])
    for key in ('backup_macs', 'backup_ports'):
        if len(values[key]) != backups:
            raise ConfigError(
                f'[{group}] {key}: has {len(values[key])} entries but '
                f'backup_ips has {backups}; list one per backup, in order')

    _check_distinct(group, 'tcp_ports', values['tcp_ports'], 'TCP port')
    primary = {'ip': values['primary_ip'],
               'mac': values['primary_mac'].lower(),
               'port': values['primary_port']}
    backup = {'ip': [str(ip) for ip in values['backup_ips']],
              'mac': [mac.lower() for mac in values['backup_macs']],
              'port': values['backup_ports']}
    for attr in ('ip', 'mac', 'port'):
        option = f'backup_{attr}s'
        if primary[attr] in backup[attr]:
            raise ConfigError(f'[{group}] {option}: {primary[attr]} is also '
                              f'primary_{attr}')
        _check_distinct(group, option, backup[attr], attr)
    _check_distinct(group, 'client_ports', values['client_ports'], 'port')
    _check_distinct(group, 'monitors', values['monitors'], 'monitor')
    available = plugins.monitor_names()
    for monitor in values['monitors']:
        if monitor not in available:
            raise ConfigError(
                f'[{group}] monitors: {monitor!r} is not a known monitor '
                f'(available: {", ".join(available) or "none"})')
    if 'tcp_probe' in values['monitors']:
        for option in ('probe_ip', 'probe_mac'):
            if conf[GROUP][option] is None:
                raise ConfigError(f'[{GROUP}] {option}: required by '
                                  f'[{group}] monitors = tcp_probe')
    for port in values['client_ports']:
        if port == primary['port'] or port in backup['port']:
            raise ConfigError(f'[{group}] client_ports: port {port} is also '
                              'a server port')

    try:
        return model.Service(
            name=name,
            datapath_id=dpid,
            tcp_ports=tuple(values['tcp_ports']),
            primary=model.Endpoint(**primary),
            backups=tuple(model.Endpoint(ip, mac, port) for ip, mac, port
                          in zip(backup['ip'], backup['mac'],
                                 backup['port'])),
            client_ports=tuple(values['client_ports']),
            monitors=tuple(values['monitors']))
    except model.ServiceError as exc:
        message = str(exc)
        prefix = f'service {name!r}: '
        if message.startswith(prefix):
            message = message[len(prefix):]
        raise ConfigError(f'[{group}] {message}') from None


def _check_distinct(group, option, values, what):
    seen = set()
    for value in values:
        if value in seen:
            raise ConfigError(f'[{group}] {option}: {what} {value} is listed '
                              'twice')
        seen.add(value)
