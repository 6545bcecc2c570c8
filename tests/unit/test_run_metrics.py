"""An evaluation run's result from what it recorded (no testbed)."""

import pytest

from ha_redirect.lab import metrics
from ha_redirect.lab import run_metrics
from ha_redirect.lab import schemes
from ha_redirect.lab import traffic

T_FAIL = 100.0


def probe(t, ok=True, who='backup1'):
    return dict(t=t, t_connected=t + 0.001 if ok else None,
                t_done=t + 0.002, ok=ok, who=who if ok else None,
                error=None if ok else 'timed out')


def row(phase, index, ok=True, mbps=50.0):
    return dict(phase=phase, index=index, at=float(index), host='c1',
                ip='10.0.0.1', port=5201 + index, t_launch=90.0 + index,
                t_exit=T_FAIL + 5, ok=ok, error=None if ok else 'x',
                bytes=1000, mbps=mbps)


def recorded(**changes):
    probes = [probe(T_FAIL - 0.01, who='primary'), probe(T_FAIL + 0.001,
                                                         ok=False),
              probe(T_FAIL + 0.05)]
    fields = dict(
        scheme=schemes.Scheme.parse('sdn-reactive'),
        rows=[row('baseline', 0, mbps=90.0), row('baseline', 1, ok=False),
              row('failure', 2), row('failure', 3, ok=False, mbps=10.0)],
        t_load=50.0, t_phase=80.0, fail_times=(T_FAIL, T_FAIL + 2e-4),
        t_end=120.0, capture_drops={'c1': 0},
        clock=dict(offset_start=1.5, offset_end=1.5000001, drift_s=1e-7,
                   sample_uncertainty_s=2e-7),
        client_pcaps=['c1.pcap'], backup_pcap='backup1.pcap',
        probe_port=5001, fail_ports=(5203, 5204), probes=probes,
        gap=traffic.service_gap(probes, T_FAIL, 'backup1'),
        health=[metrics.HealthTransition(t=T_FAIL + 0.02,
                                         monitor='port_status',
                                         server='primary', up=False,
                                         reason='link down')],
        redirects=[(T_FAIL - 5, 'primary', 'nobody', 'start'),
                   (T_FAIL + 0.03, 'backup1', 'primary', 'down')],
        haproxy_transitions=[])
    fields.update(changes)
    return run_metrics.Recorded(**fields)


@pytest.fixture(autouse=True)
def no_captures(monkeypatch):
    monkeypatch.setattr(metrics, 'read_segments', lambda path, offset: [])


def test_result_fields_in_the_order_runs_json_has_them():
    fields = run_metrics.result_fields(recorded())
    assert list(fields) == [
        'status', 'clock', 't_phase_start', 't_fail', 'capture_drops',
        'backup_response_method', 'first_backup_segment',
        'haproxy_transitions', 't_load_start', 't_end', 'prober_window',
        'health_transitions', 'redirects', 'probe_timeline', 'metrics',
        'clients']
    assert list(fields['clock']) == [
        'offset_start', 'offset_end', 'drift_s', 'sample_uncertainty_s',
        'failure_command_s']
    assert list(fields['metrics']) == [
        'backup_response_s', 'backup_response_iperf_s', 'service_gap_s',
        'monitor_detection_s', 'redirect_s', 'false_failovers',
        'false_failovers_primary', 'false_failovers_backup',
        'probe_attempts_after', 'probe_failed_after',
        'probe_failed_opened_after', 'probe_answered_by',
        'connect_before_failure_s', 'probe_server_exited_s',
        'services_exited_s', 'detection_after_exit_s', 'rst_after',
        'reset_connections',
        'rst_after_probe', 'clients',
        'clients_before', 'clients_after', 'clients_finished',
        'aborted_before', 'aborted_after', 'aborted_total',
        'throughput_mbps', 'baseline_clients', 'baseline_aborted',
        'baseline_throughput_mbps']


def test_times_are_relative_to_the_failure():
    fields = run_metrics.result_fields(recorded())
    m = fields['metrics']
    assert fields['clock']['failure_command_s'] == pytest.approx(2e-4)
    assert m['service_gap_s'] == pytest.approx(0.052)
    assert m['monitor_detection_s'] == pytest.approx(0.02)
    assert m['redirect_s'] == pytest.approx(0.03)
    assert fields['prober_window'] == [-0.01, 0.05]
    assert [p['t'] for p in fields['probe_timeline']] == [-0.01, 0.001, 0.05]
    assert fields['redirects'][1] == dict(t=0.03, to='backup1',
                                          was='primary', why='down')
    assert fields['health_transitions'] == [dict(
        t=0.02, monitor='port_status', server='primary', state='DOWN',
        reason='link down', counted=True)]
    assert fields['backup_response_method'] == 'same-connection'
    assert run_metrics.result_fields(recorded(
        scheme=schemes.Scheme.parse('haproxy-tuned')))[
        'backup_response_method'] == 'relayed'


def test_clients_are_counted_by_phase():
    fields = run_metrics.result_fields(recorded())
    m = fields['metrics']
    assert (m['clients'], m['clients_after'], m['aborted_after'],
            m['aborted_total']) == (2, 2, 1, 1)
    assert m['throughput_mbps'] == pytest.approx(30.0)
    assert (m['baseline_clients'], m['baseline_aborted']) == (2, 1)
    assert m['baseline_throughput_mbps'] == pytest.approx(70.0)
    failure_rows = [r for r in fields['clients'] if r['phase'] == 'failure']
    assert [r['class'] for r in failure_rows] == ['after', 'after']
    assert all('class' not in r for r in fields['clients']
               if r['phase'] == 'baseline')


def test_no_redirect_away_from_the_primary():
    fields = run_metrics.result_fields(recorded(redirects=[]))
    assert fields['metrics']['redirect_s'] is None


def test_kill_mode_times_the_killed_processes_exits():
    fields = run_metrics.result_fields(recorded(
        service_exits={'serve-primary': T_FAIL + 0.012,
                       'iperf3-s-primary-5203': T_FAIL + 0.031},
        probe_server='serve-primary'))
    m = fields['metrics']
    assert m['probe_server_exited_s'] == pytest.approx(0.012)
    assert m['services_exited_s'] == pytest.approx(0.031)
    # DOWN at +20 ms: 8 ms after the probed server could be seen dead.
    assert m['detection_after_exit_s'] == pytest.approx(0.008)


def test_link_mode_has_no_process_exits():
    m = run_metrics.result_fields(recorded())['metrics']
    assert m['probe_server_exited_s'] is None
    assert m['services_exited_s'] is None
    assert m['detection_after_exit_s'] is None


def test_connect_time_before_the_failure_is_the_median_of_the_last_second():
    """The queues every packet to a server waits in before the failure:
    from the attempts started in the second before it, answered or not
    counted, later ones ignored."""
    probes = [dict(probe(T_FAIL - 2.0), t_connected=T_FAIL - 1.0),  # too early
              dict(probe(T_FAIL - 0.9), t_connected=T_FAIL - 0.9 + 0.150),
              dict(probe(T_FAIL - 0.5), t_connected=T_FAIL - 0.5 + 0.010),
              dict(probe(T_FAIL - 0.2), t_connected=T_FAIL - 0.2 + 0.040),
              probe(T_FAIL - 0.1, ok=False),                   # no SYN-ACK
              dict(probe(T_FAIL + 0.1), t_connected=T_FAIL + 0.9)]  # after
    m = run_metrics.result_fields(recorded(
        probes=probes, gap=traffic.service_gap(probes, T_FAIL, 'backup1')))[
        'metrics']
    assert m['connect_before_failure_s'] == pytest.approx(0.040)
    assert traffic.connect_time_before(probes[-1:], T_FAIL) is None
