"""Redispatch: a connection a server refuses goes to the next server.

HAProxy's `option redispatch`, in the switch. Where the controller pins
each connection itself (`reactive`: its SYN comes to us first), the SYN is
still at hand when the server refuses it. With tcp_probe's passive check on,
the switch then sends servers' RSTs of the service to the controller
instead of the client (see `monitors.passive_check`). A RST that answers a
SYN we dispatched moves that connection's pins to the next eligible server
and sends the SYN there again: the client sees a slower SYN-ACK, not a
refusal. Every other RST is passed on exactly as the switch would have
forwarded it (resubmitted to the table, past the flow that held it).
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

    def __init__(self, settings: model.PolicySettings, service_count: int):
        self.settings = settings
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
        openings = self._openings[state.index]
        key: OpeningKey = (packet.ipv4_src, packet.tcp_src, packet.tcp_dst)
        openings.pop(key, None)
        openings[key] = (_kept(packet), connection_key, 1 << server)
        if len(openings) > self.settings.max_connections_per_service:
            openings.popitem(last=False)

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
        return [pass_on(held[0][0].service.datapath_id, packet,
                        self.settings)]

    def _redispatch(self, state, refuser, strategy, packet):
        key: OpeningKey = (packet.ipv4_dst, packet.tcp_dst, packet.tcp_src)
        opening = self._openings[state.index].get(key)
        if opening is None:
            return None
        syn_values, connection_key, tried = opening
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
                                         _rebuilt(syn_values), target)


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
