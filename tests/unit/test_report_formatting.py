"""How the reports write numbers, and the sections they share."""

from ha_redirect.lab import formatting
from ha_redirect.lab import metrics
from ha_redirect.lab import report_sections


def test_missing_values_are_a_dash():
    assert formatting.optional(None) == '-'
    assert formatting.optional(None, '.2f', missing='n/a') == 'n/a'
    assert formatting.optional(1.25) == '1.2'
    assert formatting.optional(3, '') == '3'
    assert formatting.to_ms(None) is None
    assert formatting.to_ms(0.0425) == 42.5


def test_durations_switch_to_seconds_at_one_second():
    assert formatting.duration(None) == '-'
    assert formatting.duration(0.0424) == '42 ms'
    assert formatting.duration(1.0) == '1.00 s'
    assert formatting.whole_ms(0.2716) == '272'


def test_counts_and_cells():
    assert formatting.count(3.0) == '3'
    assert formatting.count(8.5) == '8.5'
    assert formatting.three_digits(1234.5) == '1234'
    assert formatting.three_digits(81.234) == '81.2'
    assert formatting.three_digits(0.012345) == '0.0123'


def test_a_spread_shows_its_range_only_when_there_is_one():
    assert formatting.spread(None, str) == '-'
    assert formatting.spread(metrics.Spread.of([]), str) == '-'
    assert formatting.spread(metrics.Spread.of([2, 2]),
                             formatting.count) == '2'
    assert formatting.spread(metrics.Spread.of([1, 2, 4]),
                             formatting.count) == '2 [1-4]'


def test_value_range_and_plural():
    assert formatting.value_range([None], str) == 'no data'
    assert formatting.value_range([0.05, None, 0.05],
                                  formatting.duration) == '50 ms'
    assert formatting.value_range([2.0, 0.05],
                                  formatting.duration) == '50 ms to 2.00 s'
    assert (formatting.plural(1, 'run'), formatting.plural(0, 'run')) == (
        '1 run', '0 runs')


def test_shared_sections():
    assert report_sections.table(['a', 'b'], [['1', '2']]) == [
        '| a | b |', '|---|---|', '| 1 | 2 |']
    assert report_sections.environment({'kernel': '6.1'}) == [
        '', '## Environment', '', '| | |', '|---|---|', '| kernel | 6.1 |']
    assert report_sections.failed_runs('Failed runs', []) == []
    assert report_sections.failed_runs('Failed runs', [('x 1', 'boom')]) == [
        '', '## Failed runs', '', '- x 1: boom']
