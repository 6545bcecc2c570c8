"""Run os-ken apps in this process, owning configuration and shutdown.

os-ken 4 no longer ships a launcher, and its native hub runs apps in
threads that cannot be killed. So the launcher here:

1. parses the command line and config files into `os_ken.cfg.CONF`
   (`--version` prints the package's version and exits 0);
2. validates everything (our policy, unknown keys, the strategy plugin, the
   OpenFlow listeners and their TLS files, the listen ports) before
   anything listens: a problem is one line on stderr and exit status 2.
   `--check-config` stops here with "ok" and exit status 0, having opened
   no port and no control socket;
3. configures logging, logs the version and what it serves, writes the
   `--pid-file`, then loads, creates and starts the apps through os-ken's
   `AppManager`;
4. waits for SIGTERM/SIGINT, gives `AppManager.close()` a bounded time,
   removes the pid file and leaves with `os._exit(0)`, since hub threads
   never end by themselves.
"""

import dataclasses
import gc
import importlib
import importlib.metadata
import logging
import os
import signal
import socket
import sys
import threading

from oslo_config import cfg

# app_manager first: importing os_ken.controller.controller before it is a
# circular import. Both register os-ken's own options (ofp_listen_host,
# ofp_tcp_listen_port, ...) on os_ken.cfg.CONF; os_ken.log adds --verbose.
from os_ken.base import app_manager
from os_ken import cfg as osken_cfg
from os_ken.controller import controller as osken_controller  # noqa: F401
from os_ken import log as osken_log

from ha_redirect.cmd import listen
from ha_redirect import coordination
from ha_redirect import model
from ha_redirect import opts
from ha_redirect import plugins
from ha_redirect import policy as policy_mod

LOG = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2
CLOSE_TIMEOUT = 1.0  # seconds AppManager.close() may take before we leave
LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'
HA_REDIRECT_APP = 'ha_redirect'
DISTRIBUTION = 'ha_redirect'

# Ours, beside os-ken's (--verbose, --ofp-*, ...); os-ken 3's manager had
# --pid-file and --version too.
LAUNCHER_OPTS = [
    osken_cfg.StrOpt('pid-file', default=None,
                     help='Write the process id to this file once the '
                          'configuration is valid, before serving; it is '
                          'removed on a clean exit.'),
    osken_cfg.BoolOpt('debug', default=False,
                      help='Log at DEBUG level (as --verbose).'),
    osken_cfg.BoolOpt('check-config', default=False,
                      help='Load and validate the configuration (services, '
                           'plugins, coordination, TLS files), print "ok" '
                           'and exit 0, or one line and exit 2; nothing '
                           'listens.'),
]


class LaunchError(Exception):
    """Startup cannot go on; the message is one line for the user."""


def fail(prog, message):
    """Report a startup problem as one line on stderr and exit with 2."""
    print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG_ERROR)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What `prepare` validated: ready to serve."""
    manager: app_manager.AppManager
    policy: object                  # opts.PolicyConfig, or None
    listeners: tuple                # listen.Listener, in os-ken's order


def package_version():
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'   # run from a source tree that is not installed


def version_text():
    try:
        osken = importlib.metadata.version('os-ken')
    except importlib.metadata.PackageNotFoundError:
        osken = 'unknown'
    return f'{DISTRIBUTION} {package_version()} (os-ken {osken})'


def parse_args(conf, argv, prog, description):
    """Parse the command line and the config files it names into `conf`."""
    try:
        conf(args=argv, prog=prog, project='ha_redirect',
             description=description, version=version_text())
    except cfg.Error as exc:
        raise LaunchError(_one_line(exc)) from None


def prepare(conf, app_names, policy_required, check_only=False):
    """Validate the configuration and import the apps; nothing starts.

    `check_only` (--check-config) leaves out what depends on the host
    rather than the configuration: whether the ports and the control
    socket are free (a running controller holds them).

    Returns a `Prepared`, ready for `serve`. Raises LaunchError.
    """
    modules = [plugins.resolve_app(name) for name in app_names]
    ours = plugins.resolve_app(HA_REDIRECT_APP)
    policy = None
    try:
        opts.register_opts(conf)
        if (policy_required or ours in modules
                or opts.GROUP in conf.list_all_sections()):
            policy = opts.load_policy_config(conf)
        manager = app_manager.AppManager.get_instance()
        for module in modules:
            _check_importable(module)
        manager.load_apps(modules)
        for module in modules:
            if module not in manager.applications_cls:
                raise LaunchError(f'app {module!r} has no OSKenApp class')
        # The apps have registered their options by now: anything left over
        # in the files is a typo.
        opts.validate_config_files(conf)
    except (opts.ConfigError, cfg.Error) as exc:
        raise LaunchError(_one_line(exc)) from None
    if policy is not None:
        # Building the policy loads its strategy and monitors: what fails
        # here would otherwise fail inside the app, after listening.
        try:
            policy_mod.RedirectPolicy(policy.services, policy.settings)
        except plugins.PluginError as exc:
            raise LaunchError(f'[{opts.GROUP}] strategy: {exc}') from None
        except model.ServiceError as exc:
            raise LaunchError(f'[{opts.GROUP}] {exc}') from None
    try:
        listen.check_options(conf)
        planned = tuple(listen.listeners(conf))
        if not check_only:
            listen.check_free(planned)
    except listen.ListenError as exc:
        raise LaunchError(str(exc)) from None
    if policy is not None:
        if not check_only:
            _check_control_socket(conf[opts.GROUP].control_socket)
        _check_coordination(conf[opts.COORDINATION_GROUP].backend_url)
    return Prepared(manager, policy, planned)


def _check_coordination(url):
    if not url:
        return
    try:
        coordination.check_backend_url(url)
        import redis  # noqa: F401
        import tooz.coordination  # noqa: F401
    except coordination.CoordinationError as exc:
        raise LaunchError(f'[{opts.COORDINATION_GROUP}] {exc}') from None
    except ImportError as exc:
        raise LaunchError(f'[{opts.COORDINATION_GROUP}] backend_url needs '
                          f'tooz and redis installed: {exc}') from None


def _check_importable(module):
    if os.path.isfile(module):
        return  # os-ken also loads an app from a file path
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise LaunchError(
            f'app {module!r} cannot be imported: {exc}') from None


def _check_control_socket(path):
    """Fail now if another controller answers on our control socket."""
    if not path or not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return      # a stale socket from a dead controller: ours to replace
    finally:
        probe.close()
    raise LaunchError(f'[{opts.GROUP}] control_socket: {path} is in use by '
                      'another controller')


def setup_logging(conf):
    """os-ken's log options; INFO by default, DEBUG with --verbose or
    --debug (`default_log_level` and a log config file win over both)."""
    osken_log.init_log()
    if conf.log_config_file:
        return
    if conf.debug and conf.default_log_level is None:
        logging.getLogger().setLevel(logging.DEBUG)
    formatter = logging.Formatter(LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def summary(policy):
    """One line: the version, the strategy and the services."""
    head = f'{DISTRIBUTION} {package_version()}'
    if policy is None:
        return head
    services = policy.services
    noun = 'service' if len(services) == 1 else 'services'
    return (f'{head}: strategy {policy.settings.strategy}, '
            f'{len(services)} {noun}: '
            + '; '.join(_describe_service(s) for s in services))


def _describe_service(service):
    backups = len(service.backups)
    parts = [f'dpid {service.datapath_id:#x}',
             ','.join(str(p) for p in service.tcp_ports) + '/tcp',
             f'primary {service.primary.ip}',
             f'{backups} backup' + ('' if backups == 1 else 's')]
    if service.monitors != ('port_status',):
        parts.append('monitors ' + ','.join(service.monitors))
    return f'{service.name} ({", ".join(parts)})'


def log_start(conf, prepared):
    LOG.info('%s', summary(prepared.policy))
    LOG.info('OpenFlow on %s',
             ', '.join(x.describe() for x in prepared.listeners))
    for line in listen.warnings(conf):
        LOG.warning('%s', line)


class PidFile:
    """`--pid-file`: our PID while we serve."""

    def __init__(self, path):
        self.path = path
        self.pid = os.getpid()

    def write(self):
        try:
            with open(self.path, 'w') as f:
                f.write(f'{self.pid}\n')
        except OSError as exc:
            raise LaunchError(f'[DEFAULT] pid_file: cannot write '
                              f'{self.path}: {exc.strerror}') from None
        return self

    def remove(self):
        """Remove the file if it still names us (not a successor's)."""
        try:
            with open(self.path) as f:
                if f.read().strip() != str(self.pid):
                    return
            os.unlink(self.path)
        except OSError as exc:
            LOG.warning('pid file %s: %s', self.path, exc.strerror)


def serve(manager, pid_file=None):
    """Start the apps, wait for SIGTERM/SIGINT, then leave the process."""
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        contexts = manager.create_contexts()
        manager.instantiate_apps(**contexts)
    except Exception:
        LOG.exception('the apps failed to start')
        if pid_file is not None:
            pid_file.remove()
        logging.shutdown()
        os._exit(1)
    # What the process built to start (os-ken, oslo, the apps: ~100,000
    # objects) lives as long as it does: out of the garbage collector's
    # sight, each full collection walks only what came since (without
    # this, a pause of ~45 ms every few seconds under load).
    gc.collect()
    gc.freeze()
    LOG.info('started; stop with SIGTERM or SIGINT')
    while not stop.wait(1.0):
        pass

    LOG.info('stopping')
    closer = threading.Thread(target=manager.close, name='close-apps',
                              daemon=True)
    closer.start()
    closer.join(CLOSE_TIMEOUT)
    if closer.is_alive():
        LOG.debug('apps did not close within %.1fs', CLOSE_TIMEOUT)
    if pid_file is not None:
        pid_file.remove()
    logging.shutdown()
    # Hub threads (listeners, event loops) are non-daemon and cannot be
    # stopped: leave without waiting for them.
    os._exit(0)


def run(argv, prog, description, app_names_from_conf, register_cli_opts=(),
        policy_required=False):
    """The whole launcher: parse, validate, log, serve; never returns.

    `app_names_from_conf(conf)` picks the apps once the command line is
    parsed.
    """
    conf = osken_cfg.CONF
    try:
        conf.register_cli_opts(LAUNCHER_OPTS + list(register_cli_opts))
        parse_args(conf, argv, prog, description)
        prepared = prepare(conf, app_names_from_conf(conf), policy_required,
                           check_only=conf.check_config)
    except LaunchError as exc:
        fail(prog, exc)
    if conf.check_config:
        print('ok', flush=True)
        sys.exit(0)
    setup_logging(conf)
    pid_file = None
    if conf.pid_file is not None:
        try:
            pid_file = PidFile(conf.pid_file).write()
        except LaunchError as exc:
            fail(prog, exc)
    log_start(conf, prepared)
    serve(prepared.manager, pid_file)


def _one_line(exc):
    return ' '.join(str(exc).split())
