"""Health transitions and redirects, from the controller's and HAProxy's
logs; detection time and false failovers from them."""

import dataclasses
import datetime
import re


@dataclasses.dataclass(frozen=True)
class HealthTransition:
    """A health monitor marking a server up or down (monotonic seconds).

    `monitor` is the controller monitor's name ('tcp_probe', ...) or
    'haproxy'; `server` a role: 'primary', 'backup1', ...
    """
    t: float
    monitor: str
    server: str
    up: bool
    reason: str = ''


# "t=12.345678 service web: tcp_probe marks backup 1 10.0.0.2 DOWN (why)"
_MONITOR_LINE = re.compile(
    r't=(?P<t>\d+(?:\.\d+)?) service (?P<service>\S+): (?P<monitor>\w+) '
    r'marks (?:(?P<primary>primary)|backup (?P<backup>\d+)) (?P<ip>\S+) '
    r'(?P<state>UP|DOWN)(?: \((?P<why>.*)\))?\s*$')

# "t=12.3 service web: new connections to backup 1 10.0.0.2 (was primary
# 10.0.0.1): why"
_REDIRECT_LINE = re.compile(
    r't=(?P<t>\d+(?:\.\d+)?) service (?P<service>\S+): new connections to '
    r'(?P<to>nobody|primary \S+|backup \d+ \S+) \(was (?P<was>nobody|'
    r'primary \S+|backup \d+ \S+)\)(?:: (?P<why>.*))?\s*$')

# "2026-11-26T14:43:59.141451+00:00 Server web_back/primary is DOWN,
# reason: Layer4 connection problem, info: ..." (HAProxy's `iso` format)
_HAPROXY_LINE = re.compile(
    r'^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?'
    r'(?:Z|[+-]\d\d:\d\d)?)\s.*?Server (?P<backend>[^/\s]+)/'
    r'(?P<server>\S+) is (?P<state>UP|DOWN)(?:, reason: (?P<why>[^,]*))?')


def _role(match):
    if match.group('primary'):
        return 'primary'
    return f'backup{int(match.group("backup"))}'


def controller_transitions(log_text, service=None):
    """The monitors' transitions the controller logged, oldest first.

    The controller stamps them with CLOCK_MONOTONIC (`t=`), the clock of
    every other lab measurement.  `service` keeps one service's only.
    """
    found = []
    for line in log_text.splitlines():
        m = _MONITOR_LINE.search(line)
        if m is None or (service and m.group('service') != service):
            continue
        found.append(HealthTransition(
            t=float(m.group('t')), monitor=m.group('monitor'),
            server=_role(m), up=m.group('state') == 'UP',
            reason=m.group('why') or ''))
    return sorted(found, key=lambda x: x.t)


def _redirect_role(text):
    if text == 'nobody':
        return None
    if text.startswith('primary'):
        return 'primary'
    return 'backup' + text.split()[1]


def controller_redirects(log_text, service=None):
    """[(t, to role, from role, why)]: where the policy sent new
    connections, as the controller logged it (roles None for nobody)."""
    found = []
    for line in log_text.splitlines():
        m = _REDIRECT_LINE.search(line)
        if m is None or (service and m.group('service') != service):
            continue
        found.append((float(m.group('t')), _redirect_role(m.group('to')),
                      _redirect_role(m.group('was')), m.group('why') or ''))
    return sorted(found, key=lambda x: x[0])


def haproxy_transitions(log_text, offset):
    """HAProxy's server transitions from a log in its `iso` format.

    Its timestamps are CLOCK_REALTIME (microseconds); `offset` (realtime
    minus monotonic) moves them to CLOCK_MONOTONIC.  Lines without a
    timestamp (the `raw` format, or the same message repeated as a warning
    on stderr) are skipped.
    """
    found = []
    for line in log_text.splitlines():
        m = _HAPROXY_LINE.search(line)
        if m is None:
            continue
        ts = m.group('ts')
        when = datetime.datetime.fromisoformat(ts.replace('Z', '+00:00'))
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        found.append(HealthTransition(
            t=when.timestamp() - offset, monitor='haproxy',
            server=m.group('server'), up=m.group('state') == 'UP',
            reason=(m.group('why') or '').strip()))
    return sorted(found, key=lambda x: x.t)


def detection_time(transitions, failed, t_fail):
    """Seconds from `t_fail` to the first DOWN of server `failed` at or
    after it; None when none was logged."""
    downs = [x.t for x in transitions
             if x.server == failed and not x.up and x.t >= t_fail]
    return min(downs) - t_fail if downs else None


def false_failovers(transitions, failed, t_fail, t_start, t_end=None):
    """The DOWN marks of servers that were healthy, in [t_start, t_end].

    Server `failed` was healthy until `t_fail`, every other server all
    along.  Transitions before `t_start` (the testbed starting) are not
    counted.
    """
    t_end = float('inf') if t_end is None else t_end
    return [x for x in transitions
            if not x.up and t_start <= x.t <= t_end
            and (x.server != failed or x.t < t_fail)]
