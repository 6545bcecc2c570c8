"""The core must import without os-ken: other controllers embed it.

The core is the modules below, every module of the packages below, and
every plugin installed in our entry-point namespaces (ours and any other
package's): a plugin runs inside the policy, so it is core too.
"""

import json
import subprocess
import sys
import textwrap

CORE_MODULES = ['ha_redirect', 'ha_redirect.policy',
                'ha_redirect.service_state', 'ha_redirect.service_checks',
                'ha_redirect.packet_in_meters', 'ha_redirect.stand_in',
                'ha_redirect.takeover_state', 'ha_redirect.plugins',
                'ha_redirect.backlog', 'ha_redirect.coordination']
CORE_PACKAGES = ['ha_redirect.model', 'ha_redirect.strategies',
                 'ha_redirect.monitors', 'ha_redirect.testing']
PLUGIN_NAMESPACES = ['ha_redirect.strategies', 'ha_redirect.monitors']
# Ours, so that a missing install fails here rather than checking nothing.
BUILTIN_PLUGINS = {'reactive', 'proactive', 'fast_failover', 'stateful',
                   'port_status', 'tcp_probe'}


def test_core_imports_with_os_ken_unavailable():
    script = textwrap.dedent(f'''
        import importlib
        import importlib.metadata
        import json
        import pkgutil
        import sys
        sys.modules['os_ken'] = None   # any "import os_ken..." now fails
        imported = []
        for name in {CORE_MODULES!r}:
            importlib.import_module(name)
            imported.append(name)
        for name in {CORE_PACKAGES!r}:
            package = importlib.import_module(name)
            imported.append(name)
            for module in pkgutil.walk_packages(
                    getattr(package, '__path__', []), name + '.'):
                importlib.import_module(module.name)
                imported.append(module.name)
        plugins = {{}}
        for namespace in {PLUGIN_NAMESPACES!r}:
            for entry_point in importlib.metadata.entry_points(
                    group=namespace):
                entry_point.load()
                plugins[entry_point.name] = entry_point.value
        from ha_redirect import RedirectPolicy, Service, Endpoint
        loaded = sorted(m for m in sys.modules
                        if m.startswith('os_ken') and sys.modules[m])
        assert not loaded, loaded
        print(json.dumps({{'modules': imported, 'plugins': plugins}}))
    ''')
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert BUILTIN_PLUGINS <= set(report['plugins']), report['plugins']
    assert 'ha_redirect.strategies.base' in report['modules']
    assert 'ha_redirect.monitors.base' in report['modules']
