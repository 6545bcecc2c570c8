"""HAProxy, the paper's reverse-proxy reference (Figure 1(a)).

`render_haproxy_config` is a pure function of the service definition, the
front-end address and a profile, so unit tests check the text; `HAProxy`
runs `haproxy -db -f <file>` inside the proxy host and reads the health
transitions it logs.

Profiles:

* ``paper``: what the paper describes -- a layer-4 health check every 3 s,
  HAProxy's defaults otherwise (fall 3, rise 2, retries 3).
* ``tuned``: as fast as HAProxy reasonably gets -- checks every 100 ms,
  one failure marks a server down (fall 1, rise 1), live traffic errors
  count as failed checks (observe layer4), a failed connect is retried on
  another server (option redispatch) after 100 ms (timeout connect).
"""

import dataclasses
import re
import time
import typing

from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import traffic

# 20000 fails inside a Mininet host (its open-file limit); 8000 works.
MAXCONN = 8000


@dataclasses.dataclass(frozen=True)
class HAProxyProfile:
    name: str
    server_options: typing.Tuple[str, ...]
    defaults: typing.Tuple[str, ...]
    timeout_connect: str


PROFILES = {
    'paper': HAProxyProfile(
        name='paper',
        server_options=('check', 'inter 3s'),
        defaults=(),
        timeout_connect='5s'),
    'tuned': HAProxyProfile(
        name='tuned',
        server_options=('check', 'inter 100ms', 'fastinter 100ms',
                        'fall 1', 'rise 1', 'observe layer4'),
        defaults=('option redispatch',),
        timeout_connect='100ms'),
}


LOG_FORMATS = ('raw', 'iso')


def with_check_interval(profile, seconds):
    """`profile` (a name or an HAProxyProfile) checking every `seconds`.

    Replaces its `inter` and `fastinter`; HAProxy takes milliseconds.
    """
    profile = resolve_profile(profile)
    ms = max(1, round(seconds * 1000))
    options = tuple(
        f'{o.split()[0]} {ms}ms' if o.split()[0] in ('inter', 'fastinter')
        else o for o in profile.server_options)
    return dataclasses.replace(profile, server_options=options)


def resolve_profile(profile):
    """The HAProxyProfile `profile` names (or `profile` itself)."""
    if not isinstance(profile, str):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f'unknown HAProxy profile {profile!r}; choose '
                         f'from {", ".join(sorted(PROFILES))}') from None


def render_haproxy_config(service, frontend_ip, profile, log_format='raw'):
    """The haproxy.cfg text that fronts `service` on `frontend_ip`.

    `service` is a `ha_redirect.model.Service` whose servers' addresses are
    the ones the proxy reaches; `profile` is a name in PROFILES or an
    HAProxyProfile.  Layer 4 (mode tcp); backups are marked `backup`.
    `log_format` 'iso' stamps each log line with the time (CLOCK_REALTIME,
    microseconds), for timing health transitions.
    """
    profile = resolve_profile(profile)
    if log_format not in LOG_FORMATS:
        raise ValueError(f'unknown log format {log_format!r}; choose from '
                         f'{", ".join(LOG_FORMATS)}')
    ports = service.tcp_ports
    single = len(ports) == 1
    binds = ','.join(f'{frontend_ip}:{port}' for port in ports)
    lines = [
        f'# ha_redirect lab: service {service.name!r}, profile '
        f'{profile.name!r}',
        'global',
        f'    maxconn {MAXCONN}',
        f'    log stdout format {log_format} local0 info',
        '',
        'defaults',
        '    mode tcp',
        '    log global',
        '    option dontlognull',
        f'    timeout connect {profile.timeout_connect}',
        '    timeout client 1m',
        '    timeout server 1m',
    ]
    lines += [f'    {option}' for option in profile.defaults]
    lines += [
        '',
        f'frontend {service.name}_front',
        # Connections are counted by the clients; the log is for health
        # transitions, which the backend reports.
        '    no log',
        f'    bind {binds}',
        f'    default_backend {service.name}_back',
        '',
        f'backend {service.name}_back',
    ]
    roles = [('primary', service.primary)] + [
        (f'backup{k}', b) for k, b in enumerate(service.backups, start=1)]
    for role, server in roles:
        # With several ports, a server without a port gets the port the
        # client used; its health check then needs an explicit port.
        address = f'{server.ip}:{ports[0]}' if single else server.ip
        options = list(profile.server_options)
        if not single:
            options.insert(1, f'port {ports[0]}')
        if role != 'primary':
            options.append('backup')
        lines.append(f'    server {role} {address} {" ".join(options)}')
    return '\n'.join(lines) + '\n'


# "Server web_back/primary is DOWN, reason: Layer4 timeout, ..."
_TRANSITION = re.compile(
    r'Server (?P<backend>[^/\s]+)/(?P<server>\S+) is (?P<state>UP|DOWN)')


def parse_transitions(text):
    """[(server, 'UP'|'DOWN', line)] in log order."""
    return [(m.group('server'), m.group('state'), line)
            for line in text.splitlines()
            for m in [_TRANSITION.search(line)] if m]


class HAProxy:
    """`haproxy -db -f <config>` in the proxy host, owned by the scope."""

    def __init__(self, scope, testbed, profile, label=None,
                 log_format='raw'):
        self.scope = scope
        self.testbed = testbed
        self.profile = resolve_profile(profile).name
        self.label = label or f'haproxy-{self.profile}'
        self.config_path = scope.path(f'{self.label}.cfg')
        self.config = render_haproxy_config(
            testbed.service, testbed.plan.frontend_ip, profile, log_format)
        self.agent = None

    def start(self, timeout=10.0):
        with open(self.config_path, 'w') as f:
            f.write(self.config)
        check = self.testbed.proxy.popen(
            ['haproxy', '-c', '-q', '-f', self.config_path])
        out, err = check.communicate(timeout=30)
        if check.returncode != 0:
            raise scope_mod.LabError(
                f'haproxy rejected {self.config_path}: '
                f'{(err or out).decode().strip()}')
        self.agent = traffic.AgentProcess(
            self.scope, self.testbed.proxy, self.label,
            ['haproxy', '-db', '-f', self.config_path])
        ip, port = self.testbed.service_address
        scope_mod.wait_until(lambda: self._listening(port), timeout,
                             what=f'haproxy to listen on {ip}:{port}')
        return self

    def _listening(self, port):
        if self.agent.popen.poll() is not None:
            raise scope_mod.LabError(
                f'haproxy exited with {self.agent.popen.returncode}: '
                f'{self.log()[-500:]}')
        out = self.testbed.proxy.cmd(f'ss -Hltn "sport = :{port}"')
        return bool(out.strip())

    def log(self):
        """Everything HAProxy printed (its log and its warnings)."""
        return self._read(self.agent.out_path) + self._read(
            self.agent.err_path)

    @staticmethod
    def _read(path):
        with open(path, errors='replace') as f:
            return f.read()

    def log_stdout(self):
        """HAProxy's log alone (stdout), without its warnings (stderr)."""
        return self._read(self.agent.out_path)

    def transitions(self):
        """Health transitions seen so far: [(server, state)], deduplicated.

        HAProxy reports a transition both as a log line (stdout) and as a
        warning (stderr); the log alone is authoritative.
        """
        return [(s, st) for s, st, _ in parse_transitions(
            self._read(self.agent.out_path))]

    def wait_for_transition(self, server, state, timeout):
        """Wait until HAProxy marks `server` `state`; returns the time."""
        def seen():
            return (server, state) in self.transitions()
        scope_mod.wait_until(seen, timeout, interval=0.01,
                             what=f'haproxy to mark {server} {state}')
        return time.monotonic()

    def stop(self):
        return self.agent.stop() if self.agent else None
