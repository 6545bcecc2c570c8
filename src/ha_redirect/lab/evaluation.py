"""The paper's evaluation (Section IV): schemes x arrival rates x repetitions.

    python -m ha_redirect.lab.evaluation [--rates 1,2,4,8] [--repeat 2] ...

For each scheme, rate and repetition one run builds its own testbed in its
own RunScope:

1. the scheme's network (SDN: OVS + `ha-redirect-controller` with the
   scheme's strategy; HAProxy: the proxy host with the scheme's profile),
   an identity server on the probe port and one iperf3 server per client
   port on the primary and the backup (iperf3 serves one test at a time,
   so every client of a phase has its own port);
2. a baseline phase without failure (throughput under normal conditions);
3. the failure phase: captures on every client interface and on the
   backup's, a prober opening a connection every 5 ms, Poisson iperf3
   clients, the primary's link down `fail_at` seconds in; it ends when
   every client has ended (a client still running `grace` seconds after
   its planned end is stopped and counts as aborted) and the prober has
   reached the backup (or `gap_wait` seconds passed);
4. metrics (see `metrics`), then the scope tears everything down.

A run that fails is recorded with its reason and the sweep goes on; Ctrl-C
cleans the host and writes a partial report.
"""

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import traceback

from ha_redirect.lab import controller as controller_mod
from ha_redirect.lab import haproxy as haproxy_mod
from ha_redirect.lab import metrics
from ha_redirect.lab import report as report_mod
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed as testbed_mod
from ha_redirect.lab import topology
from ha_redirect.lab import traffic
from ha_redirect.lab import workload
from ha_redirect import plugins

LOG = logging.getLogger(__name__)

PROBE_PORT = 5001
FIRST_CLIENT_PORT = 5201
BACKUP_ROLE = 'backup1'
SNAPLEN = 128
PROBE_LEAD = 1.0      # seconds the prober runs before the failure
PROBE_TAIL = 0.5      # ... and after the backup first answered it
PROBE_TIMEOUT_MS = 3000


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What one invocation measures."""
    schemes: tuple = ('haproxy-paper', 'haproxy-tuned', 'sdn-reactive',
                      'sdn-proactive')
    rates: tuple = (1.0, 2.0, 4.0, 8.0)
    repeat: int = 1
    duration: float = 2.0       # iperf3 -t, seconds (the paper: at most 10)
    window: float = 7.0         # arrivals in [0, window) of each phase
    fail_at: float = 5.0        # the primary's link goes down then
    baseline: bool = True       # a phase without failure first
    grace: float = 4.0          # a client may run this long past its end
    gap_wait: float = 30.0      # how long to wait for the backup to answer
    interval_ms: float = 5.0    # prober
    client_hosts: int = 3       # iperf3 client hosts (the prober has its own)
    bandwidth: str = ''         # iperf3 -b per client; '' = unlimited
    seed: str = '1'
    keep_pcaps: bool = False


PAPER = dict(rates=(1.0, 2.0, 4.0, 6.0, 8.0, 10.0), repeat=5, duration=10.0,
             window=15.0, grace=5.0)


def available_schemes():
    """HAProxy profiles and every installed strategy, as scheme names."""
    return ([f'haproxy-{p}' for p in sorted(haproxy_mod.PROFILES)]
            + [f'sdn-{n}' for n in plugins.strategy_names()])


def parse_scheme(scheme):
    """('sdn', strategy) or ('haproxy', profile); ValueError otherwise."""
    if scheme not in available_schemes():
        raise ValueError(f'unknown scheme {scheme!r} (available: '
                         f'{", ".join(available_schemes())})')
    kind, _, variant = scheme.partition('-')
    return kind, variant


def clock_offset(samples=7):
    """(CLOCK_REALTIME - CLOCK_MONOTONIC, uncertainty), both seconds."""
    best = None
    for _ in range(samples):
        m1 = time.monotonic()
        r = time.time()
        m2 = time.monotonic()
        if best is None or m2 - m1 < best[1]:
            best = (r - (m1 + m2) / 2, m2 - m1)
    return best


# -- one run ------------------------------------------------------------------

class Capture:
    """dumpcap on one interface inside a host, writing a pcap we own."""

    def __init__(self, scope, host, path, bpf, label):
        self.path = path
        argv = ['dumpcap', '-q', '-P', '-s', str(SNAPLEN), '-i',
                str(host.defaultIntf()), '-f', bpf, '-w', path]
        self.agent = traffic.AgentProcess(scope, host, label, argv)

    def wait_started(self, timeout=10.0):
        def started():
            if self.agent.popen.poll() is not None:
                raise scope_mod.LabError(
                    f'dumpcap exited: {self.agent.stderr().strip()[-300:]}')
            return 'Capturing on' in self.agent.stderr()
        scope_mod.wait_until(started, timeout, what='dumpcap to capture')

    def stop(self):
        """Stop; the number of packets dropped, None if not reported."""
        self.agent.stop()
        found = _DROPS.search(self.agent.stderr())
        return int(found.group(1)) if found else None


# "Packets received/dropped on interface 'x': 10/0 (pcap:0/dumpcap:0/...)"
_DROPS = re.compile(r"received/dropped on interface '[^']*': \d+/(\d+)")


def capture_filter(lo, hi):
    """Handshakes, FINs and RSTs, plus server segments that carry data.

    The bulk of the iperf3 traffic (client data and its ACKs) is not
    needed for any metric and is left out, so captures stay small and
    cheap even at high arrival rates.
    """
    payload = "(ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2)) != 0"
    return (f'tcp and ((tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst)) != 0 '
            f'or (src portrange {lo}-{hi} and {payload}))')


# Takes the interface down with one ioctl when a line arrives on stdin, and
# prints CLOCK_MONOTONIC just before and after it.  Started ahead of time,
# so the failure instant is not blurred by starting `ip` in the namespace
# (about 10 ms on a loaded host).
_LINK_DOWN = r"""
import fcntl, socket, struct, sys, time
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
name = sys.argv[1].encode()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack('16sH22x', name, 0)
flags = struct.unpack('16sH', fcntl.ioctl(sock, SIOCGIFFLAGS, req)[:18])[1]
print('ready', flush=True)
if sys.stdin.readline():
    t0 = time.monotonic()
    fcntl.ioctl(sock, SIOCSIFFLAGS,
                struct.pack('16sH22x', name, flags & ~IFF_UP))
    t1 = time.monotonic()
    print(repr(t0), repr(t1), flush=True)
"""


class LinkCutter:
    """The paper's failure: the server's own interface goes down."""

    def __init__(self, scope, host):
        self.intf = str(host.defaultIntf())
        self.popen = host.popen([sys.executable, '-c', _LINK_DOWN,
                                 self.intf], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        scope.own_process(self.popen, f'link-down {self.intf}')
        line = self.popen.stdout.readline()
        if line.strip() != b'ready':
            raise scope_mod.LabError(
                f'link-down helper for {self.intf} failed: '
                f'{self.popen.stderr.read().decode().strip()[-300:]}')

    def fire(self):
        """Down now; (monotonic just before, just after) the ioctl."""
        self.popen.stdin.write(b'go\n')
        self.popen.stdin.flush()
        line = self.popen.stdout.readline().split()
        if len(line) != 2:
            raise scope_mod.LabError(
                f'taking {self.intf} down failed: '
                f'{self.popen.stderr.read().decode().strip()[-300:]}')
        return float(line[0]), float(line[1])


class _Lab:
    """The scheme's testbed with its servers, inside one RunScope."""

    def __init__(self, scope, kind, variant, n_hosts, ports, backup_ports):
        self.kind = kind
        self.variant = variant
        self.controller = None
        self.haproxy = None
        tcp_ports = (PROBE_PORT,) + tuple(ports)
        if kind == 'sdn':
            plan = topology.sdn_plan(scope, n_clients=n_hosts,
                                     tcp_ports=tcp_ports)
            self.bed = testbed_mod.SdnTestbed(scope, plan)
            self.controller = controller_mod.ControllerProcess(
                scope, [plan.service()], strategy=variant)
            self.controller.start()
            self.bed.start()
            self.bed.connect_controller(self.controller.port)
            self.controller.wait_switch_connected(plan.datapath_id)
        else:
            plan = topology.proxy_plan(scope, n_clients=n_hosts,
                                       tcp_ports=tcp_ports)
            self.bed = testbed_mod.ProxyTestbed(scope, plan)
            self.bed.start()
        for role in ('primary', BACKUP_ROLE):
            traffic.start_identity_server(scope, self.bed.host(role), role,
                                          [PROBE_PORT], label=f'serve-{role}')
            # Only failure-phase clients can reach the backup.
            _start_iperf3_servers(scope, self.bed.host(role), role,
                                  ports if role == 'primary'
                                  else backup_ports)
        if kind == 'haproxy':
            self.haproxy = haproxy_mod.HAProxy(scope, self.bed,
                                               variant).start()
        self.ip = self.bed.service_address[0]


def _start_iperf3_servers(scope, host, role, ports):
    for port in ports:
        traffic.AgentProcess(scope, host, f'iperf3-s-{role}-{port}',
                             ['iperf3', '-s', '-p', str(port)])
    want = set(ports)

    def listening():
        out = host.cmd('ss -Hltn')
        have = {int(line.split()[3].rsplit(':', 1)[1])
                for line in out.splitlines() if line.strip()}
        return want <= have
    scope_mod.wait_until(listening, 15, interval=0.1,
                         what=f'{len(ports)} iperf3 servers on {role}')


def _drive(scope, lab, schedule, hosts, cfg, phase, events=None):
    """Launch a phase's clients on time and reap them; returns the clients.

    `events` (failure phase) is told the time at every turn of the loop
    (`events.tick(t0, now)`) and the phase lasts until `events.done()` too.
    A client still running `cfg.grace` seconds after its planned end is
    stopped.
    """
    extra = ['-b', cfg.bandwidth] if cfg.bandwidth else []
    pending = list(schedule.arrivals)
    running = []
    clients = []
    t0 = time.monotonic()
    while pending or running or (events and not events.done()):
        now = time.monotonic()
        if events:
            events.tick(t0, now)
        while pending and now - t0 >= pending[0].at:
            a = pending.pop(0)
            host = hosts[a.host_index % len(hosts)]
            agent = traffic.run_iperf3_client(
                scope, host, lab.ip, a.port, seconds=cfg.duration,
                label=f'{phase}-c{a.index}', extra=extra)
            running.append(dict(arrival=a, host=host, agent=agent,
                                t_launch=time.monotonic(), killed=False))
        for c in list(running):
            a = c['arrival']
            if c['agent'].popen.poll() is not None:
                c['t_exit'] = time.monotonic()
            elif now - t0 > a.at + cfg.duration + cfg.grace:
                c['killed'] = True
                c['agent'].stop()
                c['t_exit'] = time.monotonic()
            else:
                continue
            running.remove(c)
            clients.append(c)
        next_at = [t0 + pending[0].at] if pending else []
        if events and events.next_at(t0) is not None:
            next_at.append(events.next_at(t0))
        wait = min([0.02] + [max(0.0, t - time.monotonic())
                             for t in next_at])
        time.sleep(wait)
    return clients, t0


class _FailureEvents:
    """The failure phase's own timeline, driven by `_drive`.

    The prober starts `PROBE_LEAD` seconds before the failure and stops
    `PROBE_TAIL` seconds after the backup first answered it (or
    `cfg.gap_wait` seconds after the failure): a new connection every 5 ms
    is itself a load (for the reactive strategy, 200 packet-ins a second),
    which should not weigh on the whole run.
    """

    def __init__(self, scope, lab, host, cfg, cutter):
        self.cfg = cfg
        self.cutter = cutter
        self.fail_times = None
        self.gap = None
        self._checked = 0.0
        self._stopping = False
        delay = max(0.0, cfg.fail_at - PROBE_LEAD)
        argv = traffic.AGENT + [
            'probe', '--target', f'{lab.ip}:{PROBE_PORT}',
            '--interval-ms', str(cfg.interval_ms),
            '--timeout-ms', str(PROBE_TIMEOUT_MS), '--drain']
        # sh sleeps, then becomes the prober (same PID): started now, it
        # probes from `delay` on without holding up client launches.
        self.prober = traffic.AgentProcess(
            scope, host, 'prober',
            ['sh', '-c', f'sleep {delay:.3f}; exec "$@"', 'sh'] + argv,
            stop_timeout=PROBE_TIMEOUT_MS / 1000.0 + 5)

    def tick(self, t0, now):
        if self.fail_times is None:
            if now - t0 >= self.cfg.fail_at:
                self.fail_times = self.cutter.fire()
            return
        if self._stopping or now - self._checked < 0.2:
            return
        self._checked = now
        t_fail = self.fail_times[0]
        if self.gap is None:
            self.gap = traffic.service_gap(self.prober.records(), t_fail,
                                           BACKUP_ROLE).gap
        if (self.gap is not None and now >= t_fail + self.gap + PROBE_TAIL
                or now >= t_fail + self.cfg.gap_wait):
            self._stopping = True
            with contextlib.suppress(ProcessLookupError):
                self.prober.popen.terminate()   # it drains, then exits

    def next_at(self, t0):
        """When the next event is due (the failure), or None."""
        return t0 + self.cfg.fail_at if self.fail_times is None else None

    def done(self):
        return self._stopping and self.prober.popen.poll() is not None


def _outcomes(clients, phase):
    rows = []
    for c in clients:
        a = c['arrival']
        try:
            report = traffic.iperf3_result(c['agent'])
        except (OSError, ValueError):
            report = None
        lifetime = c['t_exit'] - c['t_launch']
        out = metrics.iperf3_outcome(report, lifetime)
        error = out.error
        if c['killed']:
            error = f'stopped after {lifetime:.1f}s' + (
                f' ({error})' if error else '')
        rows.append(dict(
            phase=phase, index=a.index, at=round(a.at, 6),
            host=c['host'].name, ip=c['host'].IP(), port=a.port,
            t_launch=c['t_launch'], t_exit=c['t_exit'],
            ok=out.ok and not c['killed'], error=error, bytes=out.bytes,
            mbps=out.bits_per_second / 1e6))
    return rows


def run_once(cfg, scheme, rate, repetition, run_dir):
    """One run; returns its raw result dict (raises on failure)."""
    kind, variant = parse_scheme(scheme)
    n_base = (workload.count_arrivals(rate, cfg.window, cfg.seed,
                                      repetition, 'baseline')
              if cfg.baseline else 0)
    n_fail = workload.count_arrivals(rate, cfg.window, cfg.seed, repetition,
                                     'failure')
    base_ports = tuple(range(FIRST_CLIENT_PORT, FIRST_CLIENT_PORT + n_base))
    fail_ports = tuple(range(FIRST_CLIENT_PORT + n_base,
                             FIRST_CLIENT_PORT + n_base + max(n_fail, 1)))
    result = dict(scheme=scheme, kind=kind, variant=variant, rate=rate,
                  repetition=repetition, seed=cfg.seed)
    pcap_dir = run_dir
    with scope_mod.RunScope() as scope:
        lab = _Lab(scope, kind, variant, cfg.client_hosts + 1,
                   base_ports + fail_ports, fail_ports)
        result['datapath'] = lab.bed.datapath
        result['bridges'] = list(lab.bed.bridges)
        result['token'] = scope.token
        prober_host, hosts = lab.bed.clients[0], lab.bed.clients[1:]
        traffic.wait_served_by(prober_host, lab.ip, PROBE_PORT, 'primary',
                               timeout=15)
        rows = []
        if n_base:
            sched = workload.poisson_schedule(
                rate, cfg.window, cfg.seed, repetition, 'baseline',
                len(hosts), base_ports)
            clients, _ = _drive(scope, lab, sched, hosts, cfg, 'baseline')
            rows += _outcomes(clients, 'baseline')
        # -- the failure phase
        os.makedirs(pcap_dir, exist_ok=True)
        bpf = capture_filter(PROBE_PORT, fail_ports[-1])
        captures = {}
        for host in [prober_host] + list(hosts) + [lab.bed.host(BACKUP_ROLE)]:
            captures[host.name] = Capture(
                scope, host, os.path.join(pcap_dir, f'{host.name}.pcap'),
                bpf, f'dumpcap-{host.name}')
        for cap in captures.values():
            cap.wait_started()
        offset0, offset_err0 = clock_offset()
        sched = workload.poisson_schedule(
            rate, cfg.window, cfg.seed, repetition, 'failure', len(hosts),
            fail_ports)
        events = _FailureEvents(scope, lab, prober_host, cfg,
                                LinkCutter(scope, lab.bed.primary))
        clients, t0 = _drive(scope, lab, sched, hosts, cfg, 'failure',
                             events)
        t_fail, t_fail_done = events.fail_times
        time.sleep(0.2)   # let the last answers reach the captures
        drops = {name: cap.stop() for name, cap in captures.items()}
        offset1, offset_err1 = clock_offset()
        rows += _outcomes(clients, 'failure')
        probes = traffic.attempts(events.prober.records())
        gap = traffic.service_gap(probes, t_fail, BACKUP_ROLE)
        transitions = (lab.haproxy.transitions() if lab.haproxy else [])
        client_ips = {h.name: h.IP() for h in lab.bed.clients}
    # -- metrics (the testbed is gone; only files remain)
    client_segs = []
    for name in client_ips:
        client_segs += metrics.read_segments(
            os.path.join(pcap_dir, f'{name}.pcap'), offset0)
    client_segs.sort(key=lambda s: s.t)
    backup_name = [n for n in captures if n not in client_ips][0]
    backup_segs = metrics.read_segments(
        os.path.join(pcap_dir, f'{backup_name}.pcap'), offset0)
    method = 'same-connection' if kind == 'sdn' else 'relayed'
    all_ports = (PROBE_PORT,) + fail_ports
    response, seg = metrics.first_backup_response(
        client_segs, backup_segs, t_fail, all_ports, method)
    response_iperf, _ = metrics.first_backup_response(
        client_segs, backup_segs, t_fail, fail_ports, method)
    conns = metrics.connections(client_segs, all_ports)
    by_client = {}
    for c in conns:
        by_client.setdefault((c.client, c.server_port), []).append(c)
    counts = {'before': 0, 'after': 0, 'finished': 0}
    aborted = {'before': 0, 'after': 0, 'finished': 0}
    for row in rows:
        if row['phase'] != 'failure':
            continue
        mine = by_client.get((row['ip'], row['port']), [])
        cls = metrics.client_class(mine, t_fail, row['t_exit'])
        row['class'] = cls
        row['rst_after'] = metrics.resets_after(mine, t_fail)
        row['connections'] = len(mine)
        counts[cls] += 1
        aborted[cls] += 0 if row['ok'] else 1
    probe_conns = [c for c in conns if c.server_port == PROBE_PORT]
    iperf_conns = [c for c in conns if c.server_port != PROBE_PORT]
    fail_rows = [r for r in rows if r['phase'] == 'failure']
    base_rows = [r for r in rows if r['phase'] == 'baseline']
    result.update(
        status='ok',
        clock=dict(offset_start=offset0, offset_end=offset1,
                   drift_s=offset1 - offset0,
                   sample_uncertainty_s=max(offset_err0, offset_err1),
                   failure_command_s=t_fail_done - t_fail),
        t_phase_start=t0, t_fail=t_fail,
        capture_drops=drops,
        backup_response_method=method,
        first_backup_segment=(None if seg is None else dict(
            t=seg.t, src=seg.src, sport=seg.sport, dst=seg.dst,
            dport=seg.dport, flags=seg.flags)),
        haproxy_transitions=transitions,
        probe_timeline=_probe_timeline(probes, t_fail, gap.gap),
        metrics=dict(
            backup_response_s=response,
            backup_response_iperf_s=response_iperf,
            service_gap_s=gap.gap,
            probe_attempts_after=gap.attempts_after,
            probe_failed_after=gap.failed_after,
            probe_answered_by=gap.answered_by,
            rst_after=metrics.resets_after(iperf_conns, t_fail),
            reset_connections=metrics.reset_connections(iperf_conns, t_fail),
            rst_after_probe=metrics.resets_after(probe_conns, t_fail),
            clients=len(fail_rows),
            clients_before=counts['before'],
            clients_after=counts['after'],
            clients_finished=counts['finished'],
            aborted_before=aborted['before'],
            aborted_after=aborted['after'],
            aborted_total=sum(aborted.values()),
            throughput_mbps=metrics.mean(r['mbps'] for r in fail_rows),
            baseline_clients=len(base_rows),
            baseline_aborted=sum(1 for r in base_rows if not r['ok']),
            baseline_throughput_mbps=metrics.mean(
                r['mbps'] for r in base_rows)),
        clients=rows)
    return result


def _probe_timeline(probes, t_fail, gap, before=0.05, limit=150):
    """The probe attempts around the failure, times relative to it."""
    end = t_fail + (gap if gap is not None else 1.0) + 0.02
    rows = []
    for a in probes:
        if t_fail - before <= a['t'] <= end:
            def rel(v):
                return None if v is None else round(v - t_fail, 6)
            rows.append(dict(t=rel(a['t']), connected=rel(a['t_connected']),
                             done=rel(a['t_done']), ok=a['ok'],
                             who=a['who'], error=a['error']))
    return rows[:limit]


# -- the sweep ----------------------------------------------------------------

def _run_id(scheme, rate, repetition):
    return f'{scheme}_rate{rate:g}_rep{repetition}'


def _remove_pcaps(run_dir):
    if not os.path.isdir(run_dir):
        return
    for name in os.listdir(run_dir):
        if name.endswith('.pcap'):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(run_dir, name))
    with contextlib.suppress(OSError):
        os.rmdir(run_dir)


def plan_runs(cfg):
    """(scheme, rate, repetition), repetitions outermost so a partial sweep
    still covers every scheme and rate."""
    return [(scheme, rate, rep) for rep in range(cfg.repeat)
            for rate in cfg.rates for scheme in cfg.schemes]


def _write_run(out_dir, result):
    path = os.path.join(out_dir, 'runs', _run_id(
        result['scheme'], result['rate'], result['repetition']) + '.json')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)


RUN_FIELDS = ('scheme', 'rate', 'repetition', 'status', 'reason',
              'elapsed_s')


def write_csv(out_dir, results):
    """runs.csv (one row per run) and clients.csv (one per client)."""
    metric_names = sorted({k for r in results
                           for k, v in r.get('metrics', {}).items()
                           if not isinstance(v, dict)})
    with open(os.path.join(out_dir, 'runs.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(RUN_FIELDS + tuple(metric_names))
        for r in results:
            m = r.get('metrics', {})
            w.writerow([r.get(k, '') for k in RUN_FIELDS]
                       + [m.get(k, '') for k in metric_names])
    fields = ('phase', 'index', 'at', 'host', 'port', 'class', 'ok',
              'error', 'bytes', 'mbps', 'rst_after', 'connections')
    with open(os.path.join(out_dir, 'clients.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(('scheme', 'rate', 'repetition') + fields)
        for r in results:
            for c in r.get('clients', []):
                w.writerow([r['scheme'], r['rate'], r['repetition']]
                           + [c.get(k, '') for k in fields])


def sweep(cfg, out_dir, progress=True):
    """Run every (scheme, rate, repetition); returns (results, interrupted)."""
    from tqdm import tqdm
    runs = plan_runs(cfg)
    results = []
    interrupted = None
    bar = tqdm(total=len(runs), unit='run', disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    try:
        for scheme, rate, rep in runs:
            bar.set_description(f'{scheme} rate={rate:g} rep={rep}')
            started = time.monotonic()
            run_dir = os.path.join(out_dir, 'runs',
                                   _run_id(scheme, rate, rep))
            try:
                try:
                    result = run_once(cfg, scheme, rate, rep, run_dir)
                finally:
                    if not cfg.keep_pcaps:
                        _remove_pcaps(run_dir)
            except (KeyboardInterrupt, scope_mod.Terminated) as exc:
                interrupted = type(exc).__name__
                result = dict(scheme=scheme, rate=rate, repetition=rep,
                              status='interrupted', reason=interrupted)
            except Exception as exc:  # record it; the sweep goes on
                LOG.debug('run failed', exc_info=True)
                result = dict(scheme=scheme, rate=rate, repetition=rep,
                              status='failed',
                              reason=f'{type(exc).__name__}: {exc}'
                              .splitlines()[0][:300],
                              traceback=traceback.format_exc())
            result['elapsed_s'] = round(time.monotonic() - started, 2)
            results.append(result)
            _write_run(out_dir, result)
            bar.update(1)
            if result['status'] == 'failed':
                bar.write(f'run {_run_id(scheme, rate, rep)} failed: '
                          f'{result["reason"]}')
            if interrupted:
                break
    except (KeyboardInterrupt, scope_mod.Terminated) as exc:
        interrupted = type(exc).__name__   # between runs: nothing to clean
    finally:
        bar.close()
    return results, interrupted


def environment():
    """Versions and machine facts for the report."""
    import importlib.metadata
    import platform

    def first_line(argv):
        try:
            out = scope_mod.run(argv, check=False, timeout=10)
        except (OSError, scope_mod.subprocess.TimeoutExpired):
            return 'not found'
        return ((out.stdout or out.stderr).strip().splitlines() or ['?'])[0]

    def dist(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return 'not installed'
    try:
        datapath = testbed_mod.choose_datapath()
    except Exception as exc:  # only a report line
        datapath = f'unknown ({exc})'
    return {
        'Open vSwitch': first_line(['ovs-vswitchd', '--version']),
        'HAProxy': first_line(['haproxy', '-v']),
        'os-ken': dist('os-ken'),
        'ha_redirect': dist('ha_redirect'),
        'iperf3': first_line(['iperf3', '--version']),
        'dumpcap': first_line(['dumpcap', '--version']),
        'Mininet': dist('mininet'),
        'kernel': platform.release(),
        'Python': platform.python_version(),
        'OVS datapath': datapath,
        'CPU cores': str(os.cpu_count()),
    }


# -- command line -------------------------------------------------------------

def _floats(text):
    try:
        values = tuple(float(v) for v in text.split(',') if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a comma-separated list of positive numbers')
    return values


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f'{text!r} is not a positive '
                                             f'{kind.__name__}')
        return value
    return parse


def _schemes(text):
    schemes = tuple(s.strip() for s in text.split(',') if s.strip())
    if not schemes:
        raise argparse.ArgumentTypeError('no scheme given')
    for scheme in schemes:
        try:
            parse_scheme(scheme)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return schemes


def add_arguments(parser):
    """The evaluation's options (for `ha-redirect-lab evaluate`)."""
    d = EvalConfig()
    parser.add_argument('--schemes', type=_schemes, default=None,
                        help='comma-separated schemes (default: '
                        f'{",".join(d.schemes)}; available: '
                        'haproxy-<profile>, sdn-<strategy>)')
    parser.add_argument('--rates', type=_floats, default=None,
                        help='client arrival rates, clients/s (default: '
                        f'{",".join(f"{r:g}" for r in d.rates)})')
    parser.add_argument('--repeat', type=_positive(int), default=None,
                        help=f'repetitions per rate (default {d.repeat})')
    parser.add_argument('--duration', type=_positive(float), default=None,
                        help='seconds each iperf3 client transmits '
                        f'(default {d.duration:g}; the paper: 10)')
    parser.add_argument('--window', type=_positive(float), default=None,
                        help='seconds of client arrivals in the failure '
                        f'phase (default {d.window:g})')
    parser.add_argument('--fail-at', type=_positive(float), default=None,
                        help='the primary fails this many seconds into the '
                        f'failure phase (default {d.fail_at:g})')
    parser.add_argument('--no-baseline', dest='baseline',
                        action='store_false', default=None,
                        help='skip the phase without failure (no baseline '
                        'throughput)')
    parser.add_argument('--bandwidth', default=None,
                        help='iperf3 -b for each client, e.g. 50M '
                        '(default: unlimited, as the paper)')
    parser.add_argument('--client-hosts', type=_positive(int), default=None,
                        help='hosts that run iperf3 clients (default '
                        f'{d.client_hosts})')
    parser.add_argument('--seed', default=None,
                        help=f'arrival seed (default {d.seed})')
    parser.add_argument('--paper', action='store_true',
                        help='the full sweep: rates 1-10, 5 repetitions, '
                        '10 s transfers, 15 s of arrivals (about 2.5 hours on '
                        '2 cores)')
    parser.add_argument('--output', default=None,
                        help='results folder (default results/<timestamp>)')
    parser.add_argument('--keep-pcaps', action='store_true',
                        help='keep the packet captures')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar')
    return parser


def config_from_args(args):
    values = dict(PAPER) if args.paper else {}
    for name in ('schemes', 'rates', 'repeat', 'duration', 'window',
                 'fail_at', 'baseline', 'bandwidth', 'client_hosts',
                 'seed'):
        value = getattr(args, name)
        if value is not None:
            values[name] = value
    values['keep_pcaps'] = args.keep_pcaps
    cfg = EvalConfig(**values)
    if cfg.fail_at >= cfg.window:
        raise ValueError(f'--fail-at ({cfg.fail_at:g}) must be inside the '
                         f'arrival window ({cfg.window:g})')
    return cfg


def run(args):
    """Run the evaluation; the exit status."""
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f'evaluate: error: {exc}', file=sys.stderr)
        return 2
    out_dir = args.output or os.path.join(
        'results', datetime.datetime.now().strftime('%Y%m%d-%H%M%S'))
    try:
        testbed_mod.check_host()
        os.makedirs(out_dir, exist_ok=True)
    except (scope_mod.LabError, OSError) as exc:
        print(f'evaluate: error: {exc}', file=sys.stderr)
        return 1
    old_term = signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    try:
        env = environment()
        print(f'evaluate: {len(plan_runs(cfg))} runs into {out_dir}',
              file=sys.stderr)
        results, interrupted = sweep(cfg, out_dir,
                                     progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, old_term)
    elapsed = time.monotonic() - started
    write_csv(out_dir, results)
    meta = dict(config=dataclasses.asdict(cfg), environment=env,
                elapsed_s=elapsed, interrupted=interrupted,
                command=_command_line())
    with open(os.path.join(out_dir, 'evaluation.json'), 'w') as f:
        json.dump(meta, f, indent=1, default=str)
    report_path = report_mod.write_report(out_dir, results, meta)
    failed = sum(1 for r in results if r['status'] != 'ok')
    print(f'evaluate: {len(results) - failed}/{len(results)} runs ok in '
          f'{elapsed:.0f}s; report: {report_path}', file=sys.stderr)
    if interrupted:
        print('evaluate: interrupted; the host is clean and the report is '
              'partial', file=sys.stderr)
        return 130
    return 0 if results and failed < len(results) else 1


def _command_line():
    program = os.path.basename(sys.argv[0])
    if program in ('evaluation.py', '__main__.py', '-c'):
        program = 'python -m ha_redirect.lab.evaluation'
    elif program == 'cli.py':
        program = 'ha-redirect-lab'
    return ' '.join([program] + sys.argv[1:])


def _terminated(signum, frame):
    raise scope_mod.Terminated(f'terminated by signal {signum}')


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def main(argv=None):
    parser = add_arguments(_Parser(
        prog='python -m ha_redirect.lab.evaluation',
        description='Reproduce the paper\'s Figures 2-4: SDN redirection '
        'against HAProxy as the client arrival rate grows.'))
    parser.add_argument('--debug', action='store_true')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else
                        logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
