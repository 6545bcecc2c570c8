"""An evaluation run's result, from what the run recorded.

`evaluation_run.run_once` drives the testbed and hands over a `Recorded`
(its clients, the prober's attempts, the health transitions, where the
captures are); `result_fields` turns it into the raw result written to
`runs/*.json` once the testbed is gone: only files and records remain.
"""

import dataclasses
import typing

from ha_redirect.lab import metrics
from ha_redirect.lab import schemes
from ha_redirect.lab import traffic


@dataclasses.dataclass
class Recorded:
    """What one run left behind; times are CLOCK_MONOTONIC."""
    scheme: schemes.Scheme    # what ran (how to recognise the backup)
    rows: list                # `outcomes` of both phases
    t_load: float             # the first client's phase began
    t_phase: float            # the failure phase began
    fail_times: tuple         # (just before, just after) the failure
    t_end: float              # the failure phase ended
    capture_drops: dict
    clock: dict               # `captures.Captures.clock()`
    client_pcaps: list
    backup_pcap: str
    probe_port: int
    fail_ports: tuple         # the failure phase's iperf3 ports
    probes: list              # the prober's attempts
    gap: typing.Any           # `traffic.service_gap` of the probes
    health: list              # `metrics.HealthTransition`s
    redirects: list           # (t, to, was, why), SDN only
    haproxy_transitions: list
    # `--failure kill`: when each killed process had exited (label ->
    # CLOCK_MONOTONIC), and the label of the one serving the probe port.
    service_exits: dict = dataclasses.field(default_factory=dict)
    probe_server: typing.Optional[str] = None


def outcomes(clients, phase):
    """One row per iperf3 client of a phase (see `evaluation_run._drive`).
    """
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


def result_fields(rec):
    """The result's fields after its set-up ones, in the order written."""
    offset = rec.clock['offset_start']
    client_segs = []
    for path in rec.client_pcaps:
        client_segs += metrics.read_segments(path, offset)
    client_segs.sort(key=lambda s: s.t)
    backup_segs = metrics.read_segments(rec.backup_pcap, offset)
    t_fail, t_fail_done = rec.fail_times
    # SDN rewrites addresses only, so the backup's segments carry the
    # client's connection; HAProxy relays them over connections of its own.
    method = 'same-connection' if rec.scheme.is_sdn else 'relayed'
    all_ports = (rec.probe_port,) + rec.fail_ports
    response, seg = metrics.first_backup_response(
        client_segs, backup_segs, t_fail, all_ports, method)
    response_iperf, _ = metrics.first_backup_response(
        client_segs, backup_segs, t_fail, rec.fail_ports, method)
    conns = metrics.connections(client_segs, all_ports)
    return dict(
        status='ok',
        clock=dict(rec.clock, failure_command_s=t_fail_done - t_fail),
        t_phase_start=rec.t_phase, t_fail=t_fail,
        capture_drops=rec.capture_drops,
        backup_response_method=method,
        first_backup_segment=(None if seg is None else dict(
            t=seg.t, src=seg.src, sport=seg.sport, dst=seg.dst,
            dport=seg.dport, flags=seg.flags)),
        haproxy_transitions=rec.haproxy_transitions,
        t_load_start=rec.t_load, t_end=rec.t_end,
        # When the prober's new connections (for `reactive`, 200
        # packet-ins a second) added to the load, relative to the failure.
        prober_window=([round(rec.probes[0]['t'] - t_fail, 6),
                        round(rec.probes[-1]['t'] - t_fail, 6)]
                       if rec.probes else None),
        health_transitions=[
            dict(t=round(x.t - t_fail, 6), monitor=x.monitor,
                 server=x.server, state='UP' if x.up else 'DOWN',
                 reason=x.reason, counted=rec.t_load <= x.t <= rec.t_end)
            for x in rec.health],
        redirects=[dict(t=round(t - t_fail, 6), to=to, was=was, why=why)
                   for t, to, was, why in rec.redirects],
        probe_timeline=_probe_timeline(rec.probes, t_fail, rec.gap.gap),
        metrics=dict(backup_response_s=response,
                     backup_response_iperf_s=response_iperf,
                     **_failover_metrics(rec, conns, t_fail)),
        clients=rec.rows)


def _exit_metrics(rec, t_fail, detection):
    """A killed process stays up until the busy cores let it die, and so
    do its sockets: the kill to the probe port's server exiting, to the
    last killed process exiting, and from the probe port's exit to the
    monitor's DOWN (`detection` after the kill; what a monitor can be
    asked for). None in link mode."""
    exits = rec.service_exits
    probe_exit = exits.get(rec.probe_server)
    return dict(
        probe_server_exited_s=(None if probe_exit is None
                               else probe_exit - t_fail),
        services_exited_s=(max(exits.values()) - t_fail if exits
                           else None),
        detection_after_exit_s=(
            None if probe_exit is None or detection is None
            else detection - (probe_exit - t_fail)))


def _failover_metrics(rec, conns, t_fail):
    """The run's metrics after its backup response times."""
    clients = _classify_clients(rec.rows, conns, t_fail)
    false = metrics.false_failovers(rec.health, 'primary', t_fail,
                                    rec.t_load, rec.t_end)
    probe_conns = [c for c in conns if c.server_port == rec.probe_port]
    iperf_conns = [c for c in conns if c.server_port != rec.probe_port]
    gap = rec.gap
    detection = metrics.detection_time(rec.health, 'primary', t_fail)
    return dict(
        service_gap_s=gap.gap,
        monitor_detection_s=detection,
        redirect_s=_first_redirect(rec.redirects, t_fail),
        false_failovers=len(false),
        false_failovers_primary=sum(
            1 for x in false if x.server == 'primary'),
        false_failovers_backup=sum(
            1 for x in false if x.server != 'primary'),
        probe_attempts_after=gap.attempts_after,
        probe_failed_after=gap.failed_after,
        # ... of which the server had accepted (its SYN-ACK came): no
        # monitor or redispatch can move a connection already open.
        probe_failed_opened_after=gap.failed_opened_after,
        probe_answered_by=gap.answered_by,
        # The queues every sign of a dead server waits in, which no
        # in-band monitor's verdict can beat (under HAProxy the SYN-ACK
        # comes from the proxy, so this ends there).
        connect_before_failure_s=traffic.connect_time_before(rec.probes,
                                                             t_fail),
        **_exit_metrics(rec, t_fail, detection),
        rst_after=metrics.resets_after(iperf_conns, t_fail),
        reset_connections=metrics.reset_connections(iperf_conns, t_fail),
        rst_after_probe=metrics.resets_after(probe_conns, t_fail),
        **clients)


def _classify_clients(rows, conns, t_fail):
    """Marks each failure-phase row with how the failure met it; the
    client counts and throughputs of both phases."""
    by_client = {}
    for c in conns:
        by_client.setdefault((c.client, c.server_port), []).append(c)
    counts = {'before': 0, 'after': 0, 'finished': 0}
    aborted = {'before': 0, 'after': 0, 'finished': 0}
    fail_rows = [r for r in rows if r['phase'] == 'failure']
    base_rows = [r for r in rows if r['phase'] == 'baseline']
    for row in fail_rows:
        mine = by_client.get((row['ip'], row['port']), [])
        cls = metrics.client_class(mine, t_fail, row['t_exit'])
        row['class'] = cls
        row['rst_after'] = metrics.resets_after(mine, t_fail)
        row['connections'] = len(mine)
        counts[cls] += 1
        aborted[cls] += 0 if row['ok'] else 1
    return dict(
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
        baseline_throughput_mbps=metrics.mean(r['mbps'] for r in base_rows))


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
