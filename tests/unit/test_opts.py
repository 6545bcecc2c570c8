"""The configuration: good files become model objects, mistakes one line.

Each error message names the group and the option.

Strategy names come from installed entry points: run with the package
installed (`pip install -e .`, as tox does).
"""

import dataclasses
import os
import pathlib
import subprocess
import sys

from oslo_config import cfg
import pytest

from ha_redirect import model
from ha_redirect import opts

ROOT = pathlib.Path(__file__).resolve().parents[2]

GOOD = {
    'ha_redirect': {
        'strategy': 'reactive',
        'services': 'web',
    },
    'service:web': {
        'datapath_id': '0x1',
        'tcp_ports': '5001',
        'primary_ip': '10.0.0.1',
        'primary_mac': '00:00:00:00:00:01',
        'primary_port': '1',
        'backup_ips': '10.0.0.2',
        'backup_macs': '00:00:00:00:00:02',
        'backup_ports': '2',
    },
}


def write_config(path, sections):
    lines = []
    for section, values in sections.items():
        lines.append(f'[{section}]')
        lines.extend(f'{key} = {value}' for key, value in values.items())
        lines.append('')
    path.write_text('\n'.join(lines))
    return path


def edited(changes=(), remove=()):
    """GOOD with (section, key, value) changes and (section, key) removals."""
    sections = {name: dict(values) for name, values in GOOD.items()}
    for section, key, value in changes:
        sections.setdefault(section, {})[key] = value
    for section, key in remove:
        del sections[section][key]
    return sections


def parse(tmp_path, sections):
    conf = cfg.ConfigOpts()
    path = write_config(tmp_path / 'ha_redirect.conf', sections)
    conf(args=['--config-file', str(path)], project='ha_redirect_test',
         default_config_files=[])
    return conf


def config_error(tmp_path, sections, validate_all=False):
    conf = parse(tmp_path, sections)
    with pytest.raises(opts.ConfigError) as info:
        opts.load_policy_config(conf)
        if validate_all:
            opts.validate_config_files(conf)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_good_config_round_trip(tmp_path):
    conf = parse(tmp_path, edited([
        ('ha_redirect', 'cookie', '0x1234'),
        ('ha_redirect', 'failback', 'false'),
        ('service:web', 'datapath_id', '000000000000000a'),
        ('service:web', 'tcp_ports', '5001, 80'),
        ('service:web', 'primary_mac', '00:00:00:00:00:AA'),
        ('service:web', 'backup_ips', '10.0.0.2,10.0.0.3'),
        ('service:web', 'backup_macs', '00:00:00:00:00:02,00:00:00:00:00:03'),
        ('service:web', 'backup_ports', '2,4'),
        ('service:web', 'client_ports', '3'),
    ]))
    config = opts.load_policy_config(conf)
    assert config == opts.PolicyConfig(
        settings=model.PolicySettings(strategy='reactive', cookie=0x1234,
                                      failback=False),
        services=(model.Service(
            name='web', datapath_id=10, tcp_ports=(5001, 80),
            primary=model.Endpoint('10.0.0.1', '00:00:00:00:00:aa', 1),
            backups=(model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2),
                     model.Endpoint('10.0.0.3', '00:00:00:00:00:03', 4)),
            client_ports=(3,)),))


def test_defaults_are_the_model_defaults(tmp_path):
    settings = opts.load_policy_config(parse(tmp_path, GOOD)).settings
    assert settings == model.PolicySettings(strategy='reactive')


def test_example_config_describes_the_papers_testbed():
    conf = cfg.ConfigOpts()
    # os-ken's options, which the example sets in [DEFAULT].
    conf.register_opts([cfg.StrOpt('ofp_listen_host'),
                        cfg.IntOpt('ofp_tcp_listen_port')])
    conf(args=['--config-file', str(ROOT / 'etc/ha_redirect.conf.example')],
         project='ha_redirect_test', default_config_files=[])
    config = opts.load_policy_config(conf)
    opts.validate_config_files(conf)
    (service,) = config.services
    assert (service.datapath_id, service.tcp_ports) == (1, (5001,))
    assert service.primary.port == 1
    assert [b.port for b in service.backups] == [2]
    assert service.client_ports == (3,)


def test_two_services_each_get_their_group(tmp_path):
    sections = edited([('ha_redirect', 'services', 'web, db')])
    sections['service:db'] = dict(GOOD['service:web'], tcp_ports='5432')
    config = opts.load_policy_config(parse(tmp_path, sections))
    assert [s.name for s in config.services] == ['web', 'db']
    assert config.services[1].tcp_ports == (5432,)


def test_register_opts_is_idempotent_and_import_registers_nothing():
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    opts.register_opts(conf)
    assert conf.ha_redirect.strategy == 'reactive'
    # A fresh interpreter: importing opts leaves os-ken's CONF untouched.
    code = ('import os_ken.cfg, ha_redirect.opts; '
            'print("ha_redirect" in os_ken.cfg.CONF)')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == 'False'


@pytest.mark.parametrize('sections, expected', [
    # missing required options
    (edited(remove=[('service:web', 'primary_ip')]),
     '[service:web] primary_ip: required option is missing'),
    (edited(remove=[('service:web', 'datapath_id')]),
     '[service:web] datapath_id: required option is missing'),
    (edited([('service:web', 'backup_ips', '')]),
     '[service:web] backup_ips: required option is missing'),
    # malformed values
    (edited([('service:web', 'primary_ip', '10.0.0.300')]),
     "[service:web] primary_ip: '10.0.0.300' is not an IPv4 address"),
    (edited([('service:web', 'primary_mac', 'zz')]),
     "[service:web] primary_mac: 'zz' is not a MAC address"),
    (edited([('service:web', 'backup_macs', '00:00:00:00:00:0g')]),
     "[service:web] backup_macs: '00:00:00:00:00:0g' is not a MAC address"),
    (edited([('service:web', 'backup_ips', '10.0.0.2, fe80::1')]),
     "[service:web] backup_ips: 'fe80::1' is not an IPv4 address"),
    (edited([('service:web', 'primary_port', '0')]),
     "[service:web] primary_port: '0' is not a switch port number"),
    (edited([('service:web', 'backup_ports', 'two')]),
     "[service:web] backup_ports: 'two' is not a switch port number"),
    (edited([('service:web', 'tcp_ports', '5001,70000')]),
     "[service:web] tcp_ports: '70000' is not a TCP port (1-65535)"),
    (edited([('service:web', 'datapath_id', 'switch1')]),
     "[service:web] datapath_id: 'switch1' is not a datapath id"),
    (edited([('ha_redirect', 'cookie', 'ha')]),
     "[ha_redirect] cookie: 'ha' is not an integer"),
    (edited([('ha_redirect', 'cookie', '0')]),
     '[ha_redirect] cookie: must be a non-zero 32-bit value'),
    (edited([('ha_redirect', 'table', '300')]),
     "[ha_redirect] table: '300' is not an integer from 0 to 253"),
    (edited([('ha_redirect', 'failback', 'perhaps')]),
     "[ha_redirect] failback: 'perhaps' is not true or false"),
    (edited([('ha_redirect', 'connection_table', '0')]),
     '[ha_redirect] connection_table: must differ from table'),
    (edited([('ha_redirect', 'probe_interval', '4000')]),
     "[ha_redirect] probe_interval: '4000' is not a number from 0.001 to "
     '3600'),
    (edited([('ha_redirect', 'probe_jitter', '0.995')]),
     "[ha_redirect] probe_jitter: '0.995' is not a number from 0 to 0.99"),
    # a backup that is the primary
    (edited([('service:web', 'backup_ips', '10.0.0.1')]),
     '[service:web] backup_ips: 10.0.0.1 is also primary_ip'),
    (edited([('service:web', 'backup_macs', '00:00:00:00:00:01')]),
     '[service:web] backup_macs: 00:00:00:00:00:01 is also primary_mac'),
    (edited([('service:web', 'backup_ports', '1')]),
     '[service:web] backup_ports: 1 is also primary_port'),
    # duplicates
    (edited([('service:web', 'tcp_ports', '5001, 5001')]),
     '[service:web] tcp_ports: TCP port 5001 is listed twice'),
    (edited([('service:web', 'backup_ips', '10.0.0.2,10.0.0.3'),
             ('service:web', 'backup_macs',
              '00:00:00:00:00:02,00:00:00:00:00:03'),
             ('service:web', 'backup_ports', '2,2')]),
     '[service:web] backup_ports: port 2 is listed twice'),
    (edited([('service:web', 'client_ports', '2')]),
     '[service:web] client_ports: port 2 is also a server port'),
    (edited([('service:web', 'client_ports', '3, 3')]),
     '[service:web] client_ports: port 3 is listed twice'),
    (edited([('service:web', 'monitors', 'port_status, port_status')]),
     '[service:web] monitors: monitor port_status is listed twice'),
    (edited([('service:web', 'monitors', '')]),
     '[service:web] monitors: at least one monitor is required'),
    (edited([('service:web', 'monitors', 'psychic')]),
     "[service:web] monitors: 'psychic' is not a known monitor"),
    (edited([('service:web', 'monitors', 'tcp_probe')]),
     '[ha_redirect] probe_ip: required by [service:web] monitors = '
     'tcp_probe'),
    (edited([('ha_redirect', 'services', 'web,web')]),
     '[ha_redirect] services: a service is listed twice'),
    (edited([('ha_redirect', 'services', 'web, ,db')]),
     '[ha_redirect] services: a service name is empty'),
    # parallel lists of unequal length
    (edited([('service:web', 'backup_ips', '10.0.0.2,10.0.0.3')]),
     '[service:web] backup_macs: has 1 entries but backup_ips has 2'),
    (edited([('service:web', 'backup_ports', '2,3')]),
     '[service:web] backup_ports: has 2 entries but backup_ips has 1'),
    # the strategy plugin
    (edited([('ha_redirect', 'strategy', 'psychic')]),
     "[ha_redirect] strategy: 'psychic' is not a known strategy "
     '(available: '),
    # no services
    (edited([('ha_redirect', 'services', '')]),
     '[ha_redirect] services: no services listed'),
    # unknown keys and sections in our groups
    (edited([('service:web', 'primary_ipp', '10.0.0.1')]),
     '[service:web] primary_ipp: unknown option'),
    (edited([('ha_redirect', 'stratgy', 'reactive')]),
     '[ha_redirect] stratgy: unknown option'),
    (edited([('service:db', 'primary_ip', '10.0.0.9')]),
     "[service:db]: service 'db' is not listed in [ha_redirect] services"),
])
def test_config_error_is_one_line_naming_group_and_option(
        tmp_path, sections, expected):
    assert config_error(tmp_path, sections).startswith(expected)


def test_numeric_settings_take_default_and_bounds_from_the_model():
    options = {opt.dest: opt for opt in dict(opts.list_opts())['ha_redirect']}
    for name, bounds in model.SETTING_BOUNDS.items():
        opt = options[name]
        assert opt.default == getattr(model.PolicySettings(), name)
        assert (opt.type.min, opt.type.max) == (bounds.low, bounds.high)


def test_every_setting_is_an_option_described_by_the_model():
    options = {opt.dest: opt for opt in dict(opts.list_opts())['ha_redirect']}
    fields = [f.name for f in dataclasses.fields(model.PolicySettings)]
    assert set(fields) == set(options) - set(opts._APP_ONLY_OPTS)
    for name in fields:
        assert options[name].help == model.SETTING_HELP[name]
        assert options[name].help.strip()


def test_every_service_field_the_model_names_is_an_option():
    names = {o.dest for o in dict(opts.list_opts())['service:example']}
    assert set(opts._SERVICE_OPTION_OF_FIELD.values()) <= names


def test_strategy_error_lists_the_available_names(tmp_path):
    message = config_error(
        tmp_path, edited([('ha_redirect', 'strategy', 'psychic')]))
    assert 'reactive' in message and 'proactive' in message


def test_unknown_keys_anywhere_are_found_by_validate_config_files(tmp_path):
    sections = edited([('DEFAULT', 'ofp_tcp_listen_prot', '6653')])
    assert config_error(tmp_path, sections, validate_all=True) == (
        '[DEFAULT] ofp_tcp_listen_prot: unknown option')
    sections = edited([('haredirect', 'strategy', 'reactive')])
    assert config_error(tmp_path, sections, validate_all=True) == (
        '[haredirect]: unknown section')


def test_registered_options_of_others_are_not_unknown(tmp_path):
    conf = parse(tmp_path, edited([('DEFAULT', 'ofp_tcp_listen_port', '1'),
                                   ('other_app', 'mode', 'x')]))
    conf.register_opt(cfg.IntOpt('ofp_tcp_listen_port'))
    conf.register_opt(cfg.StrOpt('mode'), group='other_app')
    opts.load_policy_config(conf)
    opts.validate_config_files(conf)


def test_load_policy_config_ignores_other_sections(tmp_path):
    # An embedding program (neutron-style) has sections we know nothing of.
    conf = parse(tmp_path, edited([('agent', 'anything', '1')]))
    assert opts.load_policy_config(conf).services[0].name == 'web'


def test_config_dir_files_are_checked_too(tmp_path):
    conf_dir = tmp_path / 'conf.d'
    conf_dir.mkdir()
    write_config(conf_dir / '10-web.conf', GOOD)
    write_config(conf_dir / '20-typo.conf', {'service:web': {'bakup': '1'}})
    conf = cfg.ConfigOpts()
    conf(args=['--config-dir', str(conf_dir)], project='ha_redirect_test',
         default_config_files=[])
    with pytest.raises(opts.ConfigError, match=r'\[service:web\] bakup'):
        opts.load_policy_config(conf)


@pytest.mark.parametrize('text, dpid', [
    ('0x1', 1), ('1', 1), ('0000000000000001', 1), ('00000000000000ff', 255),
    ('0xffffffffffffffff', 2 ** 64 - 1)])
def test_datapath_id_forms(text, dpid):
    assert opts.parse_datapath_id(text) == dpid


@pytest.mark.parametrize('text', ['', '-1', '0x1g', '0x10000000000000000',
                                  '00000000000000zz'])
def test_bad_datapath_ids(text):
    with pytest.raises(ValueError):
        opts.parse_datapath_id(text)


def test_list_opts_shows_the_service_options_under_an_example_group():
    groups = dict(opts.list_opts())
    assert set(groups) == {'ha_redirect', 'coordination', 'metrics',
                           'service:example'}
    assert 'services' in {o.name for o in groups['ha_redirect']}
    assert {'primary_ip', 'backup_ips'} <= {
        o.name for o in groups['service:example']}


def test_committed_sample_config_is_current(tmp_path):
    generator = pathlib.Path(sys.executable).with_name('oslo-config-generator')
    if not generator.exists():
        pytest.skip('oslo-config-generator is not installed next to python')
    out = tmp_path / 'sample.conf'
    subprocess.run([str(generator), '--config-file',
                    'etc/oslo-config-generator/ha_redirect.conf',
                    '--output-file', str(out)], cwd=ROOT, check=True,
                   env=dict(os.environ))
    assert out.read_text() == (ROOT / 'etc/ha_redirect.conf.sample'
                               ).read_text(), 'run tox -e genconfig'
