"""The control socket and ha-redirect-ctl, against a real controller."""

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from ha_redirect import control

from test_launcher import CONFIG
from test_launcher import CONTROLLER
from test_launcher import Launched

CTL = [sys.executable, '-m', 'ha_redirect.cmd.ctl']


def ctl(socket_path, *args):
    return subprocess.run(CTL + ['--socket', str(socket_path), *args],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def controller(tmp_path):
    launched = Launched(tmp_path, CONTROLLER)
    try:
        launched.wait_listening()
        deadline = time.monotonic() + 10
        while not launched.control_socket.exists():
            assert time.monotonic() < deadline, launched.stderr()
            time.sleep(0.05)
        yield launched
    finally:
        launched.process.terminate()
        launched.process.wait(timeout=10)
        launched.stderr_file.close()


@pytest.mark.parametrize('line, culprit', [
    (b'not json', 'not a JSON object'),
    (b'[1, 2]', 'not a JSON object'),
    (b'{"command": "reboot"}', "unknown command 'reboot'"),
    (b'{"command": "drain", "service": "web"}', 'drain needs "server"'),
])
def test_bad_requests_are_named(line, culprit):
    with pytest.raises(control.ControlError, match=culprit):
        control.parse_request(line)


def test_status_lists_services_and_servers(controller):
    mode = stat.S_IMODE(os.stat(controller.control_socket).st_mode)
    assert mode == 0o600
    result = ctl(controller.control_socket, 'status')
    assert result.returncode == 0, result.stderr
    assert 'service iperf (dpid 0x1, switch not connected)' in result.stdout
    assert 'primary' in result.stdout and 'backup1' in result.stdout


def test_drain_and_undrain_change_the_active_server(controller):
    sock = controller.control_socket
    result = ctl(sock, '--json', 'drain', 'iperf', 'primary')
    assert result.returncode == 0, result.stderr
    [service] = json.loads(result.stdout)['services']
    primary, backup = service['servers']
    assert primary['drained'] and not primary['active']
    # Not connected to a switch: nothing is healthy, nothing active.
    assert not backup['drained']
    result = ctl(sock, '--json', 'undrain', 'iperf', '10.0.0.1')
    assert result.returncode == 0, result.stderr
    [service] = json.loads(result.stdout)['services']
    assert not service['servers'][0]['drained']


@pytest.mark.parametrize('args, message', [
    (('drain', 'nope', 'primary'), "no service named 'nope'"),
    (('drain', 'iperf', 'backup7'), "has no server 'backup7'"),
])
def test_bad_operator_requests_are_one_line(controller, args, message):
    result = ctl(controller.control_socket, *args)
    assert result.returncode == 1
    assert result.stderr.count('\n') == 1 and message in result.stderr
    assert 'Traceback' not in result.stderr
    # The controller still answers.
    assert ctl(controller.control_socket, 'status').returncode == 0


def test_garbage_on_the_socket_does_not_stop_the_controller(controller):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(controller.control_socket))
        sock.sendall(b'\x00\xff garbage\n')
        answer = json.loads(sock.recv(4096))
    assert answer == {'ok': False, 'error': 'request is not a JSON object'}
    assert ctl(controller.control_socket, 'status').returncode == 0


def test_no_controller_is_a_one_line_error(tmp_path):
    result = ctl(tmp_path / 'none.sock', 'status')
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        f'no controller socket at {tmp_path / "none.sock"}')


def test_a_second_controller_on_the_same_socket_is_refused(controller,
                                                           tmp_path):
    other = tmp_path / 'other'
    other.mkdir()
    config = CONFIG.replace(
        '[ha_redirect]\n',
        f'[ha_redirect]\ncontrol_socket = {controller.control_socket}\n')
    second = Launched(other, CONTROLLER, config_text=config)
    try:
        assert second.process.wait(timeout=30) == 2
        assert 'control_socket' in second.stderr()
        assert 'in use by another controller' in second.stderr()
    finally:
        second.stderr_file.close()
