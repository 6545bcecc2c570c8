"""Traffic inside the testbed: identity servers, probers, iperf3.

Every process runs inside an emulated host via Mininet's `popen`, is owned
by the run's scope (stopped by PID on close) and writes JSON lines to a file
in the run's working directory, which these wrappers read back.
"""

import dataclasses
import json
import statistics
import subprocess
import sys
import time
import typing

from ha_redirect.lab import scope as scope_mod

AGENT = [sys.executable, '-m', 'ha_redirect.lab.agent']


class AgentProcess:
    """A program running in an emulated host, printing JSON lines."""

    def __init__(self, scope, host, label, argv, stop_timeout=5.0):
        self.label = label
        self.out_path = scope.path(f'{label}.out')
        self.err_path = scope.path(f'{label}.err')
        with open(self.out_path, 'wb') as out, \
                open(self.err_path, 'wb') as err:
            self.popen = host.popen(argv, stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL)
        scope.own_process(self.popen, label, stop_timeout)
        self.stop_timeout = stop_timeout

    @property
    def pid(self):
        return self.popen.pid

    def records(self):
        """The JSON records written so far (complete lines only)."""
        with open(self.out_path, 'rb') as f:
            data = f.read()
        lines = data.split(b'\n')[:-1]
        return [json.loads(line) for line in lines if line.startswith(b'{')]

    def stderr(self):
        with open(self.err_path, errors='replace') as f:
            return f.read()

    def wait_for(self, predicate, timeout=10.0, what=None):
        """Wait until a record satisfies `predicate`; fail if we exit."""
        def check():
            for record in self.records():
                if predicate(record):
                    return record
            if self.popen.poll() is not None:
                raise scope_mod.LabError(
                    f'{self.label} exited with {self.popen.returncode}: '
                    f'{self.stderr().strip()[-500:]}')
            return None
        return scope_mod.wait_until(check, timeout,
                                    what=what or f'{self.label} output')

    def stop(self):
        """SIGTERM (then SIGKILL); returns the exit status."""
        return scope_mod.stop_process(self.popen, self.stop_timeout,
                                      self.label)

    def wait(self, timeout):
        return self.popen.wait(timeout)


def start_identity_server(scope, host, name, ports, label=None):
    """A TCP server on `ports` that sends `name` + newline, then echoes."""
    argv = AGENT + ['serve', '--name', name]
    for port in ports:
        argv += ['--port', str(port)]
    agent = AgentProcess(scope, host, label or f'serve-{name}', argv)
    agent.wait_for(lambda r: r.get('event') == 'listening',
                   what=f'{name} to listen')
    return agent


def start_prober(scope, host, ip, port, interval_ms=5.0, timeout_ms=3000.0,
                 duration=0.0, label=None):
    """Open a new connection to ip:port every `interval_ms` from `host`."""
    argv = AGENT + ['probe', '--target', f'{ip}:{port}',
                    '--interval-ms', str(interval_ms),
                    '--timeout-ms', str(timeout_ms),
                    '--duration', str(duration), '--drain']
    agent = AgentProcess(scope, host, label or f'probe-{host.name}', argv,
                         stop_timeout=timeout_ms / 1000.0 + 5)
    agent.wait_for(lambda r: r.get('event') == 'probing', what='prober')
    return agent


def start_hold(scope, host, ip, port, interval_ms=50.0, label=None):
    """One long-lived connection that sends a line and expects its echo."""
    argv = AGENT + ['hold', '--target', f'{ip}:{port}',
                    '--interval-ms', str(interval_ms)]
    agent = AgentProcess(scope, host, label or f'hold-{host.name}', argv)
    agent.wait_for(lambda r: r.get('event') == 'connected',
                   what='the long-lived connection')
    return agent


def attempts(records):
    """The prober's connection attempts, oldest first."""
    return sorted((r for r in records if 'ok' in r), key=lambda r: r['t'])


@dataclasses.dataclass(frozen=True)
class GapReport:
    """What a prober saw around a failure at `t_fail` (monotonic seconds).

    `gap` is from the failure to the first connection that completed
    (answered by `expected`) among those started at or after the failure;
    None when there was none. `failed_opened_after` counts the failed
    attempts whose connection had opened (a SYN-ACK came) before it failed:
    a server accepted it, then died with it.
    """
    t_fail: float
    gap: typing.Optional[float]
    attempts_after: int
    failed_after: int
    failed_opened_after: int
    answered_by: typing.Dict[str, int]

    def describe(self):
        gap = 'none' if self.gap is None else f'{self.gap * 1000:.1f} ms'
        return (f'service gap {gap}; {self.attempts_after} attempts after '
                f'the failure, {self.failed_after} failed; answered by '
                f'{dict(sorted(self.answered_by.items()))}')


def service_gap(records, t_fail, expected):
    """Measure the service gap a prober saw after a failure at `t_fail`."""
    after = [a for a in attempts(records) if a['t'] >= t_fail]
    done = [a['t_done'] for a in after if a['ok'] and a['who'] == expected]
    answered = {}
    for a in after:
        if a['ok']:
            answered[a['who']] = answered.get(a['who'], 0) + 1
    return GapReport(
        t_fail=t_fail, gap=(min(done) - t_fail) if done else None,
        attempts_after=len(after),
        failed_after=sum(1 for a in after if not a['ok']),
        failed_opened_after=sum(1 for a in after if not a['ok']
                                and a.get('t_connected') is not None),
        answered_by=answered)


def connect_time_before(records, t_fail, lead=1.0, served_only=False):
    """The prober's median connect time (SYN sent to SYN-ACK received)
    over the attempts started in the `lead` seconds before `t_fail`
    (only those served to the end, if `served_only`): the queues every
    packet to and from a server then waits in. None without one."""
    times = [a['t_connected'] - a['t'] for a in records
             if t_fail - lead <= a['t'] < t_fail
             and a.get('t_connected') is not None
             and (a.get('ok') or not served_only)]
    return statistics.median(times) if times else None


def probe_once(host, ip, port, timeout=3.0):
    """One connection from `host`: the record the prober would print."""
    argv = AGENT + ['probe', '--target', f'{ip}:{port}', '--interval-ms',
                    '1', '--timeout-ms', str(timeout * 1000),
                    '--count', '1', '--drain']
    proc = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        scope_mod.stop_process(proc, 2, 'probe_once')
        raise scope_mod.LabError(f'probe from {host.name} did not finish')
    found = attempts(json.loads(line) for line in out.decode().splitlines()
                     if line.startswith('{'))
    if not found:
        raise scope_mod.LabError(f'probe from {host.name} printed nothing: '
                                 f'{err.decode().strip()[-300:]}')
    return found[0]


# -- iperf3 -------------------------------------------------------------------

def iperf3_argv(scope, *args):
    """iperf3 with its temporary files in the run's directory: each
    stream's buffer is a file it unlinks right after making it, and one
    killed in between (the kill mode kills servers) left it in /tmp.
    `env` execs iperf3, so the PID is iperf3's."""
    return ['env', f'TMPDIR={scope.workdir}', 'iperf3'] + list(args)


def run_iperf3_client(scope, host, ip, port, seconds=10, label=None,
                      extra=()):
    """Start `iperf3 -c ip -p port -t seconds --json` in `host`.

    Returns the AgentProcess; after it exits, `iperf3_result(agent)` reads
    its JSON report.
    """
    label = label or f'iperf3-c-{host.name}-{time.monotonic_ns()}'
    argv = iperf3_argv(scope, '-c', ip, '-p', str(port), '-t', str(seconds),
                       '--json', *extra)
    return AgentProcess(scope, host, label, argv)


def iperf3_result(agent):
    """The parsed `--json` report of a finished iperf3 client."""
    with open(agent.out_path) as f:
        return json.load(f)


def wait_served_by(host, ip, port, who, timeout=10.0):
    """Probe from `host` until `who` answers; returns that attempt."""
    def served():
        attempt = probe_once(host, ip, port, timeout=1.0)
        return attempt if attempt['ok'] and attempt['who'] == who else None
    return scope_mod.wait_until(served, timeout, interval=0.05,
                                what=f'{who} to answer {ip}:{port}')


def neighbour_mac(host, ip):
    """The MAC `host`'s neighbour table holds for `ip`, or None."""
    out, _, _ = host.pexec(['ip', '-j', 'neigh', 'show', ip])
    for entry in json.loads(out or '[]'):
        if entry.get('dst') == ip and 'lladdr' in entry:
            return entry['lladdr']
    return None


def start_sniffer(scope, host, tcp_dst, label=None):
    """Record the TCP frames to port `tcp_dst` that `host` receives."""
    argv = AGENT + ['sniff', '--interface', str(host.defaultIntf()),
                    '--tcp-dst', str(tcp_dst)]
    agent = AgentProcess(scope, host, label or f'sniff-{host.name}', argv)
    agent.wait_for(lambda r: r.get('event') == 'sniffing', what='sniffer')
    return agent


def send_forged(host, eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst,
                count=3, seq=1):
    """Send forged Ethernet/IPv4/TCP frames out of `host`'s interface."""
    argv = AGENT + ['send-raw', '--interface', str(host.defaultIntf()),
                    '--eth-src', eth_src, '--eth-dst', eth_dst,
                    '--ip-src', ip_src, '--ip-dst', ip_dst,
                    '--tcp-src', str(tcp_src), '--tcp-dst', str(tcp_dst),
                    '--count', str(count), '--seq', str(seq)]
    out, err, code = host.pexec(argv)
    if code != 0:
        raise scope_mod.LabError(f'send-raw in {host.name}: {err.strip()}')


# -- hostile traffic ----------------------------------------------------------

class FuzzCounts(dict):
    """{category: frames sent}, from `send_fuzz`.

    `refused` is {category: frames the kernel would not send} (those
    under 14 bytes), `errors` {category: {errno name: frames}}.
    """

    def __init__(self, sent, refused, errors):
        super().__init__(sent)
        self.refused = refused
        self.errors = errors


def send_fuzz(host, ip, port, mac, count, seed, rate=None):
    """Send `count` fuzzed frames at ip:port (Ethernet `mac`) from `host`.

    Runs `agent fuzz` to completion out of `host`'s interface, `rate`
    frames per second (None: as fast as it can).  Returns a FuzzCounts:
    frames sent per category, for every category.
    """
    argv = AGENT + ['fuzz', '--interface', str(host.defaultIntf()),
                    '--eth-dst', mac, '--ip-dst', ip, '--tcp-dst', str(port),
                    '--count', str(count), '--seed', str(seed)]
    if rate:
        argv += ['--rate', str(rate)]
    out, err, code = host.pexec(argv)
    sent, refused, errors = {}, {}, {}
    for line in out.splitlines():
        if line.startswith('{'):
            record = json.loads(line)
            if record.get('event') == 'fuzz':
                category = record['category']
                sent[category] = record['sent']
                refused[category] = record['refused']
                errors[category] = record['errors']
    if code != 0 or not sent:
        lines = [line for line in err.splitlines() if line.strip()]
        why = lines[-1].strip() if lines else f'exit status {code}'
        raise scope_mod.LabError(f'fuzz from {host.name}: {why}')
    return FuzzCounts(sent, refused, errors)


def start_syn_flood(scope, host, ip, port, mac, rate, duration, seed=0,
                    ip_src_net='10.200.0.0/16', label=None):
    """SYNs to ip:port from random sources in `ip_src_net`, out of `host`.

    `rate` frames per second for `duration` seconds (0: until stopped).
    The agent's last record, {'event': 'done', 'sent': n, ...}, appears
    when it exits.
    """
    argv = AGENT + ['syn-flood', '--interface', str(host.defaultIntf()),
                    '--eth-dst', mac, '--ip-dst', ip, '--tcp-dst', str(port),
                    '--rate', str(rate), '--duration', str(duration),
                    '--seed', str(seed), '--ip-src-net', ip_src_net]
    agent = AgentProcess(scope, host, label or f'syn-flood-{host.name}',
                         argv)
    agent.wait_for(lambda r: r.get('event') == 'flooding',
                   what='SYN flood')
    return agent
