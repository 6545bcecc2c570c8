"""In-band TCP health probes: a dead service fails over even on a live link.

The controller sends a SYN out of each server's switch port to the service
port, from a probe address no client uses. A flow returns the server's
answer: a SYN-ACK is a good probe (and the controller closes the half-open
connection with a RST); a RST (port closed) or no answer within `timeout`
is a bad one. As in HAProxy, `fall` bad probes in a row mark a server down
and `rise` good ones mark it up again; each server's probes are spaced by
`interval` with a little jitter, so servers are not probed in lockstep.
Servers need nothing extra, and no management network is involved.

Between probes, the passive check (`passive_check`, on unless
passive_refusals is 0) marks a server down as soon as it refuses
passive_refusals clients' connections within passive_window, or resets
passive_aborts established ones within passive_abort_window.
"""

import logging
import math
import random

from ha_redirect import model
from ha_redirect.monitors import base
from ha_redirect.monitors import passive_check

LOG = logging.getLogger(__name__)

_FIRST_PROBE_PORT = 49152
_PROBE_PORTS = 65536 - _FIRST_PROBE_PORT


class TcpProbeMonitor(base.Monitor):
    name = 'tcp_probe'
    needs_ticks = True

    def __init__(self, service, settings, cookie, rng=None):
        super().__init__(service, settings, cookie)
        if settings.probe_ip is None or settings.probe_mac is None:
            raise model.ServiceError(
                f'service {service.name!r}: monitors: tcp_probe needs '
                'probe_ip and probe_mac')
        for server in service.servers:
            if settings.probe_ip == server.ip:
                raise model.ServiceError(
                    f'service {service.name!r}: probe_ip {server.ip} is a '
                    'server\'s address')
        count = len(service.servers)
        # Each probe holds a source port until it is answered or times out.
        in_flight = count * (math.ceil(settings.probe_timeout / (
            settings.probe_interval * (1 - settings.probe_jitter))) + 1)
        if in_flight > _PROBE_PORTS // 2:
            raise model.ServiceError(
                f'service {service.name!r}: probe_timeout / probe_interval: '
                f'up to {in_flight} probes in flight would exhaust the '
                f'{_PROBE_PORTS} probe source ports; lengthen probe_interval '
                'or shorten probe_timeout')
        # Unpredictable source ports and sequence numbers: a forged reply
        # must guess both to count as an answer.
        self._rng = rng or random.SystemRandom()
        self._up = [True] * count    # innocent until proven dead, as HAProxy
        self._good_in_a_row = [0] * count
        self._bad_in_a_row = [0] * count
        self._next_probe = [None] * count
        # probe's TCP port -> (server, sent_at, its SYN's sequence number)
        self._outstanding = {}
        # Timed-out probes, whose late SYN-ACK we still close: port ->
        # (server, seq, forget_at).
        self._expired = {}
        self.transitions = []        # (time, server index, up), for reports
        self._passive = passive_check.PassiveCheck(service, settings, cookie)

    @property
    def holds_server_resets(self):
        return self._passive.enabled and self.settings.redispatch

    @property
    def probed_port(self):
        return self.service.tcp_ports[0]

    def is_healthy(self, server_index):
        return self._up[server_index]

    def flows(self, datapath_id):
        settings = self.settings
        flows = [model.FlowMod(
            datapath_id, model.FlowCommand.ADD,
            match=model.Match(eth_type=model.ETH_TYPE_ARP,
                              arp_op=model.ARP_REQUEST,
                              arp_tpa=settings.probe_ip),
            actions=(model.Output(model.SpecialPort.CONTROLLER),),
            table=settings.table,
            priority=settings.base_priority + model.PRIORITY_PROBE_REPLY,
            cookie=self.cookie)]
        for server in self.service.servers:
            flows.append(model.FlowMod(
                datapath_id, model.FlowCommand.ADD,
                match=model.Match(in_port=server.port,
                                  eth_type=model.ETH_TYPE_IPV4,
                                  ip_proto=model.IP_PROTO_TCP,
                                  ipv4_src=server.ip,
                                  ipv4_dst=settings.probe_ip,
                                  tcp_src=self.probed_port),
                actions=(model.Output(model.SpecialPort.CONTROLLER),),
                table=settings.table,
                priority=settings.base_priority + model.PRIORITY_PROBE_REPLY,
                cookie=self.cookie))
        return flows + self._passive.flows(datapath_id)

    def on_switch_connected(self, port_states, now):
        # Replies to probes sent before the reconnect may never come.
        self._outstanding.clear()
        self._expired.clear()

    def adopt(self, server_index, healthy, now):
        self._up[server_index] = healthy
        self._good_in_a_row[server_index] = 0
        self._bad_in_a_row[server_index] = 0

    def on_tick(self, now):
        settings = self.settings
        for port, (_, _, forget_at) in list(self._expired.items()):
            if now >= forget_at:
                del self._expired[port]
        for port, (server, sent_at, seq) in list(self._outstanding.items()):
            if now - sent_at >= settings.probe_timeout:
                del self._outstanding[port]
                self._expired[port] = (server, seq,
                                       now + settings.probe_timeout)
                self._record(server, False, now, 'no answer within '
                             f'{settings.probe_timeout:g}s')
                self._observe(server, 'timeout', None)
        probes = []
        for index, server in enumerate(self.service.servers):
            due = self._next_probe[index]
            if due is None:
                # Spread the first probes over one interval.
                self._next_probe[index] = now + self._rng.uniform(
                    0, settings.probe_interval)
                continue
            if now < due:
                continue
            jitter = self._rng.uniform(-settings.probe_jitter,
                                       settings.probe_jitter)
            self._next_probe[index] = max(
                now, due + settings.probe_interval * (1 + jitter))
            probe = self._probe(index, server, now)
            if probe is not None:
                probes.append(probe)
        return probes

    def on_packet(self, packet, now):
        settings = self.settings
        if isinstance(packet, model.ArpRequest):
            if packet.target_ip != settings.probe_ip:
                return None
            return [model.ArpReply(
                self.service.datapath_id, out_port=packet.in_port,
                sender_mac=settings.probe_mac, sender_ip=settings.probe_ip,
                target_mac=packet.sender_mac, target_ip=packet.sender_ip)]
        if not isinstance(packet, model.TcpPacket):
            return None
        refuser = self._passive.sender(packet)
        if refuser is not None:
            self._on_copied_reset(refuser, packet, now)
            return []
        if (packet.ipv4_dst != settings.probe_ip
                or packet.tcp_src != self.probed_port):
            return None
        servers = self.service.servers
        sender = next((i for i, s in enumerate(servers)
                       if s.ip == packet.ipv4_src
                       and s.port == packet.in_port), None)
        if sender is None or not packet.tcp_flags & model.TCP_ACK:
            return None
        # An answer to our SYN acknowledges exactly its sequence number:
        # anything else is not ours (another service's probe of a shared
        # server) or forged.
        port = packet.tcp_dst
        outstanding = self._outstanding.get(port)
        late = self._expired.get(port)
        if outstanding is not None and self._answers(
                packet, sender, outstanding[0], outstanding[2]):
            del self._outstanding[port]
        elif late is not None and self._answers(
                packet, sender, late[0], late[1]):
            outstanding = None      # counted as a timeout already
            del self._expired[port]
        else:
            return None
        answers = []
        syn_ack = model.TCP_SYN | model.TCP_ACK
        if packet.tcp_flags & syn_ack == syn_ack:
            # Close the half-open connection the probe made.
            server = servers[sender]
            answers.append(model.TcpSegment(
                self.service.datapath_id, server.port,
                eth_src=settings.probe_mac, eth_dst=server.mac,
                ipv4_src=settings.probe_ip, ipv4_dst=server.ip,
                tcp_src=packet.tcp_dst, tcp_dst=packet.tcp_src,
                tcp_flags=model.TCP_RST, tcp_seq=packet.tcp_ack))
            if outstanding is not None:
                self._record(sender, True, now, 'SYN-ACK')
                self._observe(sender, 'ok', now - outstanding[1])
        elif packet.tcp_flags & model.TCP_RST and outstanding is not None:
            self._record(sender, False, now, 'refused (RST)')
            self._observe(sender, 'refused', now - outstanding[1])
        return answers

    def _on_copied_reset(self, index, packet, now):
        settings = self.settings
        passive = self._passive
        if passive.is_refusal(packet):
            seen = passive.refused(index, now)
            needed, window = settings.passive_refusals, settings.passive_window
            what, told = 'refused', 'passive_refusal'
        elif passive.is_abort(packet) and settings.passive_aborts > 0:
            seen = passive.aborted(index, now)
            needed = settings.passive_aborts
            window = settings.passive_abort_window
            what, told = 'reset', 'passive_abort'
        else:
            return      # a bare RST: the kernel's answer to a stray segment
        count = getattr(self.observer, told, None)
        if count is not None:
            count(self.service.name, index)
        if seen < needed or not self._up[index]:
            return
        passive.forget(index)
        self._good_in_a_row[index] = 0
        self._bad_in_a_row[index] = 0
        self._mark(index, False, now,
                   f'{seen} connections {what} within {window:g}s')

    def _observe(self, index, outcome, rtt):
        if self.observer is not None:
            self.observer.probe_result(self.service.name, index, outcome, rtt)

    @staticmethod
    def _answers(packet, sender, server, seq):
        return sender == server and packet.tcp_ack == (seq + 1) & 0xffffffff

    def _probe(self, index, server, now):
        port = self._allocate_port()
        if port is None:
            return None         # the config check makes this unreachable
        seq = self._rng.getrandbits(32)
        self._outstanding[port] = (index, now, seq)
        return model.TcpSegment(
            self.service.datapath_id, server.port,
            eth_src=self.settings.probe_mac, eth_dst=server.mac,
            ipv4_src=self.settings.probe_ip, ipv4_dst=server.ip,
            tcp_src=port, tcp_dst=self.probed_port,
            tcp_flags=model.TCP_SYN, tcp_seq=seq)

    def _allocate_port(self):
        """A random free probe port (ports in use or awaiting a late
        answer are skipped), or None if there is none."""
        for _ in range(64):
            port = _FIRST_PROBE_PORT + self._rng.randrange(_PROBE_PORTS)
            if port not in self._outstanding and port not in self._expired:
                return port
        free = [p for p in range(_FIRST_PROBE_PORT, 65536)
                if p not in self._outstanding and p not in self._expired]
        if not free:
            LOG.error('service %s: every probe port is in use; probe '
                      'skipped', self.service.name)
            return None
        return self._rng.choice(free)

    def _record(self, index, good, now, why):
        settings = self.settings
        if good:
            self._good_in_a_row[index] += 1
            self._bad_in_a_row[index] = 0
            flips = (not self._up[index]
                     and self._good_in_a_row[index] >= settings.probe_rise)
        else:
            self._bad_in_a_row[index] += 1
            self._good_in_a_row[index] = 0
            flips = (self._up[index]
                     and self._bad_in_a_row[index] >= settings.probe_fall)
        if flips:
            self._mark(index, good, now, why)

    def _mark(self, index, up, now, why):
        self._up[index] = up
        self.transitions.append((now, index, up))
        server = self.service.servers[index]
        LOG.info('t=%.6f service %s: tcp_probe marks %s %s %s (%s)',
                 now, self.service.name,
                 'primary' if index == 0 else f'backup {index}',
                 server.ip, 'UP' if up else 'DOWN', why)
