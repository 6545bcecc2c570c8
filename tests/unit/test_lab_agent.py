"""The lab agent's identity server, on loopback (no root needed)."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    ports = [free_port(), free_port()]
    proc = subprocess.Popen(
        [sys.executable, '-m', 'ha_redirect.lab.agent', 'serve', '--name',
         'backup1', '--port', str(ports[0]), '--port', str(ports[1])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = json.loads(proc.stdout.readline())
        assert line['event'] == 'listening' and line['ports'] == ports
        yield proc, ports
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def connect(port):
    sock = socket.create_connection(('127.0.0.1', port), timeout=5)
    return sock, sock.makefile('rb')


def test_says_who_it_is_on_every_port_then_echoes(server):
    proc, ports = server
    for port in ports:
        sock, reader = connect(port)
        assert reader.readline() == b'backup1\n'
        for seq in range(3):
            sock.sendall(f'ping {seq}\n'.encode())
            assert reader.readline() == f'ping {seq}\n'.encode()
        # More than a socket buffer holds comes back whole, in order.
        blob = bytes(range(256)) * 8192
        sender = threading.Thread(target=sock.sendall, args=(blob,))
        sender.start()
        assert reader.read(len(blob)) == blob
        sender.join(5)
        sock.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0


def test_a_peer_that_does_not_read_delays_no_one(server):
    _, ports = server
    stalled, _ = connect(ports[0])
    stalled.settimeout(0.5)
    try:
        while True:            # fill both directions: it never reads
            stalled.send(b'x' * 65536)
    except socket.timeout:
        pass
    t0 = time.monotonic()
    socks = [connect(ports[i % 2]) for i in range(50)]
    assert [reader.readline() for _, reader in socks] == [b'backup1\n'] * 50
    assert time.monotonic() - t0 < 5
    for sock, _ in socks:
        sock.close()
    # The server closes a connection once its peer has.
    sock, reader = connect(ports[1])
    assert reader.readline() == b'backup1\n'
    sock.shutdown(socket.SHUT_WR)
    assert reader.read() == b''
    stalled.close()
