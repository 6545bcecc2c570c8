"""The Prometheus endpoint of a real controller, scraped over HTTP before
and after a real failover on Open vSwitch: the numbers an operator would
alert on must move, and only those that should."""

import time
import urllib.request

from prometheus_client import parser as prom_parser

from ha_redirect.lab import controller as controller_mod
from ha_redirect.lab import failures
from ha_redirect.lab import scenarios
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import traffic


def scrape(port):
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics',
                                timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in prom_parser.text_string_to_metric_families(text)
            for sample in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples, name, **labels):
    """Sum over the samples of `name` that carry these labels."""
    return sum(v for (n, ls), v in samples.items() if n == name
               and all((k, w) in ls for k, w in labels.items()))


def test_metrics_move_during_a_real_failover():
    with scope_mod.RunScope() as scope:
        sdn = scenarios.SdnScenario(scope, strategy='reactive',
                                    monitors=('port_status', 'tcp_probe'))
        port = controller_mod.free_tcp_port()
        with open(sdn.controller.config_path, 'a') as f:
            f.write(f'\n[metrics]\nport = {port}\n')
        sdn.start()
        ip, service_port = sdn.address
        dpid = f'{sdn.plan.datapath_id:#x}'
        server = dict(service='web')

        scope_mod.wait_until(
            lambda: total(scrape(port), 'ha_redirect_probes_total',
                          server='backup1', outcome='ok') > 0,
            10, what='a successful probe of the backup')
        for _ in range(5):
            assert traffic.probe_once(sdn.bed.clients[0], ip,
                                      service_port)['ok']
        # A connection that stays open, pinned by the controller.
        traffic.start_hold(scope, sdn.bed.clients[1], ip, service_port)
        scope_mod.wait_until(
            lambda: value(scrape(port), 'ha_redirect_tracked_connections',
                          **server) >= 1, 5, what='a tracked connection')
        before = scrape(port)
        t_fail = failures.link_down(sdn.bed.primary)
        traffic.wait_served_by(sdn.bed.clients[0], ip, service_port,
                               'backup1', timeout=5)
        time.sleep(0.5)
        after = scrape(port)

        # Who takes new connections, and why.
        assert value(before, 'ha_redirect_server_active', server='primary',
                     **server) == 1
        assert value(after, 'ha_redirect_server_active', server='primary',
                     **server) == 0
        assert value(after, 'ha_redirect_server_active', server='backup1',
                     **server) == 1
        assert value(after, 'ha_redirect_server_healthy', server='primary',
                     **server) == 0
        assert value(after, 'ha_redirect_failovers_total', **server) == (
            value(before, 'ha_redirect_failovers_total', **server) + 1)
        assert value(after, 'ha_redirect_failbacks_total', **server) == 0
        # What crossed the OpenFlow channel.
        assert total(after, 'ha_redirect_packet_ins_total', dpid=dpid) > (
            total(before, 'ha_redirect_packet_ins_total', dpid=dpid))
        assert total(after, 'ha_redirect_flow_mods_total', dpid=dpid) > (
            total(before, 'ha_redirect_flow_mods_total', dpid=dpid))
        # The pins the failover deleted are not reported back (the
        # controller asked the switch not to): only expiries would be.
        assert total(after, 'ha_redirect_flows_removed_total', dpid=dpid,
                     reason='delete') == 0
        reactions = value(after,
                          'ha_redirect_port_status_reaction_seconds_count')
        assert reactions >= 1
        assert value(after, 'ha_redirect_port_status_reaction_seconds_sum'
                     ) < reactions * 1.0
        # Probes and their round trips; the switch itself.
        assert total(after, 'ha_redirect_probes_total', server='backup1',
                     outcome='ok') > total(
            before, 'ha_redirect_probes_total', server='backup1',
            outcome='ok')
        assert value(after, 'ha_redirect_probe_rtt_seconds_count',
                     **server) > 0
        assert value(after, 'ha_redirect_switch_connected', dpid=dpid) == 1
        assert value(after, 'ha_redirect_switch_master', dpid=dpid) == 1
        mean_ms = value(after, 'ha_redirect_port_status_reaction_seconds_'
                        'sum') * 1000 / reactions
        flow_mods = total(after, 'ha_redirect_flow_mods_total', dpid=dpid)
        print(f'\n[metrics] failover at t={t_fail:.3f}: PortStatus reaction '
              f'{mean_ms:.2f} ms mean, {flow_mods:.0f} FlowMods sent')
