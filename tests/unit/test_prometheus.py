"""The controller's Prometheus metrics, fed by the real app and policy."""

from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from prometheus_client import parser as prom_parser

from ha_redirect import app as app_mod
from ha_redirect import metrics as metrics_mod
from ha_redirect import model
from ha_redirect.policy import RedirectPolicy

from os_ken_fakes import RecordingDatapath

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
WEB = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,))


def samples(metrics):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in prom_parser.text_string_to_metric_families(
                metrics.text())
            for s in family.samples}


def port(datapath, number, up):
    return ofp_event.EventOFPPortStatus(parser.OFPPortStatus(
        datapath, ofp.OFPPR_MODIFY, parser.OFPPort(
            number, '00:00:00:00:aa:01', f'p{number}', 0,
            0 if up else ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0, 0)))


def connected(app):
    """A switch with ports 1-3 up, connected to `app`; the metrics
    refreshed."""
    datapath = RecordingDatapath()
    reply = parser.OFPPortDescStatsReply(datapath)
    reply.flags, reply.body = 0, [parser.OFPPort(
        n, f'00:00:00:00:aa:{n:02x}', f'p{n}', 0, 0, 0, 0, 0, 0, 0, 0)
        for n in (1, 2, 3)]
    app.on_port_desc(ofp_event.EventOFPPortDescStatsReply(reply))
    app._refresh_metrics()
    return datapath


def test_a_failover_and_a_failback_move_the_gauges_and_counters():
    app = app_mod.RedirectApp(redirect_policy=RedirectPolicy(
        [WEB], model.PolicySettings(strategy='proactive')))
    datapath = connected(app)
    web = (('server', 'primary'), ('service', 'web'))
    backup = (('server', 'backup1'), ('service', 'web'))
    first = samples(app.metrics)
    assert first[('ha_redirect_server_active', web)] == 1
    assert first[('ha_redirect_switch_connected', (('dpid', '0x1'),))] == 1
    assert first[('ha_redirect_switch_master', (('dpid', '0x1'),))] == 1

    app.on_port_status(port(datapath, 1, False))
    app._refresh_metrics()
    down = samples(app.metrics)
    assert down[('ha_redirect_server_active', web)] == 0
    assert down[('ha_redirect_server_active', backup)] == 1
    assert down[('ha_redirect_failovers_total', (('service', 'web'),))] == 1
    adds = (('command', 'ADD'), ('dpid', '0x1'))
    assert down[('ha_redirect_flow_mods_total', adds)] > first[
        ('ha_redirect_flow_mods_total', adds)]

    app.on_port_status(port(datapath, 1, True))
    app._refresh_metrics()
    back = samples(app.metrics)
    assert back[('ha_redirect_server_active', web)] == 1
    assert back[('ha_redirect_failbacks_total', (('service', 'web'),))] == 1

    app.on_switch_gone(ofp_event.EventOFPStateChange(datapath))
    app._refresh_metrics()
    gone = samples(app.metrics)
    assert gone[('ha_redirect_switch_connected', (('dpid', '0x1'),))] == 0


def test_probe_results_are_counted_by_outcome_with_round_trips():
    metrics = metrics_mod.ControllerMetrics()
    metrics.probe_result('web', 0, 'ok', 0.002)
    metrics.probe_result('web', 0, 'refused', 0.001)
    metrics.probe_result('web', 1, 'timeout', None)
    got = samples(metrics)
    assert got[('ha_redirect_probes_total', (
        ('outcome', 'ok'), ('server', 'primary'), ('service', 'web')))] == 1
    assert got[('ha_redirect_probes_total', (
        ('outcome', 'timeout'), ('server', 'backup1'),
        ('service', 'web')))] == 1
    assert got[('ha_redirect_probe_last_ok', (
        ('server', 'primary'), ('service', 'web')))] == 0
    assert got[('ha_redirect_probe_rtt_seconds_count',
                (('service', 'web'),))] == 2


def test_refusals_the_passive_check_saw_are_counted_per_server():
    metrics = metrics_mod.ControllerMetrics()
    metrics.probe_result('web', 0, 'ok', 0.002)
    metrics.passive_refusal('web', 0)
    metrics.passive_refusal('web', 0)
    got = samples(metrics)
    assert got[('ha_redirect_passive_refusals_total', (
        ('server', 'primary'), ('service', 'web')))] == 2
    # They are no probe: the last probe's verdict stands.
    assert got[('ha_redirect_probe_last_ok', (
        ('server', 'primary'), ('service', 'web')))] == 1


def test_the_first_choice_of_a_server_is_no_failover():
    metrics = metrics_mod.ControllerMetrics()
    metrics.server_changed('web', None, 0, 'switch connected')
    metrics.server_changed('web', 0, None, 'all down')
    metrics.server_changed('web', None, 1, 'backup up')
    got = samples(metrics)
    assert got[('ha_redirect_failovers_total', (('service', 'web'),))] == 1
    assert ('ha_redirect_failbacks_total', (('service', 'web'),)) not in got


def test_gauges_follow_each_service_when_only_some_change():
    """The metrics redo only the services that changed since they last
    looked: the others keep their (right) values."""
    other_primary = model.Endpoint('10.0.0.6', '00:00:00:00:00:06', 3)
    other = model.Service('db', 1, (5432,), other_primary, (BACKUP,))
    app = app_mod.RedirectApp(redirect_policy=RedirectPolicy(
        [WEB, other], model.PolicySettings(strategy='proactive')))
    datapath = connected(app)
    status = app.policy.status
    asked = []
    app.policy.status = lambda since=None: asked.append(since) or status(
        since=since)
    app.on_port_status(port(datapath, 3, False))
    app._refresh_metrics()
    now = samples(app.metrics)
    assert now[('ha_redirect_server_active',
                (('server', 'primary'), ('service', 'db')))] == 0
    assert now[('ha_redirect_server_active',
                (('server', 'backup1'), ('service', 'db')))] == 1
    assert now[('ha_redirect_server_active',
                (('server', 'primary'), ('service', 'web')))] == 1
    assert len(asked) == 1 and asked[0] is not None
    assert [s['service'] for s in status(since=asked[0])] == ['db']


def test_sent_flow_and_group_changes_are_counted_by_command():
    """Counted once per kind and command for a whole write, bundles
    opened; packet-outs and barriers are not changes."""
    metrics = metrics_mod.ControllerMetrics()
    add = model.FlowMod(1, model.FlowCommand.ADD)
    delete = model.FlowMod(1, model.FlowCommand.DELETE)
    group = model.GroupMod(1, model.GroupCommand.ADD, 7)
    metrics.count_sent(1, [add, add, model.Barrier(1),
                           model.PacketOut(1, (model.Output(2),), data=b'x'),
                           model.Bundle(1, (delete, group, add))])
    metrics.count_sent(1, [add])
    got = samples(metrics)
    dpid = ('dpid', '0x1')
    assert got[('ha_redirect_flow_mods_total',
                (('command', 'ADD'), dpid))] == 4
    assert got[('ha_redirect_flow_mods_total',
                (('command', 'DELETE'), dpid))] == 1
    assert got[('ha_redirect_group_mods_total',
                (('command', 'ADD'), dpid))] == 1
