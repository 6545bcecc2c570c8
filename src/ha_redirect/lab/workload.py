"""Seeded Poisson client arrivals, as in the paper's Section IV.

Clients arrive as a Poisson process of rate `rate` (clients per second):
inter-arrival times are exponential with mean 1/rate.  The schedule is a
pure function of (seed, rate, repetition, phase), so every scheme sees the
same arrivals at a given rate and repetition, and a run can be repeated.
"""

import dataclasses
import random
import typing


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One client: when it starts (seconds after the phase starts), which
    client host runs it, and which server port it uses."""
    index: int
    at: float
    host_index: int
    port: int


@dataclasses.dataclass(frozen=True)
class Schedule:
    rate: float
    window: float
    seed: str
    arrivals: typing.Tuple[Arrival, ...]

    def __len__(self):
        return len(self.arrivals)


def arrival_times(rate, window, rng):
    """Arrival instants in [0, window) of a Poisson process of `rate`."""
    if rate <= 0 or window <= 0:
        raise ValueError('rate and window must be positive')
    times = []
    t = rng.expovariate(rate)
    while t < window:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def seed_text(seed, rate, repetition, phase):
    """A seed string that names what it seeds (random.Random hashes it)."""
    return f'{seed}/rate={rate:g}/rep={repetition}/{phase}'


def poisson_schedule(rate, window, seed, repetition=0, phase='failure',
                     n_hosts=1, ports=(5201,)):
    """The arrivals of one phase of one run.

    Client hosts are used round robin.  Each client gets its own server
    port (iperf3 serves one test at a time), taken in order from `ports`;
    a phase with more arrivals than ports is an error, so callers size the
    port pool with `ports_needed`.
    """
    text = seed_text(seed, rate, repetition, phase)
    times = arrival_times(rate, window, random.Random(text))
    if len(times) > len(ports):
        raise ValueError(f'{len(times)} arrivals but only {len(ports)} '
                         'server ports')
    arrivals = tuple(
        Arrival(index=i, at=t, host_index=i % n_hosts, port=ports[i])
        for i, t in enumerate(times))
    return Schedule(rate=rate, window=window, seed=text, arrivals=arrivals)


def count_arrivals(rate, window, seed, repetition=0, phase='failure'):
    """How many clients `poisson_schedule` would start (no ports needed)."""
    text = seed_text(seed, rate, repetition, phase)
    return len(arrival_times(rate, window, random.Random(text)))
