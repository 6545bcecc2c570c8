"""What the package installs: its licence, the `[lab]` extra and what
happens without it, and the example systemd unit in etc/."""

import configparser
import importlib.metadata
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap

from oslo_config import cfg
import pytest

from ha_redirect.lab import cli
from ha_redirect import opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
UNIT = os.path.join(ROOT, 'etc', 'ha-redirect-controller.service')


def _distribution():
    return importlib.metadata.distribution('ha_redirect')


def test_the_licence_is_apache_2_in_the_file_and_the_metadata():
    with open(os.path.join(ROOT, 'LICENSE')) as f:
        text = f.read()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text
    metadata = _distribution().metadata
    assert metadata['License-Expression'] == 'Apache-2.0'
    assert 'LICENSE' in metadata.get_all('License-File')


# -- without the [lab] extra --------------------------------------------

@pytest.mark.parametrize('library', cli.LAB_EXTRA)
def test_lab_command_without_the_extra_says_how_to_install_it(library):
    # The console script's own entry point, with the library unimportable
    # as it is when the extra is not installed. The arguments could not
    # start a testbed even if the check were gone.
    script = textwrap.dedent(f'''
        import importlib.metadata, sys
        sys.modules[{library!r}] = None
        (ep,) = [ep for ep in importlib.metadata.entry_points(
                     group='console_scripts') if ep.name == 'ha-redirect-lab']
        sys.argv = ['ha-redirect-lab', 'demo', '--schemes', 'no-such']
        sys.exit(ep.load()())
    ''')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ''
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('ha-redirect-lab: error: the testbed needs '
                               'the [lab] extra')
    assert library in lines[0]
    assert "pip install 'ha_redirect[lab]'" in lines[0]


def test_every_library_the_lab_command_checks_is_in_the_extra():
    lab = {re.match(r'[A-Za-z0-9._-]+', r).group(0)
           for r in _distribution().requires
           if re.search(r'extra\s*==\s*.lab.', r)}
    assert set(cli.LAB_EXTRA) <= lab
    # mininet needs distutils, which only setuptools provides on 3.12+.
    assert 'setuptools' in lab


def test_mininet_imports_with_the_distutils_of_setuptools():
    # Python 3.12 has no distutils: `import distutils` finds the one
    # setuptools ships (_distutils_hack). Use that one here too, and check
    # it has what mininet.node uses (StrictVersion, to compare OVS versions).
    script = textwrap.dedent('''
        import warnings
        warnings.simplefilter('ignore', DeprecationWarning)
        import mininet.node
        import distutils.version
        assert 'setuptools' in distutils.version.__file__, \\
            distutils.version.__file__
        assert mininet.node.StrictVersion is distutils.version.StrictVersion
        assert mininet.node.StrictVersion('3.1.0') > \\
            mininet.node.StrictVersion('1.10')
        print('ok')
    ''')
    env = dict(os.environ, SETUPTOOLS_USE_DISTUTILS='local')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.stdout.strip() == 'ok', proc.stderr


# -- the systemd unit ---------------------------------------------------

def _unit():
    # systemd's format is close to INI: keys are case-sensitive and may
    # repeat (the last one counts here), values are taken as written.
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       comment_prefixes=('#', ';'),
                                       empty_lines_in_values=False)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_unit_runs_a_console_script_of_this_package_on_the_config():
    service = _unit()['Service']
    argv = shlex.split(service['ExecStart'])
    scripts = {ep.name for ep in _distribution().entry_points
               if ep.group == 'console_scripts'}
    assert os.path.basename(argv[0]) == 'ha-redirect-controller'
    assert os.path.basename(argv[0]) in scripts
    assert argv[1:] == ['--config-file', '/etc/ha_redirect/ha_redirect.conf']
    assert service['Type'] == 'simple'
    assert service['Restart'] == 'on-failure'
    # A bad configuration exits 2: restarting would not help.
    assert service['RestartPreventExitStatus'] == '2'
    assert _unit()['Install']['WantedBy'] == 'multi-user.target'


def test_unit_runtime_directory_holds_the_default_control_socket():
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf(args=[], default_config_files=[])
    default = conf[opts.GROUP].control_socket
    service = _unit()['Service']
    assert os.path.dirname(default) == os.path.join(
        '/run', service['RuntimeDirectory'])
    assert service['RuntimeDirectoryMode'] == '0700'


def test_unit_hardening_leaves_what_the_controller_needs():
    service = _unit()['Service']
    # OpenFlow and Redis over IPv4/IPv6, the control socket over Unix.
    assert set(service['RestrictAddressFamilies'].split()) >= {
        'AF_INET', 'AF_INET6', 'AF_UNIX'}
    # Read-only everywhere but the runtime directory, which systemd keeps
    # writable under ProtectSystem=strict.
    assert service['ProtectSystem'] == 'strict'
    assert 'IPAddressDeny' not in service
    assert 'PrivateNetwork' not in service


@pytest.fixture
def installed_unit(tmp_path):
    """The unit, runnable here: ExecStart points at the installed script
    (systemd-analyze checks it exists). Needs systemd-analyze, which works
    without systemd running (Debian's `systemd` package)."""
    analyze = shutil.which('systemd-analyze')
    if analyze is None:
        pytest.skip('systemd-analyze is not installed')
    script = shutil.which('ha-redirect-controller') or os.path.join(
        os.path.dirname(sys.executable), 'ha-redirect-controller')
    with open(UNIT) as f:
        text = f.read().replace('/usr/local/bin/ha-redirect-controller',
                                script)
    unit = tmp_path / 'ha-redirect-controller.service'
    unit.write_text(text)
    return analyze, str(unit)


def test_unit_passes_systemd_analyze_verify(installed_unit):
    analyze, unit = installed_unit
    proc = subprocess.run([analyze, 'verify', unit],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # An unknown or misspelt key is only a warning naming the file.
    assert 'ha-redirect-controller.service' not in proc.stderr, proc.stderr


def test_unit_hardening_keeps_systemd_exposure_low(installed_unit):
    # systemd-analyze's exposure score (0 safe .. 10 unsafe): at most 3.0
    # ("OK"); it is 2.2 with systemd 252.
    analyze, unit = installed_unit
    proc = subprocess.run([analyze, 'security', '--offline=yes',
                           '--threshold=30', unit],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr
