"""The testbed removes exactly what it created, even when interrupted."""

import os
import re
import signal
import subprocess
import sys

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


def test_ctrl_c_during_a_demo_cleans_up(tmp_path):
    testbed.check_host()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'ha_redirect.lab.cli', 'demo', '--schemes',
         'sdn-reactive', '--observe', '30'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        header = ''
        for line in proc.stdout:
            if line.startswith('== '):
                header = line
            if 'down (the primary)' in line:
                break
        match = re.search(r'OVS (\S+) .* pid (\d+) on', header)
        assert match, header
        bridge, controller_pid = match.group(1), int(match.group(2))
        token = bridge.split('_')[1]
        assert bridge_exists(bridge) and alive(controller_pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert 'interrupted; cleaned up' in err
    assert 'Traceback' not in err
    assert not bridge_exists(bridge)
    assert not interfaces_with(token)
    assert not alive(controller_pid)
