"""RunScope: unique names, newest-first undo, processes stopped by PID."""

import os
import subprocess
import sys

import pytest

from ha_redirect.lab import scope as scope_mod


def test_names_carry_the_token_and_fit_an_interface_name(tmp_path):
    scope = scope_mod.RunScope(token='ab12', workdir=str(tmp_path))
    assert scope.name('pri', 5) == 'pri_ab12'
    with pytest.raises(scope_mod.LabError, match='too long'):
        scope.name('averyverylongrole', 5)


def test_two_scopes_get_different_tokens():
    tokens = {scope_mod.RunScope().token for _ in range(20)}
    assert len(tokens) > 1


def test_undo_runs_newest_first_and_survives_a_failing_step(tmp_path):
    done = []
    with scope_mod.RunScope(workdir=str(tmp_path)) as scope:
        scope.on_close('first', lambda: done.append('first'))
        scope.on_close('broken', lambda: 1 / 0)
        scope.on_close('last', lambda: done.append('last'))
    assert done == ['last', 'first']


def test_cleanup_happens_on_exception_and_stops_our_process(tmp_path):
    with pytest.raises(RuntimeError):
        with scope_mod.RunScope(workdir=str(tmp_path)) as scope:
            proc = scope.own_process(subprocess.Popen(
                [sys.executable, '-c', 'import time; time.sleep(60)']),
                'sleeper')
            raise RuntimeError('boom')
    assert proc.returncode is not None


def test_a_process_that_ignores_sigterm_is_killed():
    proc = subprocess.Popen(
        [sys.executable, '-c',
         'import signal, time; signal.signal(signal.SIGTERM, '
         'signal.SIG_IGN); print("ready", flush=True); time.sleep(60)'],
        stdout=subprocess.PIPE)
    proc.stdout.readline()
    assert scope_mod.stop_process(proc, timeout=0.5) == -9


def test_sigterm_inside_the_scope_still_cleans_up(tmp_path):
    code = (
        'import os, signal\n'
        'from ha_redirect.lab import scope\n'
        f'with scope.RunScope(workdir={str(tmp_path)!r}) as s:\n'
        '    s.on_close("mark", lambda: open(os.path.join('
        f'{str(tmp_path)!r}, "cleaned"), "w").close())\n'
        '    os.kill(os.getpid(), signal.SIGTERM)\n'
        '    import time; time.sleep(5)\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0
    assert 'Terminated' in proc.stderr
    assert (tmp_path / 'cleaned').exists()


def test_own_workdir_is_removed_unless_kept():
    with scope_mod.RunScope() as scope:
        path = scope.workdir
        open(scope.path('x.log'), 'w').close()
    assert not os.path.exists(path)


class _Child(scope_mod.OwnedProcess):
    """The smallest owned process: a Python child running `code`."""

    def __init__(self, scope, code, detail=None):
        self.scope = scope
        self.label = 'child'
        self.code = code
        self.detail = detail

    def start(self, ready=lambda: True, timeout=5.0):
        self.popen = subprocess.Popen([sys.executable, '-c', self.code])
        return self.wait_ready(ready, timeout, what='be ready')

    def exit_detail(self):
        return self.detail


def test_an_owned_process_that_exits_before_it_is_ready_is_reported(
        tmp_path):
    with scope_mod.RunScope(workdir=str(tmp_path)) as scope:
        child = _Child(scope, 'raise SystemExit(3)')
        with pytest.raises(scope_mod.LabError,
                           match=r'^child exited with status 3$'):
            child.start(ready=lambda: False)
        child.detail = 'the tail of its log'
        with pytest.raises(scope_mod.LabError, match=r'^child exited with '
                           r'status 3: the tail of its log$'):
            child.start(ready=lambda: False)


def test_an_owned_process_not_ready_in_time_is_named(tmp_path):
    with scope_mod.RunScope(workdir=str(tmp_path)) as scope:
        child = _Child(scope, 'import time; time.sleep(60)')
        with pytest.raises(scope_mod.LabError,
                           match='waiting for child to be ready'):
            child.start(ready=lambda: False, timeout=0.2)
    assert child.popen.returncode is not None


def test_a_restarted_owned_process_is_stopped_once_when_the_scope_closes(
        tmp_path):
    with scope_mod.RunScope(workdir=str(tmp_path)) as scope:
        child = _Child(scope, 'import time; time.sleep(60)')
        first = child.start().popen
        child.check_alive()
        child.stop()
        second = child.start().popen
        assert [d for d, _ in scope._undo] == ['stop child']
    assert first.returncode is not None and second.returncode is not None
