"""Seeded Poisson arrivals."""

import statistics

import pytest

from ha_redirect.lab import workload


def test_same_seed_same_arrivals_for_every_scheme():
    a = workload.poisson_schedule(4, 7, seed='1', repetition=0,
                                  ports=range(5201, 5300))
    b = workload.poisson_schedule(4, 7, seed='1', repetition=0,
                                  ports=range(5201, 5300))
    assert a == b
    c = workload.poisson_schedule(4, 7, seed='1', repetition=1,
                                  ports=range(5201, 5300))
    assert [x.at for x in a.arrivals] != [x.at for x in c.arrivals]


def test_arrivals_are_ordered_inside_the_window_with_own_ports():
    s = workload.poisson_schedule(8, 7, seed='x', n_hosts=3,
                                  ports=tuple(range(6000, 6200)))
    times = [a.at for a in s.arrivals]
    assert times == sorted(times) and 0 <= times[0] and times[-1] < 7
    assert len({a.port for a in s.arrivals}) == len(s)
    assert {a.host_index for a in s.arrivals} == {0, 1, 2}
    assert len(s) == workload.count_arrivals(8, 7, 'x')


def test_the_count_and_gaps_follow_the_rate():
    counts = [workload.count_arrivals(5, 10, str(seed))
              for seed in range(300)]
    assert statistics.fmean(counts) == pytest.approx(50, rel=0.05)
    # Poisson: variance equals the mean.
    assert statistics.variance(counts) == pytest.approx(50, rel=0.3)


def test_too_few_ports_and_bad_rates_are_errors():
    with pytest.raises(ValueError, match='server ports'):
        workload.poisson_schedule(8, 7, seed='1', ports=(5201,))
    with pytest.raises(ValueError):
        workload.arrival_times(0, 7, None)
