"""The lab's switch ports get receive buffers of a hardware port's depth."""

import threading
import time

import pytest

from ha_redirect.lab import ovs
from ha_redirect.lab import sweep


def test_the_default_is_set_for_the_block_and_put_back(tmp_path):
    setting = tmp_path / 'rmem_default'
    setting.write_text('212992\n')
    with ovs.port_buffers(size=65536, path=setting,
                          lock_path=tmp_path / 'lock'):
        assert setting.read_text() == '65536'
    assert setting.read_text() == '212992'


def test_overlapping_runs_take_turns_so_the_host_value_comes_back(
        tmp_path):
    setting, lock = tmp_path / 'rmem_default', tmp_path / 'lock'
    setting.write_text('212992\n')
    seen = []

    def second_run():
        with ovs.port_buffers(size=65536, path=setting, lock_path=lock):
            seen.append(setting.read_text())

    with ovs.port_buffers(size=65536, path=setting, lock_path=lock):
        other = threading.Thread(target=second_run)
        other.start()
        time.sleep(0.2)         # the second run waits for the first
        assert not seen
    other.join(5)
    assert seen == ['65536']
    assert setting.read_text() == '212992'


def test_it_is_put_back_when_adding_the_ports_fails(tmp_path):
    setting = tmp_path / 'rmem_default'
    setting.write_text('212992\n')
    with pytest.raises(RuntimeError):
        with ovs.port_buffers(size=65536, path=setting,
                              lock_path=tmp_path / 'lock'):
            raise RuntimeError('ovs-vsctl failed')
    assert setting.read_text() == '212992'


@pytest.mark.parametrize('datapath, shown', [
    ('user', '64 KB'), ('kernel', "the kernel datapath's own"),
    ('unknown (no ovs-vswitchd)', 'unknown')])
def test_reports_say_how_deep_the_switch_ports_were(monkeypatch, datapath,
                                                    shown):
    monkeypatch.setattr(sweep.testbed_mod, 'choose_datapath',
                        lambda: datapath)
    assert sweep.environment()['switch port receive buffer'] == shown


def test_the_kernel_datapath_leaves_the_host_alone(tmp_path):
    setting = tmp_path / 'rmem_default'
    setting.write_text('212992\n')
    with ovs.port_buffers(userspace=False, size=65536, path=setting,
                          lock_path=tmp_path / 'lock'):
        assert setting.read_text() == '212992\n'
    assert not (tmp_path / 'lock').exists()
