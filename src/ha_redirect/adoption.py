"""A takeover's read of a switch: the flows and groups it holds of ours.

A controller that has just become a switch's MASTER reads before it writes
(see `ha_redirect.snapshot`). The replies may come in several parts and
may never come at all: `SwitchAdoption` gathers them per switch, arms a
timeout, and hands back one `Adopted` once both reads are complete. What
to do with it (and with the switch's role) is `ha_redirect.roles`' call.
"""

import dataclasses
import logging
import typing

from os_ken.controller import event

from ha_redirect import model
from ha_redirect import snapshot as snapshot_mod

# The shell's logger: operators and the lab read one source for all of it.
LOG = logging.getLogger('ha_redirect.app')

# How long a new master waits for the switch's flows and groups.
ADOPTION_TIMEOUT = 10.0

# What the reads are called among the requests a switch answers.
READ_PURPOSES = {'adopt flows': 'flows', 'adopt groups': 'groups'}


@dataclasses.dataclass(eq=False)
class EventAdoptionTimeout(event.EventBase):
    """A takeover's reads of the switch did not all come in time."""
    datapath_id: int
    since: float


class EmptyReply:
    """A multipart reply with nothing in it (for a refused request)."""

    def __init__(self, datapath, xid):
        self.datapath = datapath
        self.xid = xid
        self.body = []
        self.flags = 0


class Adopted(typing.NamedTuple):
    """Both reads of one switch, complete."""
    datapath: typing.Any
    snapshot: snapshot_mod.SwitchSnapshot
    since: float            # when the reads started (the clock's time)
    group_count: int


class SwitchAdoption:
    """The reads in progress, one per switch being taken over.

    `requests` is the table of what was asked of each switch, by
    (dpid, xid), that the role requests share: a switch's error names only
    the xid, and the reads' errors must be told from the roles'.
    """

    def __init__(self, requests, clock, post_later):
        self._requests = requests
        self._clock = clock
        self._post_later = post_later     # (delay, event): a timer
        self._reads = {}     # dpid -> what the switch holds, so far

    def start(self, datapath, cookie, pins_by_controller):
        """Ask the switch for our flows (by `cookie`) and its groups."""
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        since = self._clock()
        self._reads[datapath.id] = {'flows': None, 'groups': None,
                                    'parts': {'flows': [], 'groups': []},
                                    'since': since}
        self._post_later(ADOPTION_TIMEOUT,
                         EventAdoptionTimeout(datapath.id, since))
        # Per-connection pins can be tens of thousands: read them only
        # where the policy must remember them.
        mask = model.COOKIE_OURS_MASK
        if not pins_by_controller:
            mask |= model.COOKIE_PIN_ROLE_MASK
        flows = parser.OFPFlowStatsRequest(
            datapath, 0, ofproto.OFPTT_ALL, ofproto.OFPP_ANY,
            ofproto.OFPG_ANY, cookie << 32, mask, parser.OFPMatch())
        groups = parser.OFPGroupDescStatsRequest(datapath, 0)
        for request, purpose in ((flows, 'adopt flows'),
                                 (groups, 'adopt groups')):
            datapath.set_xid(request)
            self._requests[(datapath.id, request.xid)] = purpose
            datapath.send_msg(request)

    def forget(self, datapath_id):
        """A new claim, a yield or a lost switch: this read is over."""
        self._reads.pop(datapath_id, None)

    def is_current(self, ev):
        """Whether a timeout is for the read still in progress."""
        reads = self._reads.get(ev.datapath_id)
        return reads is not None and reads['since'] == ev.since

    def collect(self, msg, kind, key, claiming):
        """One part of a reply (`kind` 'flows' or 'groups'): the `Adopted`
        switch once the last part of both has come, else None."""
        datapath = msg.datapath
        reads = self._reads.get(datapath.id)
        if reads is None or not claiming:
            self._requests.pop(key, None)
            return None
        reads['parts'][kind].extend(msg.body)
        if msg.flags & datapath.ofproto.OFPMPF_REPLY_MORE:
            return None
        self._requests.pop(key, None)
        reads[kind] = reads['parts'][kind]
        if reads['flows'] is None or reads['groups'] is None:
            return None
        del self._reads[datapath.id]
        snapshot = snapshot_mod.SwitchSnapshot(datapath, reads['flows'],
                                               reads['groups'])
        return Adopted(datapath, snapshot, reads['since'],
                       len(reads['groups']))


def count_changes(messages):
    """How many flow and group changes the takeover made (a bundle counts
    each message it holds)."""
    return sum(len(m.messages) if isinstance(m, model.Bundle) else 1
               for m in messages
               if isinstance(m, (model.FlowMod, model.GroupMod,
                                 model.Bundle)))
