"""Gap mode's summary: the numbers per scheme, the goals and gaps.md.

Pure functions of the run results `ha_redirect.lab.gaps` records (dicts,
as in its `runs/*.json`), so unit tests feed them synthetic runs.
"""

import json
import os
import statistics

from ha_redirect.lab import formatting
from ha_redirect.lab import report_sections
from ha_redirect.lab import schemes as schemes_mod
from ha_redirect import plugins

REFERENCE = 'sdn-proactive'
FLIP = schemes_mod.FLIP        # the comparison every scheme's ratio is to
GOAL_GAP_MS = 5.0
GOAL_STRATEGIES = ('fast_failover', 'stateful')
GOAL_SURVIVORS = 'stateful'


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _services(result):
    return result.get('services', 1)


def summarize(results, schemes, long_lived, services=1):
    """Per scheme: gap median and range (ms), ratios to sdn-proactive and
    to the flip, failed attempts, failback survivors (runs with one
    service); the prober's resolution; with `services` > 1, the first
    service's gap with that many services against one."""
    rows = {}
    for scheme in schemes:
        links = [r for r in results if r['scheme'] == scheme
                 and r['kind'] == 'link' and _services(r) == 1]
        ok = [r for r in links if r['status'] == 'ok']
        gaps = [r['metrics']['gap_s'] * 1000 for r in ok
                if r['metrics']['gap_s'] is not None]
        backs = [r for r in results if r['scheme'] == scheme
                 and r['kind'] == 'failback' and r['status'] == 'ok']
        back = backs[0]['metrics'] if backs else None
        rows[scheme] = dict(
            runs=len(links), runs_ok=len(ok),
            no_gap=len(ok) - len(gaps),
            gaps_ms=gaps,
            gap_median_ms=_median(gaps),
            gap_min_ms=min(gaps) if gaps else None,
            gap_max_ms=max(gaps) if gaps else None,
            connect_gap_median_ms=_median([
                formatting.to_ms(r['metrics'].get('connect_gap_s'))
                for r in ok]),
            moved_median_ms=_median([
                formatting.to_ms(r['metrics'].get('first_backup_start_s'))
                for r in ok]),
            failed_attempts=[r['metrics']['failed_after'] for r in ok],
            failed_median=_median([r['metrics']['failed_after']
                                   for r in ok]),
            latency_before_ms=_median([r['metrics']['latency_before_ms']
                                       for r in ok]),
            connect_before_ms=_median([r['metrics'].get('connect_before_ms')
                                       for r in ok]),
            spacing_near_max_ms=max(
                [r['metrics']['spacing_max_near_failure_ms'] for r in ok
                 if r['metrics']['spacing_max_near_failure_ms'] is not None],
                default=None),
            survivors=None if back is None else back['survivors'],
            long_lived=long_lived,
            pins_connections=_pins(scheme),
            failback_gap_ms=formatting.to_ms(back and back['gap_s']),
            failback_failed=None if back is None else back['failed_after'],
            failback_to_primary_ms=formatting.to_ms(
                back and back['to_primary_s']),
            failures=[dict(kind=r['kind'], repetition=r['repetition'],
                           reason=r.get('reason'))
                      for r in results if r['scheme'] == scheme
                      and r['status'] != 'ok'])
    ref = rows.get(REFERENCE, {}).get('gap_median_ms')
    flip = rows.get(FLIP, {}).get('gap_median_ms')
    flip_connect = rows.get(FLIP, {}).get('connect_gap_median_ms')
    for row in rows.values():
        row['ratio_to_proactive'] = _ratio(row['gap_median_ms'], ref)
        row['ratio_to_flip'] = _ratio(row['gap_median_ms'], flip)
        row['connect_ratio_to_flip'] = _ratio(row['connect_gap_median_ms'],
                                              flip_connect)
    links = [r for r in results if r['kind'] == 'link'
             and r['status'] == 'ok' and _services(r) == 1]
    res = [r['metrics']['resolution'] for r in links
           if r['metrics'].get('resolution')]
    near = [r['metrics'].get('spacing_max_near_failure_ms') for r in links]
    resolution = None if not res else dict(
        rate_per_s=_median([x['rate_per_s'] for x in res]),
        spacing_median_ms=_median([x['spacing_median_ms'] for x in res]),
        spacing_p99_ms=_median([x['spacing_p99_ms'] for x in res]),
        spacing_max_near_failure_ms=max(
            [v for v in near if v is not None], default=None))
    out = dict(schemes=rows, resolution=resolution, goals=goals(rows))
    if services > 1:
        out['many_services'] = many_services(results, schemes, services)
    return out


def _ratio(value, reference):
    return value / reference if value is not None and reference else None


def many_services(results, schemes, services):
    """Per scheme: the first service's median gap (ms) with `services`
    services and with one, and their ratio (N / 1)."""
    out = {}
    for scheme in schemes:
        medians = {}
        for n in (services, 1):
            gaps = [r['metrics']['gap_s'] * 1000 for r in results
                    if r['scheme'] == scheme and r['kind'] == 'link'
                    and _services(r) == n and r['status'] == 'ok'
                    and r['metrics']['gap_s'] is not None]
            medians[n] = (_median(gaps), len(gaps))
        (many, n_many), (one, n_one) = medians[services], medians[1]
        out[scheme] = dict(
            services=services, gap_median_ms=many, runs_with_gap=n_many,
            one_gap_median_ms=one, one_runs_with_gap=n_one,
            ratio=many / one if many is not None and one else None)
    return out


def _pins(scheme):
    try:
        parsed = schemes_mod.Scheme.parse(scheme, comparisons=True)
    except ValueError:
        return None
    if parsed.is_flip:
        return False        # one service-wide rewrite, no pins
    if not parsed.is_sdn:
        return None
    try:
        return bool(plugins.load_strategy(parsed.variant).pins_connections)
    except Exception:  # only a table column
        return None


def goals(rows):
    """The issue's goals, each with what was measured and a verdict."""
    out = []
    for name in GOAL_STRATEGIES:
        row = rows.get(f'sdn-{name}')
        if row is None:
            continue
        m = row['gap_median_ms']
        out.append(dict(
            goal=f'sdn-{name}: median gap <= {GOAL_GAP_MS:g} ms',
            measured='no gap measured' if m is None else f'{m:.1f} ms',
            met=m is not None and m <= GOAL_GAP_MS))
    row = rows.get(f'sdn-{GOAL_SURVIVORS}')
    if row is not None:
        k, n = row['survivors'], row['long_lived']
        out.append(dict(
            goal=f'sdn-{GOAL_SURVIVORS}: {n} of {n} connections survive '
            'failback',
            measured='not measured' if k is None else f'{k}/{n}',
            met=k is not None and k == n))
    return out


_fmt = formatting.optional

TABLE_HEAD = ['scheme', 'gap median ms', 'gap range ms',
              'connect gap median ms', 'ratio to proactive',
              'moved at ms', 'failed attempts median (range)',
              'latency before ms', 'connect before ms',
              'widest probe spacing ms',
              'failback survivors', 'failback gap ms', 'back to primary ms']
FLIP_HEAD = ['ratio to flip', 'connect ratio to flip']


def markdown(summary, meta):
    """gaps.md: the side-by-side table, goals, resolution, environment."""
    lines = ['# Service gaps side by side', '',
             f'Command: `{meta["command"]}`  ', f'Started: {meta["started"]}'
             f', took {meta["elapsed_s"]:.0f} s; load average before/after: '
             f'{meta["load_before"]} / {meta["load_after"]} '
             f'({meta["cpus"]} CPUs)', '']
    if meta.get('interrupted'):
        lines += ['**Interrupted**: the table holds the runs done so far.',
                  '']
    services = meta.get('services', 1)
    back = (f'Failback: {meta["long_lived"]} long-lived connections on the '
            'backup while the primary\'s link comes back.' if services == 1
            else f'Each link failure with {services} services, then with '
            '1; the table holds the runs with 1 (no failback runs).')
    arp = {True: ' The backups knew the clients\' MACs before the failure '
           '(one ping), as on a LAN.',
           False: ' The backups\' ARP caches were cold (--cold-arp).',
           None: ''}[meta.get('warm_arp')]
    lines += [
        f'Link failure: {meta["repeat"]} per scheme, prober every '
        f'{meta["interval_ms"]:g} ms. Gap = failure to the first new '
        'connection answered by the backup (its identity line); connect '
        f'gap = failure to that connection\'s SYN-ACK.{arp} {back}', '']
    with_flip = FLIP in summary['schemes']
    head = list(TABLE_HEAD)
    if with_flip:
        head[4:4] = FLIP_HEAD
    lines += report_sections.table(head, [
        _table_row(scheme, r, with_flip)
        for scheme, r in summary['schemes'].items()])
    if summary.get('many_services'):
        lines += ['', *_many_services_section(summary['many_services'])]
    lines += ['', '## Goals', '']
    for g in summary['goals']:
        lines.append(f'- {g["goal"]}: {g["measured"]} -- '
                     f'{"met" if g["met"] else "NOT met"}')
    lines += ['', '## Prober resolution', '']
    lines.append(_resolution(summary['resolution'], meta))
    lines += ['', _notes(meta)]
    lines += report_sections.failed_runs('Runs that failed', [
        (f'{s} {f["kind"]} {_fmt(f["repetition"], "")}', f['reason'])
        for s, r in summary['schemes'].items() for f in r['failures']])
    lines += report_sections.environment(meta['environment'])
    return '\n'.join(lines) + '\n'


def _many_services_section(table):
    n = next(iter(table.values()))['services']
    lines = [f'## {n} services against 1', '',
             f'{n} services whose primaries sit behind the same switch port '
             '(one link failure moves them all) against 1 service of the '
             'same scheme, alternating run by run: the first service\'s '
             'median gap.', '']
    return lines + report_sections.table(
        ['scheme', f'{n} services: gap median ms (runs)',
         '1 service: gap median ms (runs)', f'ratio {n} / 1'],
        [[scheme, f'{_fmt(r["gap_median_ms"])} ({r["runs_with_gap"]})',
          f'{_fmt(r["one_gap_median_ms"])} ({r["one_runs_with_gap"]})',
          _fmt(r['ratio'], '.2f')] for scheme, r in table.items()])


def _table_row(scheme, r, with_flip=False):
    failed = r['failed_attempts']
    rng = (f'{_fmt(r["gap_min_ms"])}-{_fmt(r["gap_max_ms"])}'
           if r['gaps_ms'] else '-')
    note = f' ({r["runs_ok"]}/{r["runs"]} runs' + (
        f', {r["no_gap"]} without a gap' if r['no_gap'] else '') + ')'
    surv = ('-' if r['survivors'] is None
            else f'{r["survivors"]}/{r["long_lived"]}')
    if r['pins_connections'] is False:
        surv += ' (stateless)'
    ratios = [_fmt(r['ratio_to_proactive'], '.2f')]
    if with_flip:
        ratios[:0] = [_fmt(r['ratio_to_flip'], '.2f'),
                      _fmt(r.get('connect_ratio_to_flip'), '.2f')]
    return [scheme, _fmt(r['gap_median_ms']), rng + note,
            _fmt(r.get('connect_gap_median_ms')), *ratios,
            _fmt(r['moved_median_ms']),
            f'{_fmt(r["failed_median"], "g")} '
            f'({min(failed) if failed else "-"}-'
            f'{max(failed) if failed else "-"})',
            _fmt(r['latency_before_ms']), _fmt(r.get('connect_before_ms')),
            _fmt(r['spacing_near_max_ms']),
            surv, _fmt(r['failback_gap_ms']),
            _fmt(r['failback_to_primary_ms'])]


def _resolution(res, meta):
    if not res:
        return 'No link run completed.'
    return (
        f'Asked for one attempt every {meta["interval_ms"]:g} ms; '
        f'achieved {res["rate_per_s"]:.0f} attempts/s (median of runs), '
        f'spacing median {res["spacing_median_ms"]:.2f} ms, p99 '
        f'{res["spacing_p99_ms"]:.1f} ms; the widest spacing between '
        'the failure and the backup\'s first answer was '
        f'{_fmt(res["spacing_max_near_failure_ms"])} ms.')


def _notes(meta):
    """What the less obvious columns mean."""
    return (
        '"moved at" is the median start of the first connection the '
        'backup answered: for switch-local strategies, when the switch sent '
        'new connections to the backup (the gap adds the time that '
        'connection took to complete); under reactive (SYN queued for the '
        'controller) and HAProxy (connect retried) it can start early and '
        'be answered late. '
        '"latency before" is the median time a connection took to be '
        'answered in the second before the failure: a gap cannot be '
        'shorter; "connect before" is the same to the SYN-ACK. '
        '"widest probe spacing" is the longest wait between two '
        'attempts from the failure to the backup\'s first answer, over '
        'the runs: the gap\'s resolution. "failed attempts" got no answer '
        f'within {meta["probe_timeout_ms"]:g} ms. The failback gap is the '
        'longest time a new '
        'connection went unanswered after the link came back; "back to '
        'primary" is when the primary answered new connections again. '
        'A connection survives when it stayed open without error and '
        f'echoed {meta["survivor_echoes"]}+ times from 1 s after link-up; '
        '"stateless" strategies do not pin connections and are expected '
        'to reset them.')


def console_table(summary):
    """The medians and their ratios to the flip, as printed at the end."""
    rows = [[scheme, _fmt(r['gap_median_ms']),
             _fmt(r['ratio_to_flip'], '.2f'),
             _fmt(r.get('connect_gap_median_ms')),
             _fmt(r.get('connect_ratio_to_flip'), '.2f'),
             f'{len(r["gaps_ms"])}/{r["runs"]}']
            for scheme, r in summary['schemes'].items()]
    head = ['scheme', 'gap ms', 'to flip', 'connect gap ms', 'to flip',
            'runs']
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return '\n'.join('  '.join(str(x).ljust(w) for x, w in zip(row, widths))
                     .rstrip() for row in [head] + rows)


def write_outputs(out_dir, results, meta):
    """summary.json and gaps.md in `out_dir`; (gaps.md's path, summary)."""
    summary = summarize(results, meta['schemes'], meta['long_lived'],
                        meta.get('services', 1))
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(dict(meta, **summary), f, indent=1, default=str)
    path = os.path.join(out_dir, 'gaps.md')
    with open(path, 'w') as f:
        f.write(markdown(summary, meta))
    return path, summary
