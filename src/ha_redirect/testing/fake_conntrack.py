"""The fake switch's connection tracker (OVS `ct`), per datapath.

A table of committed connections keyed by zone and (ip_proto, ipv4_src,
tcp_src, ipv4_dst, tcp_dst) in each direction. A packet gets ct_state +trk
and +new (not committed, or committed but not yet answered), +est (a reply
has been seen), +rpl (it is a reply), or +inv (an uncommitted SYN-ACK,
which OVS will not take as a new connection); ct_zone, and the
connection's ct_mark and ct_label (0 when there is none). `commit` stores
a new connection, with the destination NAT `nat_dst`; `nat` (or `nat_dst`)
readdresses forward packets of a NATed connection and un-translates the
source of its replies; commit's actions set ct_mark and ct_label
(SetField, or Move from a packet field). An RST in either direction ends
the connection's entry at once (OVS keeps it a moment in CLOSED; either
way the next SYN starts afresh). `flush` empties the entries (as
`ovs-appctl dpctl/flush-conntrack`), `flush_replies_from` those of a
ConntrackFlush message: its zone and reply source address.
"""

import dataclasses
import typing

from ha_redirect import model
from ha_redirect.ovs_constraints import TCP_ACK
from ha_redirect.ovs_constraints import TCP_RST
from ha_redirect.ovs_constraints import TCP_SYN
from ha_redirect.testing.fake_fields import FakeFlowTableError
from ha_redirect.testing.fake_fields import read_bits
from ha_redirect.testing.fake_fields import write_bits


@dataclasses.dataclass
class TrackedConnection:
    """A committed connection: its tuples as packets carry them in each
    direction (ip_proto, ipv4_src, tcp_src, ipv4_dst, tcp_dst)."""
    zone: int
    original: typing.Tuple
    reply: typing.Tuple
    mark: int = 0
    label: int = 0
    established: bool = False   # a reply has been seen


def _five_tuple(packet) -> typing.Tuple:
    return (packet.get('ip_proto'), packet.get('ipv4_src'),
            packet.get('tcp_src'), packet.get('ipv4_dst'),
            packet.get('tcp_dst'))


class ConnectionTracker:
    """The committed connections of each datapath."""

    def __init__(self):
        self.entries: typing.Dict[int, typing.List[TrackedConnection]] = {}

    def connections(self, datapath_id: int,
                    zone: typing.Optional[int] = None
                    ) -> typing.List[TrackedConnection]:
        """The committed connections of a datapath (of one zone)."""
        return [c for c in self.entries.get(datapath_id, ())
                if zone is None or c.zone == zone]

    def flush(self, datapath_id: int,
              zone: typing.Optional[int] = None) -> None:
        self.entries[datapath_id] = [
            c for c in self.entries.get(datapath_id, ())
            if zone is not None and c.zone != zone]

    def track(self, datapath_id, ct: model.Conntrack, packet, dry_run):
        """The packet as the tracker hands it back (a copy)."""
        if packet.get('eth_type') != model.ETH_TYPE_IPV4:
            raise FakeFlowTableError(f'ct on a packet that is not IPv4: '
                                     f'{packet}')
        entries = self.entries.setdefault(datapath_id, [])
        key = _five_tuple(packet)
        flags = packet.get('tcp_flags', 0)
        found, is_reply = None, False
        for entry in entries:
            if entry.zone == ct.zone and key in (entry.original,
                                                 entry.reply):
                found, is_reply = entry, key == entry.reply
                break
        if found is None:
            state = model.CT_TRK | (
                model.CT_INV if flags & TCP_SYN and flags & TCP_ACK
                else model.CT_NEW)
            if ct.commit and not state & model.CT_INV:
                proto, src, sport, dst, dport = key
                found = TrackedConnection(
                    ct.zone, key,
                    (proto, ct.nat_dst or dst, dport, src, sport))
                if not dry_run:
                    entries.append(found)
        else:
            if dry_run:
                found = dataclasses.replace(found)
            if is_reply:
                found.established = True
                state = model.CT_TRK | model.CT_EST | model.CT_RPL
            else:
                state = model.CT_TRK | (model.CT_EST if found.established
                                        else model.CT_NEW)
        tracked = dict(packet)
        if found is not None and ct.commit:
            for action in ct.actions:
                attr = 'mark' if (getattr(action, 'field', None)
                                  or action.dst) == 'ct_mark' else 'label'
                if isinstance(action, model.SetField):
                    setattr(found, attr, action.value)
                else:
                    setattr(found, attr, write_bits(
                        getattr(found, attr), action.dst_ofs, action.n_bits,
                        read_bits(packet, action.src, action.src_ofs,
                                  action.n_bits)))
        if found is not None and (ct.nat or ct.nat_dst is not None):
            if is_reply:
                tracked['ipv4_src'] = found.original[3]
            else:
                tracked['ipv4_dst'] = found.reply[1]
        tracked.update(ct_state=state, ct_zone=ct.zone,
                       ct_mark=found.mark if found else 0,
                       ct_label=found.label if found else 0)
        if (found is not None and flags & TCP_RST and not dry_run
                and found in entries):
            entries.remove(found)
        return tracked

    def flush_replies_from(self, datapath_id: int, zone: int,
                           reply_src: str) -> None:
        """Forget a zone's connections whose replies come from `reply_src`
        (a ConntrackFlush)."""
        self.entries[datapath_id] = [
            c for c in self.entries.get(datapath_id, ())
            if (c.zone, c.reply[1]) != (zone, reply_src)]
