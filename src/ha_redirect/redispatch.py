"""Redispatch: a connection a server refuses goes to the next server.

HAProxy's `option redispatch`, in the switch. Where the controller pins
each connection itself (`reactive`: its SYN comes to us first), the SYN is
still at hand when the server refuses it. Where the switch pins connections
itself (every other strategy), it copies each client's SYN to us as it
forwards it (`syn_copy_flows`; one PacketIn per new connection, off the
connection's path and within `packet_in_rate`: a SYN whose copy the meter
dropped is not rescued). With tcp_probe's passive check on, the switch sends
servers' RSTs of the service to the controller instead of the client (see
`monitors.passive_check`). A RST that answers a SYN we dispatched or saw
moves that connection to the next eligible server, with pins of its own
(above the switch's learned pin, if any), and sends the SYN there again: the
client sees a slower SYN-ACK, not a refusal. Every other RST is passed on
exactly as the switch would have forwarded it (resubmitted to the table,
past the flow that held it).
"""

import collections
import dataclasses
import operator
import typing

from ha_redirect import model
from ha_redirect.monitors import passive_check

# (client IP, client TCP port, service TCP port)
OpeningKey = typing.Tuple[str, int, int]

# A SYN is kept as its fields' values, in this order, and the servers tried
# as a bit mask: tuples of strings and numbers, which Python's garbage
# collector stops tracking. A TcpPacket and a set per connection (up to
# max_connections_per_service of them) made every full collection walk
# them all: pauses of tens of ms under load.
_SYN_FIELDS = tuple(field.name for field in dataclasses.fields(
    model.TcpPacket))
_SYN_SEQ = _SYN_FIELDS.index('tcp_seq')


_kept: typing.Callable[[model.TcpPacket], tuple] = operator.attrgetter(
    *_SYN_FIELDS)


def _rebuilt(values: tuple) -> model.TcpPacket:
    return model.TcpPacket(**dict(zip(_SYN_FIELDS, values)))


class Redispatcher:
    """The SYNs each service dispatched, and what to do with a held RST."""

    def __init__(self, settings: model.PolicySettings, service_count: int,
                 switch_pins: bool = False):
        self.settings = settings
        # The strategy lets the switch pin connections (no SYN comes to us
        # to be decided): the switch copies SYNs to us for redispatch.
        self.syns_copied = switch_pins and settings.redispatch
        self._pin_priority = (model.PRIORITY_REDISPATCHED if switch_pins
                              else model.PRIORITY_CONNECTION)
        # Per service: the latest SYNs, with the connection key and the
        # servers tried. A refusal comes within a round trip, so the last
        # max_connections_per_service are plenty; the oldest go first.
        self._openings = [collections.OrderedDict()
                          for _ in range(service_count)]

    def remember(self, state, connection_key, packet: model.TcpPacket,
                 server: int) -> None:
        """A SYN the policy just sent to `server`."""
        if not self.settings.redispatch or not (
                packet.tcp_flags & model.TCP_SYN):
            return
        self._keep(state, connection_key, packet, 1 << server)

    def remember_copy(self, states, packet: model.TcpPacket) -> None:
        """A client's SYN the switch copied to us as it forwarded it (see
        `syn_copy_flows`). The server it went to is left open (0): the
        refusal will name it. The copy follows the forwarding pass, which
        may have addressed it to a backup."""
        if not (packet.tcp_flags & model.TCP_SYN) or (
                packet.tcp_flags & model.TCP_ACK):
            return
        states = list(states)
        serving = [s for s in states if s.serves(packet)] or [
            s for s in states if s.serves_via_server(packet)]
        if len(serving) == 1:       # else: shared servers, not ours to guess
            state = serving[0]
            self._keep(state, (packet.in_port, packet.ipv4_src,
                               packet.tcp_src, packet.tcp_dst), packet, 0)

    def _keep(self, state, connection_key, packet, tried):
        openings = self._openings[state.index]
        key: OpeningKey = (packet.ipv4_src, packet.tcp_src, packet.tcp_dst)
        openings.pop(key, None)
        openings[key] = (_kept(packet), connection_key, tried)
        if len(openings) > self.settings.max_connections_per_service:
            openings.popitem(last=False)

    def syn_copy_flows(self, views, datapath_id: int, switch_cookie: int
                       ) -> typing.List[model.FlowMod]:
        """Where the switch pins connections: each client SYN to a service
        (`views`: those on one switch) is forwarded as if these flows did
        not exist, then copied to the controller. The two passes are told
        apart by a register, as the passive check's RST copies; the metered
        copy goes last, since a meter that drops a packet ends its
        actions. One copy flow per TCP port serves every service on it."""
        if not self.syns_copied:
            return []
        table = self.settings.table
        syn = (model.TCP_SYN, model.TCP_SYN | model.TCP_ACK)
        flows, copied_ports = [], []
        for view in views:
            service = view.service
            for tcp_port in service.tcp_ports:
                flows.append(model.FlowMod(
                    datapath_id, model.FlowCommand.ADD,
                    match=model.Match(
                        eth_type=model.ETH_TYPE_IPV4,
                        ip_proto=model.IP_PROTO_TCP,
                        ipv4_dst=service.primary.ip, tcp_dst=tcp_port,
                        tcp_flags=syn, reg6=0),
                    actions=(model.SetField('reg6', model.PASS_FORWARD),
                             model.Resubmit(table),
                             model.SetField('reg6', model.PASS_COPY),
                             model.Resubmit(table)),
                    table=table,
                    priority=view.priority(model.PRIORITY_PASSIVE_COPY),
                    cookie=view.cookie(model.ROLE_SERVICE)))
                if tcp_port not in copied_ports:
                    copied_ports.append(tcp_port)
        priority = self.settings.base_priority + model.PRIORITY_PASSIVE_COPY
        # Any address: the forwarding pass may have rewritten it.
        return flows + [model.FlowMod(
            datapath_id, model.FlowCommand.ADD,
            match=model.Match(eth_type=model.ETH_TYPE_IPV4,
                              ip_proto=model.IP_PROTO_TCP, tcp_dst=tcp_port,
                              tcp_flags=syn, reg6=model.PASS_COPY),
            actions=(model.Output(model.SpecialPort.CONTROLLER),),
            table=table, priority=priority, cookie=switch_cookie)
            for tcp_port in copied_ports]

    def on_server_reset(self, states, strategy, packet: model.Packet
                        ) -> typing.List[model.Message]:
        """Messages for a server's RST the switch held for us (after the
        monitors counted it); [] for any other packet."""
        if not self.settings.redispatch or not isinstance(
                packet, model.TcpPacket):
            return []
        held = []       # (service state, the server that sent it)
        for state in states:
            sender = passive_check.PassiveCheck.sender_of(
                state.service, self.settings, packet)
            if sender is not None:
                held.append((state, sender))
        if not held:
            return []
        if passive_check.PassiveCheck.is_refusal(packet):
            for state, refuser in held:
                moved = self._redispatch(state, refuser, strategy, packet)
                if moved is not None:
                    return moved
        else:
            for state, sender in held:
                again = self._moved_away(state, sender, strategy, packet)
                if again is not None:
                    return again
        return [pass_on(held[0][0].service.datapath_id, packet,
                        self.settings)]

    def _moved_away(self, state, sender, strategy, packet):
        """For the RST of a server we moved this connection away from: the
        SYN once more to the server that has it now; else None.

        OVS's flow cache may carry the client's next packet (its ACK of
        the new server's SYN-ACK) to the old server before the new pins
        take hold; the client must not see that server's reset. The new
        server answers the repeated SYN with its SYN-ACK again, and the
        client's ACK of it completes the connection, rather than the new
        server's own retransmission a second later."""
        key: OpeningKey = (packet.ipv4_dst, packet.tcp_dst, packet.tcp_src)
        opening = self._openings[state.index].get(key)
        if opening is None or not opening[2] >> sender & 1:
            return None
        syn_values, connection_key, _ = opening
        server = state.connections.get(connection_key)
        if server is None or server == sender:
            return None
        return [strategy.release(state.view(self.settings),
                                 _rebuilt(syn_values), server)]

    def _redispatch(self, state, refuser, strategy, packet):
        key: OpeningKey = (packet.ipv4_dst, packet.tcp_dst, packet.tcp_src)
        opening = self._openings[state.index].get(key)
        if opening is None:
            return None
        syn_values, connection_key, tried = opening
        if not tried:           # a copy: the refusal names its server
            tried = 1 << refuser
        if (not tried >> refuser & 1 or packet.tcp_ack != (
                syn_values[_SYN_SEQ] + 1) & 0xffffffff):
            return None
        # The active server first (the refuser may just have been marked
        # down), then any other eligible one, in order; none tried before.
        order = ([state.active] if state.active is not None else []) + list(
            range(len(state.service.servers)))
        target = next((i for i in order if not tried >> i & 1
                       and state.eligible and state.eligible[i]), None)
        if target is None:
            del self._openings[state.index][key]
            return None
        self._openings[state.index][key] = (syn_values, connection_key,
                                            tried | 1 << target)
        state.connections[connection_key] = target
        # The pins of the same connection replace the refuser's (same match
        # and priority), and the SYN follows them to the new server.
        return strategy.connection_flows(state.view(self.settings),
                                         _rebuilt(syn_values), target,
                                         self._pin_priority)


def pass_on(datapath_id: int, packet: model.TcpPacket,
            settings: model.PolicySettings) -> model.PacketOut:
    """The RST on its way, as the switch's own flows forward it: back into
    the table from the server's port, marked as past the holding flow."""
    return model.PacketOut(
        datapath_id,
        (model.SetField('reg6', model.PASS_FORWARD),
         model.Resubmit(settings.table)),
        in_port=packet.in_port,
        data=b'' if packet.buffer_id is not None else packet.data,
        buffer_id=packet.buffer_id)
