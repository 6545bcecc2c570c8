"""The model refuses what could not work, once, naming the field at fault."""

import dataclasses

import pytest

from ha_redirect import model

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)


def service(**changes):
    values = dict(name='web', datapath_id=1, tcp_ports=(80,),
                  primary=PRIMARY, backups=(BACKUP,))
    values.update(changes)
    return model.Service(**values)


def refusal(build, error_type):
    with pytest.raises(error_type) as info:
        build()
    return info.value


@pytest.mark.parametrize('changes, field, message', [
    (dict(tcp_ports=(80, 80)), 'tcp_ports',
     "service 'web': tcp_ports: TCP port 80 is listed twice"),
    (dict(tcp_ports=(70000,)), 'tcp_ports',
     "service 'web': tcp_ports: 70000 is not a TCP port"),
    (dict(backups=()), 'backups',
     "service 'web': backups: at least one backup is required"),
    (dict(backups=(model.Endpoint('10.0.0.1', '00:00:00:00:00:09', 9),)),
     'backups.ip', "service 'web': backups.ip: 10.0.0.1 is also primary.ip"),
    (dict(backups=(BACKUP, model.Endpoint('10.0.0.3', BACKUP.mac, 3))),
     'backups.mac',
     "service 'web': backups.mac: mac 00:00:00:00:00:02 is listed twice"),
    (dict(client_ports=(2,)), 'client_ports',
     "service 'web': client_ports: port 2 is also a server port"),
    (dict(monitors=('port_status', 'port_status')), 'monitors',
     "service 'web': monitors: monitor port_status is listed twice"),
    (dict(datapath_id=-1), 'datapath_id',
     "service 'web': datapath_id: -1 is not a datapath id"),
])
def test_service_errors_name_the_field(changes, field, message):
    error = refusal(lambda: service(**changes), model.ServiceDefinitionError)
    assert (error.field, error.owner, str(error)) == (
        field, "service 'web'", message)


def test_a_front_end_renames_the_fields_a_message_names():
    error = refusal(lambda: service(backups=(PRIMARY,)),
                    model.ServiceDefinitionError)
    assert error.describe(lambda field: field.replace('.', '_').upper()) == (
        'BACKUPS_IP: 10.0.0.1 is also PRIMARY_IP')


def test_endpoint_errors_name_the_attribute():
    error = refusal(lambda: model.Endpoint('10.0.0.1', 'zz', 1),
                    model.ServiceDefinitionError)
    assert (error.field, str(error)) == ('mac', "mac: 'zz' is not a MAC "
                                         'address')


@pytest.mark.parametrize('changes, field', [
    (dict(table=254), 'table'),
    (dict(connection_table=254), 'connection_table'),
    (dict(connection_table=0), 'connection_table'),
    (dict(probe_fall=0), 'probe_fall'),
    (dict(probe_rise=0), 'probe_rise'),
    (dict(probe_interval=float('nan')), 'probe_interval'),
    (dict(probe_mac='zz'), 'probe_mac'),
    (dict(cookie=0), 'cookie'),
    (dict(first_meter_id=model.METER_MAX), 'first_meter_id'),
])
def test_settings_errors_name_the_field(changes, field):
    error = refusal(lambda: model.PolicySettings(**changes),
                    model.SettingsError)
    assert error.field == field and str(error).startswith(f'{field}: ')


@pytest.mark.parametrize('field', sorted(model.SETTING_BOUNDS))
def test_a_setting_out_of_its_bounds_is_named(field):
    bounds = model.SETTING_BOUNDS[field]
    outside = [bounds.low - 1] + ([bounds.high + 1] if bounds.high else [])
    for value in outside:
        with pytest.raises(model.SettingsError, match=f'^{field}: '):
            model.PolicySettings(**{field: value})


@pytest.mark.parametrize('build, field', [
    (lambda: model.Conntrack(zone=0x10000), 'zone'),
    (lambda: model.Conntrack(zone=1, nat_dst='10.0.0.1'), 'nat_dst'),
    (lambda: model.Conntrack(zone=1, commit=True,
                             actions=[model.SetField('eth_dst', 1)]),
     'actions'),
    (lambda: model.ConntrackFlush(1, zone=-1, reply_src='10.0.0.1'), 'zone'),
    (lambda: model.ct_state(model.CT_NEW, model.CT_NEW), 'ct_state'),
    (lambda: model.Bundle(1, [model.Barrier(1)]), 'messages'),
])
def test_flow_errors_name_the_field(build, field):
    assert refusal(build, model.FlowError).field == field


def test_the_old_error_name_still_catches_every_refusal():
    assert model.ServiceError is model.ValidationError
    for error_type in (model.ServiceDefinitionError, model.SettingsError,
                       model.FlowError):
        assert issubclass(error_type, model.ServiceError)
        assert issubclass(error_type, ValueError)
    # Raised with a whole message, as the policy and plugins do.
    error = model.ServiceError("service 'web': defined twice")
    assert error.field is None
    assert error.describe() == str(error) == "service 'web': defined twice"


def test_lists_are_stored_as_tuples_so_values_compare():
    assert service(tcp_ports=[80]) == service(tcp_ports=(80,))
    mod = model.FlowMod(1, model.FlowCommand.ADD, actions=[model.Output(1)])
    assert mod.actions == (model.Output(1),) and hash(mod)


def test_group_and_meter_mods_share_their_commands():
    assert model.GroupCommand.ADD is model.MeterCommand.ADD
    assert [c.value for c in model.GroupCommand] == ['add', 'modify',
                                                     'delete']


def test_segments_and_packets_share_one_header_given_by_keyword_only():
    header = dict(eth_src='00:00:00:00:00:01', eth_dst='00:00:00:00:00:02',
                  ipv4_src='10.0.0.1', ipv4_dst='10.0.0.2', tcp_src=40000,
                  tcp_dst=80, tcp_flags=model.TCP_SYN, tcp_seq=7)
    segment = model.TcpSegment(1, 3, **header)
    packet = model.TcpPacket(3, **header)
    for name in (f.name for f in dataclasses.fields(model.TcpHeader)):
        assert getattr(segment, name) == getattr(packet, name)
    assert (segment.datapath_id, segment.out_port, packet.in_port) == (1, 3, 3)
    # A source given where a destination was meant cannot happen silently.
    with pytest.raises(TypeError):
        model.TcpPacket(3, *header.values())


def test_messages_built_in_one_step_behave_as_dataclasses_do():
    """Match, FlowMod, PacketOut and their actions fill their fields in one
    step (a connection builds a dozen): they still take the same arguments,
    compare, hash, print, stay frozen and run their checks."""
    match = model.Match(in_port=3, ipv4_src='10.1.0.1', tcp_dst=80)
    assert match == model.Match(3, None, None, None, None, '10.1.0.1',
                                tcp_dst=80)
    assert hash(match) == hash(model.Match(in_port=3, ipv4_src='10.1.0.1',
                                           tcp_dst=80))
    assert match != model.Match(in_port=3, ipv4_src='10.1.0.1', tcp_dst=81)
    assert list(match.fields()) == ['in_port', 'ipv4_src', 'tcp_dst']
    assert repr(match).startswith('Match(in_port=3, eth_src=None,')
    assert dataclasses.replace(match, tcp_dst=81).tcp_dst == 81
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.tcp_dst = 81
    with pytest.raises(TypeError):
        model.Match(tcp_port=80)
    flow = model.FlowMod(1, model.FlowCommand.ADD, match,
                         [model.Output(2)])      # a list: stored as a tuple
    assert flow.actions == (model.Output(2),) and flow.table == 0
    assert flow.match is match
    with pytest.raises(TypeError):
        model.FlowMod(1)                         # command is required
    out = model.PacketOut(1, [model.SetField('ipv4_dst', '10.0.0.2')])
    assert out.actions == (model.SetField('ipv4_dst', '10.0.0.2'),)
    assert out.in_port is model.SpecialPort.CONTROLLER
    assert model.Barrier(1) == model.Barrier(datapath_id=1)
    # A packet's header fields stay keyword-only.
    header = dict(eth_src='00:00:00:00:00:03', eth_dst='00:00:00:00:00:01',
                  ipv4_src='10.0.0.3', ipv4_dst='10.0.0.1', tcp_src=40000,
                  tcp_dst=80)
    packet = model.TcpPacket(3, **header)
    assert packet == model.TcpPacket(in_port=3, buffer_id=None, **header)
    assert (packet.tcp_flags, packet.data) == (0, b'')
    with pytest.raises(TypeError):
        model.TcpPacket(3, None, b'', *header.values())
