"""ha-redirect-lab: bad input is one line and a non-zero exit."""

import subprocess
import sys

import pytest

from ha_redirect.lab import demo


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'ha_redirect.lab.cli']
                          + list(args), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize('args, culprit', [
    (['demo', '--schemes', 'sdn-reactive,ospf'], "'ospf'"),
    (['demo', '--schemes', 'haproxy-fast'], "'haproxy-fast'"),
    (['demo', '--schemes', 'sdn-nosuch'], "'sdn-nosuch'"),
    (['demo', '--interval-ms', '0'], "'0' is not a positive number"),
    (['demo', '--observe', '-1'], "'-1'"),
    (['frobnicate'], 'frobnicate'),
])
def test_bad_arguments_give_one_line(args, culprit):
    proc = run_cli(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert culprit in lines[0]
    assert 'Traceback' not in proc.stderr


def test_schemes_name_a_strategy_or_a_haproxy_profile():
    assert demo.parse_scheme('sdn-proactive') == ('sdn', 'proactive')
    assert demo.parse_scheme('haproxy-paper') == ('haproxy', 'paper')
    with pytest.raises(ValueError, match='unknown scheme'):
        demo.parse_scheme('haproxy')
