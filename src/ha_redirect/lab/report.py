"""Figures and `report.md` of an evaluation, from its per-run results.

    python -m ha_redirect.lab.report results/<timestamp>   # redraw

Pure with respect to the testbed: it reads the run dicts the runner wrote
(`runs/*.json`) and writes PNG figures (matplotlib, Agg backend) and a
Markdown report: first the best scheme per metric against tuned HAProxy
(`report_best`), a table of medians and ranges, the environment, the
paper's three claims each marked reproduced or not, the ratio of each SDN
strategy's service gap to tuned HAProxy's, and the measurement resolution.
"""

import glob
import json
import os
import statistics
import sys

from ha_redirect.lab.figures import write_figures
from ha_redirect.lab import formatting
from ha_redirect.lab import health_report
from ha_redirect.lab import metrics
from ha_redirect.lab import report_best
from ha_redirect.lab import report_sections

# (key in run['metrics'], label, scale to the unit shown, unit)
TABLE_METRICS = (
    ('backup_response_s', 'backup response', 1000.0, 'ms'),
    ('service_gap_s', 'service gap', 1000.0, 'ms'),
    ('probe_failed_after', 'failed probes', 1.0, ''),
    ('rst_after', 'failover RSTs', 1.0, ''),
    ('aborted_before', 'aborted, est. before', 1.0, ''),
    ('aborted_after', 'aborted, attempted after', 1.0, ''),
    ('throughput_mbps', 'throughput w/ failure', 1.0, 'Mbit/s'),
    ('baseline_throughput_mbps', 'throughput baseline', 1.0, 'Mbit/s'),
)

PAPER_PROXY = 'haproxy-paper'
TUNED_PROXY = report_best.TUNED_PROXY
FAST = 1.0   # seconds: "hundreds of ms" versus "seconds"


def load_results(out_dir):
    """The run dicts in `out_dir/runs/*.json`."""
    results = []
    for path in sorted(glob.glob(os.path.join(out_dir, 'runs', '*.json'))):
        with open(path) as f:
            results.append(json.load(f))
    return results


is_sdn = report_best.is_sdn


def aggregate(results):
    """{scheme: {rate: {metric: Spread}}} over the successful runs."""
    values = {}
    for r in results:
        if r.get('status') != 'ok':
            continue
        per_rate = values.setdefault(r['scheme'], {}).setdefault(
            float(r['rate']), {})
        for key, value in r['metrics'].items():
            if isinstance(value, (int, float)) or value is None:
                per_rate.setdefault(key, []).append(value)
    return {scheme: {rate: {k: metrics.Spread.of(v) for k, v in m.items()}
                     for rate, m in sorted(rates.items())}
            for scheme, rates in values.items()}


def _ordered_schemes(results):
    seen = []
    for r in results:
        if r['scheme'] not in seen:
            seen.append(r['scheme'])
    return seen


# -- the paper's claims -------------------------------------------------------

def _medians(agg, scheme, key):
    return [(rate, m[key].median) for rate, m in agg.get(scheme, {}).items()
            if key in m and m[key].median is not None]


def _spearman(pairs):
    """Rank correlation of (x, y) pairs; None when undefined."""
    if len(pairs) < 3:
        return None

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        r = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and \
                    values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r
    xs, ys = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    if len(set(ys)) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return cov / (vx * vy) ** 0.5


def _verdict(proxy_ok, sdn_ok):
    """'reproduced' when the proxy side holds and every SDN scheme does,
    'partly reproduced (...)' when only some SDN schemes do."""
    passing = [s for s, ok in sdn_ok.items() if ok]
    if not proxy_ok or not passing:
        return 'not reproduced'
    if len(passing) == len(sdn_ok):
        return 'reproduced'
    return f'partly reproduced ({", ".join(passing)} only)'


def claims(agg, schemes):
    """[(claim, verdict, evidence)]: verdict 'reproduced', 'partly
    reproduced (<SDN schemes that hold>)', 'not reproduced' or 'not
    tested'."""
    sdn = [s for s in schemes if is_sdn(s) and s in agg]
    proxies = [s for s in schemes if not is_sdn(s) and s in agg]
    return [_response_claim(agg, sdn), _aborts_claim(agg, sdn),
            _throughput_claim(agg, sdn, proxies)]


def _response_claim(agg, sdn):
    """1. SDN answers in (at most) hundreds of ms, HAProxy takes seconds."""
    claim = ('SDN redirection responds in hundreds of milliseconds, while '
             'HAProxy (3 s health checks) takes seconds (Fig. 2)')
    if not sdn or PAPER_PROXY not in agg:
        return (claim, 'not tested', f'needs an sdn-* scheme and '
                f'{PAPER_PROXY}')
    sdn_vals = {s: [v for _, v in _medians(agg, s, 'backup_response_s')]
                for s in sdn}
    px = [v for _, v in _medians(agg, PAPER_PROXY, 'backup_response_s')]
    verdict = _verdict(
        bool(px) and all(v >= FAST for v in px),
        {s: bool(v) and all(x < FAST for x in v)
         for s, v in sdn_vals.items()})
    evidence = '; '.join(
        f'{s}: {formatting.value_range(v, formatting.duration)}'
        for s, v in sdn_vals.items())
    evidence += (f'; {PAPER_PROXY}: '
                 f'{formatting.value_range(px, formatting.duration)}')
    if TUNED_PROXY in agg:
        tuned = [v for _, v in _medians(agg, TUNED_PROXY,
                                        'backup_response_s')]
        evidence += (f'; {TUNED_PROXY}: '
                     f'{formatting.value_range(tuned, formatting.duration)}')
    return (claim, verdict, 'median backup response time per '
            f'rate (fast = under {FAST:g} s): ' + evidence)


def _aborts_claim(agg, sdn):
    """2. HAProxy's aborts grow with the rate, SDN's stay flat."""
    claim = ('HAProxy aborts connections in proportion to the arrival rate, '
             'while SDN keeps them about constant (Fig. 3)')
    key = 'aborted_after'
    n_rates = len(agg.get(PAPER_PROXY, {}))
    if not sdn or PAPER_PROXY not in agg or n_rates < 3:
        return (claim, 'not tested', f'needs {PAPER_PROXY}, an sdn-* '
                'scheme and at least 3 rates')
    px = _medians(agg, PAPER_PROXY, key)
    rho = _spearman(px)
    px_vals = [v for _, v in px]
    px_rise = px_vals[-1] - px_vals[0] if px_vals else 0
    grows = rho is not None and rho >= 0.8 and px_rise > 0
    flat = {}
    for s in sdn:
        vals = [v for _, v in _medians(agg, s, key)]
        flat[s] = bool(vals) and max(vals) - min(vals) <= max(
            1.0, 0.25 * abs(px_rise))

    def by_rate(medians):
        return ', '.join(f'{r:g}/s: {formatting.count(v)}'
                         for r, v in medians)
    evidence = (
        'median aborted clients among those attempted after the '
        f'failure, by rate: {PAPER_PROXY} ' + by_rate(px)
        + (f' (rank correlation with rate {rho:.2f})'
           if rho is not None else ''))
    for s in sdn:
        evidence += f'; {s} ' + by_rate(_medians(agg, s, key))
    evidence += (' (flat = range at most max(1, a quarter of '
                 f'{PAPER_PROXY}\'s rise))')
    return (claim, _verdict(grows, flat), evidence)


def _throughput_claim(agg, sdn, proxies):
    """3. SDN's throughput beats the proxy's."""
    claim = ('SDN achieves higher average throughput per client than the '
             'reverse proxy, without failure and with it (Fig. 4)')
    if not sdn or not proxies:
        return (claim, 'not tested', 'needs sdn-* and haproxy-* schemes')
    parts = []
    beats = {}
    for key, what in (('baseline_throughput_mbps', 'no failure'),
                      ('throughput_mbps', 'with failure')):
        med = {s: dict(_medians(agg, s, key)) for s in sdn + proxies}
        rates = sorted(set.intersection(*[set(m) for m in med.values()]))
        if not rates:
            parts.append(f'{what}: no data')
            continue
        wins = {s: sum(1 for r in rates
                       if med[s][r] > max(med[p][r] for p in proxies))
                for s in sdn}
        for s in sdn:
            beats[s] = beats.get(s, True) and wins[s] == len(rates)
        sub = _verdict(True, {s: wins[s] == len(rates) for s in sdn})
        parts.append(
            f'{what} -- {sub}: rates (of {len(rates)}) where the SDN scheme '
            'is above '
            'every proxy: ' + ', '.join(f'{s} {w}' for s, w in wins.items())
            + '; median over rates: ' + ', '.join(
                f'{s} {statistics.median(med[s].values()):.0f}'
                for s in sdn + proxies) + ' Mbit/s')
    verdict = _verdict(True, beats) if beats else 'not tested'
    return (claim, verdict, '; '.join(parts))


def gap_ratios(results, schemes):
    """[(sdn scheme, rate or 'all', ratio, sdn gap, tuned gap)].

    Ratio of median service gaps, SDN strategy over tuned HAProxy, from
    runs of the same invocation."""
    gaps = {}
    for r in results:
        if r.get('status') == 'ok' and \
                r['metrics'].get('service_gap_s') is not None:
            gaps.setdefault(r['scheme'], {}).setdefault(
                float(r['rate']), []).append(r['metrics']['service_gap_s'])
    tuned = gaps.get(TUNED_PROXY)
    if not tuned:
        return []
    rows = []
    for s in schemes:
        if not is_sdn(s) or s not in gaps:
            continue
        for rate in sorted(gaps[s]):
            if rate in tuned:
                a = statistics.median(gaps[s][rate])
                b = statistics.median(tuned[rate])
                rows.append((s, f'{rate:g}', a / b if b else None, a, b))
        a = statistics.median(v for vs in gaps[s].values() for v in vs)
        b = statistics.median(v for vs in tuned.values() for v in vs)
        rows.append((s, 'all', a / b if b else None, a, b))
    return rows


# -- report.md ----------------------------------------------------------------

def _cell(spread, scale):
    return formatting.spread(
        spread, lambda v: formatting.three_digits(v * scale))


def main_table(agg, schemes):
    head = ['scheme', 'rate/s', 'runs'] + [
        f'{label} ({unit})' if unit else label
        for _, label, _, unit in TABLE_METRICS]
    rows = []
    for scheme in schemes:
        for rate, m in agg.get(scheme, {}).items():
            n = max((s.n for s in m.values()), default=0)
            rows.append([scheme, f'{rate:g}', str(n)] + [
                _cell(m.get(key), scale) for key, _, scale, _ in
                TABLE_METRICS])
    return '\n'.join(report_sections.table(head, rows))


def _resolution(results, config):
    ok = [r for r in results if r.get('status') == 'ok']
    if not ok:
        return ['No successful run.']
    unc = max(r['clock']['sample_uncertainty_s'] for r in ok)
    drift = max(abs(r['clock']['drift_s']) for r in ok)
    cmd = [r['clock']['failure_command_s'] for r in ok]
    drops = sum(v or 0 for r in ok for v in r['capture_drops'].values())
    return [
        '- One clock: CLOCK_MONOTONIC, shared by every network namespace. '
        'Agents (prober, failure injection, client launches) stamp it '
        'directly; capture timestamps (CLOCK_REALTIME, microsecond pcap) '
        'are shifted by the offset sampled when the captures start: '
        f'sampling uncertainty at most {unc * 1e6:.1f} us, drift between '
        f'capture start and stop at most {drift * 1e6:.1f} us.',
        ('- Failure instant: CLOCK_MONOTONIC read by the runner just '
         'before it sends SIGKILL to the primary\'s service processes; '
         f'the last signal left within {min(cmd) * 1e6:.0f}-'
         f'{max(cmd) * 1e6:.0f} us.'
         if config.get('failure') == 'kill' else
         '- Failure instant: CLOCK_MONOTONIC read by a helper inside the '
         'primary just before the ioctl (SIOCSIFFLAGS, what `ip link set '
         'down` does) that takes its interface down; the ioctl returned '
         f'within {min(cmd) * 1e6:.0f}-{max(cmd) * 1e6:.0f} us.'),
        f'- Service gap: a new connection every {config.get("interval_ms")} '
        'ms, so the gap is resolved to that interval; it ends when the '
        'first probe answered by the backup completes (its connection '
        'made and the backup\'s name read).',
        '- Backup response time: the first backup SYN-ACK or data segment '
        'captured on a client interface (microsecond timestamps); it is '
        'bounded below by the probe interval, as the prober is one of the '
        'clients. The backup is identified by matching TCP sequence numbers '
        'against a capture on its own interface (SDN, where the switch '
        'rewrites its address into the primary\'s) or by matching the '
        'relayed payload within 1 s (HAProxy, which terminates TCP).',
        f'- Packets dropped by the captures: {drops}.',
    ]


def write_report(out_dir, results, meta):
    """Write figures and report.md into `out_dir`; returns the report path."""
    schemes = _ordered_schemes(results)
    agg = aggregate(results)
    figures = write_figures(out_dir, agg, schemes) if agg else []
    config = meta.get('config', {})
    lines = _introduction(results, meta)
    lines += report_best.section(results)
    lines += ['## Results: median [min-max] over repetitions', '',
              main_table(agg, schemes), '', COLUMNS, '']
    lines += health_report.section(results, meta)
    lines += ['## Figures', '']
    lines += [f'![{name}]({name})' for name in figures] + ['']
    lines += _claims_section(agg, schemes, config)
    lines += _gap_ratio_section(results, schemes)
    lines += report_sections.environment(meta.get('environment', {}))
    lines += ['', '## Measurement resolution', '']
    lines += _resolution(results, config)
    lines += report_sections.failed_runs('Failed runs', [
        (f'{r["scheme"]} rate {r["rate"]:g} repetition {r["repetition"]}',
         f'{r.get("status")}: {r.get("reason")}')
        for r in results if r.get('status') != 'ok'])
    lines += ['', '## Files', '', FILES, '']
    path = os.path.join(out_dir, 'report.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


COLUMNS = (
    'Columns: *backup response* = failure to the first SYN-ACK or data '
    'segment from the backup that a client received (Fig. 2); '
    '*service gap* = failure to the first new connection answered by '
    'the backup, and *failed probes* = probe connections that failed '
    'after the failure; *failover RSTs* = RST segments on iperf3 '
    'connections after the failure and before the connection began to '
    'close (an iperf3 server always resets the last in-flight segments '
    'after its FIN; those are not counted); *aborted* = iperf3 clients '
    'that did not complete, split into those with a connection '
    'established before the failure (no redirect can save them) and '
    'those not yet established at the failure (Fig. 3); *throughput* = '
    'mean over clients of what the server received per second, an '
    'aborted client counting what it sent over its lifetime (Fig. 4).')

FILES = ('`runs/*.json` raw per-run results (clients, clock offsets, '
         'HAProxy health transitions), `runs.csv` one row per run, '
         '`clients.csv` one row per iperf3 client, '
         '`evaluation.json` the configuration and environment.')


def _introduction(results, meta):
    """The title, how many runs succeeded, and the set-up in words."""
    config = meta.get('config', {})
    kill = config.get('failure') == 'kill'
    ok = sum(1 for r in results if r.get('status') == 'ok')
    lines = ['# Traffic redirection for high availability: evaluation', '']
    if meta.get('interrupted'):
        lines += [f'**Partial report**: the sweep was interrupted '
                  f'({meta["interrupted"]}) after {len(results)} runs.', '']
    return lines + [
        f'{ok} of {len(results)} runs succeeded in '
        f'{meta.get("elapsed_s", 0):.0f} s. Command: '
        f'`{meta.get("command", "")}`.', '',
        'Setup as in the paper\'s Section IV: clients arrive as a Poisson '
        f'process (seed {config.get("seed")!r}); each runs one iperf3 '
        f'transfer of {config.get("duration")} s; arrivals span '
        f'{config.get("window")} s; '
        + ('the primary\'s service processes are killed, its link staying '
           'up, ' if kill else 'the primary\'s interface goes down ')
        + f'{config.get("fail_at")} s in. A prober opens a new connection '
        f'every {config.get("interval_ms")} ms. '
        + ('Each run first has a phase without failure (same arrival '
           'process) for the baseline throughput. '
           if config.get('baseline') else '')
        + f'A client still running {config.get("grace")} s after its '
        'planned end is stopped and counts as aborted.', '']


def _claims_section(agg, schemes, config):
    lines = ['## The paper\'s claims', '']
    if config.get('failure') == 'kill':
        lines += ['Not checked: the paper\'s claims are about a link '
                  'failure; run without `--failure kill`.']
    else:
        for claim, verdict, evidence in claims(agg, schemes):
            lines += [f'- **{verdict.capitalize()}**: {claim}. '
                      f'{evidence}.']
        lines += ['', 'A claim is reproduced when it holds for every SDN '
                  'strategy measured; "partly" names the strategies it '
                  'holds for.']
    return lines + ['']


def _gap_ratio_section(results, schemes):
    ratios = gap_ratios(results, schemes)
    lines = ['## Service gap: SDN strategy / tuned HAProxy (same '
             'invocation)', '']
    if not ratios:
        return lines + [f'Not measured: needs {TUNED_PROXY} and an sdn-* '
                        'scheme with service gaps.']
    return lines + report_sections.table(
        ['SDN scheme', 'rate/s', 'ratio', 'SDN gap', 'tuned HAProxy gap'],
        [[s, rate, formatting.optional(ratio, '.3f'),
          formatting.duration(a), formatting.duration(b)]
         for s, rate, ratio, a, b in ratios])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print('usage: python -m ha_redirect.lab.report RESULTS_DIR',
              file=sys.stderr)
        return 2
    out_dir = argv[0]
    meta = {}
    meta_path = os.path.join(out_dir, 'evaluation.json')
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    print(write_report(out_dir, load_results(out_dir), meta))
    return 0


if __name__ == '__main__':
    sys.exit(main())
