"""The evaluation's command line: bad arguments, one line, exit 2."""

import subprocess
import sys

import pytest

from ha_redirect.lab import evaluation
from ha_redirect.lab import evaluation_run


@pytest.mark.parametrize('args, culprit', [
    (['--rates', '1,x'], "'1,x'"),
    (['--rates', '0'], "'0'"),
    (['--repeat', '0'], "'0'"),
    (['--schemes', 'sdn-nosuch'], "'sdn-nosuch'"),
    (['--schemes', 'haproxy-fast'], "'haproxy-fast'"),
    (['--fail-at', '9', '--window', '7'], '--fail-at'),
    (['--bogus'], '--bogus'),
])
def test_bad_arguments_give_one_line_and_status_2(args, culprit):
    proc = subprocess.run(
        [sys.executable, '-m', 'ha_redirect.lab.evaluation'] + args,
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert culprit in lines[0]
    assert 'Traceback' not in proc.stderr


def test_schemes_include_every_installed_strategy():
    from ha_redirect import plugins
    schemes = evaluation.available_schemes()
    assert {'haproxy-paper', 'haproxy-tuned'} <= set(schemes)
    for name in plugins.strategy_names():
        assert f'sdn-{name}' in schemes
    assert evaluation.parse_scheme('sdn-reactive') == ('sdn', 'reactive')


def test_paper_sweep_and_defaults():
    parser = evaluation.add_arguments(evaluation._Parser())
    cfg = evaluation.config_from_args(parser.parse_args(['--paper']))
    assert cfg.duration == 10.0 and cfg.fail_at == 5.0
    assert cfg.repeat >= 3 and max(cfg.rates) >= 8
    cfg = evaluation.config_from_args(parser.parse_args(
        ['--paper', '--repeat', '2']))
    assert cfg.repeat == 2
    cfg = evaluation.config_from_args(parser.parse_args([]))
    # The main job shows every strategy we ship beside both HAProxies.
    assert cfg.schemes == ('haproxy-paper', 'haproxy-tuned', 'sdn-reactive',
                           'sdn-proactive', 'sdn-fast_failover',
                           'sdn-stateful')
    # The paper's abort claim is judged on at least three rates.
    assert len(cfg.rates) >= 3
    # Every scheme meets every rate in each repetition before the next.
    runs = evaluation.plan_runs(cfg)
    assert len(runs) == len(cfg.schemes) * len(cfg.rates) * cfg.repeat
    assert {r[:2] for r in runs[:len(cfg.schemes) * len(cfg.rates)]} == {
        (s, r) for s in cfg.schemes for r in cfg.rates}


def test_capture_filter_compiles():
    """dumpcap/tcpdump accept it (checked with tcpdump -d when present)."""
    import shutil
    bpf = evaluation_run.capture_filter(5001, 5300)
    if shutil.which('tcpdump') is None and shutil.which('dumpcap') is None:
        pytest.skip('neither tcpdump nor dumpcap is installed')
    tool = shutil.which('tcpdump')
    if tool:
        proc = subprocess.run([tool, '-d', bpf], capture_output=True,
                              text=True)
    else:
        proc = subprocess.run(['dumpcap', '-i', 'lo', '-d', '-f', bpf],
                              capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_kill_mode_has_its_own_short_preset():
    from ha_redirect import plugins
    parser = evaluation.add_arguments(evaluation._Parser())
    cfg = evaluation.config_from_args(parser.parse_args(
        ['--failure', 'kill']))
    assert cfg.failure == 'kill'
    assert cfg.schemes == ('haproxy-tuned',) + tuple(
        f'sdn-{n}' for n in plugins.strategy_names())
    assert cfg.rates == evaluation.KILL['rates']
    assert cfg.repeat == evaluation.KILL['repeat']
    assert not cfg.baseline
    assert (cfg.probe_interval, cfg.probe_timeout) == (None, None)
    cfg = evaluation.config_from_args(parser.parse_args(
        ['--failure', 'kill', '--rates', '4', '--schemes', 'sdn-reactive',
         '--probe-timeout', '0.5']))
    assert (cfg.rates, cfg.schemes, cfg.probe_timeout) == (
        (4.0,), ('sdn-reactive',), 0.5)
    # The default invocation is untouched.
    assert evaluation.config_from_args(parser.parse_args([])).failure == \
        'link'


@pytest.mark.parametrize('args, culprit', [
    (['--failure', 'cable'], "'cable'"),
    (['--probe-timeout', '0.5'], '--probe-timeout'),
    (['--failure', 'kill', '--probe-fall', '0'], "'0'"),
    (['--failure', 'kill', '--passive-refusals', '-1'], "'-1'"),
    (['--passive-refusals', '1'], '--passive-refusals'),
    (['--failure', 'kill', '--probe-interval', '9999'], 'probe_interval'),
])
def test_bad_kill_mode_arguments_give_one_line_and_status_2(args, culprit):
    proc = subprocess.run(
        [sys.executable, '-m', 'ha_redirect.lab.evaluation'] + args,
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert culprit in lines[0]
