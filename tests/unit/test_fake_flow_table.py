"""Behaviour of the fake OpenFlow pipeline in ha_redirect.testing."""

import subprocess
import sys

import pytest

from ha_redirect import model
from ha_redirect.testing import CONTROLLER
from ha_redirect.testing import FakeFlowTable
from ha_redirect.testing import FakeFlowTableError
from ha_redirect.testing import FlowRemoved
from ha_redirect.testing import NORMAL

DPID = 0x1
COOKIE = 0x4841524400000000
ADD = model.FlowCommand.ADD
IPV4 = model.ETH_TYPE_IPV4
TCP = model.IP_PROTO_TCP

CLIENT = {'in_port': 3, 'eth_src': '00:00:00:00:00:09',
          'eth_dst': '00:00:00:00:00:01', 'eth_type': IPV4, 'ip_proto': TCP,
          'ipv4_src': '10.0.0.9', 'ipv4_dst': '10.0.0.1', 'tcp_src': 40000,
          'tcp_dst': 5001, 'tcp_flags': model.TCP_SYN}


def flow(match=model.Match(), actions=(), **kwargs):
    kwargs.setdefault('command', ADD)
    return model.FlowMod(datapath_id=DPID, match=match, actions=actions,
                         **kwargs)


def tcp_match(**fields):
    return model.Match(eth_type=IPV4, ip_proto=TCP, **fields)


@pytest.fixture
def table():
    return FakeFlowTable()


def test_table_miss_drops(table):
    assert table.process(DPID, CLIENT) == []
    assert not table.is_output(DPID, CLIENT)


def test_highest_priority_wins(table):
    table.apply([
        flow(actions=(model.Output(model.SpecialPort.NORMAL),), priority=0),
        flow(tcp_match(ipv4_dst='10.0.0.1'), (model.Output(1),),
             priority=1000),
    ])
    assert table.is_output(DPID, CLIENT, port=1)
    assert not table.is_output(DPID, CLIENT, port=NORMAL)
    other = dict(CLIENT, ipv4_dst='10.0.0.7')
    assert table.is_output(DPID, other, port=NORMAL)


def test_same_priority_overlap_is_reported(table):
    table.apply([flow(model.Match(in_port=3), (model.Output(1),), priority=5),
                 flow(model.Match(eth_type=IPV4), (model.Output(2),),
                      priority=5)])
    with pytest.raises(FakeFlowTableError, match='priority 5'):
        table.process(DPID, CLIENT)


def test_add_replaces_identical_match_and_priority(table):
    match = tcp_match(tcp_dst=5001)
    table.apply([flow(match, (model.Output(1),), priority=10, cookie=1),
                 flow(match, (model.Output(2),), priority=10, cookie=2)])
    assert [f.cookie for f in table.flows(DPID)] == [2]
    assert table.is_output(DPID, CLIENT, port=2)


def test_set_field_rewrites_what_leaves(table):
    table.apply([flow(tcp_match(ipv4_dst='10.0.0.1'), (
        model.SetField('ipv4_dst', '10.0.0.2'),
        model.SetField('eth_dst', '00:00:00:00:00:02'),
        model.Output(2)), priority=10)])
    [delivery] = table.process(DPID, CLIENT)
    assert delivery.port == 2
    assert delivery.packet['ipv4_dst'] == '10.0.0.2'
    assert delivery.packet['eth_dst'] == '00:00:00:00:00:02'
    assert delivery.packet['ipv4_src'] == '10.0.0.9'
    assert table.is_output(DPID, CLIENT, port=2, ipv4_dst='10.0.0.2')
    assert not table.is_output(DPID, CLIENT, port=2, ipv4_dst='10.0.0.1')


def test_output_before_rewrite_sees_original_packet(table):
    table.apply([flow(tcp_match(), (
        model.Output(model.SpecialPort.CONTROLLER),
        model.SetField('ipv4_dst', '10.0.0.2'), model.Output(2)))])
    to_controller, to_backup = table.process(DPID, CLIENT)
    assert to_controller.port == CONTROLLER
    assert to_controller.packet['ipv4_dst'] == '10.0.0.1'
    assert to_backup.packet['ipv4_dst'] == '10.0.0.2'


def test_in_port_output_returns_to_sender(table):
    table.apply([flow(actions=(model.Output(model.SpecialPort.IN_PORT),))])
    assert table.is_output(DPID, CLIENT, port=3)


def test_goto_continues_with_rewritten_packet(table):
    table.apply([
        flow(tcp_match(), (model.SetField('ipv4_dst', '10.0.0.2'),
                           model.GotoTable(1)), priority=10),
        flow(tcp_match(ipv4_dst='10.0.0.2'), (model.Output(2),), table=1,
             priority=10),
    ])
    assert table.is_output(DPID, CLIENT, port=2)


def test_goto_backwards_is_refused(table):
    with pytest.raises(FakeFlowTableError, match='goto_table'):
        table.apply([flow(actions=(model.GotoTable(0),))])


def test_missing_prerequisite_is_refused(table):
    with pytest.raises(FakeFlowTableError, match='ip_proto'):
        table.apply([flow(model.Match(eth_type=IPV4, tcp_dst=5001))])
    with pytest.raises(FakeFlowTableError, match='eth_type'):
        table.apply([flow(model.Match(in_port=1),
                          (model.SetField('ipv4_dst', '10.0.0.2'),))])


def test_delete_is_scoped_by_cookie_and_loose_match(table):
    table.apply([
        flow(tcp_match(tcp_dst=5001), (model.Output(1),), priority=10,
             cookie=COOKIE | 1),
        flow(tcp_match(tcp_dst=5002), (model.Output(1),), priority=10,
             cookie=COOKIE | 2),
        flow(tcp_match(tcp_dst=5001, tcp_src=40000), (model.Output(1),),
             priority=20, cookie=COOKIE | 1),
        flow(tcp_match(tcp_dst=5001), (model.Output(1),), priority=11,
             cookie=0x77),
    ])
    table.apply([flow(tcp_match(tcp_dst=5001),
                      command=model.FlowCommand.DELETE, cookie=COOKIE,
                      cookie_mask=0xffffffff00000000)])
    assert sorted(f.cookie for f in table.flows(DPID)) == [
        0x77, COOKIE | 2]


def test_delete_strict_removes_only_identical(table):
    match = tcp_match(tcp_dst=5001)
    table.apply([flow(match, (model.Output(1),), priority=10, cookie=1),
                 flow(match, (model.Output(2),), priority=11, cookie=1)])
    table.apply([flow(match, command=model.FlowCommand.DELETE_STRICT,
                      priority=10)])
    assert [f.priority for f in table.flows(DPID)] == [11]


def test_modify_strict_changes_actions_only_of_existing(table):
    match = tcp_match(tcp_dst=5001)
    table.apply([flow(match, (model.Output(1),), priority=10, cookie=5)])
    table.apply([
        flow(match, (model.Output(2),), priority=10,
             command=model.FlowCommand.MODIFY_STRICT),
        flow(match, (model.Output(3),), priority=99,
             command=model.FlowCommand.MODIFY_STRICT),
    ])
    [entry] = table.flows(DPID)
    assert (entry.priority, entry.cookie) == (10, 5)
    assert table.is_output(DPID, CLIENT, port=2)


def test_flows_filters_by_cookie_mask_and_table(table):
    table.apply([flow(priority=1, cookie=COOKIE | 1),
                 flow(priority=2, cookie=COOKIE | 2, table=1),
                 flow(priority=3, cookie=0x5)])
    upper = 0xffffffff00000000
    assert len(table.flows(DPID, cookie=COOKIE, cookie_mask=upper)) == 2
    assert len(table.flows(DPID, cookie=COOKIE | 2)) == 1
    assert [f.priority for f in table.flows(DPID, table=0)] == [3, 1]
    assert table.flows(0x99) == []


def reverse_learn(**kwargs):
    """The reverse flow of a redirected connection, learned from a client."""
    fields = dict(
        table=1, priority=1100, cookie=COOKIE | 0x100, idle_timeout=30,
        fin_idle_timeout=2,
        match_values=(('eth_type', IPV4), ('ip_proto', TCP),
                      ('ipv4_src', '10.0.0.2')),
        match_from=(('ipv4_dst', 'ipv4_src'), ('tcp_src', 'tcp_dst'),
                    ('tcp_dst', 'tcp_src')),
        set_values=(('ipv4_src', '10.0.0.1'),
                    ('eth_src', '00:00:00:00:00:01')),
        output_from='in_port')
    fields.update(kwargs)
    return model.Learn(**fields)


def redirect_with_learn(table, learn):
    """Clients' packets to the primary go to the backup and teach table 1.

    Everything else looks for a learned flow in table 1.
    """
    table.apply([
        flow(tcp_match(ipv4_dst='10.0.0.1', tcp_dst=5001), (
            learn, model.SetField('ipv4_dst', '10.0.0.2'), model.Output(2)),
            priority=1000),
        flow(tcp_match(), (model.GotoTable(1),), priority=1),
    ])


SERVER_REPLY = {'in_port': 2, 'eth_src': '00:00:00:00:00:02',
                'eth_dst': '00:00:00:00:00:09', 'eth_type': IPV4,
                'ip_proto': TCP, 'ipv4_src': '10.0.0.2',
                'ipv4_dst': '10.0.0.9', 'tcp_src': 5001, 'tcp_dst': 40000}


def test_learn_installs_the_reverse_flow(table):
    redirect_with_learn(table, reverse_learn())
    assert not table.is_output(DPID, SERVER_REPLY)
    assert table.is_output(DPID, CLIENT, port=2, ipv4_dst='10.0.0.2')
    assert table.flows(DPID, table=1) == []  # is_output does not learn
    table.process(DPID, CLIENT, now=1.0)
    [learned] = table.flows(DPID, table=1)
    assert learned.learned
    assert (learned.priority, learned.cookie, learned.idle_timeout,
            learned.fin_idle_timeout) == (1100, COOKIE | 0x100, 30, 2)
    assert learned.as_match() == model.Match(
        eth_type=IPV4, ip_proto=TCP, ipv4_src='10.0.0.2',
        ipv4_dst='10.0.0.9', tcp_src=5001, tcp_dst=40000)
    reply = table.process(DPID, dict(SERVER_REPLY, in_port=2), now=1.5)
    assert [(d.port, d.packet['ipv4_src'], d.packet['eth_src'])
            for d in reply] == [(3, '10.0.0.1', '00:00:00:00:00:01')]


def test_learn_reads_the_packet_as_rewritten_so_far(table):
    learn = reverse_learn(match_values=(('eth_type', IPV4), ('ip_proto', TCP)),
                          match_from=(('ipv4_src', 'ipv4_dst'),))
    table.apply([flow(tcp_match(), (
        model.SetField('ipv4_dst', '10.0.0.2'), learn, model.Output(2)))])
    table.process(DPID, CLIENT)
    [learned] = table.flows(DPID, table=1)
    assert learned.match['ipv4_src'] == '10.0.0.2'


def test_learn_to_fixed_port_and_relearn_replaces(table):
    redirect_with_learn(table, reverse_learn(output_from=None,
                                             output_port=7))
    table.process(DPID, CLIENT, now=0.0)
    table.process(DPID, CLIENT, now=5.0)
    [learned] = table.flows(DPID, table=1)
    assert learned.installed_at == 5.0
    assert table.is_output(DPID, SERVER_REPLY, port=7, now=6.0)


def test_learn_without_prerequisite_is_refused(table):
    with pytest.raises(FakeFlowTableError, match='learn'):
        redirect_with_learn(table, reverse_learn(match_values=()))


def test_idle_timeout_expires_unused_flows(table):
    table.apply([flow(tcp_match(), (model.Output(1),), idle_timeout=10,
                      notify_removed=True, cookie=COOKIE | 3)], now=0.0)
    assert table.process(DPID, CLIENT, now=9.0)
    assert table.process(DPID, CLIENT, now=18.0)  # used at 9: still there
    assert not table.is_output(DPID, CLIENT, now=28.0)
    assert table.expire(28.0) == [FlowRemoved(
        DPID, COOKIE | 3, tcp_match(), 'idle_timeout')]
    assert table.flows(DPID) == []


def test_hard_timeout_ignores_use(table):
    table.apply([flow(actions=(model.Output(1),), hard_timeout=5)])
    assert table.process(DPID, CLIENT, now=4.0)
    assert table.process(DPID, CLIENT, now=5.0) == []
    assert table.removed == []  # notify_removed was not asked for


def test_fin_shortens_learned_idle_timeout(table):
    redirect_with_learn(table, reverse_learn())
    table.process(DPID, CLIENT, now=0.0)
    assert table.process(DPID, SERVER_REPLY, now=1.0)
    fin = dict(SERVER_REPLY, tcp_flags=0x11)
    assert table.process(DPID, fin, now=2.0)
    assert table.is_output(DPID, SERVER_REPLY, now=3.9)
    assert not table.is_output(DPID, SERVER_REPLY, now=4.0)


def test_delete_reports_flow_removed_when_asked(table):
    table.apply([flow(tcp_match(), (model.Output(1),), cookie=COOKIE | 1,
                      notify_removed=True),
                 flow(model.Match(in_port=1), (model.Output(2),),
                      cookie=COOKIE | 1)])
    table.apply([flow(command=model.FlowCommand.DELETE, cookie=COOKIE,
                      cookie_mask=0xffffffff00000000)])
    assert table.removed == [FlowRemoved(DPID, COOKIE | 1, tcp_match(),
                                         'delete')]


def test_packet_out_and_arp_reply_are_recorded_barrier_ignored(table):
    out = model.PacketOut(DPID, (model.Output(2),), data=b'x')
    reply = model.ArpReply(DPID, 3, '00:00:00:00:00:01', '10.0.0.1',
                           '00:00:00:00:00:09', '10.0.0.9')
    table.apply([out, model.Barrier(DPID), reply])
    assert table.sent == [out, reply]


def test_addresses_compare_normalized(table):
    table.apply([flow(model.Match(eth_dst='00:00:00:00:00:0A'),
                      (model.Output(1),))])
    assert table.is_output(DPID, dict(CLIENT, eth_dst='00:00:00:00:00:0a'),
                           port=1)


def test_fake_table_does_not_import_os_ken():
    code = ("import sys; sys.modules['os_ken'] = None; "
            "import ha_redirect.testing")
    subprocess.run([sys.executable, '-c', code], check=True)


# Connection tracking.

ZONE = 7
TRACKED = model.ct_state(model.CT_TRK)


def conntrack_pipeline(table, nat_dst='10.0.0.2', out_port=2):
    """Clients' packets are tracked; new ones committed with a DNAT, mark
    and the client's port in the label; replies leave by that port."""
    commit = model.Conntrack(
        ZONE, table=2, commit=True, nat_dst=nat_dst,
        actions=(model.SetField('ct_mark', 5),
                 model.Move('in_port', 'ct_label', 16)))
    table.apply([
        flow(tcp_match(), (model.Conntrack(ZONE, table=1, nat=True),),
             priority=10),
        flow(tcp_match(ct_state=model.ct_state(model.CT_TRK | model.CT_NEW),
                       ct_mark=0), (commit,), table=1, priority=20),
        flow(tcp_match(ct_state=model.ct_state(model.CT_TRK, model.CT_RPL)),
             (model.GotoTable(2),), table=1, priority=10),
        flow(tcp_match(ct_state=model.ct_state(model.CT_TRK | model.CT_RPL)),
             (model.OutputFrom('ct_label', 16),), table=1, priority=30),
        flow(tcp_match(ct_zone=ZONE, ct_mark=5), (model.Output(out_port),),
             table=2, priority=10),
    ])


def reply_to(packet, **changes):
    return dict(packet, in_port=2, eth_src='00:00:00:00:00:02',
                eth_dst=packet['eth_src'], ipv4_src='10.0.0.2',
                ipv4_dst=packet['ipv4_src'], tcp_src=packet['tcp_dst'],
                tcp_dst=packet['tcp_src'], **changes)


def test_conntrack_commits_dnats_and_remembers_mark_and_label(table):
    conntrack_pipeline(table)
    [out] = table.process(DPID, CLIENT)
    assert (out.port, out.packet['ipv4_dst']) == (2, '10.0.0.2')
    assert out.packet['ct_state'] == model.CT_TRK | model.CT_NEW
    assert (out.packet['ct_mark'], out.packet['ct_zone']) == (5, ZONE)
    [entry] = table.connections(DPID, zone=ZONE)
    assert (entry.mark, entry.label, entry.established) == (5, 3, False)
    assert entry.reply == (TCP, '10.0.0.2', 5001, '10.0.0.9', 40000)


def test_conntrack_replies_are_un_natted_and_establish(table):
    conntrack_pipeline(table)
    table.process(DPID, CLIENT)
    [back] = table.process(DPID, reply_to(
        CLIENT, tcp_flags=model.TCP_SYN | model.TCP_ACK))
    # Out of the client's port (from ct_label), from the address it called.
    assert (back.port, back.packet['ipv4_src']) == (3, '10.0.0.1')
    assert back.packet['ct_state'] == (model.CT_TRK | model.CT_EST
                                       | model.CT_RPL)
    [out] = table.process(DPID, dict(CLIENT, tcp_flags=model.TCP_ACK))
    assert out.packet['ct_state'] == model.CT_TRK | model.CT_EST
    assert out.packet['ipv4_dst'] == '10.0.0.2'


def test_conntrack_keeps_a_connection_when_flows_change(table):
    conntrack_pipeline(table)
    table.process(DPID, CLIENT)
    # The commit would now choose another server: the connection keeps its
    # NAT and mark, since it is not new to the tracker.
    conntrack_pipeline(table, nat_dst='10.0.0.5')
    [out] = table.process(DPID, dict(CLIENT, tcp_flags=model.TCP_ACK))
    assert (out.port, out.packet['ipv4_dst']) == (2, '10.0.0.2')
    new = dict(CLIENT, tcp_src=40001)
    [out] = table.process(DPID, new)
    assert out.packet['ipv4_dst'] == '10.0.0.5'


def test_conntrack_state_of_untracked_and_unknown_packets(table):
    table.apply([flow(tcp_match(ct_state=model.ct_state(0, model.CT_TRK)),
                      (model.Conntrack(ZONE, table=1),), priority=10),
                 flow(tcp_match(ct_state=TRACKED),
                      (model.Output(model.SpecialPort.IN_PORT),), table=1)])
    [out] = table.process(DPID, CLIENT)
    assert out.packet['ct_state'] == model.CT_TRK | model.CT_NEW
    assert (out.packet['ct_mark'], out.packet['ct_label']) == (0, 0)
    assert table.connections(DPID) == []   # not committed: not remembered
    syn_ack = dict(CLIENT, tcp_flags=model.TCP_SYN | model.TCP_ACK)
    [out] = table.process(DPID, syn_ack)
    assert out.packet['ct_state'] == model.CT_TRK | model.CT_INV


def test_conntrack_zones_are_separate(table):
    conntrack_pipeline(table)
    table.process(DPID, CLIENT)
    other_zone = model.Conntrack(ZONE + 1, table=1)
    table.apply([flow(tcp_match(in_port=4), (other_zone,), priority=20)])
    table.apply([flow(tcp_match(ct_zone=ZONE + 1), (model.Output(9),),
                      table=1, priority=40)])
    [out] = table.process(DPID, dict(CLIENT, in_port=4))
    assert out.packet['ct_state'] == model.CT_TRK | model.CT_NEW


def test_conntrack_rst_ends_the_entry_and_dry_runs_change_nothing(table):
    conntrack_pipeline(table)
    assert table.is_output(DPID, CLIENT, port=2)
    assert table.connections(DPID) == []
    table.process(DPID, CLIENT)
    table.process(DPID, reply_to(CLIENT, tcp_flags=model.TCP_ACK),
                  dry_run=True)
    [entry] = table.connections(DPID)
    assert not entry.established
    table.process(DPID, reply_to(CLIENT, tcp_flags=model.TCP_RST))
    assert table.connections(DPID) == []
    table.process(DPID, CLIENT)
    table.flush_conntrack(DPID, zone=ZONE + 1)
    assert len(table.connections(DPID)) == 1
    table.flush_conntrack(DPID)
    assert table.connections(DPID) == []


def test_conntrack_recirculates_a_copy_and_the_original_goes_on(table):
    table.apply([flow(tcp_match(), (model.Conntrack(ZONE, table=1),
                                    model.Output(8)), priority=10),
                 flow(tcp_match(), (model.Output(9),), table=1)])
    deliveries = table.process(DPID, CLIENT)
    assert sorted((d.port, d.packet.get('ct_state', 0))
                  for d in deliveries) == [
        (8, 0), (9, model.CT_TRK | model.CT_NEW)]


def test_conntrack_needs_an_ipv4_match(table):
    with pytest.raises(FakeFlowTableError, match='eth_type'):
        table.apply([flow(model.Match(in_port=3),
                          (model.Conntrack(ZONE, table=1),))])


def test_a_bucket_with_ct_and_an_output_is_refused(table):
    """OVS runs buckets as action sets and silently drops the ct there."""
    group = model.GroupMod(DPID, model.GroupCommand.ADD, 1, (
        model.Bucket((model.Conntrack(ZONE, table=1, commit=True),
                      model.Output(2)), watch_port=2),))
    with pytest.raises(FakeFlowTableError, match='action set'):
        table.apply([group])


def test_a_lone_ct_bucket_commits_and_continues(table):
    conntrack_pipeline(table)
    table.apply([
        model.GroupMod(DPID, model.GroupCommand.ADD, 1, (
            model.Bucket((model.Conntrack(
                ZONE, table=2, commit=True, nat_dst='10.0.0.2',
                actions=(model.SetField('ct_mark', 5),)),), watch_port=2),)),
        flow(tcp_match(ct_state=model.ct_state(model.CT_TRK | model.CT_NEW),
                       ct_mark=0), (model.Group(1),), table=1, priority=20)])
    [out] = table.process(DPID, CLIENT)
    assert (out.port, out.packet['ipv4_dst'], out.packet['ct_mark']) == (
        2, '10.0.0.2', 5)
    table.set_port_live(DPID, 2, False)
    assert table.process(DPID, dict(CLIENT, tcp_src=40001)) == []


def test_move_and_output_from_a_field(table):
    table.apply([flow(tcp_match(), (
        model.Move('tcp_src', 'ct_label', 8, src_ofs=0, dst_ofs=8),
        model.OutputFrom('ct_label', 8, ofs=8)))])
    [out] = table.process(DPID, dict(CLIENT, tcp_src=0x1234))
    assert (out.port, out.packet['ct_label']) == (0x34, 0x3400)
    # Refused when applied, as OVS refuses the flow.
    with pytest.raises(FakeFlowTableError, match='bits'):
        table.apply([flow(tcp_match(),
                          (model.Move('tcp_src', 'ct_label', 17),))])


def test_conntrack_flush_forgets_one_zones_connections_to_a_server(table):
    conntrack_pipeline(table)
    table.process(DPID, CLIENT)
    table.apply([model.ConntrackFlush(DPID, ZONE + 1, '10.0.0.2'),
                 model.ConntrackFlush(DPID, ZONE, '10.0.0.5')])
    assert len(table.connections(DPID)) == 1
    table.apply([model.ConntrackFlush(DPID, ZONE, '10.0.0.2')])
    assert table.connections(DPID) == []
