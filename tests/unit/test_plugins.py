"""Plugins load by entry-point name, ours and those of other packages.

Run with the package installed (`pip install -e .`): the names come from its
entry points.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from ha_redirect import model
from ha_redirect.monitors import base as monitor_base
from ha_redirect import plugins
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies import base as strategy_base
from ha_redirect.strategies import proactive
from ha_redirect.strategies import reactive


def test_builtin_strategies_are_listed():
    assert {'reactive', 'proactive'} <= set(plugins.strategy_names())


@pytest.mark.parametrize('name, cls', [
    ('reactive', reactive.ReactiveStrategy),
    ('proactive', proactive.ProactiveStrategy)])
def test_builtin_strategies_load_by_name(name, cls):
    strategy = plugins.load_strategy(name)
    assert type(strategy) is cls
    assert plugins.load_strategy(name) is not strategy  # a fresh instance


def test_unknown_strategy_names_the_available_ones():
    with pytest.raises(plugins.PluginError) as info:
        plugins.load_strategy('psychic')
    message = str(info.value)
    assert "'psychic'" in message
    assert 'proactive, reactive' in message
    assert '\n' not in message


def test_app_short_name_resolves_to_its_module():
    assert plugins.resolve_app('ha_redirect') == 'ha_redirect.app'


def test_app_module_path_is_returned_unchanged():
    assert plugins.resolve_app('os_ken.controller.ofp_handler') == (
        'os_ken.controller.ofp_handler')


def install_other_package(root):
    """A package "otherpkg" that adds a strategy, a broken one and an app.

    A real dist-info directory on sys.path: entry points are found the way
    pip-installed packages' are.
    """
    package = root / 'otherpkg'
    package.mkdir()
    (package / '__init__.py').write_text(textwrap.dedent('''\
        class EchoStrategy:
            """A strategy from another package."""
    '''))
    (package / 'app.py').write_text('')
    dist_info = root / 'otherpkg-1.0.dist-info'
    dist_info.mkdir()
    (dist_info / 'METADATA').write_text(
        'Metadata-Version: 2.1\nName: otherpkg\nVersion: 1.0\n')
    (dist_info / 'entry_points.txt').write_text(textwrap.dedent('''\
        [ha_redirect.strategies]
        echo = otherpkg:EchoStrategy
        broken = otherpkg.missing:Nothing

        [os_ken.apps]
        other = otherpkg.app:OtherApp
    '''))


def run_with_other_package(tmp_path, code):
    install_other_package(tmp_path)
    env = {'PYTHONPATH': str(tmp_path), 'HOME': str(tmp_path),
           'PATH': '/usr/bin:/bin'}
    result = subprocess.run([sys.executable, '-c', code], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_strategy_of_another_package_loads_the_same_way(tmp_path):
    code = textwrap.dedent('''\
        import json
        from ha_redirect import plugins
        strategy = plugins.load_strategy('echo')
        try:
            plugins.load_strategy('broken')
            broken = None
        except plugins.PluginError as exc:
            broken = str(exc)
        print(json.dumps({
            'names': plugins.strategy_names(),
            'class': type(strategy).__module__ + '.' + type(strategy).__name__,
            'broken': broken,
            'app': plugins.resolve_app('other'),
        }))
    ''')
    result = run_with_other_package(tmp_path, code)
    assert {'echo', 'broken', 'reactive', 'proactive'} <= set(result['names'])
    assert result['class'] == 'otherpkg.EchoStrategy'
    assert result['broken'].startswith("strategy 'broken' failed to load: "
                                       'ModuleNotFoundError')
    assert result['app'] == 'otherpkg.app'


def test_config_accepts_a_strategy_of_another_package(tmp_path):
    conf_file = tmp_path / 'ha_redirect.conf'
    conf_file.write_text(textwrap.dedent('''\
        [ha_redirect]
        strategy = echo
        services = web
        [service:web]
        datapath_id = 1
        tcp_ports = 80
        primary_ip = 10.0.0.1
        primary_mac = 00:00:00:00:00:01
        primary_port = 1
        backup_ips = 10.0.0.2
        backup_macs = 00:00:00:00:00:02
        backup_ports = 2
    '''))
    code = textwrap.dedent(f'''\
        import json
        from oslo_config import cfg
        from ha_redirect import opts
        conf = cfg.ConfigOpts()
        conf(args=['--config-file', {str(conf_file)!r}],
             default_config_files=[])
        print(json.dumps(opts.load_policy_config(conf).settings.strategy))
    ''')
    assert run_with_other_package(tmp_path, code) == 'echo'


@pytest.mark.parametrize('namespace, base_class', [
    (plugins.STRATEGY_NAMESPACE, strategy_base.Strategy),
    (plugins.MONITOR_NAMESPACE, monitor_base.Monitor)])
def test_installed_plugins_keep_their_contract(namespace, base_class):
    names = (plugins.strategy_names()
             if namespace == plugins.STRATEGY_NAMESPACE
             else plugins.monitor_names())
    assert names
    for name in names:
        if namespace == plugins.STRATEGY_NAMESPACE:
            cls = type(plugins.load_strategy(name))
        else:
            cls = plugins.monitor_class(name)
        assert issubclass(cls, base_class), name


class AlwaysUp(monitor_base.Monitor):
    """A monitor that states only what it must."""

    def is_healthy(self, server_index):
        return True


class ToController(strategy_base.Strategy):
    """A strategy that states only what it must."""

    def service_flows(self, view):
        return []

    def on_servers_changed(self, view, previous):
        return []


def test_plugins_that_state_only_what_they_must_get_the_documented_defaults():
    service = model.Service(
        'web', 1, (80,), model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1),
        (model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2),),
        monitors=('always_up',))
    policy = RedirectPolicy([service], strategy=ToController(),
                            monitor_classes={'always_up': AlwaysUp})
    policy.on_switch_connected(1, {1: True, 2: True}, now=0.0)
    assert policy.tick_interval is None            # needs_ticks: False
    assert len(policy.pin_queries()) == 1          # pins_in_flows: True
    assert policy.drain('web', 0, now=1.0)         # pins_connections: True
    assert policy.active_server('web') == service.backups[0]


def test_a_strategy_must_provide_its_flows():
    class Incomplete(strategy_base.Strategy):
        def service_flows(self, view):
            return []

    with pytest.raises(TypeError, match='on_servers_changed'):
        Incomplete()
