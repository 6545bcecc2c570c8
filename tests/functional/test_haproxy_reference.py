"""Figure 1(a): the HAProxy reference, profiles `paper` and `tuned`."""

import time

import pytest

from ha_redirect.lab import failures
from ha_redirect.lab import haproxy
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import testbed
from ha_redirect.lab import topology
from ha_redirect.lab import traffic

# How long HAProxy may take to mark the primary down: fall x inter, with
# room for a busy 2-core machine.
DETECTION_TIMEOUT = {'paper': 20.0, 'tuned': 5.0}


class ProxyLab:
    def __init__(self, scope, profile):
        self.bed = testbed.ProxyTestbed(
            scope, topology.proxy_plan(scope, n_clients=2)).start()
        for host, plan in zip([self.bed.primary] + self.bed.backups,
                              self.bed.plan.servers):
            traffic.start_identity_server(scope, host, plan.role,
                                          self.bed.plan.tcp_ports)
        self.haproxy = haproxy.HAProxy(scope, self.bed, profile).start()
        self.scope = scope
        self.profile = profile
        self.address = self.bed.service_address


@pytest.fixture(params=['paper', 'tuned'])
def proxy_lab(request):
    with scope_mod.RunScope() as scope:
        yield ProxyLab(scope, request.param)


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
