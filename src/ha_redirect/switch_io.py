"""The bytes from the app to a switch: one write per event (or per run of
PacketIns), and which message each xid carried. (What the switch sends is
read by `ha_redirect.fast_path`.)

Part of the os-ken shell (`ha_redirect.app`): it knows os-ken's Datapath
(`send`, `set_xid`), and what it sends was already allowed by the write
gate (`ha_redirect.roles`).
"""

import logging

from ha_redirect import model
from ha_redirect import openflow

# The app's logger: operators and the lab read these lines as the app's.
LOG = logging.getLogger('ha_redirect.app')

# Enough recent messages to name the culprit of any error the switch returns
# (it comes back after at most the answers to the PacketIns allowed to wait,
# ~400 messages). Each is a few objects for the garbage collector to walk
# and to promote: 4,096 made its middle generation's pauses ~10 ms.
SENT_MEMORY = 1024


def bundle_runs(datapath_id, messages):
    """`messages`, each run of two or more flow and group changes in a
    row made one atomic bundle, in place. Open vSwitch applies a bundle's
    changes in one step, at a third to a sixth of the cost of one message
    each (`ovs-ofctl add-flows` of 1,000 of a failover's changes, with
    `--bundle` and without)."""
    out, run = [], []
    for message in messages + [None]:
        if type(message) in (model.FlowMod, model.GroupMod):
            run.append(message)
            continue
        if len(run) > 1:
            out.append(model.Bundle(datapath_id, tuple(run)))
        else:
            out.extend(run)
        run = []
        if message is not None:
            out.append(message)
    return out


def write(datapath, data):
    """Send `data` to the switch: at once where its socket can
    (`fast_path.SwitchReader.write_now`), else through os-ken's queue."""
    write_now = getattr(getattr(datapath, 'socket', None), 'write_now',
                        None)
    if write_now is None or not write_now(data):
        datapath.send(data)


class _XidSlot:
    """Takes an xid from `Datapath.set_xid` for bytes we pack ourselves."""
    xid = None

    def set_xid(self, xid):
        self.xid = xid


def _xids_of(datapath):
    """A `new_xid()` for `openflow.to_wire`: the switch's next xids."""
    slot = _XidSlot()

    def new_xid():
        datapath.set_xid(slot)      # os-ken keeps the counter
        return slot.xid
    return new_xid


class SwitchWriter:
    """Sends our messages, and remembers which message each xid carried."""

    def __init__(self, metrics):
        self.metrics = metrics
        # Per switch: the last SENT_MEMORY messages, by xid modulo that (a
        # ring, not a dict: two list stores per message).
        self._sent = {}
        # Switches that carry out our messages in the order sent: a barrier
        # there orders nothing, and costs a message each way.
        self._in_order = set()

    def executes_in_order(self, datapath_id, in_order):
        """Whether to leave out barriers to this switch (until told
        otherwise: a new connection is told False at first)."""
        if in_order:
            self._in_order.add(datapath_id)
        else:
            self._in_order.discard(datapath_id)

    def _needed(self, datapath, messages):
        if datapath.id in self._in_order:
            return [m for m in messages if type(m) is not model.Barrier]
        return messages

    def culprit(self, datapath_id, xid):
        """The message a switch's error (by xid) is about, if we know it."""
        ring = self._sent.get(datapath_id)
        if ring is None:
            return None
        xids, messages = ring
        slot = xid % SENT_MEMORY
        return messages[slot] if xids[slot] == xid else None

    def send(self, datapath, messages):
        """Send one event's messages in order, in ONE write (through
        os-ken's send queue, each write took its semaphore and woke its
        send thread, which cost more than the messages' bytes)."""
        if not hasattr(datapath, 'send'):
            # A datapath that takes only message objects (tests' recorders).
            self._send_each(datapath, messages)
            return
        chunks = []
        try:
            self.pack(datapath, messages, chunks)
        finally:
            # What was packed goes out even if a later message fails, as it
            # did message by message.
            if chunks:
                write(datapath, b''.join(chunks))

    def send_barrier(self, datapath) -> int:
        """Send a barrier request now, also to a switch that executes in
        order (its reply then says the switch has processed everything
        sent before it); return its xid."""
        message = model.Barrier(datapath.id)
        (xid, data), = openflow.to_wire(datapath, message,
                                        _xids_of(datapath))
        self._remember(datapath, xid, message)
        write(datapath, data)
        return xid

    def pack(self, datapath, messages, chunks):
        """Append the bytes of `messages` to `chunks`, for the caller to
        write next (in one `write`, before anything else)."""
        if not hasattr(datapath, 'send'):
            self._send_each(datapath, messages)
            return
        new_xid = _xids_of(datapath)
        packed = []
        try:
            for message in self._needed(datapath, messages):
                try:
                    wire = openflow.to_wire(datapath, message, new_xid)
                except openflow.UnsupportedFlow as exc:
                    # A policy bug must not take the switch connection down.
                    LOG.error('dpid=%#x: not sending %s', datapath.id, exc)
                    continue
                for xid, data in wire:
                    self._remember(datapath, xid, message)
                    chunks.append(data)
                packed.append(message)
        finally:
            self.metrics.count_sent(datapath.id, packed)

    def _send_each(self, datapath, messages):
        for message in self._needed(datapath, messages):
            try:
                ofp_msgs = openflow.to_ofp_messages(datapath, message)
            except openflow.UnsupportedFlow as exc:
                LOG.error('dpid=%#x: not sending %s', datapath.id, exc)
                continue
            for ofp_msg in ofp_msgs:
                datapath.set_xid(ofp_msg)
                self._remember(datapath, ofp_msg.xid, message)
                datapath.send_msg(ofp_msg)
            self.metrics.count_sent(datapath.id, (message,))

    def _remember(self, datapath, xid, message):
        ring = self._sent.get(datapath.id)
        if ring is None:
            ring = self._sent[datapath.id] = ([None] * SENT_MEMORY,
                                              [None] * SENT_MEMORY)
        slot = xid % SENT_MEMORY
        ring[0][slot] = xid
        ring[1][slot] = message
