"""The switch as the fault suite sees it: flows, groups, caps and a reboot.

Everything here reads or changes one bridge by name with `ovs-ofctl` and
`ovs-vsctl`, the way an operator would; nothing touches another bridge.
"""

import contextlib
import dataclasses
import fcntl
import re
import time

from ha_redirect.lab import scope as scope_mod

OFP = 'OpenFlow13'
_COOKIE_RE = re.compile(r'cookie=(0x[0-9a-f]+)')
# Fields that change on their own (counters, ages), not the flow itself.
_VOLATILE_RE = re.compile(
    r'(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]+,?\s*')


# Bytes each port of a userspace-datapath bridge may hold unread. OVS reads
# a `system` port through a packet socket sized by the host's default
# (net.core.rmem_default, 208 KB): under load that held hundreds of a
# server's small packets (its ACKs to the clients), drained at the port's
# share of one busy thread, and the server's SYN-ACKs and RSTs, the signs
# of its death included, waited 100-150 ms behind them: a queue no
# hardware switch port has. The sockets are made when ports are added.
PORT_BUFFER_BYTES = 64 * 1024
RMEM_DEFAULT = '/proc/sys/net/core/rmem_default'


# Runs may overlap on one host: the setting is the host's, so one run at a
# time holds it, or a second would take the first's 64 KB for the host's.
PORT_BUFFERS_LOCK = '/run/lock/ha-redirect-port-buffers.lock'


@contextlib.contextmanager
def port_buffers(userspace=True, size=PORT_BUFFER_BYTES, path=RMEM_DEFAULT,
                 lock_path=PORT_BUFFERS_LOCK):
    """Ports added inside this block get `size`-byte receive buffers: the
    host's default socket buffer is set for the block, then put back.
    Only the userspace datapath reads ports through sockets: without
    `userspace` nothing is changed."""
    if not userspace:
        yield
        return
    with open(lock_path, 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(path) as f:
            original = f.read().strip()
        try:
            with open(path, 'w') as f:
                f.write(str(size))
            yield
        finally:
            with open(path, 'w') as f:
                f.write(original)


@dataclasses.dataclass(frozen=True)
class Flow:
    cookie: int
    text: str          # the flow as ovs-ofctl prints it, without counters


def flows(bridge):
    """Every flow of the bridge, in ovs-ofctl's order."""
    out = scope_mod.run(['ovs-ofctl', '-O', OFP, 'dump-flows',
                         bridge]).stdout
    result = []
    for line in out.splitlines():
        line = line.strip()
        found = _COOKIE_RE.search(line)
        if not found:
            continue
        result.append(Flow(int(found.group(1), 16),
                           _VOLATILE_RE.sub('', line)))
    return result


def groups(bridge):
    """The bridge's groups, one line each, sorted."""
    out = scope_mod.run(['ovs-ofctl', '-O', OFP, 'dump-groups',
                         bridge]).stdout
    return sorted(line.strip() for line in out.splitlines()
                  if line.strip().startswith('group_id='))


def limit_table(bridge, table, flow_limit):
    """Cap one OpenFlow table; at the cap OVS evicts the flows closest to
    expiring (only flows with a timeout can go: learned pins do, service
    flows never)."""
    scope_mod.run([
        'ovs-vsctl', '--timeout=10', '--', '--id=@ft', 'create', 'Flow_Table',
        f'flow_limit={flow_limit}', 'overflow_policy=evict', '--', 'set',
        'Bridge', bridge, f'flow_tables:{table}=@ft'])


def _get(table, record, column):
    return scope_mod.run(['ovs-vsctl', '--timeout=10', 'get', table, record,
                          column]).stdout.strip()


def reboot_bridge(bridge):
    """Delete the bridge and create it again as it was: the same datapath
    id, type, fail mode, protocols, table caps, controller and port
    numbers, as a switch that reboots. Returns how long the bridge was
    gone (s)."""
    settings = {column: _get('Bridge', bridge, column) for column in (
        'datapath_type', 'fail_mode', 'protocols', 'other_config')}
    controllers = scope_mod.run([
        'ovs-vsctl', '--timeout=10', 'get-controller', bridge]).stdout.split()
    caps = []
    for item in _get('Bridge', bridge, 'flow_tables').strip('{}').split(','):
        if '=' in item:
            table, row = item.split('=')
            limit = _get('Flow_Table', row.strip(), 'flow_limit')
            caps.append((int(table), int(limit.strip('[]'))))
    ports = []
    for port in scope_mod.run(['ovs-vsctl', '--timeout=10', 'list-ports',
                               bridge]).stdout.split():
        ports.append((port, _get('Interface', port, 'ofport')))
    t_gone = time.monotonic()
    scope_mod.run(['ovs-vsctl', '--timeout=10', 'del-br', bridge])
    command = ['ovs-vsctl', '--timeout=10', 'add-br', bridge, '--', 'set',
               'Bridge', bridge]
    command += [f'{column}={value}' for column, value in settings.items()
                if value not in ('[]', '{}', '""')]
    for port, ofport in ports:
        command += ['--', 'add-port', bridge, port, '--', 'set', 'Interface',
                    port, f'ofport_request={ofport}']
    with port_buffers(userspace=settings['datapath_type'] == 'netdev'):
        scope_mod.run(command)
    t_back = time.monotonic()
    for table, flow_limit in caps:
        limit_table(bridge, table, flow_limit)
    if controllers:
        scope_mod.run(['ovs-vsctl', '--timeout=10', 'set-controller',
                       bridge] + controllers)
    return t_back - t_gone


def rss_kib(pid):
    """A process's resident memory, from /proc."""
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise scope_mod.LabError(f'pid {pid}: no VmRSS')
