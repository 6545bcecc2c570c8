"""The core must import without os-ken: other controllers embed it."""

import subprocess
import sys
import textwrap

CORE_MODULES = ['ha_redirect', 'ha_redirect.model', 'ha_redirect.policy',
                'ha_redirect.strategies.base',
                'ha_redirect.strategies.reactive',
                'ha_redirect.strategies.proactive',
                'ha_redirect.strategies.fast_failover',
                'ha_redirect.strategies.stateful',
                'ha_redirect.monitors.port_status',
                'ha_redirect.monitors.tcp_probe', 'ha_redirect.backlog',
                'ha_redirect.coordination',
                'ha_redirect.testing']


def test_core_imports_with_os_ken_unavailable():
    script = textwrap.dedent(f'''
        import sys
        sys.modules['os_ken'] = None   # any "import os_ken..." now fails
        for name in {CORE_MODULES!r}:
            __import__(name)
        from ha_redirect import RedirectPolicy, Service, Endpoint
        loaded = sorted(m for m in sys.modules
                        if m.startswith('os_ken') and sys.modules[m])
        assert not loaded, loaded
        print('ok')
    ''')
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'
