"""The "service killed, link up" comparison in report.md.

Pure: from the run dicts of `evaluate --failure kill`, the Markdown
section that sets the `tcp_probe` monitor (every SDN strategy) beside
tuned HAProxy's health checks, measured in the same invocation:

* detection time -- the kill to the first new connection the backup
  answered (the 5 ms prober), and the kill to the monitor's own DOWN
  mark (the controller's log; HAProxy's log);
* failed connection attempts -- the prober's connections that failed
  after the kill, and how many of them a server had accepted first;
* false failovers -- DOWN marks of a server that was serving: the
  primary before the kill, the backup at any time, while the clients'
  iperf3 load ran.  Each one is listed with its time and reason.
"""

import dataclasses
import functools
import typing

from ha_redirect.lab import formatting
from ha_redirect.lab import metrics
from ha_redirect.lab import report_sections
from ha_redirect.lab import schemes as schemes_mod
from ha_redirect import model

TITLE = 'Service killed, link up: tcp_probe against tuned HAProxy'


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the side-by-side table."""
    scheme: str
    rate: typing.Optional[float]      # None: every rate together
    runs: int
    gap: metrics.Spread
    detection: metrics.Spread
    probe_server_exited: metrics.Spread
    detection_after_exit: metrics.Spread
    connect_before: metrics.Spread
    failed: metrics.Spread
    failed_opened: metrics.Spread
    false_primary: int
    false_backup: int
    runs_with_false: int


def kill_runs(results):
    """The successful runs of the kill mode."""
    return [r for r in results
            if r.get('status') == 'ok' and r.get('failure') == 'kill']


def _ordered(runs):
    seen = []
    for r in runs:
        if r['scheme'] not in seen:
            seen.append(r['scheme'])
    # HAProxy first: the reference the SDN strategies are read against.
    return sorted(seen, key=lambda s: not _is_haproxy(s))


@functools.lru_cache(maxsize=None)   # parsing reads the entry points
def _is_haproxy(name):
    try:
        return schemes_mod.Scheme.parse(name).kind == schemes_mod.HAPROXY
    except ValueError:      # a scheme no longer installed: after HAProxy
        return False


def _row(scheme, rate, runs):
    def spread(key):
        return metrics.Spread.of(r['metrics'].get(key) for r in runs)
    return Row(
        scheme=scheme, rate=rate, runs=len(runs),
        gap=spread('service_gap_s'),
        detection=spread('monitor_detection_s'),
        probe_server_exited=spread('probe_server_exited_s'),
        detection_after_exit=spread('detection_after_exit_s'),
        connect_before=spread('connect_before_failure_s'),
        failed=spread('probe_failed_after'),
        failed_opened=spread('probe_failed_opened_after'),
        false_primary=sum(r['metrics'].get('false_failovers_primary') or 0
                          for r in runs),
        false_backup=sum(r['metrics'].get('false_failovers_backup') or 0
                         for r in runs),
        runs_with_false=sum(1 for r in runs
                            if r['metrics'].get('false_failovers')))


def rows(results):
    """Per scheme: one Row per rate, then one over every rate."""
    runs = kill_runs(results)
    out = []
    for scheme in _ordered(runs):
        mine = [r for r in runs if r['scheme'] == scheme]
        rates = sorted({float(r['rate']) for r in mine})
        for rate in rates:
            out.append(_row(scheme, rate, [r for r in mine
                                           if float(r['rate']) == rate]))
        if len(rates) > 1:
            out.append(_row(scheme, None, mine))
    return out


def false_failover_events(results):
    """[(scheme, rate, repetition, transition dict, prober running)] of
    every counted false failover, in run order (prober running is None
    when the run did not record the prober's window)."""
    events = []
    for r in kill_runs(results):
        window = r.get('prober_window')
        for x in r.get('health_transitions', []):
            if (x.get('counted') and x['state'] == 'DOWN'
                    and (x['server'] != 'primary' or x['t'] < 0)):
                probing = (None if not window
                           else window[0] <= x['t'] <= window[1])
                events.append((r['scheme'], float(r['rate']),
                               r['repetition'], x, probing))
    return events


def detection_reasons(results):
    """{scheme: {reason: runs}}: why the monitor first marked the killed
    primary DOWN (a RST from its closed port, or no answer in time)."""
    out = {}
    for r in kill_runs(results):
        downs = [x for x in r.get('health_transitions', [])
                 if x['server'] == 'primary' and x['state'] == 'DOWN'
                 and x['t'] >= 0]
        if downs:
            reasons = out.setdefault(r['scheme'], {})
            reason = min(downs, key=lambda x: x['t'])['reason'] or '?'
            reasons[reason] = reasons.get(reason, 0) + 1
    return out


def _passive_text(run):
    """The passive check's settings ('' for runs from before it)."""
    h = run['health_monitoring']
    refusals = h.get('passive_refusals')
    if refusals is None:
        return ''
    if not refusals:
        return 'no passive check, '
    redispatch = ' and redispatch' if h.get('redispatch') else ''
    aborts = h.get('passive_aborts')
    aborts = (f' or {aborts} resets within '
              f'{h["passive_abort_window"] * 1000:g} ms' if aborts else '')
    plural = '' if refusals == 1 else 's'
    return (f'passive check ({refusals} refusal{plural} within '
            f'{h["passive_window"] * 1000:g} ms{aborts}){redispatch}, ')


def monitoring_text(run):
    """How a run watched its servers, in words."""
    h = run.get('health_monitoring') or {}
    if 'probe_interval' in h:
        d = model.PolicySettings()
        settings = (h['probe_interval'], h['probe_timeout'], h['probe_fall'],
                    h['probe_rise'], h['probe_jitter'],
                    h.get('passive_refusals', d.passive_refusals))
        defaults = (d.probe_interval, d.probe_timeout, d.probe_fall,
                    d.probe_rise, d.probe_jitter, d.passive_refusals)
        return (f'tcp_probe every {h["probe_interval"] * 1000:g} ms '
                f'(jitter {h["probe_jitter"] * 100:g}%), timeout '
                f'{h["probe_timeout"] * 1000:g} ms, fall {h["probe_fall"]}, '
                f'rise {h["probe_rise"]}, ' + _passive_text(run) + 'beside '
                + ', '.join(m for m in h.get('monitors', [])
                            if m != 'tcp_probe')
                + (' -- its default settings' if settings == defaults
                   else ' -- NOT its default settings'))
    if 'haproxy_server_options' in h:
        options = [o for o in h['haproxy_server_options'] if o != 'check']
        return (f'HAProxy profile {h["haproxy_profile"]}: check '
                + ', '.join(options)
                + f', timeout connect {h["haproxy_timeout_connect"]}')
    return ', '.join(h.get('monitors', [])) or 'unknown'


TABLE_HEAD = ['scheme', 'rate/s', 'runs',
              'detection: kill to first answer from the backup (ms)',
              'detection: kill to monitor DOWN logged (ms)',
              'kill to the probe port\'s server exited (ms)',
              'its exit to monitor DOWN logged (ms)',
              'the prober\'s connect time before the kill (ms)',
              'failed connection attempts',
              'of them opened first (accepted, then lost)',
              'false failovers: primary before kill / backup',
              'runs with a false failover']


def table(table_rows):
    return '\n'.join(report_sections.table(TABLE_HEAD, [
        [row.scheme, 'all' if row.rate is None else f'{row.rate:g}',
         str(row.runs), formatting.spread(row.gap, formatting.whole_ms),
         formatting.spread(row.detection, formatting.whole_ms),
         formatting.spread(row.probe_server_exited, formatting.whole_ms),
         formatting.spread(row.detection_after_exit, formatting.whole_ms),
         formatting.spread(row.connect_before, formatting.whole_ms),
         formatting.spread(row.failed, formatting.count),
         formatting.spread(row.failed_opened, formatting.count),
         f'{row.false_primary} / {row.false_backup}',
         f'{row.runs_with_false} of {row.runs}']
        for row in table_rows]))


def _verdicts(results, table_rows, config):
    lines = []
    events = false_failover_events(results)
    duration = config.get('duration') or 0
    interval = f'{config.get("interval_ms") or 0:g}'
    for row in table_rows:
        if row.rate is not None and any(
                r.scheme == row.scheme and r.rate is None
                for r in table_rows):
            continue
        mine = [e for e in events if e[0] == row.scheme]
        rates = sorted({float(r['rate']) for r in kill_runs(results)
                        if r['scheme'] == row.scheme})
        load = ', '.join(f'{r:g}' for r in rates)
        if not mine:
            lines.append(f'- **{row.scheme}**: no false failover in '
                         f'{formatting.plural(row.runs, "run")} (arrival '
                         f'rates {load}/s).')
            continue
        by_rate = {}
        for _, rate, _, _, _ in mine:
            by_rate[rate] = by_rate.get(rate, 0) + 1
        where = ', '.join(
            f'{n} at {rate:g}/s (about {rate * duration:g} concurrent '
            'iperf3 transfers)' for rate, n in sorted(by_rate.items()))
        probing = ('' if any(e[4] is None for e in mine) else
                   f'; {sum(1 for e in mine if e[4])} of them while the '
                   f'{interval} ms prober ran')
        lines.append(f'- **{row.scheme}**: {len(mine)} false '
                     f'failover{"s" if len(mine) > 1 else ""} in '
                     f'{row.runs_with_false} of '
                     f'{formatting.plural(row.runs, "run")}: {where}'
                     f'{probing}.')
    if events:
        lines += ['', 'Every false failover (time relative to the kill; '
                  'the monitor\'s reason):', '']
        for scheme, rate, rep, x, probing in events:
            lines.append(f'- {scheme}, rate {rate:g}/s, repetition {rep}: '
                         f'{x["monitor"]} marked {x["server"]} DOWN at '
                         f'{x["t"] * 1000:+.0f} ms ({x["reason"]})'
                         + (f', while the {interval} ms prober ran'
                            if probing else ''))
    return lines


def section(results, meta):
    """The report.md lines of the comparison ([] without kill runs)."""
    runs = kill_runs(results)
    if not runs:
        return []
    config = meta.get('config', {})
    table_rows = rows(results)
    monitoring = {}
    for r in runs:
        monitoring.setdefault(r['scheme'], monitoring_text(r))
    lines = [f'## {TITLE}', '',
             'The primary\'s service processes (its identity server and '
             'its iperf3 servers) are killed with SIGKILL '
             f'{config.get("fail_at")} s into the failure phase; its link '
             'stays up, so only a health check can notice. All schemes ran '
             'in this one invocation, under the same Poisson iperf3 load.',
             '']
    lines += [f'- {scheme}: {text}' for scheme, text in monitoring.items()]
    lines += ['', 'Median [min-max] over repetitions.', '',
              table(table_rows), '',
              'Columns: *kill to first answer from the backup* = the '
              f'service gap a new connection every '
              f'{config.get("interval_ms")} ms sees; *kill to monitor DOWN '
              'logged* = the controller\'s `tcp_probe marks primary ... '
              'DOWN` line (CLOCK_MONOTONIC) or HAProxy\'s `Server .../primary '
              'is DOWN` line (its microsecond timestamp moved to the same '
              'clock); *kill to the probe port\'s server exited* = when '
              'the killed identity server serving the probed port had '
              'exited (a pidfd turned readable): until then its sockets '
              'stay open and its listener queues new connections, so no '
              'monitor can see the kill, and on busy cores this is '
              'scheduling, not monitoring; *its exit to monitor DOWN '
              'logged* = the monitor\'s own share, run by run; *the '
              'prober\'s connect time before the kill* = each run\'s median '
              'from a prober SYN to its SYN-ACK over the second before the '
              'kill: the queues on the way to a server and back, which '
              'every signal of its death waits in too (where the switch '
              'itself is the bottleneck, its port buffers fill), so no '
              'in-band monitor can beat it; under HAProxy the SYN-ACK '
              'comes from the proxy, and the queues behind it are not '
              'seen; '
              '*failed connection attempts* = the prober\'s '
              'connections that failed after the kill; *of them opened '
              'first* = those a server had accepted (its SYN-ACK came) '
              'before they failed: accepted by the dying primary in its '
              'last milliseconds, which neither a monitor nor redispatch '
              'can move (under HAProxy the proxy accepts every connection, '
              'so these are ones it could not serve); *false failovers* = '
              'DOWN marks of a server that was serving: the primary before '
              'the kill, the backup at any time, from the first client on '
              'to the end of the run.', '',
              '### False failovers under load', '']
    lines += _verdicts(results, table_rows, config)
    lines += ['', 'Why the monitor marked the killed primary DOWN (runs; a '
              'closed port answers RST at once, so "no answer" means the '
              'probe\'s round trip took longer than its timeout):', '']
    for scheme, reasons in detection_reasons(results).items():
        lines.append(f'- {scheme}: ' + ', '.join(
            f'{reason} {n}' for reason, n in sorted(reasons.items())))
    lines += ['']
    return lines
