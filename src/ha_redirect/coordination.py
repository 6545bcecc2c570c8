"""Which controller is in charge: a tooz leader lock held on a lease.

Several controllers serve the same switches; the one holding the cluster's
leader lock in the coordination server (Redis) is MASTER of every switch,
the others are SLAVE. tooz's Redis driver elects a group's leader with
exactly this lock (`watch_elected_as_leader`); we take it through tooz's
public lock API instead, so that each renewal can be checked and timed:

- The lease: the lock expires in the server `lease` seconds after its last
  renewal. The holder counts its lease from just *before* it sent that
  renewal, minus a margin, so it stops writing before the server could
  give the lock to anyone else (`may_write`).
- The generation: each new leader takes the next value of a counter kept
  in the coordination server, never below any generation a switch has
  shown us, and sends it in its OpenFlow role requests: a switch refuses a
  master with an older one (OFPRRFC_STALE).

No os-ken here: `Election.step` is called from a thread of the app's, and
its result says what changed.
"""

import logging
import os
import socket
import time
import typing
import urllib.parse
import warnings

LOG = logging.getLogger(__name__)

# The lease is counted down from before the renewal was sent, less this
# share of it: clocks may run at slightly different rates.
LEASE_MARGIN = 0.15
# Lua: the counter's next value, at least ARGV[1] (a switch may have seen a
# higher generation, e.g. if the coordination server lost its data).
_NEXT_GENERATION = """
local value = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if value < floor then
    redis.call('SET', KEYS[1], ARGV[1])
    value = floor
end
return value
"""


def _lock_not_ours(exc):
    """Whether a failed renewal says the lock is not ours (rather than
    that Redis could not be asked)."""
    while exc is not None:
        if type(exc).__name__ in ('LockNotOwnedError', 'LockError'):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class CoordinationError(Exception):
    """The coordination backend cannot be used (bad URL, unsupported)."""


def check_backend_url(url: str) -> None:
    """Raise CoordinationError naming what is wrong with `url`."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != 'redis':
        raise CoordinationError(
            f'backend_url {url!r}: only redis:// is supported (the '
            'generation counter lives in Redis)')
    if not parsed.hostname:
        raise CoordinationError(f'backend_url {url!r}: no host')
    options = dict(urllib.parse.parse_qsl(parsed.query))
    if 'sentinel' in options:
        raise CoordinationError(
            f'backend_url {url!r}: Redis Sentinel is not supported (the '
            'generation counter talks to one Redis server)')


def default_member_id() -> str:
    return f'{socket.gethostname()}:{os.getpid()}'


class Election:
    """This controller's part in the cluster `group`'s election.

    Call `start()` once, then `step()` every `interval` seconds from one
    thread; `may_write()` may be read from any thread.
    """

    def __init__(self, backend_url: str, member_id: str = '',
                 group: str = 'ha_redirect', lease: int = 3,
                 clock: typing.Callable[[], float] = time.monotonic):
        check_backend_url(backend_url)
        self.backend_url = backend_url
        self.member_id = member_id or default_member_id()
        self.group = group
        self.lease = int(lease)
        self.clock = clock
        self.interval = max(0.05, self.lease / 6)
        self.generation: typing.Optional[int] = None   # ours, while leader
        self.seen_generation = 0      # highest any switch has shown us
        self.lease_deadline = 0.0
        self.last_error = ''
        self.members: typing.Dict[str, typing.Any] = {}
        self.master = ''       # 'member generation', as the leader says
        self._coordinator = None
        self._lock = None
        self._redis = None
        self._joined = False
        self._members_read = 0.0
        self._release_pending = False

    # Queries (any thread) ----------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.generation is not None

    def may_write(self, now: typing.Optional[float] = None) -> bool:
        """Leader, with time left on the lease."""
        now = self.clock() if now is None else now
        return self.is_leader and now < self.lease_deadline

    # Life cycle (the election thread) -------------------------------------

    def _url(self):
        parsed = urllib.parse.urlparse(self.backend_url)
        options = dict(urllib.parse.parse_qsl(parsed.query))
        # The lock must live exactly as long as the lease we count (a
        # shorter one would expire while we still write), and a blocked
        # call must not outlive the lease by much.
        options['lock_timeout'] = str(self.lease)
        options.setdefault('socket_timeout', str(self.lease / 4))
        options.setdefault('socket_connect_timeout', str(self.lease / 4))
        options.setdefault('timeout', str(self.lease * 2))
        return parsed._replace(query=urllib.parse.urlencode(options)).geturl()

    def start(self, coordinator=None, redis_client=None) -> None:
        """Connect to the coordination server (or use the given tooz
        coordinator and Redis client: tests do)."""
        if coordinator is None or redis_client is None:
            coordinator, redis_client = self._connect()
        self._coordinator = coordinator
        self._redis = redis_client
        self._lock = coordinator.get_lock(f'{self.group}.leader'.encode())
        LOG.info('coordination: member %s of %s at %s, lease %d s',
                 self.member_id, self.group, self._safe_url(), self.lease)

    def _connect(self):
        # futurist, under tooz, warns that eventlet is deprecated merely
        # because os-ken installed it.
        warnings.filterwarnings('ignore', message='.*Eventlet is deprecated')
        import redis                      # both only when configured
        from tooz import coordination
        # tooz logs each failed lock renewal with a traceback; step() says
        # in one line what failed, and what it means for the lease.
        logging.getLogger('tooz').setLevel(logging.ERROR)
        url = self._url()
        coordinator = coordination.get_coordinator(
            url, self.member_id.encode())
        coordinator.start(start_heart=False)
        parsed = urllib.parse.urlparse(url)
        options = dict(urllib.parse.parse_qsl(parsed.query))
        db = options.get('db') or parsed.path.strip('/') or '0'
        # One try per call: the election thread tries again each step, and
        # a call that retries for a minute would outlive the lease.
        from redis import backoff
        from redis import retry
        client = redis.Redis(
            host=parsed.hostname, port=parsed.port or 6379,
            username=parsed.username, password=parsed.password,
            db=int(db), socket_timeout=self.lease / 4,
            socket_connect_timeout=self.lease / 4,
            retry=retry.Retry(backoff.NoBackoff(), 0))
        return coordinator, client

    def _safe_url(self):
        parsed = urllib.parse.urlparse(self.backend_url)
        return f'{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}'

    def stop(self) -> None:
        """Resign (the others need not wait for the lease) and leave."""
        self.resign('stopping')
        self._release_if_pending()
        if self._coordinator is not None:
            try:
                self._coordinator.stop()
            except Exception as exc:   # tooz raises its own and redis's
                LOG.warning('coordination: leaving: %s', exc)

    def resign(self, why: str) -> None:
        """Stop leading at once; any thread may call it. The lock itself is
        released by the election thread's next step: a call to Redis here
        could block the app's event thread."""
        was_leader = self.is_leader
        self.generation = None
        self.lease_deadline = 0.0
        if was_leader:
            self._release_pending = True
            LOG.warning('coordination: %s no longer leads %s: %s',
                        self.member_id, self.group, why)

    def _release_if_pending(self):
        if not self._release_pending or self._lock is None:
            return
        self._release_pending = False
        try:
            self._lock.release()
        except Exception as exc:
            LOG.info('coordination: releasing the lock: %s', exc)

    def step(self) -> typing.List[typing.Tuple[str, typing.Any]]:
        """Renew or seek leadership once. Returns the changes, in order:
        ('elected', generation) or ('lost', why)."""
        events = []
        self._release_if_pending()
        t_sent = self.clock()
        try:
            if not self._joined:
                self._join()
            self._coordinator.heartbeat()
            if self.is_leader:
                if self._lock.heartbeat() and self._lock.is_still_owner():
                    self.lease_deadline = t_sent + self.lease * (
                        1 - LEASE_MARGIN)
                else:
                    self.resign('the leader lock is held by another')
                    events.append(('lost', 'lock lost'))
            elif self._lock.acquire(blocking=False):
                self.lease_deadline = t_sent + self.lease * (1 - LEASE_MARGIN)
                try:
                    self.generation = self._next_generation()
                except Exception:
                    self._lock.release()
                    raise
                events.append(('elected', self.generation))
                LOG.warning('coordination: %s leads %s, generation %d',
                            self.member_id, self.group, self.generation)
            if self.is_leader:
                # For everyone's status: expires with the lease.
                self._redis.set(f'{self.group}.master',
                                f'{self.member_id} (generation '
                                f'{self.generation})', px=self.lease * 1000)
            self.last_error = ''
            self._read_members()
        except Exception as exc:
            if self.is_leader and _lock_not_ours(exc):
                # The lock is gone or someone else's (Redis lost its data):
                # another may be elected now, so stop now.
                self.resign(f'the leader lock is not ours: {exc}')
                events.append(('lost', 'lock lost'))
            # Otherwise (Redis unreachable, slow): keep the lease we have;
            # it runs out below if this goes on.
            if str(exc) != self.last_error:
                LOG.warning('coordination: %s', exc)
            self.last_error = str(exc)
            self._joined = False     # the group may be gone with the data
        if self.is_leader and self.clock() >= self.lease_deadline:
            self.resign('lease expired without renewal')
            events.append(('lost', 'lease expired'))
        return events

    def _join(self):
        group = self.group.encode()
        for call in (self._coordinator.create_group,
                     self._coordinator.join_group):
            try:
                call(group).get()
            except Exception as exc:
                # tooz's GroupAlreadyExist and MemberAlreadyExist are fine.
                if 'AlreadyExist' not in type(exc).__name__:
                    raise
        self._joined = True

    def _next_generation(self) -> int:
        key = f'{self.group}.generation'
        value = self._redis.eval(_NEXT_GENERATION, 1, key,
                                 self.seen_generation + 1)
        self.seen_generation = max(self.seen_generation, int(value))
        return int(value)

    def current_generation(self) -> int:
        """The counter's value now (0 if unset): what a SLAVE may send."""
        value = self._redis.get(f'{self.group}.generation')
        return int(value or 0)

    def _read_members(self):
        now = self.clock()
        if now - self._members_read < 1.0:
            return
        self._members_read = now
        members = self._coordinator.get_members(self.group.encode()).get()
        self.members = {m.decode(): True for m in members}
        master = self._redis.get(f'{self.group}.master')
        self.master = master.decode() if master else ''

    def note_switch_generation(self, generation: int) -> None:
        """A switch showed this generation (a role reply): the next one we
        take must be higher."""
        if generation > self.seen_generation and generation < 1 << 63:
            self.seen_generation = generation
