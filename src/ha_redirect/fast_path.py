"""PacketIns handled in the switch's receive thread, below os-ken's queue.

os-ken parses every message of a switch into objects in its receive thread,
queues them as events, and the app's thread takes them one by one: for a
PacketIn, that parse and the thread hand-offs cost more than the policy's
decision. A `SwitchReader` stands in for the switch's socket under os-ken's
receive loop. It splits what it reads into OpenFlow messages and offers
each run of PacketIns to the app, which handles them there and then, or
declines (then os-ken gets them, as before). Every other message goes to
os-ken (but a barrier reply that no app or handler would receive: os-ken
would only parse it), and a PacketIn behind it waits until os-ken has
delivered it (its next read): so the app sees whether that message queued
an event of this switch, and no PacketIn is ever handled before a message
that came ahead of it.

The PacketIns waiting here are bounded as the app's queue bounds its own
(`ha_redirect.backlog`): past that they are dropped as they are read, and
counted. Each read takes all the switch has sent (up to `READ_SIZE`), so
no backlog waits unseen in the socket.

It also writes for the app (`write_now`). os-ken writes everything from
a send thread of its own; while another thread computed a burst of changes
(holding the GIL), that thread went unscheduled for up to 9 ms here, and
the burst's chunks and the answers to the PacketIns between them waited
for it. What the app sends is written at once by the thread that made it,
unless something queued before it is still unwritten: then it queues too,
so the switch gets everything in the order it was sent.

Part of the os-ken shell (`ha_redirect.app`), which decides when a run may
be handled here (`RedirectApp.take_packet_ins`).
"""

import collections
import logging
import select
import socket
import ssl
import struct
import threading
import time
import typing

from os_ken.controller import ofp_event

from ha_redirect.openflow import decoder
from ha_redirect.openflow import wire

LOG = logging.getLogger('ha_redirect.app')

READ_SIZE = 1 << 18
_OFPT_PACKET_IN = 10
_OFP_VERSION_1_3 = 4     # from 1.3 on, PacketIns share one layout
_HEADER_SIZE = 8
# Messages that tell nothing about the switch's state (echoes, barrier
# replies): a PacketIn behind one may be answered first. Every answer to a
# new connection ends in a barrier, so their replies keep arriving during a
# burst of changes.
# (Their type numbers are the same from OpenFlow 1.3 to 1.5.)
_OFPT_ECHO_REQUEST, _OFPT_ECHO_REPLY, _OFPT_BARRIER_REPLY = 2, 3, 21
_STATELESS_TYPES = frozenset((_OFPT_ECHO_REQUEST, _OFPT_ECHO_REPLY,
                              _OFPT_BARRIER_REPLY))
# So are a bundle's open and commit replies (a bundle the switch refuses
# comes back as an error): a burst's chunks go as bundles, and a SYN behind
# one of their replies waited for the whole burst. OpenFlow 1.4 on has a
# message type for them; 1.3 has ONF's extension.
_OFP_VERSION_1_4 = 5
_ONF_BUNDLE_CONTROL = struct.pack('!II', wire.ONF_EXPERIMENTER_ID,
                                  wire.ONF_ET_BUNDLE_CONTROL)


def _stateless(message) -> bool:
    """Whether a message (not a PacketIn) tells nothing about the
    switch's state: a PacketIn behind it may be answered first."""
    msg_type = message[1]
    if msg_type in _STATELESS_TYPES:
        return True
    if msg_type == wire.OFPT_BUNDLE_CONTROL:
        return message[0] >= _OFP_VERSION_1_4
    return (msg_type == wire.OFPT_EXPERIMENTER
            and message[0] < _OFP_VERSION_1_4
            and message[8:16] == _ONF_BUNDLE_CONTROL)


class SwitchReader:
    """A switch's socket, as os-ken's receive loop reads it: `recv`
    returns only whole messages (os-ken parses every whole message of a
    read, in order).

    `app` provides:
    - `take_packet_ins(datapath, packet_ins)`: handle a run of PacketIns
      (`decoder.PacketInFields`, in the order they came) now and return
      True, or return False;
    - `exempt_from_total(fields)`: a PacketIn never shed for the total;
    - `shed_packet_ins(datapath, shed)`: PacketIns dropped, a Counter by
      in_port;
    - `malformed_packet_in(datapath, error)`: a PacketIn whose OpenFlow
      fields do not parse, dropped (os-ken's parser would raise in its
      receive loop and end the connection).
    """

    def __init__(self, sock, datapath, app, total, per_port):
        self._sock = sock
        self._datapath = datapath
        self._app = app
        self._total = total
        self._per_port = per_port
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        self._raw = False       # a message os-ken must frame itself
        # Whole messages not yet handed on: (PacketInFields or None, bytes)
        self._messages = collections.deque()
        # in_port -> PacketIns (a plain dict: Counter's missing-key and
        # delete hooks are Python calls, made for every PacketIn).
        self._waiting = {}
        self._waiting_total = 0
        self._handed_on = 0     # messages in what recv last returned
        # Our barrier requests whose replies are not read yet (see
        # `expect_barrier_reply`).
        self._awaited = set()
        # Writes: one at a time, and none ahead of a buffer queued before
        # it (os-ken's queue holds it, or its send thread is writing it).
        self._write_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._queued = self._written = 0
        send = getattr(datapath, 'send', None)
        # Without a queue to count, nothing is written out of its turn.
        self._counting = send is not None
        if self._counting:
            def send_counted(buf, close_socket=False):
                with self._count_lock:
                    self._queued += 1
                return send(buf, close_socket=close_socket)
            # os-ken's own messages (send_msg) come through here as well.
            datapath.send = send_counted

    def recv(self, size, *args):
        while True:
            out = self._hand_on()
            if out:
                return out
            if self._raw:
                return self._drain_raw(size, *args)
            if self._end == len(self._buffer) or self._start:
                self._compact()
            received = self._sock.recv_into(self._view[self._end:])
            if not received:
                return b''      # os-ken drops a partial message at EOF too
            self._end += received
            self._split()

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def sendall(self, data, *args):
        """os-ken's send thread writing a buffer it took from its queue."""
        with self._write_lock:
            try:
                return self._sock.sendall(data, *args)
            finally:
                with self._count_lock:
                    self._written += 1

    def write_now(self, data) -> bool:
        """Write `data` to the switch at once and return True, unless a
        buffer queued earlier is not yet written (or is being written):
        then False, and the caller queues `data` behind it."""
        if not self._counting or not self._write_lock.acquire(
                blocking=False):
            return False
        try:
            with self._count_lock:
                if self._queued != self._written:
                    return False
            try:
                self._sock.sendall(data)
            except OSError as exc:
                # Part of it may be out: nothing can follow it. End the
                # connection as os-ken's send thread would have.
                LOG.warning('dpid=%s: writing to the switch failed (%s); '
                            'closing its connection',
                            self._datapath.id, exc)
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return True
        finally:
            self._write_lock.release()

    def packet_ins_behind(self):
        """The PacketIns that came right behind the message os-ken is
        delivering, read without waiting ([] unless that message is all
        the last `recv` returned), up to the next message that is not a
        PacketIn, an echo or a barrier reply. A handler of that message may
        answer them before it returns: they overtake nothing the app
        handles."""
        if self._handed_on != 1 or self._raw:
            return []
        self._read_available()
        run, passed = [], []
        messages = self._messages
        while messages:
            fields, message = messages[0]
            if fields is None:
                if not _stateless(message):
                    break
                passed.append(messages.popleft())
                continue
            messages.popleft()
            self._release(fields)
            run.append(fields)
        messages.extendleft(reversed(passed))
        return run

    def can_wait_for_switch(self) -> bool:
        """Whether `wait_for_switch` can read here: not over TLS (a
        record may be half read), nor once os-ken frames for itself."""
        return not self._raw and not isinstance(self._sock, ssl.SSLSocket)

    def expect_barrier_reply(self, xid):
        """Note our barrier request `xid` (sent after this call), whose
        reply `wait_for_switch(xid, ...)` may wait for."""
        self._awaited.add(xid)

    def forget_barrier_replies(self):
        """Stop noting the replies not read yet (a burst is over)."""
        self._awaited.clear()

    def wait_for_switch(self, xid, deadline) -> typing.Optional[bool]:
        """Read what the switch sends, waiting until `deadline`
        (time.monotonic) for some of it. True once the reply to `xid`
        (noted with `expect_barrier_reply`) has been read; None if more
        may come, to call again (after answering the PacketIns read,
        `packet_ins_behind`); False if it cannot come in time: the
        deadline passed, the switch closed the connection, or what it
        sent fills the buffer unread. What is read waits for os-ken as
        any other read would; it runs in the receive thread only."""
        if xid not in self._awaited:
            return True
        if self._end == len(self._buffer) or self._start:
            self._compact()
        if self._end == len(self._buffer):
            return False
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0 or not select.select(
                    [self._sock], [], [], remaining)[0]:
                return False
            received = self._sock.recv_into(self._view[self._end:])
        except (OSError, ValueError):
            return False    # os-ken's next recv meets it, as it would have
        if not received:
            return False    # (and so does the end of the connection)
        self._end += received
        self._split()
        return True if xid not in self._awaited else None

    def _read_available(self):
        if self._end == len(self._buffer) or self._start:
            self._compact()
        if self._end == len(self._buffer) or isinstance(self._sock,
                                                        ssl.SSLSocket):
            return      # (a TLS read may wait for the rest of a record)
        try:
            # os-ken gives the socket a timeout, and Python then waits for
            # data before any read, whatever its flags: ask first.
            if not select.select([self._sock], [], [], 0)[0]:
                return
            received = self._sock.recv_into(self._view[self._end:])
        except (OSError, ValueError):
            return      # os-ken's next recv meets it, as it would have
        if received:
            self._end += received
            self._split()

    def _compact(self):
        remaining = self._end - self._start
        self._buffer[:remaining] = self._buffer[self._start:self._end]
        self._start, self._end = 0, remaining

    def _drain_raw(self, size, *args):
        if self._start < self._end:
            data = bytes(self._view[self._start:self._end])
            self._start = self._end = 0
            return data
        return self._sock.recv(max(size, 1 << 16), *args)

    def _split(self):
        """Queue the whole messages read; bound the PacketIns among them."""
        buffer, view = self._buffer, self._view
        offset, end = self._start, self._end
        shed = None
        waiting = self._waiting
        while end - offset >= _HEADER_SIZE:
            length = (buffer[offset + 2] << 8) | buffer[offset + 3]
            if length < _HEADER_SIZE:
                # Not a message we can frame: os-ken copes with it (and with
                # everything after it) as it did before this reader.
                self._raw = True
                break
            if end - offset < length:
                break
            message = view[offset:offset + length]
            msg_type = buffer[offset + 1]
            from_1_3 = buffer[offset] >= _OFP_VERSION_1_3
            offset += length
            if msg_type != _OFPT_PACKET_IN or not from_1_3:
                if msg_type == _OFPT_BARRIER_REPLY and self._awaited:
                    self._awaited.discard(
                        int.from_bytes(message[4:8], 'big'))
                if not (msg_type == _OFPT_BARRIER_REPLY and from_1_3
                        and self._unheard(ofp_event.EventOFPBarrierReply)):
                    self._messages.append((None, bytes(message)))
                continue
            try:
                fields = decoder.parse_packet_in(message)
            except decoder.MalformedPacket as exc:
                self._guarded(self._app.malformed_packet_in,
                              self._datapath, exc)
                continue
            port = fields.in_port
            held = waiting.get(port, 0)
            if held >= self._per_port or (
                    self._waiting_total >= self._total
                    and not self._guarded(self._app.exempt_from_total,
                                          fields)):
                if shed is None:
                    shed = collections.Counter()
                shed[port] += 1
                continue
            waiting[port] = held + 1
            self._waiting_total += 1
            self._messages.append((fields, bytes(message)))
        self._start = offset
        if shed:
            self._guarded(self._app.shed_packet_ins, self._datapath, shed)

    def _unheard(self, event_class):
        """No app or handler of os-ken's takes `event_class` now: os-ken
        would parse such a message and drop it.

        Every answer to a new connection ends in a barrier, and its reply,
        handed on alone, would cost os-ken a parse and the PacketIns behind
        it a receive loop's turn."""
        brick = getattr(self._datapath, 'ofp_brick', None)
        observers = getattr(brick, 'observers', None)
        handlers = getattr(brick, 'event_handlers', None)
        return observers is not None and handlers is not None and not (
            observers.get(event_class) or handlers.get(event_class))

    @staticmethod
    def _guarded(callback, *args):
        """An app callback run while framing: whatever it raises is logged,
        never let out into os-ken's receive loop, which would end the
        switch's connection (None then)."""
        try:
            return callback(*args)
        except Exception:
            LOG.exception('a callback while reading PacketIns failed; '
                          'reading on')
            return None

    def _hand_on(self):
        """Offer the leading run of PacketIns to the app; return os-ken's
        bytes: the declined, then the next other message."""
        messages = self._messages
        out = []
        run = []
        while messages:
            fields, message = messages[0]
            if fields is not None:
                if out:
                    break       # after os-ken has delivered what is ahead
                run.append(messages.popleft())
                self._release(fields)
                continue
            if run:
                self._offer(run, out)
                run = []
            out.append(message)
            messages.popleft()
            # One at a time: while os-ken delivers it, the PacketIns behind
            # it overtake nothing (`packet_ins_behind`).
            break
        if run:
            self._offer(run, out)
        self._handed_on = len(out)
        return b''.join(out)

    def _release(self, fields):
        self._waiting_total -= 1
        port = fields.in_port
        if self._waiting[port] > 1:
            self._waiting[port] -= 1
        else:
            del self._waiting[port]

    def _offer(self, run, out):
        try:
            if self._app.take_packet_ins(self._datapath,
                                         [fields for fields, _ in run]):
                return
        except Exception:
            # Some may have been handled: never twice, and never end
            # os-ken's receive loop (and with it the connection).
            LOG.exception('dropped %d PacketIns: handling them below the '
                          'queue failed', len(run))
            return
        out.extend(message for _, message in run)
