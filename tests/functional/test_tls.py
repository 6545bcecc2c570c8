"""OpenFlow over TLS: Open vSwitch connects to the controller with `ssl:`
and the failover works through that channel.

Certificates are made for the run (a throwaway CA, a controller and a
switch certificate, in the run's own directory). The controller checks
the switch's certificate against the CA, Open vSwitch the controller's.
Open vSwitch's SSL settings are global to the instance: the scenario
restores exactly what was there before, and this test checks it did.
"""

import time

from ha_redirect.lab import failures
from ha_redirect.lab import scenarios
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import traffic

BACKUP = 'backup1'


def ovs_ssl_settings():
    """The Open_vSwitch table's SSL row and its file columns, as text."""
    row = scope_mod.run(['ovs-vsctl', '--timeout=10', 'get', 'Open_vSwitch',
                         '.', 'ssl']).stdout.strip()
    if row in ('', '[]'):
        return None
    return row, scope_mod.run(['ovs-vsctl', '--timeout=10', '--columns=',
                               'private_key,certificate,ca_cert', 'list',
                               'SSL', row]).stdout


def bridge_controller(bridge):
    """(target, is_connected) of the bridge's one controller."""
    def get(*args):
        return scope_mod.run(['ovs-vsctl', '--timeout=10', 'get', *args]
                             ).stdout.strip()
    uuid = get('Bridge', bridge, 'controller').strip('[]')
    return (get('Controller', uuid, 'target').strip('"'),
            get('Controller', uuid, 'is_connected') == 'true')


def test_failover_through_an_openflow_tls_connection():
    ssl_before = ovs_ssl_settings()
    with scope_mod.RunScope() as scope:
        sdn = scenarios.SdnScenario(scope, strategy='reactive',
                                    tls=True).start()
        port = sdn.controller.port
        assert bridge_controller(sdn.plan.bridge)[0] == (
            f'ssl:127.0.0.1:{port}')
        # The controller saw the switch; OVS writes its side of it to the
        # database a moment later.
        scope_mod.wait_until(lambda: bridge_controller(sdn.plan.bridge)[1],
                             10, what='is_connected in the Controller row')
        log = sdn.controller.log()
        assert f'OpenFlow on TLS 127.0.0.1:{port}' in log, log[-2000:]
        assert 'ca_certs is not set' not in log

        # reactive: every new connection is a PacketIn and a FlowMod
        # through the TLS channel.
        client = sdn.bed.clients[0]
        attempt = traffic.probe_once(client, *sdn.address)
        assert (attempt['ok'], attempt['who']) == (True, 'primary'), attempt

        prober = traffic.start_prober(scope, client, *sdn.address,
                                      interval_ms=5)
        time.sleep(0.5)
        t_fail = failures.link_down(sdn.bed.primary)
        traffic.wait_served_by(sdn.bed.clients[1], *sdn.address, BACKUP,
                               timeout=5)
        time.sleep(0.5)
        prober.stop()
        report = traffic.service_gap(prober.records(), t_fail, BACKUP)
        assert report.gap is not None, report.describe()
        print(f'\n[tls failover / reactive] {report.describe()}')

        attempt = traffic.probe_once(client, *sdn.address)
        assert attempt['ok'], attempt
        assert attempt['who'] == BACKUP
        assert attempt['peer'] == sdn.plan.primary.address
        # Still the same TLS connection, and nothing failed in the app.
        assert bridge_controller(sdn.plan.bridge)[1]
        log = sdn.controller.log()
        assert 'Traceback' not in log and 'failed on' not in log, log[-3000:]
    assert ovs_ssl_settings() == ssl_before
