"""Summaries of one metric over clients or repetitions."""

import dataclasses
import statistics
import typing


def mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


@dataclasses.dataclass(frozen=True)
class Spread:
    """Median and range of one metric over repetitions."""
    median: typing.Optional[float]
    low: typing.Optional[float]
    high: typing.Optional[float]
    n: int

    @classmethod
    def of(cls, values):
        values = sorted(v for v in values if v is not None)
        if not values:
            return cls(None, None, None, 0)
        return cls(statistics.median(values), values[0], values[-1],
                   len(values))
