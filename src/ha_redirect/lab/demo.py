"""A short failover, told as it happens: the README's demo.

For each scheme (`sdn-<strategy>` or `haproxy-<profile>`): build the
testbed, check the primary serves, probe with a new connection every few
milliseconds, take the primary's link down, and report who answered and
how long new connections went unanswered.
"""

import dataclasses
import time

from ha_redirect.lab import failures
from ha_redirect.lab import scenarios
from ha_redirect.lab import schemes
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import traffic

DEFAULT_SCHEMES = ('sdn-reactive', 'sdn-proactive', 'haproxy-tuned',
                   'haproxy-paper')


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """One scheme's failover: what the prober saw (`traffic.GapReport`)
    and the service address's entry in the client's neighbour table."""
    scheme: str
    report: traffic.GapReport
    client_sees: str


parse_scheme = schemes.parse_scheme   # where the demo's callers find it

FAILURES = ('link', 'kill')


def say(line=''):
    """Print one line of the story now, also when stdout is a pipe.

    Python block-buffers a piped stdout (unless PYTHONUNBUFFERED is set),
    which would hold the whole story until the demo exits: `| tee` and a
    test that waits for "down (the primary)" would see it only after the
    testbed is gone.
    """
    print(line, flush=True)


def run_scheme(scheme, observe=2.0, interval_ms=5.0, out=say,
               keep_workdir=False, failure='link'):
    """Run one scheme's failover in its own RunScope; returns DemoResult.

    `failure`: 'link' takes the primary's interface down (the paper);
    'kill' kills the primary's server process and leaves the link up.
    """
    if failure not in FAILURES:
        raise ValueError(f'unknown failure {failure!r}')
    parsed = schemes.Scheme.parse(scheme)
    with scope_mod.RunScope(keep_workdir=keep_workdir) as scope:
        lab = scenarios.for_scheme(scope, parsed).start()
        if parsed.is_sdn:
            note = (f'OVS {lab.plan.bridge} ({lab.bed.datapath} datapath), '
                    f'ha-redirect-controller pid {lab.controller.popen.pid} '
                    f'on 127.0.0.1:{lab.controller.port}')
        else:
            note = (f'haproxy pid {lab.haproxy.agent.pid}, profile '
                    f'{parsed.variant}')
        ip, port = lab.address
        client = lab.bed.clients[0]
        out(f'== {scheme}: {note}')
        first = traffic.probe_once(client, ip, port)
        out(f'   {client.name} -> {ip}:{port}: answered by {first["who"]}')
        prober = traffic.start_prober(scope, client, ip, port,
                                      interval_ms=interval_ms)
        time.sleep(0.5)
        if failure == 'link':
            intf = lab.bed.server_interface('primary')
            t_fail = failures.link_down(lab.bed.primary)
            out(f'   t=0 ms: ip link set {intf} down (the primary)')
        else:
            pid = lab.servers['primary'].pid
            t_fail = failures.kill_service(lab.servers['primary'])
            out(f'   t=0 ms: killed the primary\'s server (pid {pid}); '
                'its link stays up (the primary)')
        if not parsed.is_sdn:
            try:
                t_seen = lab.haproxy.wait_for_transition('primary', 'DOWN',
                                                         30)
                out(f'   t={(t_seen - t_fail) * 1000:.0f} ms: haproxy '
                    'marks the primary DOWN')
            except scope_mod.LabError as exc:
                out(f'   {exc}')
        time.sleep(observe)
        prober.stop()
        report = traffic.service_gap(prober.records(), t_fail, 'backup1')
        mac = traffic.neighbour_mac(client, ip)
        sees = f'{ip} at {mac}' if mac else ip
        if report.gap is None:
            out('   no connection reached the backup')
        else:
            out(f'   t={report.gap * 1000:.1f} ms: first new connection '
                f'answered by backup1; the client\'s peer: {sees}')
        out(f'   {report.attempts_after} connection attempts after the '
            f'failure, {report.failed_after} failed; answered by '
            f'{dict(sorted(report.answered_by.items()))}')
        return DemoResult(scheme, report, sees)


def summary_lines(results):
    lines = [f'{"scheme":<16} {"service gap":>12} {"failed":>7} '
             f'{"attempts":>9}']
    for r in results:
        gap = '-' if r.report.gap is None else f'{r.report.gap * 1000:.1f} ms'
        lines.append(f'{r.scheme:<16} {gap:>12} {r.report.failed_after:>7} '
                     f'{r.report.attempts_after:>9}')
    return lines
