"""The launchers as processes: they listen, stop in time, refuse bad input.

A bad configuration is refused before anything listens.

Each test starts its own process on a free loopback port and ends it by PID.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STOP_WITHIN = 2.0  # seconds, from the signal to the exit status
START_WITHIN = 20.0

CONFIG = textwrap.dedent('''\
    [DEFAULT]
    ofp_listen_host = 127.0.0.1

    [ha_redirect]
    strategy = reactive
    services = iperf

    [service:iperf]
    datapath_id = 0x1
    tcp_ports = 5001
    primary_ip = 10.0.0.1
    primary_mac = 00:00:00:00:00:01
    primary_port = 1
    backup_ips = 10.0.0.2
    backup_macs = 00:00:00:00:00:02
    backup_ports = 2
    client_ports = 3
''')

CONTROLLER = [sys.executable, '-m', 'ha_redirect.cmd.controller']
MANAGER = [sys.executable, '-m', 'ha_redirect.cmd.manager']

# An os-ken app from "elsewhere", with an option of its own.
STANDIN_APP = textwrap.dedent('''\
    from os_ken import cfg
    from os_ken.base import app_manager
    from os_ken.controller import handler
    from os_ken.controller import ofp_event

    cfg.CONF.register_opts([cfg.StrOpt('greeting')], group='standin')


    class StandinApp(app_manager.OSKenApp):
        @handler.set_ev_cls(ofp_event.EventOFPSwitchFeatures,
                            handler.CONFIG_DISPATCHER)
        def on_features(self, ev):
            self.logger.info('features from %s', ev.msg.datapath.id)
''')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def is_listening(port):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(('127.0.0.1', port)) == 0


class Launched:
    """A launcher process whose stderr goes to a file (no pipe to fill)."""

    def __init__(self, tmp_path, command, config_text=CONFIG, port=None,
                 extra_path=None):
        self.port = port or free_port()
        self.config = tmp_path / 'ha_redirect.conf'
        self.control_socket = tmp_path / 'control.sock'
        if config_text is not None:
            if 'control_socket' not in config_text:
                # Each test its own socket, never the system's.
                config_text = config_text.replace(
                    '[ha_redirect]\n', '[ha_redirect]\ncontrol_socket = '
                    f'{self.control_socket}\n', 1)
            self.config.write_text(config_text)
        self.stderr_path = tmp_path / 'stderr.log'
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (extra_path, str(ROOT / 'src'),
                        env.get('PYTHONPATH')) if p)
        self.stderr_file = open(self.stderr_path, 'w')
        self.process = subprocess.Popen(
            command + ['--config-file', str(self.config),
                       '--ofp-tcp-listen-port', str(self.port)],
            stdout=subprocess.DEVNULL, stderr=self.stderr_file, env=env,
            cwd=tmp_path)

    def wait_listening(self):
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.stderr()
            if is_listening(self.port):
                return
            time.sleep(0.05)
        raise AssertionError(f'not listening on {self.port}: {self.stderr()}')

    def stop(self, signum=signal.SIGTERM):
        """Send `signum`; return (exit status, seconds it took)."""
        start = time.monotonic()
        self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout=STOP_WITHIN + 3)
        finally:
            self.close()
        return status, time.monotonic() - start

    def wait_exit(self, timeout=START_WITHIN):
        status = self.process.wait(timeout=timeout)
        return status

    def stderr(self):
        return self.stderr_path.read_text()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr_file.close()


@pytest.fixture
def launch(tmp_path):
    launched = []

    def start(*args, **kwargs):
        process = Launched(tmp_path, *args, **kwargs)
        launched.append(process)
        return process

    yield start
    for process in launched:
        process.close()


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_controller_listens_and_stops_on_signal(launch, signum):
    controller = launch(CONTROLLER)
    controller.wait_listening()
    status, took = controller.stop(signum)
    assert status == 0, controller.stderr()
    assert took < STOP_WITHIN
    assert 'instantiating app ha_redirect.app' in controller.stderr()
    assert 'Traceback' not in controller.stderr()
    assert not is_listening(controller.port)


def test_controller_stops_in_time_with_a_switch_connected(launch):
    controller = launch(CONTROLLER)
    controller.wait_listening()
    # A peer that connected and says nothing: a datapath thread now blocks
    # in recv(), and the hub cannot kill it.
    with socket.create_connection(('127.0.0.1', controller.port)):
        time.sleep(0.3)
        status, took = controller.stop()
    assert (status, took < STOP_WITHIN) == (0, True), controller.stderr()


def test_manager_runs_ha_redirect_by_default(launch):
    manager = launch(MANAGER)
    manager.wait_listening()
    assert 'instantiating app ha_redirect.app' in manager.stderr()
    status, took = manager.stop()
    assert (status, took < STOP_WITHIN) == (0, True), manager.stderr()


@pytest.mark.parametrize('args, config_text', [
    (['standin_app'], '[standin]\ngreeting = hello\n'),
    ([], '[DEFAULT]\napp_lists = standin_app\n[standin]\ngreeting = hello\n'),
], ids=['positional', 'app_lists'])
def test_manager_runs_an_app_by_module_path_with_its_own_options(
        launch, tmp_path, args, config_text):
    app_dir = tmp_path / 'apps'
    app_dir.mkdir()
    (app_dir / 'standin_app.py').write_text(STANDIN_APP)
    manager = launch(MANAGER + args, extra_path=str(app_dir),
                     config_text=config_text)
    manager.wait_listening()
    assert 'instantiating app standin_app of StandinApp' in manager.stderr()
    assert 'ha_redirect.app' not in manager.stderr()
    status, took = manager.stop()
    assert (status, took < STOP_WITHIN) == (0, True), manager.stderr()


BAD_CONFIGS = [
    (CONFIG.replace('primary_mac = 00:00:00:00:00:01', 'primary_mac = zz'),
     "[service:iperf] primary_mac: 'zz' is not a MAC address"),
    (CONFIG.replace('strategy = reactive', 'strategy = psychic'),
     "[ha_redirect] strategy: 'psychic' is not a known strategy"),
    (CONFIG.replace('backup_ports = 2', 'backup_ports = 2\nbakup = 1'),
     '[service:iperf] bakup: unknown option'),
    (CONFIG.replace('[DEFAULT]', '[DEFAULT]\nofp_listen_hots = 0.0.0.0'),
     '[DEFAULT] ofp_listen_hots: unknown option'),
    (CONFIG.replace('primary_port = 1', ''),
     '[service:iperf] primary_port: required option is missing'),
    (CONFIG + 'not an assignment\n', 'Failed to parse '),
    # Bounds that once started and then crashed at run time:
    (CONFIG.replace('services = iperf',
                    'services = iperf\nconnection_idle_timeout = 70000'),
     'connection_idle_timeout'),
    (CONFIG.replace('strategy = reactive', 'strategy = stateful\n'
                    'first_ct_zone = 65535\nservices = iperf,web').replace(
                        'services = iperf\n', '', 1)
     + CONFIG[CONFIG.index('[service:iperf]'):].replace(
         '[service:iperf]', '[service:web]').replace('5001', '80'),
     '[ha_redirect] first_ct_zone: 65535 + 2 services exceeds'),
    (CONFIG.replace('services = iperf', 'services = iperf\n'
                    'probe_ip = 10.0.0.2\nprobe_mac = 00:00:00:00:00:fa')
     .replace('client_ports = 3', 'client_ports = 3\n'
              'monitors = port_status,tcp_probe'),
     '[ha_redirect] probe_ip: 10.0.0.2 is a server of service \'iperf\''),
]


@pytest.mark.parametrize('command', [CONTROLLER, MANAGER],
                         ids=['controller', 'manager'])
@pytest.mark.parametrize('config_text, expected', BAD_CONFIGS)
def test_bad_config_is_one_line_and_exit_2_before_listening(
        launch, command, config_text, expected):
    process = launch(command, config_text=config_text)
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0]
    # Nothing was started: os-ken logs every app it instantiates.
    assert 'instantiating' not in process.stderr()
    assert not is_listening(process.port)


def test_missing_config_file_is_one_line_and_exit_2(launch):
    process = launch(CONTROLLER, config_text=None)
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1
    assert 'Failed to find some config files' in lines[0]


def test_port_in_use_is_one_line_and_exit_2(launch):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = launch(CONTROLLER, port=port)
        assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1
    assert '[DEFAULT] ofp_tcp_listen_port: cannot listen on' in lines[0]


def test_unknown_app_is_one_line_and_exit_2(launch):
    process = launch(MANAGER + ['no_such_app_module'])
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1
    assert "app 'no_such_app_module' cannot be imported" in lines[0]
