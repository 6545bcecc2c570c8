"""Plugin loading by entry-point name: the one place that uses stevedore.

Namespaces (declared in pyproject.toml; other packages may add names):

- `ha_redirect.strategies`: how redirect flows are installed; classes that
  take no constructor arguments (`reactive`, `proactive`).
- `ha_redirect.monitors`: health monitors, built per service with
  `(service, settings, cookie)` (`port_status`, `tcp_probe`).
- `os_ken.apps`: short names for os-ken apps, so launchers accept
  `ha_redirect` as well as the module path `ha_redirect.app`.
"""

import importlib.metadata

STRATEGY_NAMESPACE = 'ha_redirect.strategies'
MONITOR_NAMESPACE = 'ha_redirect.monitors'
APP_NAMESPACE = 'os_ken.apps'


class PluginError(LookupError):
    """A plugin that is not installed or does not load; one line."""


def _entry_points(namespace):
    return importlib.metadata.entry_points(group=namespace)


def _names(namespace):
    return sorted({ep.name for ep in _entry_points(namespace)})


def _load(namespace, kind, name, invoke_on_load):
    available = _names(namespace)
    if name not in available:
        raise PluginError(
            f'unknown {kind} {name!r} (available: '
            f'{", ".join(available) or "none"}; namespace {namespace})')
    # Imported here: the core imports this module, and embedding the core
    # needs stevedore only once a plugin is loaded by name.
    from stevedore import driver
    try:
        manager = driver.DriverManager(namespace, name,
                                       invoke_on_load=invoke_on_load)
    except Exception as exc:
        raise PluginError(f'{kind} {name!r} failed to load: '
                          f'{type(exc).__name__}: {exc}') from exc
    return manager.driver


def strategy_names():
    """Sorted names of the installed strategies (nothing is imported)."""
    return _names(STRATEGY_NAMESPACE)


def load_strategy(name):
    """Return a new instance of the strategy registered as `name`."""
    return _load(STRATEGY_NAMESPACE, 'strategy', name, invoke_on_load=True)


def monitor_names():
    """Sorted names of the installed monitors (nothing is imported)."""
    return _names(MONITOR_NAMESPACE)


def monitor_class(name):
    """The monitor class registered as `name` (built per service)."""
    return _load(MONITOR_NAMESPACE, 'monitor', name, invoke_on_load=False)


def find_monitor_class(name, monitor_classes=None):
    """The monitor class `name`: from `monitor_classes` (a mapping of
    names to classes, to override or add to the installed ones) if it is
    there, else the installed one."""
    if monitor_classes is not None and name in monitor_classes:
        return monitor_classes[name]
    if name == 'port_status':   # the paper's, always at hand
        from ha_redirect.monitors import port_status
        return port_status.PortStatusMonitor
    return monitor_class(name)


def resolve_app(name):
    """Module path of the os-ken app `name`.

    A short name registered in `os_ken.apps` maps to its module (os-ken
    loads an app by module and takes its first OSKenApp class); any other
    name is returned unchanged, as a module path.
    """
    for ep in _entry_points(APP_NAMESPACE):
        if ep.name == name:
            return ep.module
    return name
