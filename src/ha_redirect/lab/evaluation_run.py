"""One run of the evaluation: one scheme, one rate, one repetition.

`run_once` builds its own testbed in its own RunScope:

1. the scheme's network (SDN: OVS + `ha-redirect-controller` with the
   scheme's strategy; HAProxy: the proxy host with the scheme's profile),
   an identity server on the probe port and one iperf3 server per client
   port (iperf3 serves one test at a time, so every client of a phase has
   its own port);
2. a baseline phase without failure (throughput under normal conditions);
3. the failure phase: captures on every client interface and on the
   backup's, Poisson iperf3 clients, the primary failing `fail_at`
   seconds in -- its link down (`LinkCutter`, the paper's failure) or its
   service processes killed with the link up (`ServiceKiller`; SDN then
   runs the `tcp_probe` monitor too) -- a prober opening a connection
   every 5 ms around the failure; it ends when every client has ended
   (a client still running `grace` seconds after its planned end is
   stopped and counts as aborted) and the prober has reached the backup
   (or `gap_wait` seconds passed);
4. metrics (see `metrics`) from the files left once the scope has torn
   everything down, and from the health transitions the controller or
   HAProxy logged (detection time, false failovers).
"""

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
import time
import typing

from ha_redirect.lab import controller as controller_mod
from ha_redirect.lab import failures
from ha_redirect.lab import haproxy as haproxy_mod
from ha_redirect.lab import metrics
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed as testbed_mod
from ha_redirect.lab import topology
from ha_redirect.lab import traffic
from ha_redirect.lab import workload
from ha_redirect import model

PROBE_PORT = 5001
FIRST_CLIENT_PORT = 5201
BACKUP_ROLE = 'backup1'
SNAPLEN = 128
PROBE_LEAD = 1.0      # seconds the prober runs before the failure
PROBE_TAIL = 0.5      # ... and after the backup first answered it
PROBE_TIMEOUT_MS = 3000
# Past this, the wall clock was stepped (NTP, the VM host) during the run:
# capture timestamps (CLOCK_REALTIME) cannot be mapped to CLOCK_MONOTONIC.
CLOCK_STEP_LIMIT_S = 0.001


class ClockStepped(scope_mod.LabError):
    """The wall clock moved against the monotonic clock during a run."""


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


class ServiceKiller:
    """The failure beyond the paper: the primary's service processes die
    (SIGKILL) while its link stays up."""

    def __init__(self, agents):
        self.agents = list(agents)

    def fire(self):
        """Kill now; (monotonic just before the first, after the last)."""
        return failures.kill_services(self.agents)


@dataclasses.dataclass(frozen=True)
class SchemeSetup:
    """How one scheme is configured for a failure mode.

    SDN: the controller's monitors and settings (`tcp_probe` joins
    `port_status` when the service is killed, at the model's default
    settings unless the evaluation overrides some); HAProxy: the profile,
    with the tuned profile checking at the probe interval when the
    service is killed.
    """
    monitors: tuple = ('port_status',)
    settings: typing.Optional[model.PolicySettings] = None
    profile: typing.Any = None

    def describe(self):
        """The health monitoring, for the report."""
        if self.settings is not None:
            s = self.settings
            if 'tcp_probe' not in self.monitors:
                return dict(monitors=list(self.monitors))
            return dict(monitors=list(self.monitors),
                        probe_interval=s.probe_interval,
                        probe_timeout=s.probe_timeout,
                        probe_fall=s.probe_fall, probe_rise=s.probe_rise,
                        probe_jitter=s.probe_jitter)
        profile = self.profile
        if isinstance(profile, str):
            profile = haproxy_mod.PROFILES[profile]
        return dict(monitors=['haproxy'], haproxy_profile=profile.name,
                    haproxy_server_options=list(profile.server_options),
                    haproxy_timeout_connect=profile.timeout_connect)


PROBE_OVERRIDES = ('probe_interval', 'probe_timeout', 'probe_fall',
                   'probe_rise')


def scheme_setup(cfg, kind, variant):
    """The `SchemeSetup` of scheme `kind`-`variant` under `cfg`."""
    kill = getattr(cfg, 'failure', 'link') == 'kill'
    probe = model.PolicySettings(
        probe_ip=topology.PROBE_IP, probe_mac=topology.PROBE_MAC,
        **{k: getattr(cfg, k) for k in PROBE_OVERRIDES
           if getattr(cfg, k, None) is not None})
    if kind == 'sdn':
        if kill:
            return SchemeSetup(monitors=('port_status', 'tcp_probe'),
                               settings=probe)
        return SchemeSetup(settings=model.PolicySettings())
    profile = variant
    if kill and variant == 'tuned':
        profile = haproxy_mod.with_check_interval(variant,
                                                  probe.probe_interval)
    return SchemeSetup(profile=profile)


class _Lab:
    """The scheme's testbed with its servers, inside one RunScope.

    The servers listen before the switch meets the controller, so health
    probes find them serving from the first one.
    """

    def __init__(self, scope, kind, variant, n_hosts, ports, backup_ports,
                 setup=None):
        setup = setup or SchemeSetup()
        self.kind = kind
        self.variant = variant
        self.controller = None
        self.haproxy = None
        self.service_agents = {}
        tcp_ports = (PROBE_PORT,) + tuple(ports)
        if kind == 'sdn':
            plan = topology.sdn_plan(scope, n_clients=n_hosts,
                                     tcp_ports=tcp_ports)
            self.bed = testbed_mod.SdnTestbed(scope, plan)
            self.controller = controller_mod.ControllerProcess(
                scope, [plan.service(monitors=setup.monitors)],
                strategy=variant, settings=setup.settings)
            self.controller.start()
            self.bed.start()
        else:
            plan = topology.proxy_plan(scope, n_clients=n_hosts,
                                       tcp_ports=tcp_ports)
            self.bed = testbed_mod.ProxyTestbed(scope, plan)
            self.bed.start()
        for role in ('primary', BACKUP_ROLE):
            agents = [traffic.start_identity_server(
                scope, self.bed.host(role), role, [PROBE_PORT],
                label=f'serve-{role}')]
            # Only failure-phase clients can reach the backup.
            agents += _start_iperf3_servers(
                scope, self.bed.host(role), role,
                ports if role == 'primary' else backup_ports)
            self.service_agents[role] = agents
        if kind == 'sdn':
            self.bed.connect_controller(self.controller.port)
            self.controller.wait_switch_connected(plan.datapath_id)
        else:
            self.haproxy = haproxy_mod.HAProxy(
                scope, self.bed, setup.profile or variant,
                label=f'haproxy-{variant}', log_format='iso').start()
        self.ip = self.bed.service_address[0]


def _start_iperf3_servers(scope, host, role, ports):
    agents = [traffic.AgentProcess(scope, host, f'iperf3-s-{role}-{port}',
                                   ['iperf3', '-s', '-p', str(port)])
              for port in ports]
    want = set(ports)

    def listening():
        out = host.cmd('ss -Hltn')
        have = {int(line.split()[3].rsplit(':', 1)[1])
                for line in out.splitlines() if line.strip()}
        return want <= have
    scope_mod.wait_until(listening, 15, interval=0.1,
                         what=f'{len(ports)} iperf3 servers on {role}')
    return agents


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
    """One run; returns its raw result dict (raises on failure).

    `scheme` is 'sdn-<strategy>' or 'haproxy-<profile>'; `cfg` an
    `evaluation.EvalConfig`; captures go to `run_dir`.
    """
    kind, _, variant = scheme.partition('-')
    n_base = (workload.count_arrivals(rate, cfg.window, cfg.seed,
                                      repetition, 'baseline')
              if cfg.baseline else 0)
    n_fail = workload.count_arrivals(rate, cfg.window, cfg.seed, repetition,
                                     'failure')
    base_ports = tuple(range(FIRST_CLIENT_PORT, FIRST_CLIENT_PORT + n_base))
    fail_ports = tuple(range(FIRST_CLIENT_PORT + n_base,
                             FIRST_CLIENT_PORT + n_base + max(n_fail, 1)))
    failure = getattr(cfg, 'failure', 'link')
    setup = scheme_setup(cfg, kind, variant)
    result = dict(scheme=scheme, kind=kind, variant=variant, rate=rate,
                  repetition=repetition, seed=cfg.seed, failure=failure,
                  health_monitoring=setup.describe())
    pcap_dir = run_dir
    with scope_mod.RunScope() as scope:
        lab = _Lab(scope, kind, variant, cfg.client_hosts + 1,
                   base_ports + fail_ports, fail_ports, setup)
        result['datapath'] = lab.bed.datapath
        result['bridges'] = list(lab.bed.bridges)
        result['token'] = scope.token
        prober_host, hosts = lab.bed.clients[0], lab.bed.clients[1:]
        traffic.wait_served_by(prober_host, lab.ip, PROBE_PORT, 'primary',
                               timeout=15)
        rows = []
        t_load = time.monotonic()
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
        if failure == 'kill':
            cutter = ServiceKiller(lab.service_agents['primary'])
        else:
            cutter = LinkCutter(scope, lab.bed.primary)
        events = _FailureEvents(scope, lab, prober_host, cfg, cutter)
        clients, t0 = _drive(scope, lab, sched, hosts, cfg, 'failure',
                             events)
        t_end = time.monotonic()
        t_fail, t_fail_done = events.fail_times
        time.sleep(0.2)   # let the last answers reach the captures
        drops = {name: cap.stop() for name, cap in captures.items()}
        offset1, offset_err1 = clock_offset()
        if abs(offset1 - offset0) > CLOCK_STEP_LIMIT_S:
            raise ClockStepped(
                f'the wall clock moved {offset1 - offset0:+.6f} s against '
                'the monotonic clock during the run: its capture times '
                'cannot be trusted')
        rows += _outcomes(clients, 'failure')
        probes = traffic.attempts(events.prober.records())
        gap = traffic.service_gap(probes, t_fail, BACKUP_ROLE)
        transitions = (lab.haproxy.transitions() if lab.haproxy else [])
        if lab.haproxy:
            health = metrics.haproxy_transitions(lab.haproxy.log_stdout(),
                                                 offset0)
            redirects = []
        else:
            log_text = lab.controller.log()
            health = metrics.controller_transitions(log_text)
            redirects = metrics.controller_redirects(log_text)
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
    false = metrics.false_failovers(health, 'primary', t_fail, t_load, t_end)
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
        t_load_start=t_load, t_end=t_end,
        # When the prober's new connections (for `reactive`, 200
        # packet-ins a second) added to the load, relative to the failure.
        prober_window=([round(probes[0]['t'] - t_fail, 6),
                        round(probes[-1]['t'] - t_fail, 6)]
                       if probes else None),
        health_transitions=[
            dict(t=round(x.t - t_fail, 6), monitor=x.monitor,
                 server=x.server, state='UP' if x.up else 'DOWN',
                 reason=x.reason, counted=t_load <= x.t <= t_end)
            for x in health],
        redirects=[dict(t=round(t - t_fail, 6), to=to, was=was, why=why)
                   for t, to, was, why in redirects],
        probe_timeline=_probe_timeline(probes, t_fail, gap.gap),
        metrics=dict(
            backup_response_s=response,
            backup_response_iperf_s=response_iperf,
            service_gap_s=gap.gap,
            monitor_detection_s=metrics.detection_time(health, 'primary',
                                                       t_fail),
            redirect_s=_first_redirect(redirects, t_fail),
            false_failovers=len(false),
            false_failovers_primary=sum(
                1 for x in false if x.server == 'primary'),
            false_failovers_backup=sum(
                1 for x in false if x.server != 'primary'),
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


def _first_redirect(redirects, t_fail):
    """Seconds from the failure to the policy's first redirect away from
    the primary (SDN); None without one."""
    times = [t for t, to, was, _ in redirects
             if t >= t_fail and was == 'primary' and to != 'primary']
    return min(times) - t_fail if times else None


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
