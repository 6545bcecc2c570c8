"""A Redis server of the run's own, for controllers that elect a master.

    with RunScope() as scope:
        redis = RedisServer(scope).start()
        redis.url          # redis://127.0.0.1:PORT, for [coordination]
        redis.restart()    # a clean restart: its data is kept (AOF)

It listens on a free loopback port with its data in the run's directory,
and is stopped by PID when the scope closes.
"""

import os
import shutil
import socket
import subprocess
import time

from ha_redirect.lab import controller as controller_mod
from ha_redirect.lab import scope as scope_mod

HOST = '127.0.0.1'


def redis_server_path():
    path = shutil.which('redis-server')
    if path is None:
        raise scope_mod.LabError(
            'redis-server not found: run devtools/setup-host (Debian '
            'package redis-server)')
    return path


class RedisServer(scope_mod.OwnedProcess):
    def __init__(self, scope, label='redis'):
        self.scope = scope
        self.label = label
        self.port = controller_mod.free_tcp_port(HOST)
        self.directory = scope.path(label)
        os.makedirs(self.directory, exist_ok=True)
        self.popen = None

    @property
    def url(self):
        return f'redis://{HOST}:{self.port}'

    def start(self, timeout=10.0):
        argv = [redis_server_path(), '--port', str(self.port),
                '--bind', HOST, '--dir', self.directory,
                '--appendonly', 'yes', '--appendfsync', 'always',
                '--save', '', '--daemonize', 'no',
                '--logfile', os.path.join(self.directory, 'redis.log')]
        self.stop_on_close()
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT)
        return self.wait_ready(self._answers, timeout,
                               what=f'answer on port {self.port}')

    def _answers(self):
        try:
            with socket.create_connection((HOST, self.port), 0.5) as sock:
                sock.sendall(b'PING\r\n')
                return sock.recv(16).startswith(b'+PONG')
        except OSError:
            return False

    def restart(self, down_for=0.0):
        """Stop (SIGTERM: it saves), wait `down_for` s, start again."""
        self.stop()
        time.sleep(down_for)
        return self.start()
