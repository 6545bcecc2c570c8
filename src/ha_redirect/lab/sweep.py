"""One sweep runner for the lab's experiments (`evaluate` and `gaps`).

A sweep is a list of planned runs, each building its own testbed.  The
runner shows progress, records a run that fails with its reason and goes
on, writes each result to `runs/<name>.json` as soon as it has it, and
stops at Ctrl-C or SIGTERM (every RunScope cleans up on the way out), so
that the tool can still write a partial report.
"""

import dataclasses
import datetime
import json
import logging
import os
import signal
import sys
import time
import traceback
import typing

from ha_redirect.lab import command
from ha_redirect.lab import ovs as ovs_mod
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed as testbed_mod

LOG = logging.getLogger(__name__)

# What stops a sweep; anything else only fails the run it happened in.
INTERRUPTS = (KeyboardInterrupt, scope_mod.Terminated)


@dataclasses.dataclass(frozen=True)
class Run:
    """One planned run: its result goes to `runs/<name>.json`, `fields`
    identify it in that result, `label` describes it on the progress bar
    (default: its name)."""
    name: str
    fields: dict
    label: str = ''


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a whole sweep gave."""
    results: list
    interrupted: typing.Optional[str]   # the exception's name, if stopped
    elapsed_s: float
    environment: dict


def results_folder(output, prefix=''):
    """`output`, or results/<prefix><local timestamp>."""
    return output or os.path.join(
        'results', prefix + datetime.datetime.now().strftime('%Y%m%d-%H%M%S'))


def run_all(tool, out_dir, runs, perform, progress=True, sample=None,
            note_prefix=''):
    """`tool`'s sweep, from host check to the last run; the Outcome, or
    None (after one error line) when the host or `out_dir` is not ready.

    SIGTERM unwinds like Ctrl-C meanwhile.  `perform`, `sample` and
    `note_prefix` are as for `sweep`.
    """
    try:
        testbed_mod.check_host()
        os.makedirs(out_dir, exist_ok=True)
    except (scope_mod.LabError, OSError) as exc:
        print(f'{tool}: error: {exc}', file=sys.stderr)
        return None
    old_term = signal.signal(signal.SIGTERM, command.raise_terminated)
    started, env = time.monotonic(), {}
    try:
        env = environment()
        print(f'{tool}: {len(runs)} runs into {out_dir}', file=sys.stderr)
        results, interrupted = sweep(runs, perform, out_dir, progress,
                                     sample, note_prefix)
    except INTERRUPTS as exc:          # before the first run: nothing ran
        results, interrupted = [], type(exc).__name__
    finally:
        signal.signal(signal.SIGTERM, old_term)
    return Outcome(results, interrupted, time.monotonic() - started, env)


def sweep(runs, perform, out_dir, progress=True, sample=None,
          note_prefix=''):
    """Every run in turn; returns (results, the interruption's name or None).

    `perform(run, note)` returns the run's result dict or raises; `note`
    prints a line above the progress bar.  `sample()` gives host conditions
    (e.g. {'load': ...}) recorded in each result as `<key>_before` and
    `<key>_after`.  `note_prefix` starts the line that reports a failed run.
    """
    from tqdm import tqdm
    results, interrupted = [], None
    bar = tqdm(total=len(runs), unit='run', disable=not progress,
               dynamic_ncols=True, file=sys.stderr)
    try:
        for run in runs:
            bar.set_description(run.label or run.name)
            started = time.monotonic()
            before = sample() if sample else {}
            try:
                result = perform(run, bar.write)
            except INTERRUPTS as exc:
                interrupted = type(exc).__name__
                result = dict(run.fields, status='interrupted',
                              reason=interrupted)
            except Exception as exc:  # record it; the sweep goes on
                LOG.debug('run failed', exc_info=True)
                result = dict(run.fields, status='failed',
                              reason=f'{type(exc).__name__}: {exc}'
                              .splitlines()[0][:300],
                              traceback=traceback.format_exc())
            result.update(run.fields)
            if sample:
                result.update({f'{k}_before': v for k, v in before.items()})
                result.update({f'{k}_after': v for k, v in sample().items()})
            result['elapsed_s'] = round(time.monotonic() - started, 2)
            results.append(result)
            _write_result(out_dir, run.name, result)
            bar.update(1)
            if result['status'] == 'failed':
                bar.write(f'{note_prefix}run {run.name} failed: '
                          f'{result["reason"]}')
            if interrupted:
                break
    except INTERRUPTS as exc:
        interrupted = type(exc).__name__   # between runs: nothing to clean
    finally:
        bar.close()
    return results, interrupted


def _write_result(out_dir, name, result):
    path = os.path.join(out_dir, 'runs', name + '.json')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)


def environment():
    """Versions and machine facts for the report."""
    import importlib.metadata
    import platform

    def first_line(argv):
        try:
            out = scope_mod.run(argv, check=False, timeout=10)
        except (OSError, scope_mod.subprocess.TimeoutExpired):
            return 'not found'
        return ((out.stdout or out.stderr).strip().splitlines() or ['?'])[0]

    def dist(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return 'not installed'
    try:
        datapath = testbed_mod.choose_datapath()
    except Exception as exc:  # only a report line
        datapath = f'unknown ({exc})'
    return {
        'Open vSwitch': first_line(['ovs-vswitchd', '--version']),
        'HAProxy': first_line(['haproxy', '-v']),
        'os-ken': dist('os-ken'),
        'ha_redirect': dist('ha_redirect'),
        'iperf3': first_line(['iperf3', '--version']),
        'dumpcap': first_line(['dumpcap', '--version']),
        'Mininet': dist('mininet'),
        'kernel': platform.release(),
        'Python': platform.python_version(),
        'OVS datapath': datapath,
        # The lab sizes a userspace bridge's port buffers (lab.ovs).
        'switch port receive buffer': {
            'user': f'{ovs_mod.PORT_BUFFER_BYTES // 1024} KB',
            'kernel': 'the kernel datapath\'s own'}.get(datapath, 'unknown'),
        'CPU cores': str(os.cpu_count()),
    }
