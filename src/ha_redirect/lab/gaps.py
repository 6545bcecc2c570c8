"""Gap mode: every scheme's service gap under a 5 ms prober, side by side.

    ha-redirect-lab gaps [--schemes ...] [--repeat 5] [--interval-ms 5]
                         [--long-lived 5] [--services N] [--cold-arp]
                         [--output DIR]

For each scheme (default: `flip`, every installed strategy as
`sdn-<name>`, and `haproxy-tuned`), in one invocation:

* `--repeat` link failures, each in a fresh testbed: a prober opens a new
  connection every `--interval-ms` from one second before the primary's
  interface goes down (one ioctl, from a helper started ahead of time)
  until the backup has answered.  The *gap* is from the failure to the
  first connection started at or after it that the backup answered (its
  identity line arrived); the *connect gap* ends at that connection's
  SYN-ACK instead (what a plain connect() prober sees); the *failed
  attempts* are those started after the failure that got no answer within
  `PROBE_TIMEOUT_MS` (a lost SYN waits 1 s to be resent).
* one failback run: the primary's link goes down, `--long-lived`
  connections open on the backup and keep echoing every 50 ms, the link
  comes back up with the prober running.  A connection *survives* when it
  is still alive, saw no error and echoed at least 10 times from one
  second after the link came back (the functional suite's rule).  The
  *failback gap* is the longest time a new connection went unanswered
  after the link came back (0 when none failed).

`flip` is the comparison the issue measures strategies against: a minimal
os-ken app (`lab.flip_app`, not a strategy) that installs one service-wide
rewrite when the primary's port goes down.

With `--services N` (N > 1), each link run is made twice in a row, with N
services whose primaries sit behind the primary's switch port (one link
failure moves them all) and with 1, and the prober measures the first
service; there are no failback runs (default schemes: the flip and every
strategy; HAProxy serves one service).

The lab measures the product, not itself: with a controller (SDN schemes
and the flip), each backup learns every client's MAC before the failure
(one ping), as a server on a LAN that has talked to its clients has; a
cold ARP cache would make the backup's first SYN-ACK wait for an ARP round
trip (3-13 ms here) that an established service does not pay
(`--cold-arp` keeps it cold).  The prober's default 5 ms is the issue's
outside measurement's: a 1 ms prober is itself 1,000 PacketIns/s under
`reactive`.

Runs are interleaved (repetition by repetition, every scheme in turn), so
background load weighs on every scheme alike.  The results folder gets one
JSON per run (`runs/`), then `gaps_summary` writes `summary.json` and
`gaps.md`: the table with each median gap's ratio to the flip's and to
`sdn-proactive`'s, the connect gaps, the N-to-1 ratios, the failback
survivors, the prober's achieved resolution, the host's load, the
environment and the command; the gaps and their ratios to the flip are
printed too.  A failed
run is recorded with its reason and the others go on; Ctrl-C cleans the
host and writes what it has.
"""

import argparse
import contextlib
import datetime
import logging
import os
import statistics
import sys
import time

from ha_redirect.lab import command
from ha_redirect.lab import failures
from ha_redirect.lab import gaps_summary
from ha_redirect.lab import scenarios
from ha_redirect.lab import schemes
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import sweep
from ha_redirect.lab import traffic

LOG = logging.getLogger(__name__)

TOOL = 'gaps'
MODULE = 'ha_redirect.lab.gaps'

BACKUP = 'backup1'
LEAD = 1.0                # seconds of probing before the failure
TAIL = 0.3                # ... and after the backup first answered
GAP_WAIT = 10.0           # give up on the backup after this long
PROBE_TIMEOUT_MS = 1000   # an attempt not answered by then has failed
HOLD_INTERVAL_MS = 50
SETTLE = 2.0              # failback: seconds after the primary answers again
SURVIVOR_ECHOES = 10      # echoes needed from one second after link-up


def default_schemes(services=1):
    """The flip, every installed strategy as sdn-<name>, then (with one
    service) haproxy-tuned."""
    tail = ('haproxy-tuned',) if services == 1 else ()
    return (schemes.FLIP,) + schemes.sdn_names() + tail


def parse_scheme(name):
    """A scheme `gaps` takes: any, and the flip comparison."""
    return schemes.Scheme.parse(name, comparisons=True)


# -- one run ------------------------------------------------------------------

@contextlib.contextmanager
def _scheme_running(scheme, result, services=1, warm_arp=True):
    """(scope, started scenario) of `scheme` with `services` services in
    a fresh RunScope; the scope's token goes into `result`.  With
    `warm_arp`, a controller's backups know the clients' MACs."""
    parsed = parse_scheme(scheme)
    with scope_mod.RunScope() as scope:
        lab = scenarios.for_scheme(scope, parsed, services)
        result['token'] = scope.token
        lab.start()
        if warm_arp and parsed.has_controller:
            warm_neighbours(lab.bed.backups, lab.bed.plan.clients)
        result['warm_arp'] = warm_arp and parsed.has_controller
        yield scope, lab


# Seconds a server may take to learn a client's MAC. With 1,000 services
# the switch may still be taking the controller's flows (a stateful resync
# is one large bundle) when the scenario has started: 5 one-second pings
# were once not enough.
WARM_ARP_TIMEOUT = 30.0


def warm_neighbours(servers, clients, timeout=WARM_ARP_TIMEOUT):
    """Each server learns each client's MAC (pings), as a server on a LAN
    that has talked to its clients has; LabError if one did not within
    `timeout` seconds."""
    for server in servers:
        for client in clients:
            deadline = time.monotonic() + timeout
            while True:
                server.cmd(f'ping -c1 -W1 {client.address}')
                if traffic.neighbour_mac(server, client.address) == (
                        client.mac):
                    break
                if time.monotonic() >= deadline:
                    raise scope_mod.LabError(
                        f'{server.name} did not learn {client.address}\'s '
                        f'MAC within {timeout:g} s')


def _start_prober(scope, host, address, interval_ms, label='prober'):
    ip, port = address
    argv = traffic.AGENT + ['probe', '--target', f'{ip}:{port}',
                            '--interval-ms', str(interval_ms),
                            '--timeout-ms', str(PROBE_TIMEOUT_MS), '--drain']
    prober = traffic.AgentProcess(scope, host, label, argv,
                                  stop_timeout=PROBE_TIMEOUT_MS / 1000 + 5)
    prober.wait_for(lambda r: r.get('event') == 'probing', what='prober')
    return prober


def _percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def probe_resolution(attempts, t_from=None, t_to=None):
    """How finely the prober sampled: rate and spacing of attempt starts."""
    starts = [a['t'] for a in attempts
              if (t_from is None or a['t'] >= t_from)
              and (t_to is None or a['t'] <= t_to)]
    if len(starts) < 2:
        return None
    spacing = [b - a for a, b in zip(starts, starts[1:])]
    return dict(rate_per_s=(len(starts) - 1) / (starts[-1] - starts[0]),
                spacing_median_ms=statistics.median(spacing) * 1000,
                spacing_p99_ms=_percentile(spacing, 0.99) * 1000,
                spacing_max_ms=max(spacing) * 1000)


def link_metrics(records, t_fail):
    """The gap and the prober's view of one link failure."""
    attempts = traffic.attempts(records)
    gap = traffic.service_gap(attempts, t_fail, BACKUP)
    before = [a['t_done'] - a['t'] for a in attempts
              if t_fail - LEAD <= a['t'] < t_fail and a['ok']]
    end = t_fail + (gap.gap if gap.gap is not None else GAP_WAIT)
    near = probe_resolution(attempts, t_fail - 0.05, end)
    served = [a for a in attempts if a['t'] >= t_fail and a['ok']
              and a['who'] == BACKUP]
    # When the backup took new connections, apart from how long the first
    # of them then took to complete.
    first = min((a['t'] for a in served), default=None)
    # The backup's first SYN-ACK at the client: the gap without the
    # server's accept and identity line.
    connected = min((a['t_connected'] for a in served
                     if a.get('t_connected') is not None), default=None)
    connect_before = traffic.connect_time_before(attempts, t_fail, LEAD,
                                                 served_only=True)
    return dict(
        gap_s=gap.gap, attempts_after=gap.attempts_after,
        connect_gap_s=None if connected is None else connected - t_fail,
        first_backup_start_s=None if first is None else first - t_fail,
        failed_after=gap.failed_after, answered_by=gap.answered_by,
        latency_before_ms=(statistics.median(before) * 1000
                           if before else None),
        connect_before_ms=(None if connect_before is None
                           else connect_before * 1000),
        resolution=probe_resolution(attempts),
        spacing_max_near_failure_ms=near and near['spacing_max_ms'])


def link_run(scheme, repetition, interval_ms, services=1, warm_arp=True):
    """One link failure under a prober (on the first of `services`
    services); returns the run's result dict."""
    result = dict(kind='link', scheme=scheme, repetition=repetition,
                  interval_ms=interval_ms, services=services)
    with _scheme_running(scheme, result, services,
                         warm_arp) as (scope, lab):
        host = lab.bed.clients[0]
        traffic.wait_served_by(host, *lab.address, 'primary', timeout=15)
        cutter = failures.LinkCutter(scope, lab.bed.primary)
        prober = _start_prober(scope, host, lab.address, interval_ms)
        time.sleep(LEAD)
        t_fail, t_fail_done = cutter.fire()
        deadline = t_fail + GAP_WAIT
        while time.monotonic() < deadline:
            gap = traffic.service_gap(prober.records(), t_fail, BACKUP).gap
            if gap is not None:
                break
            time.sleep(0.05)
        time.sleep(TAIL)
        prober.stop()                 # it drains: at most PROBE_TIMEOUT_MS
        records = prober.records()
    result.update(status='ok', t_fail=t_fail,
                  failure_command_s=t_fail_done - t_fail,
                  metrics=link_metrics(records, t_fail),
                  timeline=_timeline(records, t_fail))
    return result


def failback_metrics(records, t_back):
    """New connections after the primary's link came back at `t_back`.

    `gap_s` is the longest time from a failed attempt's start until any
    attempt started after it was answered, or else the prober's last
    answer or timeout (0 without a failure, None without attempts).
    """
    after = [a for a in traffic.attempts(records) if a['t'] >= t_back]
    to_primary = [a['t_done'] for a in after
                  if a['ok'] and a['who'] == 'primary']
    longest = 0.0 if after else None
    # The earliest answer among later attempts; none: the prober's end.
    answered = max((a['t_done'] for a in after), default=None)
    for a in reversed(after):
        if a['ok']:
            answered = min(answered, a['t_done'])
        else:
            longest = max(longest, answered - a['t'])
    return dict(
        attempts_after=len(after),
        failed_after=sum(1 for a in after if not a['ok']),
        to_primary_s=(min(to_primary) - t_back) if to_primary else None,
        gap_s=longest,
        resolution=probe_resolution(after))


def survivor(hold_records, alive, t_back):
    """Did a long-lived connection live through the failback?"""
    errors = [e for e in hold_records if e.get('event') == 'error']
    echoes = [e for e in hold_records if e.get('event') == 'echo'
              and e['t'] > t_back + 1.0]
    return alive and not errors and len(echoes) >= SURVIVOR_ECHOES


def failback_run(scheme, long_lived, interval_ms, warm_arp=True):
    """K connections on the backup across failback; the result dict."""
    result = dict(kind='failback', scheme=scheme, long_lived=long_lived,
                  interval_ms=interval_ms)
    with _scheme_running(scheme, result, warm_arp=warm_arp) as (scope, lab):
        prober_host, holder_host = lab.bed.clients[:2]
        # Both clients know the primary's MAC before it fails, so the run
        # measures the redirect, not who answers ARP for the primary (the
        # flip comparison does not).
        for host in (prober_host, holder_host):
            traffic.wait_served_by(host, *lab.address, 'primary', timeout=15)
        failures.link_down(lab.bed.primary)
        traffic.wait_served_by(holder_host, *lab.address, BACKUP,
                               timeout=GAP_WAIT)
        held = [traffic.start_hold(scope, holder_host, *lab.address,
                                   interval_ms=HOLD_INTERVAL_MS,
                                   label=f'hold-{k}')
                for k in range(long_lived)]
        held_by = [h.records()[0].get('who') for h in held]
        prober = _start_prober(scope, prober_host, lab.address, interval_ms)
        time.sleep(0.2)
        t_back = failures.link_up(lab.bed.primary)
        scope_mod.wait_until(
            lambda: any(a['ok'] and a['who'] == 'primary'
                        and a['t'] >= t_back for a in
                        traffic.attempts(prober.records())),
            GAP_WAIT, what='the primary to answer again')
        time.sleep(SETTLE)
        prober.stop()
        kept = []
        for h in held:
            alive = h.popen.poll() is None
            h.stop()
            kept.append(survivor(h.records(), alive, t_back))
        errors = [next((e['error'] for e in h.records()
                        if e.get('event') == 'error'), None) for h in held]
        records = prober.records()
    result.update(status='ok', t_back=t_back, held_by=held_by,
                  survived=kept, hold_errors=errors,
                  metrics=dict(survivors=sum(kept),
                               **failback_metrics(records, t_back)),
                  timeline=_timeline(records, t_back))
    return result


def _timeline(records, t_fail, before=0.01, limit=120):
    """Attempts around the failure (or link-up), in ms relative to it."""
    rows = []
    for a in traffic.attempts(records):
        if a['t'] >= t_fail - before and len(rows) < limit:
            rows.append(dict(
                t_ms=round((a['t'] - t_fail) * 1000, 3),
                done_ms=round((a['t_done'] - t_fail) * 1000, 3),
                ok=a['ok'], who=a['who'], error=a['error']))
    return rows


# -- the invocation -----------------------------------------------------------

def plan_runs(names, repeat, services=1):
    """('link', scheme, rep, n) repetition by repetition, then failbacks;
    with `services` > 1, each link run with that many services, then
    with one, and no failbacks."""
    if services > 1:
        return [('link', s, r, n) for r in range(repeat) for s in names
                for n in (services, 1)]
    return ([('link', s, r, 1) for r in range(repeat) for s in names]
            + [('failback', s, None, 1) for s in names])


def _run_id(kind, scheme, rep, services=1):
    many = '' if services == 1 else f'_x{services}'
    return f'{scheme}{many}_{kind}' + ('' if rep is None else f'{rep}')


def _load():
    with open('/proc/loadavg') as f:
        return ' '.join(f.read().split()[:3])


def execute(args, out_dir, progress=True):
    """Every planned run; returns (results, interrupted)."""
    return sweep.sweep(_planned(args), _performer(args), out_dir, progress,
                       sample=_load_sample, note_prefix=f'{TOOL}: ')


def _planned(args):
    return [sweep.Run(_run_id(kind, scheme, rep, n),
                      dict(kind=kind, scheme=scheme, repetition=rep,
                           services=n))
            for kind, scheme, rep, n in plan_runs(args.schemes, args.repeat,
                                                  args.services)]


def _performer(args):
    def perform(run, note):
        if run.fields['kind'] == 'link':
            return link_run(run.fields['scheme'], run.fields['repetition'],
                            args.interval_ms, run.fields['services'],
                            not args.cold_arp)
        return failback_run(run.fields['scheme'], args.long_lived,
                            args.interval_ms, not args.cold_arp)
    return perform


def _load_sample():
    return dict(load=_load())


# -- command line -------------------------------------------------------------

def scheme_list(text):
    """An argument type: comma-separated scheme names, `flip` included,
    without repeats."""
    names = tuple(dict.fromkeys(n for n in (s.strip() for s in
                                            text.split(',')) if n))
    if not names:
        raise argparse.ArgumentTypeError('no scheme given')
    for name in names:
        try:
            parse_scheme(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def service_count(text):
    """An argument type: how many services, 1..scenarios.MAX_SERVICES."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= scenarios.MAX_SERVICES:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a number of services from 1 to '
            f'{scenarios.MAX_SERVICES}')
    return value


def add_arguments(parser):
    """The gap mode's options (for `ha-redirect-lab gaps`)."""
    parser.add_argument('--schemes', type=scheme_list, default=None,
                        help='comma-separated (default: flip, every '
                        'installed strategy as sdn-<name>, and '
                        'haproxy-tuned)')
    parser.add_argument('--repeat', type=command.positive(int), default=5,
                        help='link failures per scheme (default %(default)s)')
    parser.add_argument('--interval-ms', type=command.positive(float),
                        default=5.0,
                        help='the prober opens a connection this often '
                        '(default %(default)g)')
    parser.add_argument('--long-lived', type=command.positive(int),
                        default=5,
                        help='connections held on the backup across '
                        'failback (default %(default)s)')
    parser.add_argument('--services', type=service_count, default=1,
                        help='N > 1: each link run with N services behind '
                        'the primary\'s port, then with 1, and the ratio '
                        'of the first service\'s gap (default %(default)s)')
    parser.add_argument('--cold-arp', action='store_true',
                        help='leave the backups\' ARP caches cold: their '
                        'first SYN-ACK waits for ARP (default: each backup '
                        'pings the clients before the failure)')
    parser.add_argument('--output', default=None,
                        help='results folder (default results/gaps-'
                        '<timestamp>)')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar')
    return parser


def check_services(names, services):
    """None, or one line: the schemes that cannot serve `services`."""
    if services == 1:
        return None
    single = [n for n in names if not parse_scheme(n).has_controller]
    if single:
        return (f'--services {services}: {", ".join(single)} serves one '
                'service; choose SDN schemes or flip')
    return None


def run(args):
    """Run the gap mode; the exit status."""
    if args.schemes is None:
        args.schemes = default_schemes(args.services)
    problem = check_services(args.schemes, args.services)
    if problem:
        print(f'{TOOL}: error: {problem}', file=sys.stderr)
        return 2
    out_dir = sweep.results_folder(args.output, 'gaps-')
    meta = dict(command=command.command_line(MODULE, 'gaps.py'),
                started=datetime.datetime.now(datetime.timezone.utc)
                .strftime('%Y-%m-%d %H:%M:%S UTC'),
                schemes=list(args.schemes), repeat=args.repeat,
                interval_ms=args.interval_ms, long_lived=args.long_lived,
                services=args.services, warm_arp=not args.cold_arp,
                probe_timeout_ms=PROBE_TIMEOUT_MS,
                survivor_echoes=SURVIVOR_ECHOES,
                cpus=os.cpu_count(), load_before=_load())
    outcome = sweep.run_all(TOOL, out_dir, _planned(args), _performer(args),
                            progress=not args.no_progress,
                            sample=_load_sample, note_prefix=f'{TOOL}: ')
    if outcome is None:
        return 1
    meta.update(environment=outcome.environment, elapsed_s=outcome.elapsed_s,
                load_after=_load(), interrupted=outcome.interrupted)
    path, summary = gaps_summary.write_outputs(out_dir, outcome.results,
                                               meta)
    print(gaps_summary.console_table(summary))
    return command.finish(TOOL, outcome.results, outcome.elapsed_s, path,
                          'table', outcome.interrupted)


_Parser = command.OneLineParser    # tests build the parser with it


def main(argv=None):
    return command.main(
        MODULE, 'Every scheme\'s service gap under a 5 ms prober, and '
        'long-lived connections across failback, side by side.',
        add_arguments, run, argv)


if __name__ == '__main__':
    sys.exit(main())
