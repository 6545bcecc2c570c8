"""How the lab's reports write numbers.

One place, so that report.md, its kill-mode section and gaps.md show a
missing value, a time, a count or a median and its range the same way.
Pure; every function takes plain numbers (or a `metrics.Spread`).
"""

MISSING = '-'


def optional(value, spec='.1f', missing=MISSING):
    """`value` in `format` spec `spec`; `missing` for None."""
    return missing if value is None else format(value, spec)


def to_ms(seconds):
    """Seconds as milliseconds, None staying None."""
    return None if seconds is None else seconds * 1000


def duration(seconds):
    """'42 ms' below a second, '1.50 s' from one on; '-' for None."""
    if seconds is None:
        return MISSING
    if seconds < 1:
        return f'{seconds * 1000:.0f} ms'
    return f'{seconds:.2f} s'


def whole_ms(seconds):
    """Seconds as a whole number of milliseconds, no unit."""
    return f'{seconds * 1000:.0f}'


def count(value):
    """A count or a median of counts: no trailing zeros."""
    return f'{value:g}'


def three_digits(value):
    """Whole above 100, three significant digits below: a table cell."""
    return f'{value:.0f}' if abs(value) >= 100 else f'{value:.3g}'


def spread(values, fmt):
    """A `metrics.Spread` as 'median [low-high]', the median alone when
    every repetition gave the same value; '-' when there is none."""
    if values is None or values.median is None:
        return MISSING
    if values.low == values.high:
        return fmt(values.median)
    return f'{fmt(values.median)} [{fmt(values.low)}-{fmt(values.high)}]'


def value_range(values, fmt):
    """'low to high' of the values that are not None ('no data')."""
    values = [v for v in values if v is not None]
    if not values:
        return 'no data'
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f'{fmt(lo)} to {fmt(hi)}'


def plural(n, noun):
    """'1 run', '3 runs'."""
    return f'{n} {noun}' + ('' if n == 1 else 's')
