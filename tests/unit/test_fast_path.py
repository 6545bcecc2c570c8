"""PacketIns below os-ken's event queue (ha_redirect.fast_path and the
app's `take_packet_ins`): the same decisions and bytes as the queued path,
never ahead of an earlier event of the switch, bounded, and robust to bad
input. Real os-ken Datapaths and receive loops over loopback sockets where
the order of events is what is tested."""

import collections
import logging
import select
import socket
import struct
import sys
import threading
import time
import types

from os_ken.base import app_manager  # noqa: F401 (before controller)
from os_ken.controller import controller
from os_ken.controller import handler
from os_ken.controller import ofp_event
from os_ken.lib.packet import arp
from os_ken.lib.packet import ethernet
from os_ken.lib.packet import ipv4
from os_ken.lib.packet import packet
from os_ken.lib.packet import tcp
from os_ken.lib.packet import vlan
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp
import pytest

from ha_redirect import app as app_mod
from ha_redirect import fast_path
from ha_redirect import model
from ha_redirect.openflow import decoder
from ha_redirect.policy import RedirectPolicy
from ha_redirect.strategies.reactive import ReactiveStrategy
from ha_redirect import switch_io

from os_ken_fakes import RecordingDatapath

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
CLIENT_MAC, CLIENT_IP = '00:00:00:00:00:03', '10.0.0.3'


def _app():
    service = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,))
    app = app_mod.RedirectApp(redirect_policy=RedirectPolicy(
        [service], strategy=ReactiveStrategy()))
    handler.register_instance(app)      # as os-ken's AppManager does
    return app


def _tcp_frame(src_port=40000, bits=tcp.TCP_SYN, src=(CLIENT_MAC, CLIENT_IP),
               dst=(PRIMARY.mac, PRIMARY.ip), vlan_id=None, tcp_ports=None):
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(
        dst=dst[0], src=src[0], ethertype=0x8100 if vlan_id else 0x0800))
    if vlan_id:
        frame.add_protocol(vlan.vlan(vid=vlan_id, ethertype=0x0800))
    frame.add_protocol(ipv4.ipv4(src=src[1], dst=dst[1], proto=6))
    sport, dport = tcp_ports or (src_port, 5001)
    frame.add_protocol(tcp.tcp(src_port=sport, dst_port=dport, bits=bits))
    frame.serialize()
    return bytes(frame.data)


def _arp_frame():
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst='ff:ff:ff:ff:ff:ff',
                                         src=CLIENT_MAC, ethertype=0x0806))
    frame.add_protocol(arp.arp(src_mac=CLIENT_MAC, src_ip=CLIENT_IP,
                               dst_ip=PRIMARY.ip))
    frame.serialize()
    return bytes(frame.data)


def _packet_in_bytes(frame, in_port=3, xid=7, cookie=0,
                     buffer_id=ofp.OFP_NO_BUFFER, extra_oxm=b''):
    oxms = struct.pack('!II', 0x80000004, in_port) + extra_oxm
    match = struct.pack('!HH', ofp.OFPMT_OXM, 4 + len(oxms)) + oxms
    match += bytes(-len(match) % 8)
    body = (struct.pack('!IHBBQ', buffer_id, len(frame), ofp.OFPR_ACTION, 0,
                        cookie) + match + bytes(2) + frame)
    return struct.pack('!BBHI', ofp.OFP_VERSION, ofp.OFPT_PACKET_IN,
                       8 + len(body), xid) + body


def _port_status_bytes(port_no, up):
    port = struct.pack('!I4x6s2x16sIIIIIIII', port_no, bytes(6),
                       f'p{port_no}'.encode(), 0,
                       0 if up else ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0, 0)
    body = struct.pack('!B7x', ofp.OFPPR_MODIFY) + port
    return struct.pack('!BBHI', ofp.OFP_VERSION, ofp.OFPT_PORT_STATUS,
                       8 + len(body), 0) + body


def _flow_removed_bytes(in_port=7):
    match = struct.pack('!HHII', ofp.OFPMT_OXM, 12, 0x80000004, in_port)
    match += bytes(-len(match) % 8)
    body = struct.pack('!QHBBIIHHQQ', 0, 1, ofp.OFPRR_IDLE_TIMEOUT, 0, 1, 0,
                       30, 0, 1, 60) + match
    return struct.pack('!BBHI', ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED,
                       8 + len(body), 0) + body


def _os_ken_msg(datapath, raw):
    version, msg_type, length, xid = ofproto_parser.header(raw)
    return ofproto_parser.msg(datapath, version, msg_type, length, xid, raw)


FRAMES = {
    'syn': _tcp_frame(),
    'syn_vlan': _tcp_frame(40001, vlan_id=5),
    'ack': _tcp_frame(40002, bits=tcp.TCP_ACK),
    'server_rst': _tcp_frame(bits=tcp.TCP_RST | tcp.TCP_ACK,
                             src=(PRIMARY.mac, PRIMARY.ip),
                             dst=(CLIENT_MAC, CLIENT_IP),
                             tcp_ports=(5001, 40003)),
    'arp_request': _arp_frame(),
    'udp_or_other': bytes.fromhex('ffffffffffff000000000003' '86dd') + bytes(
        40),
}


@pytest.mark.parametrize('name', sorted(FRAMES))
@pytest.mark.parametrize('buffer_id,cookie', [
    (ofp.OFP_NO_BUFFER, 0), (17, 0x1234 << 32 | model.ROLE_PROBE)])
def test_packet_in_bytes_read_as_os_ken_reads_them(name, buffer_id, cookie):
    raw = _packet_in_bytes(FRAMES[name], in_port=9, cookie=cookie,
                           buffer_id=buffer_id,
                           extra_oxm=struct.pack('!IQ', 0x80000408, 5))
    msg = _os_ken_msg(RecordingDatapath(), raw)
    fields = decoder.parse_packet_in(memoryview(raw))
    assert fields == (msg.buffer_id, msg.cookie, msg.match['in_port'],
                      bytes(msg.data))
    assert decoder.decode_fields(fields) == decoder.decode_packet_in(msg)


@pytest.mark.parametrize('raw', [
    _packet_in_bytes(FRAMES['syn'])[:30],                   # short
    _packet_in_bytes(FRAMES['syn'])[:24]
    + struct.pack('!HH', ofp.OFPMT_OXM, 200) + bytes(20),   # match overruns
    _packet_in_bytes(FRAMES['syn'])[:24]
    + struct.pack('!HHI', ofp.OFPMT_OXM, 12, 0x80000010) + bytes(20),
    _packet_in_bytes(FRAMES['syn'])[:24]
    + struct.pack('!HH', 0, 8) + bytes(30),                 # not OXM
    _packet_in_bytes(FRAMES['syn'])[:24]                    # no in_port
    + struct.pack('!HHI', ofp.OFPMT_OXM, 6, 0x80000600) + bytes(32),
])
def test_a_packet_in_that_does_not_parse_is_malformed(raw):
    with pytest.raises(decoder.MalformedPacket):
        decoder.parse_packet_in(raw)


class WireDatapath(RecordingDatapath):
    """Takes bytes as os-ken's Datapath does; its frames are
    (type, xid, bytes)."""
    state = handler.MAIN_DISPATCHER

    def __init__(self):
        super().__init__()
        self.writes = []

    def send(self, buf):
        self.writes.append(bytes(buf))
        return True

    def frames(self):
        stream = b''.join(self.writes)
        frames, offset = [], 0
        while offset < len(stream):
            _, msg_type, length, xid = ofproto_parser.header(
                stream[offset:])
            frames.append((msg_type, xid, stream[offset:offset + length]))
            offset += length
        return frames


def _connect(app, datapath, primary_up=True):
    reply = ofproto_parser.msg(datapath, *_multipart_port_desc(primary_up))
    app.on_port_desc(ofp_event.EventOFPPortDescStatsReply(reply))


def _multipart_port_desc(primary_up):
    ports = b''.join(
        struct.pack('!I4x6s2x16sIIIIIIII', no, bytes(6), f'p{no}'.encode(),
                    0, 0 if up else ofp.OFPPS_LINK_DOWN, 0, 0, 0, 0, 0, 0)
        for no, up in ((1, primary_up), (2, True), (3, True), (9, True)))
    body = struct.pack('!HH4x', ofp.OFPMP_PORT_DESC, 0) + ports
    raw = struct.pack('!BBHI', ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY,
                      8 + len(body), 1) + body
    return ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, len(raw), 1, raw


@pytest.mark.parametrize('primary_up', [True, False],
                         ids=['normal', 'failed_over'])
def test_below_the_queue_sends_the_queued_paths_bytes(primary_up):
    """Every kind of PacketIn, through on_packet_in one event at a time and
    through take_packet_ins in one run: the same policy calls, the same
    messages, byte for byte and xid for xid."""
    queued, below = WireDatapath(), WireDatapath()
    apps = {'queued': _app(), 'below': _app()}
    calls = collections.defaultdict(list)
    for name, app in apps.items():
        answer = app.policy.on_packet

        def recording(dpid, decoded, now, name=name, answer=answer):
            calls[name].append(decoded)
            return answer(dpid, decoded, now)
        app.policy.on_packet = recording
    _connect(apps['queued'], queued, primary_up)
    _connect(apps['below'], below, primary_up)
    assert below.xid == queued.xid
    queued.writes.clear()
    below.writes.clear()
    raws = [_packet_in_bytes(FRAMES[name], in_port=3, xid=n)
            for n, name in enumerate(sorted(FRAMES) * 2)]
    raws += [_packet_in_bytes(_tcp_frame(41000 + n), in_port=3 + n % 2)
             for n in range(40)]
    for raw in raws:
        apps['queued'].on_packet_in(
            ofp_event.EventOFPPacketIn(_os_ken_msg(queued, raw)))
    assert apps['below'].take_packet_ins(
        below, [decoder.parse_packet_in(raw) for raw in raws])
    assert calls['below'] == calls['queued']
    assert len(calls['queued']) == len(raws) - 2     # not the IPv6 frames
    assert below.frames() == queued.frames()
    kinds = collections.Counter(t for t, _, _ in below.frames())
    assert kinds[ofp.OFPT_PACKET_OUT] >= 40 and kinds[ofp.OFPT_FLOW_MOD] >= 80
    # One write per batch of PacketIns, not one per PacketIn.
    assert len(below.writes) < len(queued.writes) / 4


def test_a_bad_frame_below_the_queue_is_logged_counted_and_passed(caplog):
    app = _app()
    datapath = WireDatapath()
    _connect(app, datapath)
    datapath.writes.clear()
    runs = [_packet_in_bytes(FRAMES['syn'][:20]),
            _packet_in_bytes(FRAMES['syn'][:40]),
            _packet_in_bytes(_tcp_frame(40100))]
    with caplog.at_level(logging.WARNING):
        assert app.take_packet_ins(
            datapath, [decoder.parse_packet_in(raw) for raw in runs])
    # Counted each, logged once: a flood must not flood the log.
    assert caplog.text.count('dropped a malformed PacketIn') == 1
    assert app.packet_ins_malformed == 2
    assert app.metrics.registry.get_sample_value(
        'ha_redirect_packet_ins_malformed_total', {'dpid': '0x1'}) == 2
    assert [t for t, _, _ in datapath.frames()] == [
        ofp.OFPT_FLOW_MOD, ofp.OFPT_FLOW_MOD, ofp.OFPT_BARRIER_REQUEST,
        ofp.OFPT_PACKET_OUT]


def test_a_policy_failure_below_the_queue_costs_only_its_packet(
        caplog, monkeypatch):
    app = _app()
    datapath = WireDatapath()
    _connect(app, datapath)
    datapath.writes.clear()
    answer = app.policy.on_packet

    def failing_once(dpid, packet, now):
        if packet.tcp_src == 40200:
            raise RuntimeError('a policy bug')
        return answer(dpid, packet, now)
    monkeypatch.setattr(app.policy, 'on_packet', failing_once)
    with caplog.at_level(logging.ERROR):
        assert app.take_packet_ins(datapath, [
            decoder.parse_packet_in(_packet_in_bytes(_tcp_frame(port)))
            for port in (40200, 40201)])
    assert 'serving on' in caplog.text
    assert [t for t, _, _ in datapath.frames()].count(
        ofp.OFPT_PACKET_OUT) == 1


# The reader alone, over a scripted socket --------------------------------

class _ScriptedSocket:
    """A socket whose reads return the given chunks, then EOF."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def recv_into(self, view):
        if not self.chunks:
            return 0
        chunk = self.chunks.pop(0)
        view[:len(chunk)] = chunk
        return len(chunk)

    def recv(self, size, *args):
        return self.chunks.pop(0) if self.chunks else b''


class _App:
    """What a SwitchReader calls, recorded; takes runs while `taking`."""

    def __init__(self, taking=True):
        self.taking = taking
        self.taken, self.shed, self.malformed = [], collections.Counter(), []

    def take_packet_ins(self, datapath, packet_ins):
        if self.taking:
            self.taken.append([f.in_port for f in packet_ins])
        return self.taking

    def exempt_from_total(self, fields):
        return fields.cookie == 0xfee

    def shed_packet_ins(self, datapath, shed):
        self.shed.update(shed)

    def malformed_packet_in(self, datapath, error):
        self.malformed.append(str(error))


def _read_all(reader):
    out = []
    while True:
        data = reader.recv(8)
        if not data:
            return out
        out.append(data)


def test_the_reader_hands_other_messages_on_and_waits_behind_them():
    pi = [_packet_in_bytes(FRAMES['syn'], in_port=n) for n in range(10, 16)]
    status = _port_status_bytes(1, False)
    echo = struct.pack('!BBHI', 4, ofp.OFPT_ECHO_REQUEST, 8, 3)
    stream = pi[0] + pi[1] + status + echo + pi[2] + pi[3] + status + pi[4]
    app = _App()
    # Split mid-message, to be framed across reads.
    reader = fast_path.SwitchReader(
        _ScriptedSocket([stream[:100], stream[100:]]), None, app, 100, 32)
    assert _read_all(reader) == [status, echo, status]
    # Each run stopped at the message ahead of it, until os-ken had it.
    assert app.taken == [[10, 11], [12, 13], [14]]


def test_declined_packet_ins_reach_os_ken_in_order():
    pi = [_packet_in_bytes(FRAMES['syn'], in_port=n) for n in range(10, 14)]
    status = _port_status_bytes(1, False)
    reader = fast_path.SwitchReader(
        _ScriptedSocket([pi[0] + pi[1] + status + pi[2] + pi[3]]), None,
        _App(taking=False), 100, 32)
    assert b''.join(_read_all(reader)) == pi[0] + pi[1] + status + pi[2] + (
        pi[3])


def test_the_reader_bounds_what_waits_and_sheds_the_rest():
    one_port = [_packet_in_bytes(FRAMES['syn'], in_port=3)] * 50
    others = [_packet_in_bytes(FRAMES['syn'], in_port=4 + n % 5)
              for n in range(150)]
    probes = [_packet_in_bytes(FRAMES['syn'], in_port=20, cookie=0xfee)] * 5
    app = _App()
    reader = fast_path.SwitchReader(
        _ScriptedSocket([b''.join(one_port + others + probes)]), None, app,
        100, 32)
    assert _read_all(reader) == []
    taken = collections.Counter(port for run in app.taken for port in run)
    # 32 from the flooding port, the others up to 100 in all, and the
    # probe replies on top.
    assert taken[3] == 32 and sum(taken.values()) == 105
    assert taken[20] == 5
    assert app.shed[3] == 18 and sum(app.shed.values()) == 205 - 105


def test_a_crafted_packet_in_is_dropped_and_the_rest_read():
    good = _packet_in_bytes(FRAMES['syn'], in_port=3)
    crafted = good[:24] + struct.pack('!HH', ofp.OFPMT_OXM, 400) + good[28:]
    app = _App()
    reader = fast_path.SwitchReader(_ScriptedSocket([crafted + good]), None,
                                    app, 100, 32)
    assert _read_all(reader) == []
    assert app.taken == [[3]] and len(app.malformed) == 1


def test_a_failing_app_callback_does_not_end_the_switchs_reading():
    """os-ken's receive loop catches only socket errors: whatever the app
    raises while the reader frames PacketIns must stay in the reader."""
    class Failing(_App):
        def malformed_packet_in(self, datapath, error):
            raise RuntimeError('metrics broke')

        def shed_packet_ins(self, datapath, shed):
            raise RuntimeError('metrics broke')

    good = _packet_in_bytes(FRAMES['syn'], in_port=3)
    crafted = good[:24] + struct.pack('!HH', ofp.OFPMT_OXM, 400) + good[28:]
    app = Failing()
    reader = fast_path.SwitchReader(
        _ScriptedSocket([crafted + good * 3]), None, app, 100, 2)
    assert _read_all(reader) == []
    assert app.taken == [[3, 3]]        # the third was shed


def _socket_pair():
    """(ours, theirs): ours with a timeout, as os-ken sets one."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5.0)
    return ours, theirs


def test_packet_ins_right_behind_the_only_message_handed_on_are_taken():
    """While os-ken delivers a message that came alone, its handler may take
    the PacketIns read behind it, up to the next other message; with
    nothing to read it returns at once (os-ken's socket has a timeout)."""
    pi = [_packet_in_bytes(FRAMES['syn'], in_port=n) for n in range(10, 13)]
    status = _port_status_bytes(1, False)
    removed = _flow_removed_bytes()
    ours, theirs = _socket_pair()
    with ours, theirs:
        app = _App()
        reader = fast_path.SwitchReader(ours, None, app, 100, 32)
        theirs.sendall(status)
        assert reader.packet_ins_behind() == []     # nothing handed on yet
        assert reader.recv(8) == status
        started = time.monotonic()
        assert reader.packet_ins_behind() == []     # nothing came yet
        assert time.monotonic() - started < 0.5
        theirs.sendall(pi[0] + pi[1] + removed + pi[2])
        _wait(lambda: select.select([ours], [], [], 0)[0])
        assert [f.in_port for f in reader.packet_ins_behind()] == [10, 11]
        assert reader.packet_ins_behind() == []     # the FlowRemoved is next
        assert reader.recv(8) == removed
        assert app.taken == []
        theirs.close()
        assert reader.recv(8) == b''
        assert app.taken == [[12]]


def test_no_packet_in_overtakes_a_message_ahead_of_it():
    """Two messages read at once go to os-ken one at a time: while the
    first is handled, a PacketIn behind the second waits for it; while the
    second is, the PacketIn may be taken."""
    pi = _packet_in_bytes(FRAMES['syn'], in_port=10)
    noop = _port_status_bytes(1, True)
    down = _port_status_bytes(1, False)
    app = _App()
    ours, theirs = _socket_pair()
    with ours, theirs:
        reader = fast_path.SwitchReader(ours, None, app, 100, 32)
        theirs.sendall(noop + down + pi)
        assert reader.recv(8) == noop
        assert reader.packet_ins_behind() == []
        assert reader.recv(8) == down
        assert [f.in_port for f in reader.packet_ins_behind()] == [10]
        theirs.close()
        assert _read_all(reader) == [] and app.taken == []


def _onf_bytes(exp_type, xid):
    """An OpenFlow 1.3 ONF experimenter message (2300: bundle control)."""
    body = struct.pack('!IIIHH', 0x4f4e4600, exp_type, 7, 1, 3)
    return struct.pack('!BBHI', 4, 4, 8 + len(body), xid) + body


@pytest.mark.parametrize('passed,stop', [
    # Every answer to a new connection ends in a barrier: their replies
    # keep coming during a burst. The FlowRemoved the app handles.
    ((struct.pack('!BBHI', 4, ofp.OFPT_BARRIER_REPLY, 8, 5),
      struct.pack('!BBHI', 4, ofp.OFPT_ECHO_REQUEST, 8, 6)),
     _flow_removed_bytes()),
    # A burst's chunks go as bundles: the switch's open and commit replies
    # (one held a SYN back for a thousand services' burst). An
    # experimenter message of another kind is not passed.
    ((_onf_bytes(2300, 5), _onf_bytes(2300, 6)), _onf_bytes(2399, 7)),
], ids=['barrier_replies_and_echoes', 'bundle_replies'])
def test_packet_ins_behind_stateless_messages_are_taken_too(passed, stop):
    """Messages that tell nothing of the switch's state must not hold the
    next SYNs back. They still reach os-ken, in their order."""
    pi = [_packet_in_bytes(FRAMES['syn'], in_port=n) for n in (10, 11, 12)]
    status = _port_status_bytes(1, False)
    ours, theirs = _socket_pair()
    with ours, theirs:
        app = _App()
        reader = fast_path.SwitchReader(ours, None, app, 100, 32)
        theirs.sendall(status + passed[0] + pi[0] + passed[1] + pi[1]
                       + stop + pi[2])
        assert reader.recv(8) == status
        # Up to the message that stops them: not past it.
        assert [f.in_port for f in reader.packet_ins_behind()] == [10, 11]
        assert reader.recv(8) == passed[0]
        assert reader.recv(8) == passed[1]
        assert reader.recv(8) == stop
        theirs.close()
        assert _read_all(reader) == [] and app.taken == [[12]]


class _Listeners:
    """A datapath whose os-ken brick has these observers and handlers."""

    def __init__(self, observers=None, handlers=None):
        self.ofp_brick = types.SimpleNamespace(
            observers=observers or {}, event_handlers=handlers or {})


def _barrier_reply(xid):
    return struct.pack('!BBHI', 4, ofp.OFPT_BARRIER_REPLY, 8, xid)


def test_barrier_replies_nothing_would_receive_are_left_out():
    """One barrier per new connection: a reply nothing receives would cost
    os-ken a parse and the PacketIns behind it a turn of its loop."""
    pi = [_packet_in_bytes(FRAMES['syn'], in_port=n) for n in (10, 11)]
    echo = struct.pack('!BBHI', 4, ofp.OFPT_ECHO_REQUEST, 8, 6)
    stream = (_barrier_reply(1) + pi[0] + _barrier_reply(2) + pi[1]
              + _barrier_reply(3) + echo + _barrier_reply(4))
    app = _App()
    reader = fast_path.SwitchReader(_ScriptedSocket([stream]), _Listeners(),
                                    app, 100, 32)
    assert _read_all(reader) == [echo]
    # No message stood between the two PacketIns: one run.
    assert app.taken == [[10, 11]]


@pytest.mark.parametrize('listeners', [
    _Listeners(observers={ofp_event.EventOFPBarrierReply: {'other': set()}}),
    _Listeners(handlers={ofp_event.EventOFPBarrierReply: [print]}),
    None,       # a datapath without os-ken's brick: as before
], ids=['an app observes them', 'a handler takes them', 'no brick'])
def test_barrier_replies_someone_receives_reach_os_ken_in_order(listeners):
    pi = _packet_in_bytes(FRAMES['syn'], in_port=10)
    stream = _barrier_reply(1) + pi + _barrier_reply(2)
    app = _App()
    reader = fast_path.SwitchReader(_ScriptedSocket([stream]), listeners,
                                    app, 100, 32)
    assert _read_all(reader) == [_barrier_reply(1), _barrier_reply(2)]
    assert app.taken == [[10]]


def test_declined_packet_ins_ahead_of_a_message_keep_it_from_taking():
    """PacketIns the app declined go to os-ken with the message behind
    them: that message is not alone, so nothing is taken behind it."""
    pi = [_packet_in_bytes(FRAMES['syn'], in_port=n) for n in (10, 11)]
    status = _port_status_bytes(1, False)
    ours, theirs = _socket_pair()
    with ours, theirs:
        reader = fast_path.SwitchReader(ours, None, _App(taking=False), 100,
                                        32)
        theirs.sendall(pi[0] + status + pi[1])
        assert reader.recv(8) == pi[0] + status
        assert reader.packet_ins_behind() == []


def test_a_message_too_short_to_frame_goes_to_os_ken_raw():
    good = _packet_in_bytes(FRAMES['syn'], in_port=3)
    bad = struct.pack('!BBHI', 4, 0, 4, 0)
    app = _App()
    reader = fast_path.SwitchReader(
        _ScriptedSocket([good + bad + good, good]), None, app, 100, 32)
    assert b''.join(_read_all(reader)) == bad + good + good
    assert app.taken == [[3]]


def test_os_ken_s_own_loop_over_the_reader_delivers_every_message_in_order():
    """40 PacketIns the app declines, one split across reads: os-ken's own
    receive loop delivers each once, in order."""
    with socket.create_server(('127.0.0.1', 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    datapath = controller.Datapath(ours, ('127.0.0.1', 6653))
    datapath.set_version(ofp.OFP_VERSION)
    datapath.ofp_brick = brick = _Recorder()
    datapath.set_state(handler.MAIN_DISPATCHER)
    datapath.socket = fast_path.SwitchReader(datapath.socket, datapath,
                                             _App(taking=False), 100, 32)
    stream = b''.join(_packet_in_bytes(_tcp_frame(port), xid=port)
                      for port in range(40000, 40040))
    reader = threading.Thread(target=datapath._recv_loop)
    reader.start()
    theirs.sendall(stream[:1000])
    time.sleep(0.05)
    theirs.sendall(stream[1000:])
    theirs.close()
    reader.join(10)
    assert [ev.msg.xid for ev in brick.events
            if isinstance(ev, ofp_event.EventOFPPacketIn)] == list(
        range(40000, 40040))
    ours.close()


class _Recorder:
    """os-ken's ofp_event brick, keeping the events."""

    def __init__(self):
        self.events = []

    def send_event_to_observers(self, ev, state):
        self.events.append(ev)

    def get_handlers(self, ev):
        return []


# The app, under os-ken's own receive loop over a socket --------------------

class _Brick:
    """os-ken's ofp_event brick: hands each event to the app."""

    def __init__(self, app):
        self.app = app

    def send_event_to_observers(self, ev, state):
        self.app._send_event(ev, state)

    def get_handlers(self, ev):
        return []


def _drain(app):
    """Run the app's own event loop over what is queued, then return."""
    app.is_active = False
    app._send_event(app._event_stop, None)
    app._event_loop()
    app.is_active = True


class _Switch:
    """A real os-ken Datapath of dpid 1 in MAIN, over loopback; what it
    would send is recorded as bytes."""

    def __init__(self, app):
        with socket.create_server(('127.0.0.1', 0)) as server:
            self.theirs = socket.create_connection(server.getsockname())
            ours, _ = server.accept()
        self.datapath = datapath = controller.Datapath(ours, ('127.0.0.1',
                                                              6653))
        datapath.set_version(ofp.OFP_VERSION)
        datapath.id = 1
        self.writes = []
        datapath.send = self._record
        datapath.ofp_brick = _Brick(app)
        datapath.set_state(handler.CONFIG_DISPATCHER)
        features = ofproto_parser.msg(datapath, ofp.OFP_VERSION,
                                      ofp.OFPT_FEATURES_REPLY, 32, 1,
                                      struct.pack('!BBHIQIBB2xII', 4, 6, 32,
                                                  1, 1, 0, 254, 0, 0, 0))
        datapath.ofp_brick.send_event_to_observers(
            ofp_event.EventOFPSwitchFeatures(features),
            handler.CONFIG_DISPATCHER)
        datapath.set_state(handler.MAIN_DISPATCHER)
        _drain(app)
        _connect(app, datapath)
        self.reader = threading.Thread(target=datapath._recv_loop)
        self.reader.start()

    def _record(self, buf, close_socket=False):
        self.writes.append(bytes(buf))
        return True

    def forward_ports(self):
        """Where each pinned client connection's first FlowMod sends it."""
        stream = b''.join(self.writes)
        ports, offset = [], 0
        while offset < len(stream):
            _, msg_type, length, _ = ofproto_parser.header(stream[offset:])
            msg = stream[offset:offset + length]
            offset += length
            if msg_type != ofp.OFPT_FLOW_MOD or msg[25] != ofp.OFPFC_ADD:
                continue
            match_length = struct.unpack_from('!H', msg, 50)[0]
            match = msg[48:48 + match_length]
            if struct.pack('!IH', 0x80001c02, 5001) not in match or (
                    struct.pack('!I4s', 0x80001604,
                                socket.inet_aton(CLIENT_IP)) not in match):
                continue        # not a client's forward flow
            actions = msg[48 + (match_length + 7) // 8 * 8 + 8:]
            ports.append(struct.unpack_from('!I', actions,
                                            len(actions) - 12)[0])
        return ports

    def close(self):
        self.theirs.close()
        self.reader.join(10)
        self.datapath.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.005)


def test_the_features_reply_puts_the_reader_under_os_ken():
    app = _app()
    with _Switch(app) as switch:
        assert isinstance(switch.datapath.socket, fast_path.SwitchReader)


def test_a_packet_in_is_handled_in_the_receive_thread_when_nothing_waits():
    app = _app()
    with _Switch(app) as switch:
        switch.writes.clear()
        switch.theirs.sendall(_packet_in_bytes(_tcp_frame(40300)))
        # The app's event loop does not run: only the receive thread can
        # have answered.
        _wait(lambda: switch.forward_ports())
        assert switch.forward_ports() == [PRIMARY.port]
        assert app.events.empty()


def test_a_port_status_ahead_of_a_packet_in_is_applied_first():
    """PortStatus(primary down) and a SYN in one write, nothing queued:
    both are handled in the receive thread, the SYN after the PortStatus,
    so it goes to the backup."""
    app = _app()
    with _Switch(app) as switch:
        switch.writes.clear()
        switch.theirs.sendall(_port_status_bytes(1, False)
                              + _packet_in_bytes(_tcp_frame(40400)))
        _wait(lambda: switch.forward_ports())
        assert switch.forward_ports() == [BACKUP.port]
        assert app.events.empty()


def _types(stream):
    offset = 0
    while offset < len(stream):
        _, msg_type, length, _ = ofproto_parser.header(stream[offset:])
        yield msg_type
        offset += length


def test_a_syn_that_arrives_during_a_burst_is_answered_between_chunks():
    """A link down moves three services (three chunks of changes). A SYN
    that reaches the controller after the first chunk is answered before
    the rest are sent, pinned to the backup: it waits for one service's
    changes, not for all of them."""
    services = [model.Service(f'web{n}', 1, (5001 + n,), PRIMARY, (BACKUP,))
                for n in range(3)]
    app = app_mod.RedirectApp(redirect_policy=RedirectPolicy(
        services, strategy=ReactiveStrategy()))
    handler.register_instance(app)
    real = app.policy.on_port_status_in_chunks
    syn = _packet_in_bytes(_tcp_frame(40450))
    sent_at = []

    def slow_chunks(*args):
        for chunk in real(*args):
            if not sent_at:
                # The SYN arrives while the first chunk is being made.
                switch.theirs.sendall(syn)
                sent_at.append(len(switch.writes))
                time.sleep(0.2)     # it is in our socket by then
            yield chunk

    app.policy.on_port_status_in_chunks = slow_chunks
    with _Switch(app) as switch:
        switch.writes.clear()
        switch.theirs.sendall(_port_status_bytes(1, False))
        _wait(lambda: switch.forward_ports())
        _wait(lambda: app.policy.active_server('web2') == BACKUP)
        assert switch.forward_ports() == [BACKUP.port]
        # The first chunk, then the SYN's answer, then the other chunks,
        # closed by the burst's barrier.
        assert sent_at == [0]
        client = struct.pack('!I4s', 0x80001604, socket.inet_aton(CLIENT_IP))
        assert [client in write for write in switch.writes] == [
            False, True, False]
        assert list(_types(switch.writes[0])) == [ofp.OFPT_FLOW_MOD] * 3
        assert list(_types(switch.writes[2]))[-1] == ofp.OFPT_BARRIER_REQUEST


def test_a_crafted_packet_in_leaves_the_connection_up(caplog):
    app = _app()
    with _Switch(app) as switch:
        good = _packet_in_bytes(_tcp_frame(40500))
        crafted = good[:24] + struct.pack('!HH', ofp.OFPMT_OXM, 9000) + (
            good[28:])
        switch.writes.clear()
        with caplog.at_level(logging.WARNING):
            switch.theirs.sendall(crafted)
            switch.theirs.sendall(good)
            _wait(lambda: switch.forward_ports())
        assert switch.reader.is_alive()
        assert 'dropped a malformed PacketIn' in caplog.text
        assert app.packet_ins_malformed == 1


def test_a_flood_below_the_queue_is_shed_counted_and_logged(caplog):
    app = _app()
    with _Switch(app) as switch:
        flood = b''.join(_packet_in_bytes(_tcp_frame(41000 + n), in_port=3)
                         for n in range(400))
        with app._policy_lock, caplog.at_level(logging.WARNING):
            # The policy is busy: everything arrives before any is handled.
            switch.theirs.sendall(flood)
            _wait(lambda: app.metrics.packet_ins_dropped._value.get() > 0)
        _wait(lambda: len(switch.forward_ports()) + (
            app.metrics.packet_ins_dropped._value.get()) >= 400)
        handled = len(switch.forward_ports())
        assert handled >= app_mod.PACKET_IN_BACKLOG_PER_PORT
        assert handled + app.metrics.packet_ins_dropped._value.get() == 400
        assert 'overloaded: dropped' in caplog.text


def test_a_port_status_is_handled_in_the_receive_thread_when_nothing_waits():
    app = _app()
    with _Switch(app) as switch:
        switch.theirs.sendall(_port_status_bytes(1, False))
        _wait(lambda: app.policy.active_server('web') == BACKUP)
        assert app.events.empty()


@pytest.mark.parametrize('syn_first', [True, False])
def test_behind_a_queued_event_the_port_status_and_syn_keep_their_order(
        syn_first):
    """A FlowRemoved queues (it is not handled in place); the SYN and the
    PortStatus(primary down) behind it queue too, in the order they came.
    The app's event loop does not run while they are read."""
    app = _app()
    with _Switch(app) as switch:
        switch.writes.clear()
        syn = _packet_in_bytes(_tcp_frame(40600))
        down = _port_status_bytes(1, False)
        switch.theirs.sendall(_flow_removed_bytes()
                              + (syn + down if syn_first else down + syn))
        _wait(lambda: app.events.qsize() == 3)
        assert app.policy.active_server('web') == PRIMARY
        assert switch.forward_ports() == []
        _drain(app)
        assert switch.forward_ports() == [
            PRIMARY.port if syn_first else BACKUP.port]
        assert app.policy.active_server('web') == BACKUP


def test_a_queued_event_holds_back_only_its_own_switch():
    """Switch 1 has an event in the queue: its PacketIns queue behind it;
    switch 2's are still handled below the queue. Once the queue is
    drained, switch 1's are too."""
    services = [model.Service(name, dpid, (5001,), PRIMARY, (BACKUP,))
                for name, dpid in (('web', 1), ('web2', 2))]
    app = app_mod.RedirectApp(redirect_policy=RedirectPolicy(
        services, strategy=ReactiveStrategy()))
    handler.register_instance(app)
    one, two = WireDatapath(), WireDatapath()
    one.id, two.id = 1, 2
    _connect(app, one)
    _connect(app, two)
    removed = _os_ken_msg(one, _flow_removed_bytes())
    app._send_event(ofp_event.EventOFPFlowRemoved(removed),
                    handler.MAIN_DISPATCHER)
    syn = [decoder.parse_packet_in(_packet_in_bytes(_tcp_frame(40700)))]
    assert not app.take_packet_ins(one, syn)
    assert app.take_packet_ins(two, syn)
    _drain(app)
    assert app.take_packet_ins(one, syn)


def test_the_app_shortens_python_s_default_gil_switch_interval():
    """os-ken writes from a thread of its own: at Python's 5 ms, each
    chunk of a burst waited that long to be written."""
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(app_mod.PYTHON_SWITCH_INTERVAL)
        app_mod.shorten_gil_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(
            app_mod.GIL_SWITCH_INTERVAL)
        # A process that chose its own keeps it.
        sys.setswitchinterval(0.002)
        app_mod.shorten_gil_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


# What the app sends: written at once by the thread that made it, never
# ahead of a buffer queued before it.

def _read_exactly(sock, size):
    data = b''
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, 'connection closed'
        data += chunk
    return data


def test_with_nothing_queued_what_the_app_sends_is_written_at_once():
    ours, theirs = _socket_pair()
    queued = []
    datapath = types.SimpleNamespace(id=1, send=lambda buf, **_: queued
                                     .append(buf) or True)
    with ours, theirs:
        reader = fast_path.SwitchReader(ours, datapath, None, 100, 32)
        assert reader.write_now(b'first')
        assert _read_exactly(theirs, 5) == b'first'
        # os-ken's queue takes the next: nothing may overtake it ...
        datapath.send(b'queued')
        assert not reader.write_now(b'second')
        assert queued == [b'queued']
        # ... until its send thread has written it.
        reader.sendall(b'queued')
        assert reader.write_now(b'third')
        assert _read_exactly(theirs, 11) == b'queuedthird'


def test_a_write_the_switch_cannot_take_ends_its_connection_not_the_app(
        caplog):
    ours, theirs = _socket_pair()
    datapath = types.SimpleNamespace(id=1, send=lambda buf, **_: True)
    with ours:
        reader = fast_path.SwitchReader(ours, datapath, None, 100, 32)
        theirs.close()
        # No exception reaches the caller: the write is done with.
        assert reader.write_now(b'x' * (1 << 20))
        assert 'closing its connection' in caplog.text
        # The connection is shut: os-ken's receive loop sees its end.
        assert ours.recv(1) == b''


def test_a_reader_with_no_queue_to_count_never_writes_itself():
    ours, theirs = _socket_pair()
    with ours, theirs:
        reader = fast_path.SwitchReader(ours, None, None, 100, 32)
        assert not reader.write_now(b'x')


def test_writes_and_os_ken_s_send_thread_keep_the_order_they_were_sent_in():
    """A real os-ken Datapath and its send thread: one thread sends 2,000
    numbered buffers, alternately queued (os-ken's send, as its own
    messages go) and written (`switch_io.write`); the switch reads them
    in that order, none torn."""
    with socket.create_server(('127.0.0.1', 0)) as server:
        theirs = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
    datapath = controller.Datapath(ours, ('127.0.0.1', 6653))
    reader = fast_path.SwitchReader(datapath.socket, datapath, None, 100, 32)
    datapath.socket = reader
    sender = threading.Thread(target=datapath._send_loop)
    sender.start()
    count, size = 2000, 64
    received = []

    def read():
        for _ in range(count):
            received.append(_read_exactly(theirs, size))
    switch = threading.Thread(target=read)
    switch.start()
    try:
        for n in range(count):
            buf = struct.pack('!I', n) * (size // 4)
            if n % 2:
                switch_io.write(datapath, buf)
            else:
                datapath.send(buf)
        switch.join(20)
        assert [struct.unpack('!I', r[:4])[0] for r in received] == list(
            range(count))
        assert all(r == r[:4] * (size // 4) for r in received)
    finally:
        datapath.send(b'', close_socket=True)
        sender.join(10)
        theirs.close()


# A burst paced by the switch's replies --------------------------------------

def _frames(writes):
    """(type, xid, bytes) of every OpenFlow message written, in order."""
    stream, frames, offset = b''.join(writes), [], 0
    while offset < len(stream):
        _, msg_type, length, xid = ofproto_parser.header(stream[offset:])
        frames.append((msg_type, xid, stream[offset:offset + length]))
        offset += length
    return frames


def _barrier_reply_bytes(xid):
    return struct.pack('!BBHI', ofp.OFP_VERSION, ofp.OFPT_BARRIER_REPLY, 8,
                       xid)


def _many_services_app(count):
    services = [model.Service(f'web{n}', 1, (5001 + n,), PRIMARY, (BACKUP,))
                for n in range(count)]
    app = app_mod.RedirectApp(redirect_policy=RedirectPolicy(
        services, strategy=ReactiveStrategy()))
    handler.register_instance(app)
    return app


def _all_moved(app, count):
    return all(app.policy.active_server(f'web{n}') == BACKUP
               for n in range(count))


def test_a_burst_waits_for_the_switch_to_process_each_chunk():
    """A link down moves 40 services. Past the first few chunks, each
    chunk ends in a barrier request, and the chunk after next waits for
    its reply: the switch never holds more than two chunks of ours
    unprocessed. A SYN that arrives while the burst waits is answered at
    once, pinned to the backup. Chunks of several services' changes go as
    bundles."""
    app = _many_services_app(40)
    with _Switch(app) as switch:
        switch.writes.clear()
        switch.theirs.sendall(_port_status_bytes(1, False))
        replied = []
        syn_sent = False
        deadline = time.monotonic() + 10
        while not _all_moved(app, 40):
            assert time.monotonic() < deadline, 'the burst did not end'
            time.sleep(0.02)
            frames = _frames(switch.writes)
            barriers = [xid for msg_type, xid, _ in frames
                        if msg_type == ofp.OFPT_BARRIER_REQUEST]
            if len(barriers) == len(replied):
                continue
            # Waiting on the switch: nothing written after its barrier.
            assert frames[-1][0] == ofp.OFPT_BARRIER_REQUEST
            if not syn_sent:
                written = len(switch.writes)
                switch.theirs.sendall(_packet_in_bytes(_tcp_frame(40700)))
                _wait(lambda: switch.forward_ports())
                assert switch.forward_ports() == [BACKUP.port]
                # The answer, and nothing of the burst, came meanwhile.
                assert len(switch.writes) == written + 1
                syn_sent = True
            # As a switch does: every barrier answered, in order.
            for xid in barriers[len(replied):]:
                replied.append(xid)
                switch.theirs.sendall(_barrier_reply_bytes(xid))
        assert len(replied) >= 3
        kinds = [msg_type for msg_type, _, _ in _frames(switch.writes)]
        # The first chunk (one service) as it is; the rest bundled.
        assert kinds[0] == ofp.OFPT_FLOW_MOD
        assert ofp.OFPT_EXPERIMENTER in kinds     # OpenFlow 1.3's bundles


def test_a_switch_that_does_not_reply_gets_the_rest_of_the_burst(caplog):
    """No barrier reply ever comes: the burst waits once, for at most
    BURST_PACE_TIMEOUT, says so in one line, and sends the rest."""
    app = _many_services_app(40)
    with _Switch(app) as switch, caplog.at_level(logging.INFO):
        switch.writes.clear()
        start = time.monotonic()
        switch.theirs.sendall(_port_status_bytes(1, False))
        _wait(lambda: _all_moved(app, 40))
        _wait(lambda: 'no barrier reply within' in caplog.text)
        elapsed = time.monotonic() - start
        barriers = [f for f in _frames(switch.writes)
                    if f[0] == ofp.OFPT_BARRIER_REQUEST]
    # The one it waited for, the one behind the next chunk, and the
    # burst's own last.
    assert len(barriers) == 3
    assert app_mod.BURST_PACE_TIMEOUT <= elapsed < 2
    assert caplog.text.count('no barrier reply within') == 1


def test_a_small_burst_does_not_wait_for_the_switch():
    """Three services' changes: fewer than BURST_PACE_MESSAGES, so no
    barrier of ours and nothing to wait for."""
    app = _many_services_app(3)
    with _Switch(app) as switch:
        switch.writes.clear()
        switch.theirs.sendall(_port_status_bytes(1, False))
        _wait(lambda: _all_moved(app, 3))
        time.sleep(0.05)
        assert ofp.OFPT_BARRIER_REQUEST not in [
            f[0] for f in _frames(switch.writes)[:-1]]


def test_the_reader_sees_the_reply_it_waits_for_and_passes_the_rest_on():
    ours, theirs = _socket_pair()
    datapath = types.SimpleNamespace(id=1, send=lambda buf, **_: True)
    with ours, theirs:
        reader = fast_path.SwitchReader(ours, datapath, _App(taking=False),
                                        100, 32)
        assert reader.can_wait_for_switch()
        reader.expect_barrier_reply(9)
        reader.expect_barrier_reply(11)
        deadline = time.monotonic() + 5
        # Another barrier's reply and a PacketIn: more may come.
        theirs.sendall(_barrier_reply_bytes(8))
        assert reader.wait_for_switch(9, deadline) is None
        theirs.sendall(_packet_in_bytes(_tcp_frame(40800), xid=5)
                       + _barrier_reply_bytes(9) + _barrier_reply_bytes(11))
        while True:
            done = reader.wait_for_switch(9, deadline)
            if done is not None:
                break
        assert done is True
        # The later reply came in the same read: it is not waited for.
        assert reader.wait_for_switch(11, time.monotonic()) is True
        # Nothing was lost: all three still reach os-ken, in order.
        xids = []
        while len(xids) < 4:
            xids += [xid for _, xid, _ in _frames([reader.recv(1 << 16)])]
        assert xids == [8, 5, 9, 11]
        # Past the deadline, or once the switch has closed: False.
        reader.expect_barrier_reply(10)
        assert reader.wait_for_switch(10, time.monotonic() + 0.05) is False
        theirs.close()
        assert reader.wait_for_switch(10, time.monotonic() + 5) is False


def test_each_run_of_changes_is_bundled_in_place():
    def flow(port):
        return model.FlowMod(1, model.FlowCommand.ADD,
                             match=model.Match(in_port=port),
                             actions=(model.Output(2),), priority=port)
    barrier = model.Barrier(1)
    messages = [flow(1), flow(2), barrier, flow(3), barrier, flow(4),
                flow(5), flow(6)]
    assert switch_io.bundle_runs(1, messages) == [
        model.Bundle(1, (flow(1), flow(2))), barrier, flow(3), barrier,
        model.Bundle(1, (flow(4), flow(5), flow(6)))]
    assert switch_io.bundle_runs(1, [flow(1)]) == [flow(1)]
    assert app_mod._message_count(switch_io.bundle_runs(1, messages)) == 8


def test_a_port_status_that_is_no_news_refreshes_the_gauges_as_a_packet_in():
    """Open vSwitch reports a port just before its link goes down: that
    report changes nothing, and refreshes the gauges only as a PacketIn
    does (at most every METRICS_REFRESH), not in full."""
    app = _app()
    full = []
    app._refresh_metrics = lambda every_time=True: full.append(every_time)
    with _Switch(app) as switch:
        full.clear()
        switch.theirs.sendall(_port_status_bytes(1, True))
        _wait(lambda: full)
        switch.theirs.sendall(_port_status_bytes(1, False))
        _wait(lambda: len(full) == 2)
    assert full == [False, True]
