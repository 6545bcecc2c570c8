"""The HAProxy configuration is a pure rendering of the service."""

import pytest

from ha_redirect.lab import haproxy
from ha_redirect import model


def service(ports=(5001,), n_backups=1):
    return model.Service(
        name='web', datapath_id=0, tcp_ports=ports,
        primary=model.Endpoint('10.0.1.1', '00:00:00:00:00:01', 1),
        backups=tuple(model.Endpoint(f'10.0.{1 + k}.{1 + k}',
                                     f'00:00:00:00:00:0{1 + k}', 1 + k)
                      for k in range(1, n_backups + 1)))


def server_lines(text):
    return [line.split() for line in text.splitlines()
            if line.strip().startswith('server ')]


def section(text, header):
    lines = text.splitlines()
    start = lines.index(header)
    body = []
    for line in lines[start + 1:]:
        if not line.startswith(' '):
            break
        body.append(line.strip())
    return body


def test_paper_profile_checks_every_3s_with_haproxy_defaults():
    text = haproxy.render_haproxy_config(service(), '10.0.0.100', 'paper')
    primary, backup = server_lines(text)
    assert primary == ['server', 'primary', '10.0.1.1:5001', 'check',
                       'inter', '3s']
    assert backup == ['server', 'backup1', '10.0.2.2:5001', 'check',
                      'inter', '3s', 'backup']
    for tuned_only in ('fall', 'rise', 'fastinter', 'observe', 'redispatch'):
        assert tuned_only not in text


def test_tuned_profile_detects_in_one_100ms_check():
    text = haproxy.render_haproxy_config(service(), '10.0.0.100', 'tuned')
    primary, backup = server_lines(text)
    assert ' '.join(primary[3:]) == ('check inter 100ms fastinter 100ms '
                                     'fall 1 rise 1 observe layer4')
    assert backup[-1] == 'backup' and 'backup' not in primary
    defaults = section(text, 'defaults')
    assert 'option redispatch' in defaults
    assert 'timeout connect 100ms' in defaults


@pytest.mark.parametrize('profile', sorted(haproxy.PROFILES))
def test_every_profile_is_layer4_with_a_bounded_maxconn(profile):
    text = haproxy.render_haproxy_config(service(), '10.0.0.100', profile)
    assert 'mode tcp' in section(text, 'defaults')
    assert f'maxconn {haproxy.MAXCONN}' in section(text, 'global')
    assert haproxy.MAXCONN <= 8000
    assert 'bind 10.0.0.100:5001' in section(text, 'frontend web_front')
    assert 'default_backend web_back' in section(text, 'frontend web_front')
    # health transitions must reach a log we can read
    assert 'log stdout format raw local0 info' in section(text, 'global')
    assert 'log global' in section(text, 'defaults')


def test_backups_keep_their_order():
    text = haproxy.render_haproxy_config(service(n_backups=2), '10.0.0.100',
                                         'paper')
    assert [s[1] for s in server_lines(text)] == ['primary', 'backup1',
                                                  'backup2']
    assert [s[-1] == 'backup' for s in server_lines(text)] == [False, True,
                                                               True]


def test_several_ports_forward_each_to_the_same_port_on_the_server():
    text = haproxy.render_haproxy_config(service(ports=(80, 443)),
                                         '10.0.0.100', 'tuned')
    assert 'bind 10.0.0.100:80,10.0.0.100:443' in text
    primary = server_lines(text)[0]
    assert primary[2] == '10.0.1.1'
    assert primary[3:6] == ['check', 'port', '80']


def test_unknown_profile_is_named_in_the_error():
    with pytest.raises(ValueError, match="unknown HAProxy profile 'fast'"):
        haproxy.render_haproxy_config(service(), '10.0.0.100', 'fast')


def test_transitions_are_parsed_from_haproxy_log_lines():
    log = ('Server web_back/primary is DOWN, reason: Layer4 timeout, check '
           'duration: 101ms. 0 active and 1 backup servers left.\n'
           'something else\n'
           'Server web_back/primary is UP, reason: Layer4 check passed\n')
    assert [(s, st) for s, st, _ in haproxy.parse_transitions(log)] == [
        ('primary', 'DOWN'), ('primary', 'UP')]


def test_a_profile_is_named_or_given():
    tuned = haproxy.PROFILES['tuned']
    assert haproxy.resolve_profile('tuned') is tuned
    assert haproxy.resolve_profile(tuned) is tuned
    with pytest.raises(ValueError, match="'fast'.*paper, tuned"):
        haproxy.resolve_profile('fast')
