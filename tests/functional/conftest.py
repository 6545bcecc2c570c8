"""Functional tests: real OVS, real os-ken, real HAProxy in Mininet.

They need root (network namespaces, Open vSwitch).  Not root: they are
skipped, and the skip says so -- unless HA_REDIRECT_REQUIRE_FUNCTIONAL=1
(set by devtools/run-tests, and so by CI), where not being able to run them
is an error.

Measured service gaps are collected with `record_gap` and printed in the
terminal summary, one line per case.
"""

import json
import os

import pytest

IS_ROOT = os.geteuid() == 0
NOT_ROOT_REASON = ('functional tests need root: they build network '
                   'namespaces and Open vSwitch bridges')

_GAPS = []
_FAULTS = []


def pytest_configure(config):
    # Mininet 2.3.0.dev6 still uses distutils' StrictVersion.
    config.addinivalue_line(
        'filterwarnings',
        'ignore:distutils Version classes are deprecated:DeprecationWarning')


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    ours = [item for item in items if str(item.fspath).startswith(here)]
    for item in ours:
        item.add_marker(pytest.mark.functional)
    if IS_ROOT or not ours:
        return
    if os.environ.get('HA_REDIRECT_REQUIRE_FUNCTIONAL') == '1':
        raise pytest.UsageError(
            'HA_REDIRECT_REQUIRE_FUNCTIONAL=1 but not root: '
            + NOT_ROOT_REASON)
    skip = pytest.mark.skip(reason=NOT_ROOT_REASON)
    for item in ours:
        item.add_marker(skip)


@pytest.fixture
def record_gap(request):
    """record_gap(case, variant, GapReport, note='')."""
    def record(case, variant, report, note=''):
        text = report.describe() + (f'; {note}' if note else '')
        gap = report.gap
        _GAPS.append({'test': request.node.nodeid, 'case': case,
                      'variant': variant, 'gap_s': gap, 'detail': text})
        print(f'\n[{case} / {variant}] {text}')
    return record


@pytest.fixture
def record_fault(request):
    """record_fault(fault, strategy, **measured): one row of the fault
    suite's table, printed at the end (and written to the JSON file named
    by HA_REDIRECT_FAULTS_JSON)."""
    def record(fault, strategy, **measured):
        _FAULTS.append({'test': request.node.nodeid, 'fault': fault,
                        'strategy': strategy, **measured})
        print(f'\n[{fault} / {strategy}] {measured}')
    return record


def _fault_summary(terminalreporter):
    terminalreporter.section('fault suite: measured')
    for row in _FAULTS:
        measured = ', '.join(f'{k}={v}' for k, v in row.items()
                             if k not in ('test', 'fault', 'strategy'))
        terminalreporter.write_line(
            f"{row['fault']:<26} {row['strategy']:<14} {measured}")
    _write_json('HA_REDIRECT_FAULTS_JSON', _FAULTS)


def _write_json(variable, rows):
    """Keep a table's rows where the environment variable says, if set."""
    path = os.environ.get(variable)
    if path:
        with open(path, 'w') as f:
            json.dump(rows, f, indent=1)


def pytest_terminal_summary(terminalreporter):
    if _FAULTS:
        _fault_summary(terminalreporter)
    if not _GAPS:
        return
    terminalreporter.section('measured service gaps')
    for g in _GAPS:
        gap = '-' if g['gap_s'] is None else f"{g['gap_s'] * 1000:8.1f} ms"
        terminalreporter.write_line(
            f"{g['case']:<22} {g['variant']:<10} {gap:>12}   {g['detail']}")
    _write_json('HA_REDIRECT_GAPS_JSON', _GAPS)
