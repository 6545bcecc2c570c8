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
   seconds in -- its link down (`failures.LinkCutter`, the paper's
   failure) or its service processes killed with the link up
   (`failures.ServiceKiller`; SDN then runs the `tcp_probe` monitor too)
   -- a prober opening a connection every 5 ms around the failure; it
   ends when every client has ended (a client still running `grace`
   seconds after its planned end is stopped and counts as aborted) and
   the prober has reached the backup (or `gap_wait` seconds passed);
4. metrics (see `run_metrics`) from the files left once the scope has
   torn everything down (the captures, see `captures`), and from the
   health transitions the controller or HAProxy logged (detection time,
   false failovers).
"""

import contextlib
import dataclasses
import time
import typing

from ha_redirect.lab import captures as captures_mod
# Moved to `captures` and `failures`; still importable from here, where
# other modules and tests import them today.
from ha_redirect.lab.captures import capture_filter  # noqa: F401
from ha_redirect.lab.captures import ClockStepped  # noqa: F401
from ha_redirect.lab import controller as controller_mod
from ha_redirect.lab import failures
from ha_redirect.lab.failures import LinkCutter  # noqa: F401
from ha_redirect.lab.failures import ServiceKiller  # noqa: F401
from ha_redirect.lab import haproxy as haproxy_mod
from ha_redirect.lab import metrics
from ha_redirect.lab import run_metrics
from ha_redirect.lab import schemes as schemes_mod
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed as testbed_mod
from ha_redirect.lab import topology
from ha_redirect.lab import traffic
from ha_redirect.lab import workload
from ha_redirect import model

PROBE_PORT = 5001
PROBE_SERVER_LABEL = 'serve-{role}'    # the identity server on PROBE_PORT
FIRST_CLIENT_PORT = 5201
BACKUP_ROLE = 'backup1'
PROBE_LEAD = 1.0      # seconds the prober runs before the failure
PROBE_TAIL = 0.5      # ... and after the backup first answered it
PROBE_TIMEOUT_MS = 3000


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
                        probe_jitter=s.probe_jitter,
                        passive_refusals=s.passive_refusals,
                        passive_window=s.passive_window,
                        passive_aborts=s.passive_aborts,
                        passive_abort_window=s.passive_abort_window,
                        redispatch=s.redispatch)
        profile = haproxy_mod.resolve_profile(self.profile)
        return dict(monitors=['haproxy'], haproxy_profile=profile.name,
                    haproxy_server_options=list(profile.server_options),
                    haproxy_timeout_connect=profile.timeout_connect)


PROBE_OVERRIDES = ('probe_interval', 'probe_timeout', 'probe_fall',
                   'probe_rise', 'passive_refusals')


def scheme_setup(cfg, kind, variant):
    """The `SchemeSetup` of scheme `kind`-`variant` under `cfg`."""
    kill = getattr(cfg, 'failure', 'link') == 'kill'
    probe = model.PolicySettings(
        probe_ip=topology.PROBE_IP, probe_mac=topology.PROBE_MAC,
        **{k: getattr(cfg, k) for k in PROBE_OVERRIDES
           if getattr(cfg, k, None) is not None})
    if schemes_mod.Scheme(kind, variant).is_sdn:
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

    def __init__(self, scope, scheme, n_hosts, ports, backup_ports,
                 setup=None):
        setup = setup or SchemeSetup()
        self.scheme = scheme
        variant = scheme.variant
        self.controller = None
        self.haproxy = None
        self.service_agents = {}
        tcp_ports = (PROBE_PORT,) + tuple(ports)
        if scheme.kind not in (schemes_mod.SDN, schemes_mod.HAPROXY):
            raise scope_mod.LabError(f'evaluate cannot run {scheme.name}: '
                                     'only sdn-* and haproxy-* schemes')
        if scheme.is_sdn:
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
                label=PROBE_SERVER_LABEL.format(role=role))]
            # Only failure-phase clients can reach the backup.
            agents += _start_iperf3_servers(
                scope, self.bed.host(role), role,
                ports if role == 'primary' else backup_ports)
            self.service_agents[role] = agents
        if scheme.is_sdn:
            self.bed.connect_controller(self.controller.port)
            self.controller.wait_switch_connected(plan.datapath_id)
        else:
            self.haproxy = haproxy_mod.HAProxy(
                scope, self.bed, setup.profile or variant,
                label=f'haproxy-{variant}', log_format='iso').start()
        self.ip = self.bed.service_address[0]

    def health_records(self, clock_offset):
        """(health transitions, redirects, HAProxy's own transitions) from
        the log of the scheme's controller or HAProxy; HAProxy's wall-clock
        times are mapped with `clock_offset`."""
        if self.haproxy:
            return (metrics.haproxy_transitions(self.haproxy.log_stdout(),
                                                clock_offset),
                    [], self.haproxy.transitions())
        log_text = self.controller.log()
        return (metrics.controller_transitions(log_text),
                metrics.controller_redirects(log_text), [])


def _start_iperf3_servers(scope, host, role, ports):
    agents = [traffic.AgentProcess(scope, host, f'iperf3-s-{role}-{port}',
                                   traffic.iperf3_argv(scope, '-s', '-p',
                                                       str(port)))
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


def _start_prober(scope, lab, host, cfg):
    """The prober, probing from `PROBE_LEAD` seconds before the failure."""
    delay = max(0.0, cfg.fail_at - PROBE_LEAD)
    argv = traffic.AGENT + [
        'probe', '--target', f'{lab.ip}:{PROBE_PORT}',
        '--interval-ms', str(cfg.interval_ms),
        '--timeout-ms', str(PROBE_TIMEOUT_MS), '--drain']
    # sh sleeps, then becomes the prober (same PID): started now, it
    # probes from `delay` on without holding up client launches.
    return traffic.AgentProcess(
        scope, host, 'prober',
        ['sh', '-c', f'sleep {delay:.3f}; exec "$@"', 'sh'] + argv,
        stop_timeout=PROBE_TIMEOUT_MS / 1000.0 + 5)


@dataclasses.dataclass
class _FailureEvents:
    """The failure phase's own timeline, driven by `_drive`.

    The prober (`_start_prober`) stops `PROBE_TAIL` seconds after the
    backup first answered it (or `cfg.gap_wait` seconds after the
    failure): a new connection every 5 ms is itself a load (for the
    reactive strategy, 200 packet-ins a second), which should not weigh
    on the whole run.
    """
    cfg: typing.Any
    cutter: typing.Any        # failures.LinkCutter or ServiceKiller
    prober: traffic.AgentProcess
    fail_times: typing.Optional[tuple] = None   # once the cutter fired
    gap: typing.Optional[float] = None
    last_check: float = 0.0
    stopping: bool = False

    def tick(self, t0, now):
        if self.fail_times is None:
            if now - t0 >= self.cfg.fail_at:
                self.fail_times = self.cutter.fire()
            return
        if self.stopping or now - self.last_check < 0.2:
            return
        self.last_check = now
        t_fail = self.fail_times[0]
        if self.gap is None:
            self.gap = traffic.service_gap(self.prober.records(), t_fail,
                                           BACKUP_ROLE).gap
        if (self.gap is not None and now >= t_fail + self.gap + PROBE_TAIL
                or now >= t_fail + self.cfg.gap_wait):
            self.stopping = True
            with contextlib.suppress(ProcessLookupError):
                self.prober.popen.terminate()   # it drains, then exits

    def next_at(self, t0):
        """When the next event is due (the failure), or None."""
        return t0 + self.cfg.fail_at if self.fail_times is None else None

    def done(self):
        return self.stopping and self.prober.popen.poll() is not None


def _client_ports(cfg, rate, repetition):
    """The iperf3 ports of the baseline and of the failure phase: one per
    client, as an iperf3 server serves one test at a time."""
    n_base = (workload.count_arrivals(rate, cfg.window, cfg.seed,
                                      repetition, 'baseline')
              if cfg.baseline else 0)
    n_fail = workload.count_arrivals(rate, cfg.window, cfg.seed, repetition,
                                     'failure')
    base_ports = tuple(range(FIRST_CLIENT_PORT, FIRST_CLIENT_PORT + n_base))
    fail_ports = tuple(range(FIRST_CLIENT_PORT + n_base,
                             FIRST_CLIENT_PORT + n_base + max(n_fail, 1)))
    return base_ports, fail_ports


def run_once(cfg, scheme, rate, repetition, run_dir):
    """One run; returns its raw result dict (raises on failure).

    `scheme` is 'sdn-<strategy>' or 'haproxy-<profile>'; `cfg` an
    `evaluation.EvalConfig`; captures go to `run_dir`.
    """
    parsed = schemes_mod.Scheme.parse(scheme)
    base_ports, fail_ports = _client_ports(cfg, rate, repetition)
    failure = getattr(cfg, 'failure', 'link')
    setup = scheme_setup(cfg, parsed.kind, parsed.variant)
    result = dict(scheme=scheme, kind=parsed.kind, variant=parsed.variant,
                  rate=rate, repetition=repetition, seed=cfg.seed,
                  failure=failure,
                  health_monitoring=setup.describe())
    with scope_mod.RunScope() as scope:
        lab = _Lab(scope, parsed, cfg.client_hosts + 1,
                   base_ports + fail_ports, fail_ports, setup)
        result['datapath'] = lab.bed.datapath
        result['bridges'] = list(lab.bed.bridges)
        result['token'] = scope.token
        traffic.wait_served_by(lab.bed.clients[0], lab.ip, PROBE_PORT,
                               'primary', timeout=15)
        t_load = time.monotonic()
        rows = _baseline_phase(scope, lab, cfg, rate, repetition, base_ports)
        recorded = _failure_phase(scope, lab, cfg, rate, repetition,
                                  fail_ports, run_dir, rows, t_load)
    # The testbed is gone; only files and records remain.
    result.update(run_metrics.result_fields(recorded))
    return result


def _baseline_phase(scope, lab, cfg, rate, repetition, ports):
    """The clients of the phase without failure ([] without baseline)."""
    if not ports:
        return []
    hosts = lab.bed.clients[1:]
    sched = workload.poisson_schedule(rate, cfg.window, cfg.seed, repetition,
                                      'baseline', len(hosts), ports)
    clients, _ = _drive(scope, lab, sched, hosts, cfg, 'baseline')
    return run_metrics.outcomes(clients, 'baseline')


def _failure_phase(scope, lab, cfg, rate, repetition, fail_ports, pcap_dir,
                   rows, t_load):
    """Captures, clients, the failure and the prober; a `Recorded`."""
    prober_host, hosts = lab.bed.clients[0], lab.bed.clients[1:]
    backup = lab.bed.host(BACKUP_ROLE)
    captures = captures_mod.Captures(
        scope, [prober_host] + list(hosts) + [backup], pcap_dir,
        captures_mod.capture_filter(PROBE_PORT, fail_ports[-1]))
    sched = workload.poisson_schedule(
        rate, cfg.window, cfg.seed, repetition, 'failure', len(hosts),
        fail_ports)
    if getattr(cfg, 'failure', 'link') == 'kill':
        cutter = failures.ServiceKiller(lab.service_agents['primary'])
    else:
        cutter = failures.LinkCutter(scope, lab.bed.primary)
    events = _FailureEvents(cfg, cutter,
                            _start_prober(scope, lab, prober_host, cfg))
    clients, t0 = _drive(scope, lab, sched, hosts, cfg, 'failure', events)
    t_end = time.monotonic()
    t_fail = events.fail_times[0]
    time.sleep(0.2)   # let the last answers reach the captures
    drops = captures.stop()
    rows += run_metrics.outcomes(clients, 'failure')
    probes = traffic.attempts(events.prober.records())
    health, redirects, transitions = lab.health_records(captures.offset)
    return run_metrics.Recorded(
        scheme=lab.scheme, rows=rows, t_load=t_load, t_phase=t0,
        fail_times=events.fail_times, t_end=t_end, capture_drops=drops,
        clock=captures.clock(),
        client_pcaps=[captures_mod.pcap_path(pcap_dir, h.name)
                      for h in lab.bed.clients],
        backup_pcap=captures_mod.pcap_path(pcap_dir, backup.name),
        probe_port=PROBE_PORT, fail_ports=fail_ports, probes=probes,
        gap=traffic.service_gap(probes, t_fail, BACKUP_ROLE),
        health=health, redirects=redirects,
        haproxy_transitions=transitions,
        service_exits=dict(getattr(events.cutter, 'exited', {})),
        probe_server=PROBE_SERVER_LABEL.format(role='primary'))
