"""Run os-ken apps in this process, owning configuration and shutdown.

os-ken 4 no longer ships a launcher, and its native hub runs apps in
threads that cannot be killed. So the launcher here:

1. parses the command line and config files into `os_ken.cfg.CONF`;
2. validates everything (our policy, unknown keys, the strategy plugin, the
   listen address) before anything listens: a problem is one line on stderr
   and exit status 2;
3. configures logging, then loads, creates and starts the apps through
   os-ken's `AppManager`;
4. waits for SIGTERM/SIGINT, gives `AppManager.close()` a bounded time,
   and leaves with `os._exit(0)`, since hub threads never end by themselves.
"""

import importlib
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


class LaunchError(Exception):
    """Startup cannot go on; the message is one line for the user."""


def fail(prog, message):
    """Report a startup problem as one line on stderr and exit with 2."""
    print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG_ERROR)


def parse_args(conf, argv, prog, description):
    """Parse the command line and the config files it names into `conf`."""
    try:
        conf(args=argv, prog=prog, project='ha_redirect',
             description=description)
    except cfg.Error as exc:
        raise LaunchError(_one_line(exc)) from None


def prepare(conf, app_names, policy_required):
    """Validate the configuration and import the apps; nothing starts.

    Returns the AppManager, ready for `start`. Raises LaunchError.
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
    _check_listen_addresses(conf)
    if policy is not None:
        _check_control_socket(conf[opts.GROUP].control_socket)
        _check_coordination(conf[opts.COORDINATION_GROUP].backend_url)
    return manager


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


def _check_listen_addresses(conf):
    """Fail now if a listen port is taken.

    os-ken would only log it later, from a thread, and run on without a
    listener.
    """
    ports = [('ofp_tcp_listen_port', conf.ofp_tcp_listen_port)]
    if not conf.ofp_tcp_listen_port and not conf.ofp_ssl_listen_port:
        ports = [('ofp_tcp_listen_port', 6653), ('ofp_tcp_listen_port', 6633)]
    for option, port in ports:
        if not port:
            continue
        host = conf.ofp_listen_host
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            raise LaunchError(f'[DEFAULT] {option}: cannot listen on '
                              f'{host}:{port}: {exc.strerror}') from None
        finally:
            sock.close()


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
    """os-ken's log options; INFO by default, DEBUG with --verbose."""
    osken_log.init_log()
    if not conf.log_config_file:
        formatter = logging.Formatter(LOG_FORMAT)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)


def serve(manager):
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
        logging.shutdown()
        os._exit(1)
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
        conf.register_cli_opts(list(register_cli_opts))
        parse_args(conf, argv, prog, description)
        manager = prepare(conf, app_names_from_conf(conf), policy_required)
    except LaunchError as exc:
        fail(prog, exc)
    setup_logging(conf)
    serve(manager)


def _one_line(exc):
    return ' '.join(str(exc).split())
