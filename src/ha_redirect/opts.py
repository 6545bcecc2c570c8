"""oslo.config options for ha_redirect, and their translation to the model.

Nothing is registered at import time: callers pass their own `ConfigOpts`
to `register_opts` (os-ken apps pass `os_ken.cfg.CONF`). The `[ha_redirect]`
group holds deployment settings and lists the services; each service has a
group `[service:NAME]` (as Cinder's `enabled_backends` does), registered on
demand by `load_policy_config`.

Every problem is reported as one `ConfigError` whose message names the group
and the option, e.g. ``[service:web] primary_mac: 'zz' is not a MAC address``.
The model checks the values, once, naming the field at fault; here a field
is mapped to its option, and what only a configuration can get wrong is
checked: missing or unknown options, unequal backup lists, unknown plugins.
"""

import dataclasses
import typing

from oslo_config import cfg
from oslo_config import types

from ha_redirect import config_files
from ha_redirect.config_files import ConfigError
from ha_redirect import model
from ha_redirect import plugins

GROUP = 'ha_redirect'
SERVICE_GROUP_PREFIX = 'service:'
SAMPLE_SERVICE_GROUP = SERVICE_GROUP_PREFIX + 'example'

_DEFAULTS = model.PolicySettings()


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """What `RedirectPolicy` needs, built once from the configuration."""
    settings: model.PolicySettings
    services: typing.Tuple[model.Service, ...]


def _switch_port():
    return types.Integer(min=1, max=model.SWITCH_PORT_MAX)


def _tcp_port():
    return types.Port(min=1, max=65535)


def _mac():
    return types.String(regex=model.MAC_PATTERN)


_OPT_CLASS_OF_TYPE = {str: cfg.StrOpt, int: cfg.IntOpt, float: cfg.FloatOpt,
                      bool: cfg.BoolOpt}
# Settings whose option is not the plain form of their field's type, range
# and default: (option class, what differs).
_SETTING_OPTION_FORMS = {
    'cookie': (cfg.StrOpt, {'default': hex(_DEFAULTS.cookie)}),
    'route_table': (cfg.IntOpt, {'min': 1, 'max': 253}),
    'probe_ip': (cfg.IPOpt, {'version': 4}),
    'probe_mac': (cfg.StrOpt, {'regex': model.MAC_PATTERN}),
    'probe_jitter': (cfg.FloatOpt, {'min': 0, 'max': 0.99}),
    'first_meter_id': (cfg.IntOpt, {
        'min': 1, 'max': model.METER_MAX - 1 - model.METER_PASSIVE}),
}
_SETTING_TYPES = {field.name: field.type
                  for field in dataclasses.fields(model.PolicySettings)}


def _setting_opt(name):
    """The option of a `PolicySettings` field: the model's default, help
    and bounds (checked at parse time)."""
    kwargs = {'default': getattr(_DEFAULTS, name),
              'help': model.SETTING_HELP[name]}
    bounds = model.SETTING_BOUNDS.get(name)
    if bounds is not None:
        kwargs.update(min=bounds.low, max=bounds.high)
    if name in _SETTING_OPTION_FORMS:
        opt_class, form = _SETTING_OPTION_FORMS[name]
    else:
        opt_class, form = _OPT_CLASS_OF_TYPE[_SETTING_TYPES[name]], {}
    return opt_class(name, **{**kwargs, **form})


# In the order the sample config shows them.
_POLICY_OPTS = [
    *map(_setting_opt, (
        'strategy', 'cookie', 'table', 'connection_table', 'base_priority',
        'connection_idle_timeout', 'fin_idle_timeout', 'failback',
        'failback_hold_down', 'first_group_id', 'first_ct_zone',
        'route_table', 'forward_non_service_traffic',
        'max_connections_per_service', 'packet_in_rate', 'first_meter_id')),
    cfg.ListOpt('services', default=[],
                help='Names of the services to keep available; each name '
                     'needs a group [service:NAME].'),
    cfg.StrOpt('control_socket', default='/run/ha_redirect/control.sock',
               help='Unix socket for operator requests (ha-redirect-ctl: '
                    'status, drain, undrain); mode 0600, so only the '
                    'controller\'s user can use it. Empty: no socket.'),
    cfg.StrOpt('switch_barriers', default='auto',
               choices=[('auto', 'none to a switch whose description says '
                         'it is Open vSwitch, which carries out each '
                         'connection\'s messages in the order sent; to any '
                         'other switch, as "always"'),
                        ('always', 'a barrier wherever the order of our '
                         'messages matters, e.g. between a new '
                         'connection\'s flows and the release of its first '
                         'packet')],
               help='OpenFlow barriers between messages whose order '
                    'matters.'),
    *map(_setting_opt, (
        'probe_ip', 'probe_mac', 'probe_interval', 'probe_timeout',
        'probe_fall', 'probe_rise', 'probe_jitter', 'passive_refusals',
        'passive_window', 'passive_aborts', 'passive_abort_window',
        'redispatch')),
]

_SERVICE_OPTS = [
    cfg.StrOpt('datapath_id', required=True,
               help='Switch that carries the service: hex with 0x prefix, '
                    'decimal, or 16 hex digits as ovs-ofctl prints it.'),
    cfg.ListOpt('tcp_ports', item_type=_tcp_port(), required=True,
                help='TCP ports of the service (e.g. 5001 for iperf).'),
    cfg.IPOpt('primary_ip', version=4, required=True,
              help='IPv4 address clients use to reach the service.'),
    cfg.StrOpt('primary_mac', regex=model.MAC_PATTERN, required=True,
               help='MAC address of the primary server.'),
    cfg.IntOpt('primary_port', min=1, max=model.SWITCH_PORT_MAX, required=True,
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
    files = config_files.ConfigFiles(conf)
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
    _check_unknown(conf, files, only_ours=True)

    settings = _build_settings(conf, files)
    # Entry points are scanned once, not once per service (1,000 services
    # took 30 s to check when each service scanned them).
    known_monitors = plugins.monitor_names()
    services = tuple(_build_service(conf, files, name, known_monitors)
                     for name in names)
    return PolicyConfig(settings=settings, services=services)


def validate_config_files(conf):
    """Reject any section or key in the config files that no option reads.

    Call after every option is registered (after `load_policy_config` and
    after importing the apps). os-ken's own options live in [DEFAULT].
    """
    _check_unknown(conf, config_files.ConfigFiles(conf), only_ours=False)


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


def _check_unknown(conf, files, only_ours):
    """ConfigError for the first section or key no option reads (with
    `only_ours`: in our groups only)."""
    for section, values in files.sections.items():
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


def _get(conf, files, group, name):
    try:
        return conf[group][name]
    except (cfg.ConfigSourceValueError, ValueError):
        key = SERVICE_GROUP_PREFIX if group != GROUP else GROUP
        problem = config_files.rejection(_OPTS_BY_GROUP[key][name],
                                         files.raw(group, name))
        raise ConfigError(f'[{group}] {name}: {problem}') from None


# [ha_redirect] options the app reads itself (not PolicySettings fields).
_APP_ONLY_OPTS = ('services', 'control_socket', 'switch_barriers')


def _build_settings(conf, files):
    group = conf[GROUP]
    values = {opt.dest: _get(conf, files, GROUP, opt.dest)
              for opt in _POLICY_OPTS if opt.dest not in _APP_ONLY_OPTS}
    # Not the policy's, but checked with the rest (one line if wrong).
    _get(conf, files, GROUP, 'switch_barriers')
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
    except model.ValidationError as exc:
        # The settings' fields are the [ha_redirect] options.
        raise ConfigError(f'[{GROUP}] {exc.describe()}') from None


# The service option that sets a model field, where their names differ.
_SERVICE_OPTION_OF_FIELD = {
    'primary.ip': 'primary_ip',
    'primary.mac': 'primary_mac',
    'primary.port': 'primary_port',
    'backups': 'backup_ips',
    'backups.ip': 'backup_ips',
    'backups.mac': 'backup_macs',
    'backups.port': 'backup_ports',
}


def _service_option(field):
    return _SERVICE_OPTION_OF_FIELD.get(field, field)


def _build_service(conf, files, name, known_monitors):
    """The model checks the service; here: what only the configuration
    can get wrong (missing options, unequal backup lists, unknown
    monitors), and the model's errors in the options' names."""
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

    try:
        service = model.Service(
            name=name,
            datapath_id=dpid,
            tcp_ports=values['tcp_ports'],
            primary=_endpoint('primary', values['primary_ip'],
                              values['primary_mac'], values['primary_port']),
            backups=[_endpoint('backups', *backup) for backup in zip(
                values['backup_ips'], values['backup_macs'],
                values['backup_ports'])],
            client_ports=values['client_ports'],
            monitors=values['monitors'])
    except model.ValidationError as exc:
        raise ConfigError(
            f'[{group}] {exc.describe(_service_option)}') from None
    _check_monitors(conf, group, service.monitors, known_monitors)
    return service


def _endpoint(field, ip, mac, port):
    """A model Endpoint whose errors name it as the Service's `field`."""
    try:
        return model.Endpoint(str(ip), mac, port)
    except model.ValidationError as exc:
        raise type(exc).for_field(f'{field}.{exc.field}',
                                  exc.problem) from None


def _check_monitors(conf, group, monitors, available):
    for monitor in monitors:
        if monitor not in available:
            raise ConfigError(
                f'[{group}] monitors: {monitor!r} is not a known monitor '
                f'(available: {", ".join(available) or "none"})')
    if 'tcp_probe' in monitors:
        for option in ('probe_ip', 'probe_mac'):
            if conf[GROUP][option] is None:
                raise ConfigError(f'[{GROUP}] {option}: required by '
                                  f'[{group}] monitors = tcp_probe')
