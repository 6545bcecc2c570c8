"""How each scheme is set up for the "service killed, link up" failure."""

import pytest

from ha_redirect.lab import evaluation
from ha_redirect.lab import evaluation_run
from ha_redirect.lab import haproxy
from ha_redirect.lab import topology
from ha_redirect import model


def config(*args):
    parser = evaluation.add_arguments(evaluation._Parser())
    return evaluation.config_from_args(parser.parse_args(list(args)))


def test_sdn_adds_tcp_probe_at_its_defaults_only_when_the_service_dies():
    link = evaluation_run.scheme_setup(config(), 'sdn', 'reactive')
    assert link.monitors == ('port_status',)
    assert link.describe() == dict(monitors=['port_status'])
    kill = evaluation_run.scheme_setup(config('--failure', 'kill'), 'sdn',
                                       'reactive')
    assert kill.monitors == ('port_status', 'tcp_probe')
    defaults = model.PolicySettings()
    s = kill.settings
    assert (s.probe_ip, s.probe_mac) == (topology.PROBE_IP,
                                         topology.PROBE_MAC)
    assert (s.probe_interval, s.probe_timeout, s.probe_fall, s.probe_rise,
            s.probe_jitter) == (
        defaults.probe_interval, defaults.probe_timeout, defaults.probe_fall,
        defaults.probe_rise, defaults.probe_jitter)
    assert kill.describe()['probe_timeout'] == defaults.probe_timeout


def test_probe_settings_can_be_overridden_for_exploration():
    setup = evaluation_run.scheme_setup(
        config('--failure', 'kill', '--probe-timeout', '0.6',
               '--probe-fall', '4'), 'sdn', 'proactive')
    assert (setup.settings.probe_timeout, setup.settings.probe_fall) == (
        0.6, 4)


def test_the_passive_check_can_be_tuned_or_turned_off_for_exploration():
    defaults = model.PolicySettings()
    assert evaluation_run.scheme_setup(
        config('--failure', 'kill'), 'sdn', 'reactive').describe()[
            'passive_refusals'] == defaults.passive_refusals
    for refusals in (1, 0):
        setup = evaluation_run.scheme_setup(
            config('--failure', 'kill', '--passive-refusals', str(refusals)),
            'sdn', 'fast_failover')
        assert setup.settings.passive_refusals == refusals
        assert setup.describe()['passive_refusals'] == refusals


def test_tuned_haproxy_checks_at_the_probe_interval():
    text = haproxy.render_haproxy_config(
        _service(), '10.0.0.100',
        evaluation_run.scheme_setup(config('--failure', 'kill'), 'haproxy',
                                    'tuned').profile)
    assert 'inter 100ms fastinter 100ms fall 1 rise 1' in text
    setup = evaluation_run.scheme_setup(
        config('--failure', 'kill', '--probe-interval', '0.25'), 'haproxy',
        'tuned')
    assert setup.profile.server_options[1:3] == ('inter 250ms',
                                                 'fastinter 250ms')
    assert setup.describe()['haproxy_server_options'][1] == 'inter 250ms'
    # The paper's profile keeps its 3 s, and link mode keeps the profile.
    assert evaluation_run.scheme_setup(
        config('--failure', 'kill'), 'haproxy', 'paper').profile == 'paper'
    assert evaluation_run.scheme_setup(config(), 'haproxy',
                                       'tuned').profile == 'tuned'


def test_haproxy_logs_with_microsecond_timestamps_when_asked():
    service = _service()
    assert 'log stdout format raw local0' in haproxy.render_haproxy_config(
        service, '10.0.0.100', 'tuned')
    assert 'log stdout format iso local0' in haproxy.render_haproxy_config(
        service, '10.0.0.100', 'tuned', log_format='iso')
    with pytest.raises(ValueError, match="'json'"):
        haproxy.render_haproxy_config(service, '10.0.0.100', 'tuned',
                                      log_format='json')


def _service():
    return model.Service(
        'web', 0, (5001,), model.Endpoint('10.0.1.1', '00:00:00:00:00:01', 1),
        (model.Endpoint('10.0.2.2', '00:00:00:00:00:02', 2),))


def test_kill_services_kills_every_process_before_waiting():
    import signal
    import subprocess
    import time

    from ha_redirect.lab import failures
    procs = [subprocess.Popen(['sleep', '30']) for _ in range(3)]
    done = subprocess.Popen(['true'])
    done.wait(5)
    before = time.monotonic()
    exited = {}
    t0, t1 = failures.kill_services(procs + [done], exited=exited)
    after = time.monotonic()
    assert before <= t0 <= t1 < before + 1.0
    assert [p.returncode for p in procs] == [-signal.SIGKILL] * 3
    assert done.returncode == 0      # already gone: left alone
    # When each killed process had exited (Popens are named by PID).
    assert sorted(exited) == sorted(p.pid for p in procs)
    assert all(t1 <= t <= after for t in exited.values())
