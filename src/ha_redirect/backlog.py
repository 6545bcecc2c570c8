"""How many packets from the switch may wait for the controller, and in
which order they are handled.

os-ken puts every event of an app in one FIFO queue and, when it is full,
blocks the thread that reads the switch's connection, so a PortStatus waits
in the socket behind a flood of PacketIns. The app admits PacketIns through
a `PacketInBacklog`: past its bounds they are dropped on arrival (the host
retransmits), and those it admits are handled round-robin across the ports
they came in on, so one flooding host cannot crowd out the others. Nothing
is handled before an event that reached the app ahead of it.

PacketIns handled below the queue (`ha_redirect.fast_path`) are bounded
the same way while they wait there, into the same count of what was shed.

Pure and thread-safe; it knows nothing of os-ken.
"""

import collections
import threading
import typing


class PacketInBacklog:
    """Bounded, per-port fair backlog of PacketIns; keys are (switch, port).

    Each admitted PacketIn also goes into the app's event queue, where it
    serves as a token: when a token's turn comes, `take(token)` returns the
    PacketIn to handle now, the oldest of the next port in turn among those
    that arrived before every later non-PacketIn event (`note_event`).
    """

    def __init__(self, total: int, per_port: int):
        self.total = total
        self.per_port = per_port
        self._lock = threading.Lock()
        self._epoch = 0          # non-PacketIn events seen so far
        # port key -> deque of (epoch, packet), in the order ports take
        # turns
        self._waiting: typing.Dict[typing.Any, collections.deque] = (
            collections.OrderedDict())
        self._token_epochs: typing.Dict[int, int] = {}
        self._size = 0
        self.shed: typing.Counter = collections.Counter()

    def __len__(self):
        return self._size

    def note_event(self) -> None:
        """Another kind of event entered the queue: PacketIns admitted
        from now on must not be handled before it."""
        with self._lock:
            self._epoch += 1

    def admit(self, key, packet, exempt_from_total: bool = False) -> bool:
        """Keep `packet` (from port `key`) unless its port, or the whole
        backlog, is full; `exempt_from_total` for packets that must not
        be crowded out by others (health probes' replies)."""
        with self._lock:
            waiting = self._waiting.get(key)
            if (waiting is not None and len(waiting) >= self.per_port) or (
                    self._size >= self.total and not exempt_from_total):
                self.shed[key] += 1
                return False
            if waiting is None:
                waiting = self._waiting[key] = collections.deque()
            waiting.append((self._epoch, packet))
            self._token_epochs[id(packet)] = self._epoch
            self._size += 1
            return True

    def take(self, token):
        """The packet to handle for this token (the token itself if it was
        never admitted here)."""
        with self._lock:
            epoch = self._token_epochs.pop(id(token), None)
            if epoch is None:
                return token
            for key, waiting in self._waiting.items():
                if waiting[0][0] <= epoch:
                    break
            else:       # unreachable: the token's own port qualifies
                raise AssertionError('no PacketIn for a token')
            _, packet = waiting.popleft()
            del self._waiting[key]
            if waiting:
                self._waiting[key] = waiting    # to the back of the line
            self._size -= 1
            return packet

    def holds(self, switch) -> bool:
        """Whether a PacketIn of `switch` waits here."""
        with self._lock:
            return any(key[0] == switch for key in self._waiting)

    def count_shed(self, shed: typing.Counter) -> None:
        """Add PacketIns dropped elsewhere (below the queue) to the count."""
        with self._lock:
            self.shed.update(shed)

    def take_shed(self) -> typing.Counter:
        """What was dropped since the last call, by port."""
        with self._lock:
            shed, self.shed = self.shed, collections.Counter()
            return shed
