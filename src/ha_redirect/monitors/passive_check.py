"""The passive half of tcp_probe: servers' refusals, seen as they happen.

As HAProxy's `observe layer4`: when a server's service dies while its link
stays up, clients' SYNs come back refused (a RST). Probes need `fall`
intervals to notice; the switch has already seen the clients' refusals.
So the switch copies every RST a server sends from a service port to the
controller, and `refusals` of them within `window` mark the server down at
once. Probes still decide when it comes back.

The copy must not change how the RST is forwarded, whatever strategy's flow
forwards it, and the controller's copy passes a meter that the forwarded
RST must not pass. So one flow per server and service port, above every
flow that forwards servers' packets, resubmits the RST to its own table
twice, telling the passes apart by a register (see `model.PASS_FORWARD`):
first to be forwarded as if this flow did not exist, then to a copy flow
that sends it, metered, to the controller. With `redispatch` (where the
controller pins connections itself), the flow holds the RST for the
controller instead, which passes it on or redispatches its connection
(`ha_redirect.redispatch`).

Refusals come only as fast as clients' SYNs reach the dead server. A
process that dies resets at once every connection it had with data unread,
so, where asked (passive_aborts, off by default: healthy servers reset
connections in bursts too), passive_aborts of them within the short
passive_abort_window mark the server down as well.

A bare RST (no ACK) is the kernel's answer to a segment of a connection it
has no socket for: never a refusal. When a service dies, its clients' data
in flight draws them by the thousand (15,000 a second from 16 iperf3
transfers here); through the same meter as the refusals, they crowded the
refusals out and the verdict waited for the flood to end. So only RSTs with
an ACK (refusals, resets of established connections) are copied, and under
`redispatch`, which must hold bare ones too (the refuser's answer to a
moved connection's ACK must not reach its client), a server's bare RSTs
pass a meter of their own: its switch port's (`packet_in_meters`).
"""

import collections
import typing

from ha_redirect import model

RST_ACK = model.TCP_RST | model.TCP_ACK
# A RST without ACK, as OpenFlow matches it (value, mask).
BARE_RST = (model.TCP_RST, RST_ACK)


class PassiveCheck:
    """Counts one service's servers' refused connections."""

    def __init__(self, service: model.Service,
                 settings: model.PolicySettings, cookie: int):
        self.service = service
        self.settings = settings
        self.cookie = cookie
        # Per server, when its latest refusals were seen: the last
        # `passive_refusals` are all a verdict needs, whatever the flood.
        self._refused_at = [
            collections.deque(maxlen=max(1, settings.passive_refusals))
            for _ in service.servers]
        self._aborted_at = [
            collections.deque(maxlen=max(1, settings.passive_aborts))
            for _ in service.servers]

    @property
    def enabled(self) -> bool:
        return self.settings.passive_refusals > 0

    def flows(self, datapath_id: int) -> typing.List[model.Message]:
        if not self.enabled:
            return []
        settings = self.settings
        table = settings.table
        priority = settings.base_priority + model.PRIORITY_PASSIVE_COPY
        rst_ack = (RST_ACK, RST_ACK)
        kinds = [rst_ack]

        def flow(match, actions):
            return model.FlowMod(datapath_id, model.FlowCommand.ADD,
                                 match=match, actions=actions, table=table,
                                 priority=priority, cookie=self.cookie)

        if settings.redispatch:
            # Held for the controller, which redispatches or passes it on.
            first_pass = (model.Output(model.SpecialPort.CONTROLLER),)
            kinds.append(BARE_RST)
        else:
            first_pass = (model.SetField('reg6', model.PASS_FORWARD),
                          model.Resubmit(table),
                          model.SetField('reg6', model.PASS_COPY),
                          model.Resubmit(table))
        flows = []
        for server in self.service.servers:
            for tcp_port in self.service.tcp_ports:
                for flags in kinds:
                    flows.append(flow(
                        model.Match(in_port=server.port,
                                    eth_type=model.ETH_TYPE_IPV4,
                                    ip_proto=model.IP_PROTO_TCP,
                                    ipv4_src=server.ip, tcp_src=tcp_port,
                                    tcp_flags=flags, reg6=0),
                        first_pass))
        if settings.redispatch:
            return flows
        for port in sorted(set(self.service.server_ports)):
            flows.append(flow(
                model.Match(in_port=port, eth_type=model.ETH_TYPE_IPV4,
                            ip_proto=model.IP_PROTO_TCP, tcp_flags=rst_ack,
                            reg6=model.PASS_COPY),
                (model.Output(model.SpecialPort.CONTROLLER),)))
        return flows

    def sender(self, packet: model.TcpPacket) -> typing.Optional[int]:
        return self.sender_of(self.service, self.settings, packet)

    @staticmethod
    def sender_of(service: model.Service, settings: model.PolicySettings,
                  packet: model.TcpPacket) -> typing.Optional[int]:
        """The server a copied (or held) RST came from, or None if it is
        not one of ours. The copy follows the forwarding pass, which may
        have rewritten a backup's address to the primary's: the switch
        port tells them apart, unless they share it."""
        if (settings.passive_refusals <= 0
                or not packet.tcp_flags & model.TCP_RST
                or packet.tcp_src not in service.tcp_ports
                or packet.ipv4_dst == settings.probe_ip):
            return None
        on_port = [index for index, server in enumerate(service.servers)
                   if server.port == packet.in_port]
        by_address = [index for index in on_port
                      if service.servers[index].ip == packet.ipv4_src]
        if by_address:
            return by_address[0]
        return on_port[0] if len(on_port) == 1 else None

    @staticmethod
    def is_refusal(packet: model.TcpPacket) -> bool:
        """A RST answering a SYN (a closed port) carries sequence number 0
        and acknowledges the SYN; the reset of an established connection
        carries the server's own sequence number."""
        return bool(packet.tcp_flags & model.TCP_ACK) and packet.tcp_seq == 0

    @staticmethod
    def is_abort(packet: model.TcpPacket) -> bool:
        """The reset of an established connection by the server's own
        socket (a closed socket with data unread, or a process that died
        with it open): it acknowledges and carries a sequence number."""
        return bool(packet.tcp_flags & model.TCP_ACK) and packet.tcp_seq != 0

    def refused(self, server_index: int, now: float) -> int:
        """Count a refusal; how many fell within the window."""
        return self._count(self._refused_at[server_index], now,
                           self.settings.passive_window)

    def aborted(self, server_index: int, now: float) -> int:
        """Count an abort; how many fell within the abort window."""
        return self._count(self._aborted_at[server_index], now,
                           self.settings.passive_abort_window)

    @staticmethod
    def _count(seen, now, window):
        seen.append(now)
        while seen and now - seen[0] > window:
            seen.popleft()
        return len(seen)

    def forget(self, server_index: int) -> None:
        self._refused_at[server_index].clear()
        self._aborted_at[server_index].clear()
