"""Figure 1(a): the HAProxy reference, profiles `paper` and `tuned`."""

import time

import pytest

from ha_redirect.lab import failures
from ha_redirect.lab import scenarios
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import traffic

# How long HAProxy may take to mark the primary down.  `paper`: three
# failed checks, each up to `inter` (3 s) to time out plus `inter` between
# them, measured at ~17 s; with room for a busy 2-core machine.
DETECTION_TIMEOUT = {'paper': 30.0, 'tuned': 5.0}


@pytest.fixture(params=['paper', 'tuned'])
def proxy_lab(request):
    with scope_mod.RunScope() as scope:
        yield scenarios.ProxyScenario(scope, profile=request.param).start()


def test_clients_are_served_by_the_primary_through_the_proxy(proxy_lab):
    for client in proxy_lab.bed.clients:
        attempt = traffic.probe_once(client, *proxy_lab.address)
        assert attempt['ok'], attempt
        assert attempt['who'] == 'primary'
        assert attempt['peer'] == proxy_lab.bed.plan.frontend_ip


def test_new_connections_reach_the_backup_once_the_check_notices(
        proxy_lab, record_gap):
    lab = proxy_lab
    prober = traffic.start_prober(lab.scope, lab.bed.clients[0],
                                  *lab.address, interval_ms=5)
    time.sleep(0.5)
    t_fail = failures.link_down(lab.bed.primary)
    t_noticed = lab.haproxy.wait_for_transition(
        'primary', 'DOWN', DETECTION_TIMEOUT[lab.profile])
    time.sleep(1.0)
    prober.stop()
    records = prober.records()
    report = traffic.service_gap(records, t_fail, 'backup1')
    record_gap('haproxy failover', lab.profile, report,
               f'marked down after {(t_noticed - t_fail) * 1000:.0f} ms')
    assert report.gap is not None, report.describe()
    settled = [a for a in traffic.attempts(records)
               if a['t'] >= t_noticed + 0.2]
    assert settled, 'the prober made no attempts after the mark-down'
    assert all(a['ok'] and a['who'] == 'backup1' for a in settled), [
        a for a in settled if not (a['ok'] and a['who'] == 'backup1')][:5]
    attempt = traffic.probe_once(lab.bed.clients[1], *lab.address)
    assert attempt['ok'] and attempt['who'] == 'backup1', attempt


def test_a_killed_service_is_noticed_while_its_link_stays_up(
        proxy_lab, record_gap):
    lab = proxy_lab
    prober = traffic.start_prober(lab.scope, lab.bed.clients[0],
                                  *lab.address, interval_ms=5)
    time.sleep(0.5)
    t_fail = failures.kill_service(lab.servers['primary'])
    t_noticed = lab.haproxy.wait_for_transition(
        'primary', 'DOWN', DETECTION_TIMEOUT[lab.profile])
    time.sleep(0.5)
    prober.stop()
    report = traffic.service_gap(prober.records(), t_fail, 'backup1')
    record_gap('haproxy service killed', lab.profile, report,
               f'marked down after {(t_noticed - t_fail) * 1000:.0f} ms')
    assert report.gap is not None, report.describe()
    attempt = traffic.probe_once(lab.bed.clients[1], *lab.address)
    assert attempt['ok'] and attempt['who'] == 'backup1', attempt
