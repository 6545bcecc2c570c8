"""The "service killed, link up" section of report.md."""

import pytest

from ha_redirect.lab import health_report
from ha_redirect.lab import report

TCP_PROBE = dict(monitors=['port_status', 'tcp_probe'], probe_interval=0.1,
                 probe_timeout=1.0, probe_fall=3, probe_rise=2,
                 probe_jitter=0.1)
TUNED = dict(monitors=['haproxy'], haproxy_profile='tuned',
             haproxy_server_options=['check', 'inter 100ms', 'fall 1'],
             haproxy_timeout_connect='100ms')


def down(t, server, monitor='tcp_probe', counted=True, reason='x'):
    return dict(t=t, server=server, state='DOWN', monitor=monitor,
                reason=reason, counted=counted)


def run(scheme, rate, rep, gap, detection, failed, transitions=(),
        status='ok', failure='kill', opened=None):
    false = [x for x in transitions if x['counted'] and x['state'] == 'DOWN'
             and (x['server'] != 'primary' or x['t'] < 0)]
    return dict(
        scheme=scheme, rate=rate, repetition=rep, status=status,
        failure=failure,
        health_monitoring=TUNED if scheme.startswith('haproxy') else
        TCP_PROBE,
        health_transitions=list(transitions), prober_window=[-1.0, 1.5],
        metrics=dict(
            service_gap_s=gap, monitor_detection_s=detection,
            probe_failed_after=failed, probe_failed_opened_after=opened,
            false_failovers=len(false),
            false_failovers_primary=sum(1 for x in false
                                        if x['server'] == 'primary'),
            false_failovers_backup=sum(1 for x in false
                                       if x['server'] != 'primary'),
            backup_response_s=gap),
        capture_drops={}, clock=dict(sample_uncertainty_s=1e-7,
                                     drift_s=1e-7,
                                     failure_command_s=2e-5))


def results():
    out = []
    for rep in range(3):
        for rate in (2.0, 8.0):
            out.append(run('sdn-proactive', rate, rep, 0.27 + 0.01 * rep,
                           0.24 + 0.01 * rep, 50, [
                               down(-30.0, 'primary', counted=False),
                               down(0.24, 'primary')], opened=rep))
            haproxy = [down(0.01, 'primary', 'haproxy')]
            if rate == 8.0 and rep == 1:
                haproxy += [down(-2.5, 'primary', 'haproxy',
                                 reason='Layer4 timeout'),
                            down(1.2, 'backup1', 'haproxy')]
            out.append(run('haproxy-tuned', rate, rep, 0.07, 0.01, 0,
                           haproxy))
    out.append(run('sdn-reactive', 2.0, 0, None, None, 0, status='failed'))
    out.append(run('sdn-reactive', 2.0, 0, 0.5, 0.4, 3, failure='link'))
    return out


def test_rows_per_rate_and_over_all_rates_with_haproxy_first():
    rows = health_report.rows(results())
    assert [(r.scheme, r.rate) for r in rows] == [
        ('haproxy-tuned', 2.0), ('haproxy-tuned', 8.0),
        ('haproxy-tuned', None), ('sdn-proactive', 2.0),
        ('sdn-proactive', 8.0), ('sdn-proactive', None)]
    sdn_all = rows[-1]
    assert sdn_all.runs == 6
    assert (sdn_all.gap.median, sdn_all.gap.low, sdn_all.gap.high) == \
        pytest.approx((0.28, 0.27, 0.29))
    assert sdn_all.detection.median == pytest.approx(0.25)
    assert (sdn_all.false_primary, sdn_all.false_backup,
            sdn_all.runs_with_false) == (0, 0, 0)
    assert (sdn_all.failed_opened.median, sdn_all.failed_opened.low,
            sdn_all.failed_opened.high) == (1, 0, 2)
    heavy = rows[1]
    assert (heavy.false_primary, heavy.false_backup,
            heavy.runs_with_false, heavy.runs) == (1, 1, 1, 3)


def test_false_failover_events_leave_out_start_up_and_the_detection():
    events = health_report.false_failover_events(results())
    assert [(s, rate, rep, x['server'], x['t'], probing)
            for s, rate, rep, x, probing in events] == [
        ('haproxy-tuned', 8.0, 1, 'primary', -2.5, False),
        ('haproxy-tuned', 8.0, 1, 'backup1', 1.2, True)]


def test_section_has_the_table_the_settings_and_where_it_breaks():
    meta = dict(config=dict(failure='kill', fail_at=5.0, interval_ms=5.0,
                            duration=2.0))
    text = '\n'.join(health_report.section(results(), meta))
    assert text.startswith(f'## {health_report.TITLE}')
    # Runs from before the processes' exits and the connect time were
    # measured: '-' there.
    # Runs from before the opened attempts were counted: '-' there too.
    assert ('| haproxy-tuned | 8 | 3 | 70 | 10 | - | - | - | 0 | - | '
            '1 / 1 | 1 of 3 |') in text
    assert ('| sdn-proactive | all | 6 | 280 [270-290] | 250 [240-260] | '
            '- | - | - | 50 | 1 [0-2] | 0 / 0 | 0 of 6 |') in text
    assert 'timeout 1000 ms, fall 3, rise 2' in text
    assert '-- its default settings' in text
    assert '**sdn-proactive**: no false failover in 6 runs' in text
    assert ('**haproxy-tuned**: 2 false failovers in 1 of 6 runs: 2 at '
            '8/s (about 16 concurrent iperf3 transfers); 1 of them while '
            'the 5 ms prober ran.') in text
    assert ('haproxy-tuned, rate 8/s, repetition 1: haproxy marked primary '
            'DOWN at -2500 ms (Layer4 timeout)\n') in text
    assert 'marked backup1 DOWN at +1200 ms (x), while the 5 ms prober ran' \
        in text


def test_why_the_killed_primary_was_marked_down():
    found = results()
    found[0]['health_transitions'].append(
        down(0.5, 'primary', reason='no answer within 0.3s'))
    found[2]['health_transitions'][1]['reason'] = 'no answer within 0.3s'
    assert health_report.detection_reasons(found) == {
        'sdn-proactive': {'x': 5, 'no answer within 0.3s': 1},
        'haproxy-tuned': {'x': 6}}
    text = '\n'.join(health_report.section(found, {}))
    assert '- sdn-proactive: no answer within 0.3s 1, x 5' in text


def test_settings_other_than_the_defaults_are_flagged():
    r = run('sdn-proactive', 2.0, 0, 0.3, 0.2, 1)
    r['health_monitoring'] = dict(TCP_PROBE, probe_timeout=0.5)
    assert 'NOT its default settings' in health_report.monitoring_text(r)
    r['health_monitoring'] = dict(TCP_PROBE, passive_refusals=3,
                                  passive_window=1.0)
    assert '-- its default settings' in health_report.monitoring_text(r)
    r['health_monitoring'] = dict(TCP_PROBE, passive_refusals=1,
                                  passive_window=1.0)
    text = health_report.monitoring_text(r)
    assert 'passive check (1 refusal within 1000 ms)' in text
    assert 'NOT its default settings' in text


def test_the_passive_check_and_redispatch_are_named_where_they_ran():
    passive = dict(TCP_PROBE, passive_refusals=3, passive_window=1.0,
                   redispatch=True)
    reactive = run('sdn-reactive', 2.0, 0, 0.3, 0.2, 1)
    reactive['health_monitoring'] = passive
    assert ('passive check (3 refusals within 1000 ms) and redispatch'
            in health_report.monitoring_text(reactive))
    proactive = run('sdn-proactive', 2.0, 0, 0.3, 0.2, 1)
    proactive['health_monitoring'] = passive
    assert ('passive check (3 refusals within 1000 ms) and redispatch'
            in health_report.monitoring_text(proactive))
    proactive['health_monitoring'] = dict(passive, redispatch=False)
    text = health_report.monitoring_text(proactive)
    assert 'passive check (3 refusals' in text and 'redispatch' not in text
    proactive['health_monitoring'] = dict(passive, passive_refusals=0)
    assert 'no passive check' in health_report.monitoring_text(proactive)


def test_no_section_without_kill_runs():
    link_only = [r for r in results() if r['failure'] == 'link']
    assert health_report.section(link_only, {}) == []


def test_write_report_in_kill_mode(tmp_path):
    meta = dict(config=dict(failure='kill', fail_at=5.0, interval_ms=5.0,
                            duration=2.0, window=7.0, seed='1'),
                command='ha-redirect-lab evaluate --failure kill')
    ok = [r for r in results() if r['status'] == 'ok'
          and r['failure'] == 'kill']
    text = open(report.write_report(str(tmp_path), ok, meta)).read()
    assert f'## {health_report.TITLE}' in text
    assert 'service processes are killed, its link staying up' in text
    assert 'Not checked: the paper\'s claims are about a link' in text
    assert 'before it sends SIGKILL' in text
