"""The first table of report.md: per metric, the best scheme against tuned
HAProxy.

Pure: from the run dicts of one `evaluate` invocation.  Each scheme is
summed up by its median over every successful run (all rates together);
per metric the table names the best scheme (ties: all of them), its
median, tuned HAProxy's, and the ratio of the two, with the direction
that is better written out; then the same for the best SDN strategy,
since that is what this project ships.

A run whose backup never answered (or whose monitor never marked the
primary down) counts as infinitely late for that time metric: leaving it
out would let a scheme that failed look fast.
"""

import dataclasses
import functools
import math
import statistics
import typing

from ha_redirect.lab import formatting
from ha_redirect.lab import report_sections
from ha_redirect.lab import schemes as schemes_mod

TUNED_PROXY = 'haproxy-tuned'
LOWER, HIGHER = 'lower', 'higher'
NEVER = 'never'


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row's metric: `value(run metrics)` gives a number or None."""
    label: str
    unit: str
    scale: float
    better: str                   # LOWER or HIGHER
    value: typing.Callable
    none_is_never: bool = False   # None: the event never came (a time)

    def title(self):
        return f'{self.label} ({self.unit})' if self.unit else self.label


def _key(name):
    return lambda m: m.get(name)


def _aborted(m):
    parts = [m.get('aborted_before'), m.get('aborted_after')]
    if all(p is None for p in parts):
        return None
    return sum(p or 0 for p in parts)


BACKUP_RESPONSE = Metric('backup response time', 'ms', 1000.0, LOWER,
                         _key('backup_response_s'), none_is_never=True)
SERVICE_GAP = Metric('service gap', 'ms', 1000.0, LOWER,
                     _key('service_gap_s'), none_is_never=True)
ABORTED = Metric('aborted connections (iperf3 clients per run)', '', 1.0,
                 LOWER, _aborted)
THROUGHPUT = Metric('throughput per client, with the failure', 'Mbit/s',
                    1.0, HIGHER, _key('throughput_mbps'))
BASELINE = Metric('throughput per client, without failure', 'Mbit/s', 1.0,
                  HIGHER, _key('baseline_throughput_mbps'))
KILL_DETECTION = Metric('detection: kill to first answer from the backup',
                        'ms', 1000.0, LOWER, _key('service_gap_s'),
                        none_is_never=True)
KILL_MONITOR = Metric('detection: kill to monitor DOWN logged', 'ms',
                      1000.0, LOWER, _key('monitor_detection_s'),
                      none_is_never=True)
KILL_FAILED = Metric('failed connection attempts after the kill', '', 1.0,
                     LOWER, _key('probe_failed_after'))

LINK_METRICS = (BACKUP_RESPONSE, SERVICE_GAP, ABORTED, THROUGHPUT,
                BASELINE)
KILL_METRICS = (KILL_DETECTION, KILL_MONITOR, KILL_FAILED, BACKUP_RESPONSE,
                ABORTED, THROUGHPUT, BASELINE)


@dataclasses.dataclass(frozen=True)
class Row:
    """The best of one metric; medians in the metric's own unit (seconds,
    counts, Mbit/s), `math.inf` for "never"."""
    metric: Metric
    best: tuple                       # the scheme names sharing the best
    best_median: float
    tuned: typing.Optional[float]     # None: tuned HAProxy not measured
    best_sdn: tuple                   # () without an SDN strategy
    best_sdn_median: typing.Optional[float]


@functools.lru_cache(maxsize=None)   # parsing reads the entry points
def is_sdn(name):
    """Whether `name` is one of our controller's strategies (an unknown
    name, e.g. of a strategy no longer installed, is not)."""
    try:
        return schemes_mod.Scheme.parse(name).is_sdn
    except ValueError:
        return False


def scheme_medians(results, metric):
    """{scheme: median over its successful runs} of `metric`, in the order
    the schemes first appear; schemes without a value are left out."""
    values = {}
    for r in results:
        if r.get('status') != 'ok':
            continue
        v = metric.value(r.get('metrics', {}))
        if v is None and metric.none_is_never:
            v = math.inf
        if v is not None:
            values.setdefault(r['scheme'], []).append(v)
    return {s: statistics.median(v) for s, v in values.items()}


def _best(medians, better):
    if not medians:
        return (), None
    pick = min if better == LOWER else max
    value = pick(medians.values())
    return tuple(s for s, v in medians.items() if v == value), value


def rows(results):
    """One Row per metric that some scheme measured; the kill mode's
    metrics when the runs killed the service."""
    kill = any(r.get('failure') == 'kill' for r in results
               if r.get('status') == 'ok')
    out = []
    for metric in KILL_METRICS if kill else LINK_METRICS:
        medians = scheme_medians(results, metric)
        best, value = _best(medians, metric.better)
        if not best:
            continue
        sdn, sdn_value = _best({s: v for s, v in medians.items()
                                if is_sdn(s)}, metric.better)
        out.append(Row(metric, best, value, medians.get(TUNED_PROXY), sdn,
                       sdn_value))
    return out


def ratio(value, tuned):
    """`value` / `tuned`, None where undefined (no tuned HAProxy, a zero
    or never-answering reference, or a best that never answered); 1 when
    both are the same (both 0, both never)."""
    if tuned is None or value is None:
        return None
    if value == tuned:
        return 1.0
    if tuned == 0 or math.isinf(tuned) or math.isinf(value):
        return None
    return value / tuned


def _value(metric, v):
    if v is None:
        return formatting.MISSING
    if math.isinf(v):
        return NEVER
    return formatting.three_digits(v * metric.scale)


def _ratio_cell(value, tuned):
    r = ratio(value, tuned)
    if r is None:
        return formatting.MISSING
    return formatting.three_digits(r)


HEAD = ['metric', 'better', 'best scheme', 'its median',
        f'{TUNED_PROXY} median', f'best / {TUNED_PROXY}',
        'best SDN strategy', f'its median / {TUNED_PROXY}']


def table(table_rows):
    """The Markdown table of `rows`."""
    return report_sections.table(HEAD, [
        [row.metric.title(), row.metric.better, ', '.join(row.best),
         _value(row.metric, row.best_median),
         _value(row.metric, row.tuned),
         _ratio_cell(row.best_median, row.tuned),
         (f'{", ".join(row.best_sdn)} '
          f'({_value(row.metric, row.best_sdn_median)})'
          if row.best_sdn else formatting.MISSING),
         _ratio_cell(row.best_sdn_median, row.tuned)]
        for row in table_rows])


def section(results):
    """The report.md lines ([] without a successful run)."""
    table_rows = rows(results)
    if not table_rows:
        return []
    lines = ['## The best scheme per metric, against tuned HAProxy', '',
             'Each scheme\'s median over all its successful runs (every '
             'rate together) in this invocation. *better* says which '
             'direction wins; the ratios divide by tuned HAProxy\'s '
             'median, so for a *lower* metric below 1 beats tuned HAProxy '
             'and for a *higher* metric above 1 does. A run whose backup '
             'never answered (or whose monitor never logged DOWN) counts '
             f'as "{NEVER}". Ties list every scheme that shares the best.',
             '']
    lines += table(table_rows)
    if not any(row.tuned is not None for row in table_rows):
        lines += ['', f'No ratio: {TUNED_PROXY} was not measured.']
    return lines + ['']
