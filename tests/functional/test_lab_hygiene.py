"""The testbed removes exactly what it created, even when interrupted."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from ha_redirect.lab import scenarios
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed


def bridge_exists(name):
    return subprocess.run(['ovs-vsctl', 'br-exists', name]).returncode == 0


def interfaces_with(token):
    return [n for n in os.listdir('/sys/class/net') if f'_{token}' in n]


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split()[2] != 'Z'
    except FileNotFoundError:
        return False


def test_a_finished_run_leaves_no_bridge_interface_or_process():
    with scope_mod.RunScope() as scope:
        sdn = scenarios.SdnScenario(scope, strategy='reactive').start()
        token = scope.token
        bridge = sdn.plan.bridge
        pids = [sdn.controller.popen.pid] + [
            h.pid for h in sdn.bed.net.hosts] + [
            s.pid for s in sdn.servers.values()]
        assert bridge_exists(bridge)
        assert interfaces_with(token)
        assert all(alive(pid) for pid in pids)
    assert not bridge_exists(bridge)
    assert not interfaces_with(token)
    assert not [pid for pid in pids if alive(pid)]


def read_until(proc, wanted, timeout):
    """Lines of `proc.stdout` up to the one containing `wanted`, or up to
    its end or the deadline: (lines, found, the thread that keeps reading).
    """
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return seen, False, reader
        if line is None:
            return seen, False, reader
        seen.append(line)
        if wanted in line:
            return seen, True, reader


def test_ctrl_c_during_a_demo_cleans_up(tmp_path):
    testbed.check_host()
    err_path = tmp_path / 'demo.stderr'
    # --observe far longer than the test: the demo cannot finish its scheme
    # (and clean up by itself) before it is interrupted, however slow the
    # host.  stderr goes to a file so it can never fill a pipe and stall
    # the demo while the test reads stdout.
    with open(err_path, 'w') as err_file:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'ha_redirect.lab.cli', 'demo',
             '--schemes', 'sdn-reactive', '--observe', '600'],
            stdout=subprocess.PIPE, stderr=err_file, text=True)
    reader = None
    try:
        seen, found, reader = read_until(proc, 'down (the primary)', 240)
        assert found, (
            'no "down (the primary)" from the demo '
            + ('within 240 s (still running: is its stdout flushed line by '
               'line?)' if proc.poll() is None else
               f'(it ended, exit status {proc.returncode})')
            + f':\n{"".join(seen)}{err_path.read_text()}')
        # It said so while the testbed is up (it is now observing): if it
        # has exited already, its output came late (buffered).
        assert proc.poll() is None, (
            'the demo had already ended when "down (the primary)" '
            f'arrived (exit status {proc.returncode}): is its stdout '
            f'flushed line by line?\n{"".join(seen)}{err_path.read_text()}')
        headers = [line for line in seen if line.startswith('== ')]
        match = re.search(r'OVS (\S+) .* pid (\d+) on', ''.join(headers))
        assert match, seen
        bridge, controller_pid = match.group(1), int(match.group(2))
        token = bridge.split('_')[1]
        assert bridge_exists(bridge), bridge
        assert interfaces_with(token), token
        assert alive(controller_pid), controller_pid
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the demo still cleans up
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if reader is not None:
            reader.join(10)
        if reader is None or not reader.is_alive():
            proc.stdout.close()
    err = err_path.read_text()
    assert proc.returncode == 130, err
    assert 'interrupted; cleaned up' in err
    assert 'Traceback' not in err
    assert not bridge_exists(bridge)
    assert not interfaces_with(token)
    assert not alive(controller_pid)
