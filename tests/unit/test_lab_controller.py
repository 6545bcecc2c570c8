"""The lab's controller config and listener ownership check."""

import dataclasses
import os
import socket

from oslo_config import cfg
import pytest

from ha_redirect.lab import controller
from ha_redirect.lab import scope as scope_mod
from ha_redirect.lab import topology
from ha_redirect import model
from ha_redirect import opts


def load(text, tmp_path):
    path = tmp_path / 'controller.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf(args=['--config-file', str(path)], project='ha_redirect_test')
    return opts.load_policy_config(conf)


@pytest.mark.parametrize('n_backups', [1, 3])
@pytest.mark.parametrize('gateway', [False, True])
def test_rendered_config_loads_back_as_the_topology_service(
        tmp_path, n_backups, gateway):
    scope = scope_mod.RunScope(token='ab12', workdir=str(tmp_path))
    plan = topology.sdn_plan(scope, n_clients=3, n_backups=n_backups,
                             gateway=gateway)
    settings = dataclasses.replace(model.PolicySettings(),
                                   strategy='proactive', failback=False,
                                   connection_idle_timeout=7)
    text = controller.render_controller_config([plan.service()], settings)
    loaded = load(text, tmp_path)
    assert loaded.services == (plan.service(),)
    assert loaded.settings == settings


def test_monitors_and_probe_settings_survive_the_round_trip(tmp_path):
    scope = scope_mod.RunScope(token='ab12', workdir=str(tmp_path))
    plan = topology.sdn_plan(scope)
    service = plan.service(monitors=('port_status', 'tcp_probe'))
    settings = dataclasses.replace(
        model.PolicySettings(), probe_ip=topology.PROBE_IP,
        probe_mac=topology.PROBE_MAC, probe_interval=0.05, probe_fall=2)
    loaded = load(controller.render_controller_config([service], settings),
                  tmp_path)
    assert loaded.services == (service,)
    assert loaded.settings == settings


def test_server_ports_and_addresses_follow_the_paper(tmp_path):
    scope = scope_mod.RunScope(token='ab12', workdir=str(tmp_path))
    plan = topology.sdn_plan(scope, n_clients=2, gateway=True)
    service = plan.service()
    assert (service.primary.port, service.backups[0].port) == (1, 2)
    assert plan.gateway.switch_port == 3        # the paper's p3
    assert service.primary.ip == '10.0.0.1'
    assert all(len(h.name) + len('-eth0') <= 15 for h in
               plan.servers + plan.clients + (plan.gateway,))


def test_listener_check_finds_the_owning_process():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen()
        port = sock.getsockname()[1]
        inodes = controller.listening_inodes(port)
        assert inodes
        assert controller.pid_owns_socket(os.getpid(), inodes)
        assert not controller.pid_owns_socket(os.getppid(), inodes)
    assert not controller.listening_inodes(port)


def test_free_port_is_not_listened_on():
    port = controller.free_tcp_port()
    assert not controller.listening_inodes(port)


def test_a_controller_is_stopped_on_close_even_if_its_start_is_cut_short(
        tmp_path, monkeypatch):
    """Ctrl-C while the process is being started (before it is ready):
    the scope already knows to stop it."""
    scope = scope_mod.RunScope(token='ab12', workdir=str(tmp_path))
    plan = topology.sdn_plan(scope)
    process = controller.ControllerProcess(scope, [plan.service()])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(controller.subprocess, 'Popen', interrupted)
    with pytest.raises(KeyboardInterrupt):
        process.start()
    assert [d for d, _ in scope._undo] == [f'stop {process.label}']
    scope.close()
