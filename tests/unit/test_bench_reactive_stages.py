"""devtools/bench_reactive_stages: reading captures into failover stages.

The OpenFlow messages are os-ken's own serialization and the frames real
Ethernet/IPv4/TCP bytes (dpkt), split across segments the way a loopback
capture can show them; the stages are checked on a made-up failover whose
times are known.
"""

import json
import os
import struct
import subprocess
import sys

import dpkt
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
import pytest

import devtools_scripts

SCRIPT = os.path.join(devtools_scripts.DEVTOOLS, 'bench_reactive_stages')
CTL_PORT = 6653
SWITCH_PORT = 40000
CLIENT, PRIMARY, BACKUP = '10.0.0.11', '10.0.0.1', '10.0.0.2'


bench = devtools_scripts.load('bench_reactive_stages')
DP = ofproto_protocol.ProtocolDesc(version=ofp.OFP_VERSION)


def _ip(text):
    return bytes(int(x) for x in text.split('.'))


def tcp_frame(src, dst, sport, dport, flags, payload=b'', seq=1):
    tcp = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq,
                       data=payload)
    ip = dpkt.ip.IP(src=_ip(src), dst=_ip(dst), p=6, data=tcp)
    ip.len = len(ip)
    return bytes(dpkt.ethernet.Ethernet(src=b'\x00' * 5 + b'\x0b',
                                        dst=b'\x00' * 5 + b'\x01',
                                        type=0x0800, data=ip))


def arp_frame(op, sender, target):
    arp = dpkt.arp.ARP(op=op, spa=_ip(sender), tpa=_ip(target),
                       sha=b'\x00' * 5 + b'\x02', tha=b'\x00' * 6)
    return bytes(dpkt.ethernet.Ethernet(src=b'\x00' * 5 + b'\x02',
                                        dst=b'\xff' * 6, type=0x0806,
                                        data=arp))


def serialized(msg, xid=0):
    msg.xid = xid
    msg.serialize()
    return bytes(msg.buf)


def _checked_by_os_ken(cls, raw):
    """`raw`, after os-ken's parser has read it as a `cls` (os-ken cannot
    serialize the messages a switch sends, so the test packs them)."""
    msg = cls.parser(DP, raw[0], raw[1], len(raw), 0, raw)
    assert type(msg) is cls
    return raw, msg


def port_status(port_no, down):
    body = struct.pack('!B7x', ofp.OFPPR_MODIFY) + struct.pack(
        '!I4x6s2x16sIIIIIIII', port_no, b'\x00' * 6, b'p1', 0,
        ofp.OFPPS_LINK_DOWN if down else 0, 0, 0, 0, 0, 0, 0)
    raw = struct.pack('!BBHI', 4, ofp.OFPT_PORT_STATUS, 8 + len(body),
                      0) + body
    raw, msg = _checked_by_os_ken(parser.OFPPortStatus, raw)
    assert msg.desc.port_no == port_no
    assert bool(msg.desc.state & ofp.OFPPS_LINK_DOWN) == down
    return raw


def flow_mod(command, tcp_src=None, xid=0):
    fields = dict(eth_type=0x0800, ip_proto=6)
    if tcp_src is not None:
        fields['tcp_src'] = tcp_src
    return serialized(parser.OFPFlowMod(
        DP, command=command, match=parser.OFPMatch(**fields),
        out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY), xid)


def packet_in(sport):
    match = bytearray()
    parser.OFPMatch(in_port=3).serialize(match, 0)
    data = tcp_frame(CLIENT, PRIMARY, sport, 5001, 0x02)
    body = struct.pack('!IHBBQ', ofp.OFP_NO_BUFFER, len(data),
                       ofp.OFPR_ACTION, 0, 0) + bytes(match) + b'\x00' * 2
    raw = struct.pack('!BBHI', 4, ofp.OFPT_PACKET_IN,
                      8 + len(body) + len(data), 0) + body + data
    raw, msg = _checked_by_os_ken(parser.OFPPacketIn, raw)
    assert msg.data == data and msg.match['in_port'] == 3
    return raw


def packet_out(sport):
    return serialized(parser.OFPPacketOut(
        DP, buffer_id=ofp.OFP_NO_BUFFER, in_port=3,
        actions=[parser.OFPActionOutput(2)],
        data=tcp_frame(CLIENT, BACKUP, sport, 5001, 0x02)))


def barrier(reply, xid):
    cls = parser.OFPBarrierReply if reply else parser.OFPBarrierRequest
    return serialized(cls(DP), xid)


def of_segment(ts, to_switch, payload, seq):
    """A loopback frame of the OpenFlow connection."""
    sport, dport = ((CTL_PORT, SWITCH_PORT) if to_switch
                    else (SWITCH_PORT, CTL_PORT))
    return ts, tcp_frame('127.0.0.1', '127.0.0.1', sport, dport, 0x18,
                         payload, seq)


class Stream:
    """One direction's bytes, cut into segments as the test says."""

    def __init__(self, to_switch, seq=1000):
        self.to_switch, self.seq = to_switch, seq

    def send(self, ts, payload):
        frame = of_segment(ts, self.to_switch, payload, self.seq)
        self.seq += len(payload)
        return frame


def test_messages_split_and_joined_across_segments_are_reassembled():
    down = Stream(True)
    a, b = flow_mod(ofp.OFPFC_DELETE, xid=7), barrier(False, 8)
    frames = [down.send(1.0, a[:10]), down.send(1.5, a[10:] + b[:4]),
              down.send(2.0, b[4:])]
    to_switch, to_ctl = bench.openflow_events(frames, CTL_PORT)
    assert to_ctl == []
    assert [(e['ts'], e['type'], e['xid']) for e in to_switch] == [
        (1.5, ofp.OFPT_FLOW_MOD, 7), (2.0, ofp.OFPT_BARRIER_REQUEST, 8)]
    assert to_switch[0]['command'] == ofp.OFPFC_DELETE


def test_a_capture_that_starts_mid_message_skips_to_the_next_header():
    down = Stream(True)
    a, b = flow_mod(ofp.OFPFC_ADD, 43000), barrier(False, 9)
    down.send(0.5, a[:20])                  # not captured
    frames = [down.send(1.0, a[20:]), down.send(2.0, b)]
    to_switch, _ = bench.openflow_events(frames, CTL_PORT)
    assert [e['type'] for e in to_switch] == [ofp.OFPT_BARRIER_REQUEST]


def test_a_retransmitted_segment_is_not_read_twice():
    down = Stream(True)
    msg = barrier(False, 3)
    first = down.send(1.0, msg)
    again = of_segment(1.2, True, msg, down.seq - len(msg))
    to_switch, _ = bench.openflow_events([first, again], CTL_PORT)
    assert len(to_switch) == 1


def test_a_lost_segment_is_one_clear_error():
    down = Stream(True)
    frames = [down.send(1.0, barrier(False, 1))]
    down.send(1.1, barrier(False, 2))       # lost
    frames.append(down.send(1.2, barrier(False, 3)))
    with pytest.raises(bench.BadInput, match='lost 8 bytes'):
        bench.openflow_events(frames, CTL_PORT)


def test_decoded_fields_are_those_os_ken_serialized():
    ps = bench.decode_of(0.0, port_status(1, down=True))
    assert (ps['port'], ps['down']) == (1, True)
    assert bench.decode_of(0.0, port_status(1, down=False))['down'] is False
    fm = bench.decode_of(0.0, flow_mod(ofp.OFPFC_ADD, tcp_src=43210))
    assert (fm['command'], fm['ports']) == (ofp.OFPFC_ADD,
                                            {'tcp_src': 43210})
    pi = bench.decode_of(0.0, packet_in(43210))
    assert (pi['sport'], pi['dport'], pi['flags']) == (43210, 5001, 0x02)
    po = bench.decode_of(0.0, packet_out(43210))
    assert po['sport'] == 43210


def test_a_change_in_a_bundle_is_read_as_the_change():
    from ha_redirect import model
    from ha_redirect.openflow import encoder
    datapath = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)
    delete = model.FlowMod(1, model.FlowCommand.DELETE, table=255,
                           cookie=7, cookie_mask=2 ** 64 - 1)
    xids = iter(range(1, 10))
    opened, added, committed = encoder.to_wire(
        datapath, model.Bundle(1, (delete,)), xids.__next__)
    event = bench.decode_of(0.0, added[1])
    assert (event['type'], event['command'], event['bundled']) == (
        ofp.OFPT_FLOW_MOD, ofp.OFPFC_DELETE, True)
    assert bench.decode_of(0.0, opened[1])['type'] == ofp.OFPT_EXPERIMENTER


def _failover(t_cut=100.0):
    """A reactive failover whose every stage is 1 ms after the one before
    (ms after the cut in the comments)."""
    ms = 0.001
    down, up = Stream(True), Stream(False, 5000)
    p_early, p = 43100, 43200
    of = [
        up.send(t_cut + 1 * ms, packet_in(p_early)),        # 1: before PS
        up.send(t_cut + 2 * ms, port_status(1, True)),      # 2
        # the barrier of the PacketIn queued before PortStatus
        down.send(t_cut + 2.5 * ms, barrier(False, 9)),     # 2.5
        up.send(t_cut + 2.7 * ms, barrier(True, 9)),        # 2.7
        down.send(t_cut + 3 * ms, flow_mod(ofp.OFPFC_DELETE, xid=10)),
        down.send(t_cut + 4 * ms, barrier(False, 11)),      # 4
        up.send(t_cut + 5 * ms, barrier(True, 11)),         # 5
        up.send(t_cut + 6 * ms, packet_in(p)),              # 6
        down.send(t_cut + 7 * ms, flow_mod(ofp.OFPFC_ADD, p, 12)),
        down.send(t_cut + 8 * ms, flow_mod(ofp.OFPFC_ADD, p, 13)),
        down.send(t_cut + 9 * ms, barrier(False, 14)),      # 9
        down.send(t_cut + 9.5 * ms, packet_out(p)),         # 9.5
        up.send(t_cut + 10 * ms, barrier(True, 14)),        # 10
    ]
    client = [
        (t_cut + 0.5 * ms, tcp_frame(CLIENT, PRIMARY, p_early, 5001, 2)),
        (t_cut + 5.5 * ms, tcp_frame(CLIENT, PRIMARY, p, 5001, 2)),
        (t_cut + 13 * ms, tcp_frame(PRIMARY, CLIENT, 5001, p, 0x12)),
        (t_cut + 14 * ms, tcp_frame(PRIMARY, CLIENT, 5001, p, 0x18,
                                    b'backup1\n')),
    ]
    backup = [
        (t_cut + 11 * ms, tcp_frame(CLIENT, BACKUP, p, 5001, 2)),
        (t_cut + 11.1 * ms, arp_frame(1, BACKUP, CLIENT)),
        (t_cut + 12 * ms, tcp_frame(BACKUP, CLIENT, 5001, p, 0x12)),
        (t_cut + 13.2 * ms, tcp_frame(CLIENT, BACKUP, p, 5001, 0x10)),
        (t_cut + 13.5 * ms, tcp_frame(BACKUP, CLIENT, 5001, p, 0x18,
                                      b'backup1\n')),
    ]
    attempts = [
        dict(t=t_cut + 0.4 * ms, t_done=t_cut + 1.0, ok=False, who=None),
        dict(t=t_cut + 5.4 * ms, t_done=t_cut + 15 * ms, ok=True,
             who='backup1')]
    return of, client, backup, attempts


def test_a_reactive_failover_is_read_stage_by_stage():
    t_cut = 100.0
    of, client, backup, attempts = _failover(t_cut)
    to_switch, to_ctl = bench.openflow_events(of, CTL_PORT)
    stages, counts = bench.failover_stages(
        t_cut, to_switch, to_ctl, bench.tcp_segments(client),
        bench.tcp_segments(backup), [], attempts, 1, BACKUP,
        logged=t_cut + 0.0025, carrier=t_cut + 0.0003,
        backup_arp=bench.arp_frames(backup))
    got = {k: None if v is None else round(v * 1000, 3)
           for k, v in stages.items()}
    assert got == dict(
        carrier_lost=0.3, port_status=2, port_logged=2.5, reaction_first=2.5,
        deletes=3, deletes_last=3, reaction_barrier_reply=5,
        deletes_last_barrier_reply=5, packet_in=6,
        syn_of_packet_in=5.5, flow_mods_first=7, flow_mods_last=8,
        barrier_reply=10, packet_out=9.5, syn_to_backup=11,
        arp_from_backup=11.1, synack_from_backup=12, synack_at_client=13,
        ack_at_backup=13.2, data_from_backup=13.5, data_at_client=14,
        first_ok_start=5.4, gap=15)
    assert counts == dict(
        syns_cut_to_port_status=1, packet_ins_cut_to_port_status=1,
        syns_to_primary_after_port_status=0,
        packet_ins_port_status_to_synack=1, syn_transmissions_served=1,
        first_packet_in_served_first=True, prober_failed_after_cut=1)


def test_without_a_port_status_the_controller_stages_are_absent():
    t_cut = 100.0
    _, client, backup, attempts = _failover(t_cut)
    stages, _ = bench.failover_stages(
        t_cut, [], [], bench.tcp_segments(client),
        bench.tcp_segments(backup), [], attempts, 1, BACKUP)
    assert stages['port_status'] is None and stages['packet_in'] is None
    assert round(stages['synack_from_backup'] * 1000, 3) == 12


def test_carrier_loss_is_read_from_ip_monitor_after_the_cut():
    text = (
        '[2026-12-03T21:06:11.732639] 12184: s1-eth1@if3: <NO-CARRIER,'
        'BROADCAST,MULTICAST,UP,M-DOWN> mtu 1500 state LOWERLAYERDOWN\n'
        '    link/ether e6:9d:9a:1f:f3:a0 brd ff:ff:ff:ff:ff:ff\n'
        '[2026-12-03T21:06:11.740752] 12183: s1-eth2@if4: <NO-CARRIER,'
        'BROADCAST,UP> mtu 1500 state LOWERLAYERDOWN\n'
        '[2026-12-03T21:06:12.964684] 12184: s1-eth1@if3: <NO-CARRIER,'
        'BROADCAST,MULTICAST,UP,M-DOWN> mtu 1500 state LOWERLAYERDOWN\n')
    import datetime
    first = datetime.datetime.fromisoformat(
        '2026-12-03T21:06:11.732639').timestamp()
    assert bench.carrier_lost(text, 's1-eth1', first - 1) == first
    later = bench.carrier_lost(text, 's1-eth1', first + 0.5)
    assert round(later - first, 6) == 1.232045
    assert bench.carrier_lost(text, 's1-eth9', 0) is None


def _run(tmp_path, summary_runs):
    path = tmp_path / 'out.json'
    path.write_text(json.dumps(dict(runs=summary_runs)))
    return subprocess.run([sys.executable, SCRIPT, '--from-json', str(path)],
                          capture_output=True, text=True, timeout=60)


def test_summary_gives_median_min_max_and_steps_per_strategy(tmp_path):
    def run(gap, packet_in):
        stages = dict.fromkeys(bench.STAGES)
        stages.update(gap=gap, packet_in=packet_in, port_status=0.002)
        return dict(status='ok', strategy='reactive', stages=stages,
                    counts={})
    runs = [run(0.010, 0.004), run(0.030, 0.005), run(0.020, 0.009),
            dict(status='failed', strategy='reactive', reason='x')]
    summary = bench.summarize(runs)['reactive']
    assert (summary['runs'], summary['failed']) == (3, 1)
    gap = summary['stages']['gap']
    assert (round(gap['median_ms'], 6), round(gap['min_ms'], 6),
            round(gap['max_ms'], 6), gap['n']) == (20, 10, 30, 3)
    step = summary['steps']['port_status->packet_in']
    assert round(step['median_ms'], 6) == 3
    proc = _run(tmp_path, runs)
    assert proc.returncode == 0, proc.stderr
    assert 'reactive: 3 runs (1 failed)' in proc.stdout


def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{not json')
    proc = subprocess.run([sys.executable, SCRIPT, '--from-json', str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count('\n') == 1 and 'bad.json' in proc.stderr
    proc = subprocess.run([sys.executable, SCRIPT, '--strategies', 'nope'],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count('\n') == 1 and "'nope'" in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_a_file_that_is_not_a_pcap_is_named(tmp_path):
    path = tmp_path / 'x.pcap'
    path.write_bytes(b'hello world, not a capture')
    with pytest.raises(bench.BadInput, match='x.pcap: not a pcap'):
        bench.read_pcap(str(path))
