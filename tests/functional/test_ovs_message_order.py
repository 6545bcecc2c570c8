"""What lets the controller leave out barriers on Open vSwitch: OVS carries
out one OpenFlow connection's messages in the order sent, each to its end.

Checked on a real bridge, over its management socket, with the bytes the
controller itself sends (`openflow.to_wire`): each new flow is followed at
once, in the same write and with no barrier, by a packet-out that sends its
packet through the flow table (`output:TABLE`). A packet-out carried out
before its flow was in the table would miss it, and the flow would count
no packet.
"""

import os
import re
import socket
import struct
import types

from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_3_parser
import pytest

from ha_redirect.lab import scope as scope_mod
from ha_redirect import model
from ha_redirect import openflow

FLOWS = 300
OFPP_TABLE = 0xfffffff9
_N_PACKETS = re.compile(r'cookie=0x([0-9a-f]+),.*n_packets=(\d+)')

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason='needs root, to add an Open vSwitch bridge')


def _frame(tcp_src):
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 40, 0, 0, 64, 6, 0,
                     socket.inet_aton('10.9.0.1'),
                     socket.inet_aton('10.9.0.2'))
    tcp = struct.pack('!HHIIBBHHH', tcp_src, 80, 1, 0, 5 << 4, 0x02, 65535,
                      0, 0)
    return (b'\x02\x00\x00\x00\x00\x02' + b'\x02\x00\x00\x00\x00\x01'
            + b'\x08\x00' + ip + tcp)


def _receive_message(sock):
    header = b''
    while len(header) < 8:
        header += sock.recv(8 - len(header))
    length = struct.unpack('!H', header[2:4])[0]
    body = b''
    while len(body) < length - 8:
        body += sock.recv(length - 8 - len(body))
    return header[1], header + body


@pytest.fixture
def bridge():
    with scope_mod.RunScope() as scope:
        name = scope.name('ord')
        scope_mod.run(['ovs-vsctl', '--timeout=10', 'add-br', name, '--',
                       'set', 'bridge', name, 'datapath_type=netdev',
                       'fail_mode=secure', 'protocols=OpenFlow13'])
        scope.on_close(f'bridge {name}', lambda: scope_mod.run(
            ['ovs-vsctl', '--timeout=10', '--if-exists', 'del-br', name],
            check=False))
        yield name


def test_open_vswitch_applies_each_flow_before_the_next_message(bridge):
    datapath = types.SimpleNamespace(id=1, ofproto=ofproto_v1_3,
                                     ofproto_parser=ofproto_v1_3_parser)
    xids = iter(range(1, 10 * FLOWS))
    stream = []
    for n in range(FLOWS):
        tcp_src = 10000 + n
        flow = model.FlowMod(
            1, model.FlowCommand.ADD,
            model.Match(eth_type=model.ETH_TYPE_IPV4,
                        ip_proto=model.IP_PROTO_TCP, tcp_src=tcp_src),
            (), priority=100, cookie=tcp_src)
        release = model.PacketOut(1, (model.Output(OFPP_TABLE),),
                                  in_port=model.SpecialPort.CONTROLLER,
                                  data=_frame(tcp_src))
        for message in (flow, release):
            stream += [data for _, data in openflow.to_wire(
                datapath, message, lambda: next(xids))]
    barrier_xid = next(xids)
    # One barrier at the very end: only so that we know when all is done.
    stream.append(struct.pack('!BBHI', 4, 20, 8, barrier_xid))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(f'/var/run/openvswitch/{bridge}.mgmt')
    with sock:
        sock.sendall(struct.pack('!BBHI', 4, 0, 8, 0))      # hello
        assert _receive_message(sock)[0] == 0
        sock.sendall(b''.join(stream))
        while True:
            msg_type, message = _receive_message(sock)
            assert msg_type != 1, f'OVS refused a message: {message.hex()}'
            if msg_type == 21 and struct.unpack(
                    '!I', message[4:8])[0] == barrier_xid:
                break
    dump = scope_mod.run(['ovs-ofctl', '-O', 'OpenFlow13', 'dump-flows',
                          bridge]).stdout
    counts = {int(cookie, 16): int(n)
              for cookie, n in _N_PACKETS.findall(dump)}
    assert len(counts) == FLOWS, dump[:2000]
    missed = sorted(cookie for cookie, n in counts.items() if n != 1)
    assert not missed, f'{len(missed)} packet-outs missed their flow'
