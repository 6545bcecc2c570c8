"""The lab's one sweep runner and its scheme names, without a testbed."""

import json

import pytest

from ha_redirect.lab import command
from ha_redirect.lab import schemes
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import sweep
from ha_redirect import plugins


def planned(*names):
    return [sweep.Run(name, dict(scheme=name, repetition=0))
            for name in names]


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path):
    def perform(run, note):
        if run.name == 'b':
            raise RuntimeError('no backup\nsecond line')
        return dict(status='ok', scheme=run.name)
    results, interrupted = sweep.sweep(planned('a', 'b', 'c'), perform,
                                       str(tmp_path), progress=False)
    assert interrupted is None
    assert [r['status'] for r in results] == ['ok', 'failed', 'ok']
    failed = results[1]
    assert failed['reason'] == 'RuntimeError: no backup'
    assert (failed['scheme'], failed['repetition']) == ('b', 0)
    assert 'Traceback' in failed['traceback']
    on_disk = json.loads((tmp_path / 'runs' / 'b.json').read_text())
    assert on_disk['status'] == 'failed' and 'elapsed_s' in on_disk


@pytest.mark.parametrize('stop', [KeyboardInterrupt,
                                  lambda: scope_mod.Terminated('SIGTERM')])
def test_an_interruption_ends_the_sweep_after_its_run(tmp_path, stop):
    def perform(run, note):
        if run.name == 'b':
            raise stop()
        return dict(status='ok')
    results, interrupted = sweep.sweep(planned('a', 'b', 'c'), perform,
                                       str(tmp_path), progress=False)
    assert [r['status'] for r in results] == ['ok', 'interrupted']
    assert interrupted == results[1]['reason']
    assert interrupted in ('KeyboardInterrupt', 'Terminated')


def test_samples_before_and_after_each_run(tmp_path):
    loads = iter(['1.0', '2.0'])
    results, _ = sweep.sweep(planned('a'), lambda run, note: dict(status='ok'),
                             str(tmp_path), progress=False,
                             sample=lambda: dict(load=next(loads)))
    assert (results[0]['load_before'], results[0]['load_after']) == (
        '1.0', '2.0')


def test_scheme_names_parse_into_kind_and_variant():
    scheme = schemes.Scheme.parse('sdn-reactive')
    assert (scheme.kind, scheme.variant, scheme.name) == (
        'sdn', 'reactive', 'sdn-reactive')
    assert scheme.is_sdn
    assert not schemes.Scheme.parse('haproxy-tuned').is_sdn
    assert schemes.parse_scheme('haproxy-paper') == ('haproxy', 'paper')
    assert set(schemes.sdn_names()) == {
        f'sdn-{n}' for n in plugins.strategy_names()}
    for bad in ('sdn-nosuch', 'haproxy', 'ospf'):
        with pytest.raises(ValueError, match='unknown scheme'):
            schemes.Scheme.parse(bad)


def test_scheme_lists_keep_or_drop_repeats():
    assert command.scheme_names()('sdn-reactive, sdn-reactive,') == (
        'sdn-reactive', 'sdn-reactive')
    assert command.scheme_names(unique=True)('sdn-reactive,sdn-reactive') \
        == ('sdn-reactive',)
