"""The launchers as processes: they listen, stop in time, refuse bad input.

A bad configuration is refused before anything listens.

Each test starts its own process on a free loopback port and ends it by PID.
"""

import importlib.metadata
import os
import pathlib
import signal
import socket
import ssl
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
                 extra_path=None, args=(),
                 port_option='--ofp-tcp-listen-port'):
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
        self.stdout_path = tmp_path / 'stdout.log'
        self.stdout_file = open(self.stdout_path, 'w')
        self.process = subprocess.Popen(
            command + ['--config-file', str(self.config),
                       port_option, str(self.port)] + list(args),
            stdout=self.stdout_file, stderr=self.stderr_file, env=env,
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

    def stdout(self):
        return self.stdout_path.read_text()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr_file.close()
        self.stdout_file.close()


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


# --version, --debug, --pid-file --------------------------------------------

@pytest.mark.parametrize('command', [CONTROLLER, MANAGER],
                         ids=['controller', 'manager'])
def test_version_prints_the_package_version_and_exits_0(command):
    done = subprocess.run(command + ['--version'], capture_output=True,
                          text=True, timeout=START_WITHIN)
    assert done.returncode == 0, done.stderr
    version = importlib.metadata.version('ha_redirect')
    assert done.stdout.startswith(f'ha_redirect {version} (os-ken '), done
    assert done.stderr == ''


@pytest.mark.parametrize('flag', ['--debug', '--verbose'])
def test_debug_and_verbose_log_at_debug_level(launch, flag):
    controller = launch(CONTROLLER, args=[flag])
    controller.wait_listening()
    status, _ = controller.stop()
    assert status == 0
    assert ' DEBUG ' in controller.stderr()


def test_start_logs_the_version_and_a_summary(launch):
    controller = launch(CONTROLLER)
    controller.wait_listening()
    controller.stop()
    version = importlib.metadata.version('ha_redirect')
    assert (f'ha_redirect {version}: strategy reactive, 1 service: iperf '
            '(dpid 0x1, 5001/tcp, primary 10.0.0.1, 1 backup)'
            in controller.stderr())
    assert f'OpenFlow on TCP 127.0.0.1:{controller.port}' in (
        controller.stderr())
    assert ' DEBUG ' not in controller.stderr()


def test_pid_file_names_the_process_while_it_serves(launch, tmp_path):
    pid_file = tmp_path / 'run' / 'controller.pid'
    pid_file.parent.mkdir()
    controller = launch(CONTROLLER, args=['--pid-file', str(pid_file)])
    controller.wait_listening()
    assert pid_file.read_text() == f'{controller.process.pid}\n'
    status, _ = controller.stop()
    assert status == 0, controller.stderr()
    assert not pid_file.exists()


def test_unwritable_pid_file_is_one_line_and_exit_2(launch, tmp_path):
    pid_file = tmp_path / 'missing' / 'controller.pid'
    process = launch(CONTROLLER, args=['--pid-file', str(pid_file)])
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert lines == [f'ha-redirect-controller: error: [DEFAULT] pid_file: '
                     f'cannot write {pid_file}: No such file or directory']
    assert not is_listening(process.port)


# --check-config -------------------------------------------------------------

@pytest.mark.parametrize('command', [CONTROLLER, MANAGER],
                         ids=['controller', 'manager'])
def test_check_config_says_ok_and_opens_nothing(launch, command):
    # The port is taken, as by the controller that runs this config now:
    # the check is of the configuration, not of the host.
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        process = launch(command, port=taken.getsockname()[1],
                         args=['--check-config'])
        assert process.wait_exit() == 0, process.stderr()
    assert process.stdout() == 'ok\n'
    assert process.stderr() == ''
    assert not process.control_socket.exists()


# A few of them: the check and a start share the same validation.
@pytest.mark.parametrize('config_text, expected',
                         [BAD_CONFIGS[i] for i in (0, 1, 2, 7)])
def test_check_config_reports_a_bad_config_in_one_line(
        launch, config_text, expected):
    process = launch(CONTROLLER, config_text=config_text,
                     args=['--check-config'])
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert process.stdout() == ''


def test_check_config_checks_the_coordination_backend(launch):
    config = CONFIG + '\n[coordination]\nbackend_url = zookeeper://h:2181\n'
    process = launch(CONTROLLER, config_text=config, args=['--check-config'])
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1 and '[coordination] backend_url' in lines[0]


# OpenFlow over TLS ----------------------------------------------------------

def openssl(*args):
    subprocess.run(['openssl', *args], check=True, capture_output=True,
                   timeout=30)


def make_ca(directory, name):
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt',
            'ec_paramgen_curve:prime256v1', '-nodes',
            '-keyout', str(directory / f'{name}.key'),
            '-out', str(directory / f'{name}.pem'), '-days', '2',
            '-subj', f'/CN={name}')


def make_signed(directory, name, ca, encrypt=False):
    key_args = (['-passout', 'pass:secret'] if encrypt else ['-nodes'])
    openssl('req', '-new', '-newkey', 'ec', '-pkeyopt',
            'ec_paramgen_curve:prime256v1', *key_args,
            '-keyout', str(directory / f'{name}.key'),
            '-out', str(directory / f'{name}.csr'), '-subj', f'/CN={name}')
    openssl('x509', '-req', '-in', str(directory / f'{name}.csr'),
            '-CA', str(directory / f'{ca}.pem'),
            '-CAkey', str(directory / f'{ca}.key'), '-CAcreateserial',
            '-days', '2', '-out', str(directory / f'{name}.pem'))


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """A CA, the controller's and a switch's certificates; a stranger CA
    and a switch it signed; an encrypted key."""
    directory = tmp_path_factory.mktemp('pki')
    make_ca(directory, 'ca')
    make_ca(directory, 'stranger-ca')
    make_signed(directory, 'controller', 'ca')
    make_signed(directory, 'switch', 'ca')
    make_signed(directory, 'stranger', 'stranger-ca')
    make_signed(directory, 'locked', 'ca', encrypt=True)
    (directory / 'notes.txt').write_text('not a certificate\n')
    return directory


def tls_args(pki, key='controller.key', cert='controller.pem', ca='ca.pem'):
    args = []
    for option, name in (('--ctl-privkey', key), ('--ctl-cert', cert),
                         ('--ca-certs', ca)):
        if name is not None:
            args += [option, str(pki / name)]
    return args


def tls_handshake(port, pki, name):
    """Handshake as a switch with certificate `name`; the peer's subject."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(pki / 'ca.pem'))
    context.load_cert_chain(str(pki / f'{name}.pem'),
                            str(pki / f'{name}.key'))
    with socket.create_connection(('127.0.0.1', port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            # TLS 1.3: the server checks our certificate after the client's
            # handshake is done; its verdict arrives with the first read.
            # os-ken sends OFPT_HELLO first.
            hello = tls.recv(8)
            return dict(x[0] for x in tls.getpeercert()['subject']), hello


def test_tls_controller_takes_a_switch_signed_by_its_ca_only(launch, pki):
    controller = launch(CONTROLLER, args=tls_args(pki),
                        port_option='--ofp-ssl-listen-port')
    controller.wait_listening()
    subject, hello = tls_handshake(controller.port, pki, 'switch')
    assert subject['commonName'] == 'controller'
    assert hello[1] == 0        # OFPT_HELLO
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_handshake(controller.port, pki, 'stranger')
    status, _ = controller.stop()
    assert status == 0
    assert (f'OpenFlow on TLS 127.0.0.1:{controller.port}'
            in controller.stderr())
    assert 'Traceback' not in controller.stderr()


def test_tls_check_config_ok(launch, pki):
    process = launch(CONTROLLER, args=tls_args(pki) + ['--check-config'],
                     port_option='--ofp-ssl-listen-port')
    assert process.wait_exit() == 0, process.stderr()
    assert process.stdout() == 'ok\n'


BAD_TLS = [
    (dict(cert=None, ca=None),
     '[DEFAULT] ctl_cert: not set, but ctl_privkey is'),
    (dict(key=None, ca=None),
     '[DEFAULT] ctl_privkey: not set, but ctl_cert is'),
    (dict(key=None, cert=None),
     '[DEFAULT] ca_certs: set, but ctl_privkey and ctl_cert are not'),
    (dict(key='missing.key'), '[DEFAULT] ctl_privkey: cannot read '),
    (dict(cert='notes.txt'), '[DEFAULT] ctl_cert: '),
    (dict(key='switch.key'), 'is not the private key of ctl_cert'),
    (dict(key='notes.txt'), '[DEFAULT] ctl_privkey: '),
    (dict(key='locked.key', cert='locked.pem'), 'is encrypted'),
    (dict(ca='notes.txt'), '[DEFAULT] ca_certs: '),
]


# --check-config runs the same checks as a start (test_check_config_*):
# each case once with it, two without.
@pytest.mark.parametrize('files, expected, check', [
    case + (True,) for case in BAD_TLS] + [
    case + (False,) for case in (BAD_TLS[0], BAD_TLS[5])])
def test_bad_tls_files_are_one_line_and_exit_2(launch, pki, files, expected,
                                               check):
    args = tls_args(pki, **files) + (['--check-config'] if check else [])
    port_option = ('--ofp-ssl-listen-port' if files.get('cert', 1)
                   and files.get('key', 1) else '--ofp-tcp-listen-port')
    process = launch(CONTROLLER, args=args, port_option=port_option)
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert 'instantiating' not in process.stderr()
    assert not is_listening(process.port)


def test_tls_port_in_use_is_one_line_and_exit_2(launch, pki):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = launch(CONTROLLER, args=tls_args(pki), port=port,
                         port_option='--ofp-ssl-listen-port')
        assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert lines == [f'ha-redirect-controller: error: [DEFAULT] '
                     f'ofp_ssl_listen_port: cannot listen on 127.0.0.1:'
                     f'{port}: Address already in use']


def test_tls_without_an_ssl_port_is_one_line_and_exit_2(launch, pki):
    # os-ken would serve TLS on ofp_ssl_listen_port only: here, nowhere.
    process = launch(CONTROLLER, args=tls_args(pki))
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1
    assert '[DEFAULT] ofp_ssl_listen_port: not set' in lines[0]


@pytest.mark.parametrize('ciphers', ['ECDHE-ECDSA-AES128-GCM-SHA256',
                                     'NO-SUCH-CIPHER'])
def test_ciphers_is_refused_in_one_line(launch, pki, ciphers):
    # os-ken hands `ciphers` to SSLContext.wrap_socket(), which has no such
    # argument: each handshake would die silently in its hub thread.
    process = launch(CONTROLLER, args=tls_args(pki) + ['--ciphers', ciphers],
                     port_option='--ofp-ssl-listen-port')
    assert process.wait_exit() == 2
    lines = process.stderr().splitlines()
    assert len(lines) == 1
    assert f"[DEFAULT] ciphers: '{ciphers}' cannot be applied" in lines[0]
