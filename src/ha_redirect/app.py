"""The os-ken app: a thin shell that feeds switch events to a RedirectPolicy.

Each handler finds the datapath, asks the policy, and sends what it returns
through `ha_redirect.openflow`. Nothing here decides anything. A switch's
PacketIns (and PortStatus) are handled in its receive thread when nothing
of that switch waits in the app's queue (`ha_redirect.fast_path`), under
the lock that every handler holds. With several
controllers, `ha_redirect.roles` keeps each switch's role and gates every
write (its takeover read is `ha_redirect.adoption`); the operator's requests
are `ha_redirect.operator_requests`'. They are plain objects: os-ken's
handlers stay here, in the one OSKenApp class of this module.
"""

import collections
import logging
import queue
import sys
import threading
import time

from os_ken.base import app_manager
from os_ken.controller import event
from os_ken.controller import handler
from os_ken.controller import ofp_event
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_4
from os_ken.ofproto import ofproto_v1_5

from ha_redirect import adoption
from ha_redirect import backlog
from ha_redirect import control
from ha_redirect import coordination
from ha_redirect import fast_path
from ha_redirect import metrics as metrics_mod
from ha_redirect import model
from ha_redirect import openflow
from ha_redirect.openflow import decoder
from ha_redirect import operator_requests
from ha_redirect import opts
from ha_redirect import policy as policy_mod
from ha_redirect import roles as roles_mod
from ha_redirect import switch_io

LOG = logging.getLogger(__name__)

MAIN = handler.MAIN_DISPATCHER


class EventTick(event.EventBase):
    """Time passes: monitors may probe or time out (our own event, so the
    policy is only ever called from the app's event thread)."""


# The collaborators' events and timeouts, importable from here as before.
EventControl = operator_requests.EventControl
EventStatsTimeout = operator_requests.EventStatsTimeout
EventLeadership = roles_mod.EventLeadership
EventAdoptionTimeout = adoption.EventAdoptionTimeout
CONTROL_TIMEOUT = operator_requests.CONTROL_TIMEOUT
ADOPTION_TIMEOUT = adoption.ADOPTION_TIMEOUT
METRICS_REFRESH = metrics_mod.REFRESH_INTERVAL

# Seconds between two log lines about malformed PacketIns.
MALFORMED_LOG_INTERVAL = 1.0

# PacketIns waiting in the app's queue, in all and per switch port (see
# ha_redirect.backlog). Past these, new ones are dropped on arrival. The
# total stays under os-ken's queue of 128, leaving room for other events;
# a port's share absorbs a legitimate burst (8 shed 1 % of 500 connections
# a second from one port).
PACKET_IN_BACKLOG = 100
PACKET_IN_BACKLOG_PER_PORT = 32

# PacketIns handled below the queue hold the policy for this many at a time,
# then write their messages in one send: the app's thread waits at most
# that long for its turn.
FAST_PATH_BATCH = 16

# FlowRemoved reasons, as the metric names them (OpenFlow 1.3-1.5 numbers).
FLOW_REMOVED_REASONS = {0: 'idle_timeout', 1: 'hard_timeout', 2: 'delete',
                        3: 'group_delete', 4: 'meter_delete',
                        5: 'eviction'}

# A burst of changes (one link carries many services' primaries) goes out a
# chunk at a time; once this many of its messages may be unprocessed at the
# switch, a barrier follows them, and the chunk after next waits for its
# reply (the switch always has one chunk to work on). Open vSwitch
# handles up to 50 OpenFlow messages per turn of the loop that (on its
# userspace datapath) also forwards packets: with a whole burst queued
# there, every packet of the first redirected connections waited behind 50
# changes at each pass through the switch.
BURST_PACE_MESSAGES = 16
# At most this long per chunk: a switch that has not replied by then gets
# the rest of the burst without waiting.
BURST_PACE_TIMEOUT = 0.05


def _message_count(messages):
    """OpenFlow messages in `messages` (a bundle's count one each)."""
    return sum(len(m.messages) if type(m) is model.Bundle else 1
               for m in messages)


# How long a Python thread may hold the GIL while another waits for it
# (Python's default: 5 ms). os-ken writes every message from a thread of its
# own, so while a receive thread computes a burst (a link that carries many
# services), each chunk it queued waited up to 5 ms to be written, and so
# did the answers to the PacketIns let in between chunks.
GIL_SWITCH_INTERVAL = 0.0005
PYTHON_SWITCH_INTERVAL = 0.005


def shorten_gil_switch_interval():
    """Set `GIL_SWITCH_INTERVAL` for the process, unless it has chosen
    its own (an app loaded by another controller's process)."""
    if sys.getswitchinterval() == PYTHON_SWITCH_INTERVAL:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        LOG.debug('GIL switch interval: %g s', GIL_SWITCH_INTERVAL)


class RedirectApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION,
                    ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        redirect_policy = kwargs.pop('redirect_policy', None)
        self.control_socket = kwargs.pop('control_socket', None)
        # With an Election, this is one of several controllers: it writes
        # to a switch only as its MASTER, while it leads.
        self.election = kwargs.pop('election', None)
        # (host, port) of the Prometheus endpoint, or None: none.
        self._metrics_address = kwargs.pop('metrics_address', None)
        # 'auto' or 'always': see the switch_barriers option.
        self.switch_barriers = kwargs.pop('switch_barriers', 'auto')
        super().__init__(*args, **kwargs)
        if redirect_policy is None:
            opts.register_opts(self.CONF)
            config = opts.load_policy_config(self.CONF)
            redirect_policy = policy_mod.RedirectPolicy(
                config.services, config.settings)
            self.control_socket = self.CONF[opts.GROUP].control_socket
            self.switch_barriers = self.CONF[opts.GROUP].switch_barriers
            metrics_opts = self.CONF[opts.METRICS_GROUP]
            if metrics_opts.port:
                self._metrics_address = (metrics_opts.host,
                                         metrics_opts.port)
            coord = self.CONF[opts.COORDINATION_GROUP]
            if coord.backend_url:
                self.election = coordination.Election(
                    coord.backend_url, coord.member_id, coord.group,
                    coord.lease)
        self.policy = redirect_policy
        self.metrics = metrics_mod.ControllerMetrics()
        redirect_policy.set_observer(self.metrics)
        self._port_states = {}   # dpid -> {port: up}, kept in every role
        self._control = None
        self.clock = time.monotonic
        self._datapaths = {}
        self._switch_roles = roles_mod.SwitchRoles(
            self.election, redirect_policy, self._now, self._datapaths,
            self._post_later, self._adopt)
        self._operator = operator_requests.OperatorRequests(
            redirect_policy, self._switch_roles, self._now, self._datapaths,
            self._send_all, self._post_later)
        self._port_desc_parts = {}
        self._writer = switch_io.SwitchWriter(self.metrics)
        self._tick_pending = False
        self._max_meter_id = {}     # dpid -> highest usable meter id
        self._backlog = backlog.PacketInBacklog(
            PACKET_IN_BACKLOG, PACKET_IN_BACKLOG_PER_PORT)
        self._shed_reported = 0.0
        # The policy, and what goes with it (our tables, roles, the writer),
        # is used by the app's thread and by switches' receive threads
        # (their PacketIns below the queue, `take_packet_ins`): one at a
        # time, and each handler's messages written before the next.
        self._policy_lock = threading.Lock()
        # The switch whose event its receive thread is handling (under the
        # policy lock), if any: see `_answer_packet_ins_behind`.
        self._in_place = None
        # id(datapath) -> its events in the app's queue or being handled
        self._queued = {}
        self._queued_lock = threading.Lock()
        self._packet_in_counters = {}
        self.packet_ins_malformed = 0
        self._malformed_logged_at = -float('inf')

    def _send_event(self, ev, state):
        # Runs in the thread that delivers the event: a switch's receive
        # thread, which must never block behind a flood of PacketIns.
        if isinstance(ev, ofp_event.EventOFPPacketIn):
            msg = ev.msg
            if not self._backlog.admit(
                    (msg.datapath.id, msg.match.get('in_port')), ev,
                    exempt_from_total=msg.cookie & 0xffff == model.ROLE_PROBE):
                self._count_shed(1)
                return
        else:
            if isinstance(ev, ofp_event.EventOFPPortStatus):
                ev.received_at = time.monotonic()
                if self._handle_in_place(ev, state):
                    return
            elif isinstance(ev, ofp_event.EventOFPSwitchFeatures):
                self._read_below_the_queue(ev.msg.datapath)
            self._backlog.note_event()
        self._count_queued(ev, 1)
        super()._send_event(ev, state)

    def _handle_in_place(self, ev, state):
        """Handle a switch's event in its receive thread, if nothing of
        that switch waits in the queue (else False): a link's change then
        never waits for the app's thread to wake, nor behind other
        switches' events."""
        datapath = ev.msg.datapath
        with self._policy_lock:
            if id(datapath) in self._queued or self._backlog.holds(
                    datapath.id):
                return False
            self._in_place = datapath
            try:
                self._handle_event(ev, state)
            finally:
                self._in_place = None
        return True

    def _read_below_the_queue(self, datapath):
        """From now on, read this switch with a `fast_path.SwitchReader`.
        Called in its receive thread as it delivers the features reply:
        os-ken's loop then holds no byte beyond that message (it reads each
        message's header and body exactly), so the reader starts on a
        message's first byte."""
        if hasattr(datapath, 'socket') and not isinstance(
                datapath.socket, fast_path.SwitchReader):
            datapath.socket = fast_path.SwitchReader(
                datapath.socket, datapath, self, PACKET_IN_BACKLOG,
                PACKET_IN_BACKLOG_PER_PORT)

    @staticmethod
    def _event_switch(ev):
        msg = getattr(ev, 'msg', None)
        if msg is not None:
            return getattr(msg, 'datapath', None)
        return getattr(ev, 'datapath', None)

    def _count_queued(self, ev, change):
        """Keep count of each switch's events in the queue or in hand."""
        datapath = self._event_switch(ev)
        if datapath is None:
            return
        key = id(datapath)
        with self._queued_lock:
            count = self._queued.get(key, 0) + change
            if count:
                self._queued[key] = count
            else:
                del self._queued[key]

    def _count_shed(self, count):
        self.metrics.packet_ins_dropped.inc(count)
        self._report_shed()

    def _report_shed(self):
        now = time.monotonic()
        if now - self._shed_reported < 1.0:
            return
        self._shed_reported = now
        shed = self._backlog.take_shed()
        LOG.warning('overloaded: dropped %d PacketIns (by (dpid, port): %s) '
                    'rather than delay other events', sum(shed.values()),
                    dict(shed.most_common(3)))

    def _event_loop(self):
        # os-ken 4's native hub makes hub.TaskExit an alias of Exception,
        # so os-ken's own loop re-raises whatever a handler raises and the
        # app's thread ends in silence: no more failover. One bad event
        # must cost only itself.
        while self.is_active or not self.events.empty():
            ev, state = self.events.get()
            self._events_sem.release()
            if ev == self._event_stop:
                continue
            with self._policy_lock:
                try:
                    self._handle_event(ev, state)
                finally:
                    # Else the switch would count as busy forever, its
                    # PacketIns never handled below the queue again.
                    self._count_queued(ev, -1)

    def _handle_event(self, ev, state):
        for event_handler in self.get_handlers(ev, state):
            try:
                event_handler(ev)
            except Exception:
                LOG.exception('%s: handler %s failed on %s; serving '
                              'on', self.name,
                              getattr(event_handler, '__name__',
                                      event_handler), type(ev).__name__)
        try:
            # (After a PortStatus that was no news, as after a PacketIn:
            # Open vSwitch sends one just ahead of a link's going down,
            # and with 1,000 services a full refresh held the real one
            # back by 0.7 ms.)
            self._refresh_metrics(every_time=not (
                isinstance(ev, ofp_event.EventOFPPacketIn)
                or getattr(ev, 'no_news', False)))
        except Exception:
            LOG.exception('metrics: refresh failed; serving on')

    def _refresh_metrics(self, every_time=True):
        self.metrics.refresh(self.policy, set(self._datapaths),
                             self._switch_roles.leads, every_time)

    def start(self):
        shorten_gil_switch_interval()
        thread = super().start()
        interval = self.policy.tick_interval
        if interval:
            hub.spawn(self._tick_loop, interval)
        if self.election is not None:
            hub.spawn(self._election_loop)
        if self._metrics_address:
            try:
                self.metrics.serve(*self._metrics_address)
            except OSError as exc:
                # Redirecting matters more than being scraped.
                LOG.error('no metrics endpoint on %s:%d: %s',
                          *self._metrics_address, exc)
        if self.control_socket:
            server = control.ControlServer(self.control_socket,
                                           self._ask_app_thread)
            try:
                server.start(hub.spawn)
                self._control = server
            except (OSError, control.ControlError) as exc:
                # Redirecting matters more than the operator's socket.
                LOG.error('no control socket: %s', exc)
        return thread

    def close(self):
        if self._control is not None:
            self._control.close()
        if self.election is not None:
            # Resigning lets another controller take over at once.
            self.election.stop()
        self.metrics.close()
        super().close()

    def _now(self):
        """The collaborators' clock: `clock` read at each call, so a test
        may replace it."""
        return self.clock()

    def _post_later(self, delay, ev):
        """A timer that only posts `ev`: the app's own thread handles it."""
        hub.spawn_after(delay, self.send_event, self.name, ev)

    def _tick_loop(self, interval):
        while self.is_active:
            hub.sleep(interval)
            if not self._tick_pending:   # never pile ticks up in the queue
                self._tick_pending = True
                self.send_event(self.name, EventTick())

    def _election_loop(self):
        """The election's own thread: its calls block on the network."""
        election = self.election
        started = False
        last_error = None
        while self.is_active:
            try:
                if not started:
                    election.start()
                    started = True
                for kind, detail in election.step():
                    self.send_event(self.name, EventLeadership(kind, detail))
            except Exception as exc:
                # Until the coordination server answers, this controller
                # stays SLAVE: no master is safer than two.
                if str(exc) != last_error:
                    LOG.error('coordination: %s; SLAVE until it answers',
                              exc)
                last_error = str(exc)
            hub.sleep(election.interval)

    @handler.set_ev_cls(EventTick)
    def on_tick(self, ev):
        self._tick_pending = False
        self._send_all(self.policy.on_tick(self.clock()))

    # Switch life cycle ----------------------------------------------------

    @handler.set_ev_cls(ofp_event.EventOFPSwitchFeatures,
                        handler.CONFIG_DISPATCHER)
    def on_switch_features(self, ev):
        # This handler also makes os-ken deliver the features reply to
        # `_send_event`, which then reads the switch below the queue.
        datapath = ev.msg.datapath
        self._max_meter_id.pop(datapath.id, None)
        # Barriers until the switch has said what it is.
        self._writer.executes_in_order(datapath.id, False)

    @handler.set_ev_cls(ofp_event.EventOFPStateChange, MAIN)
    def on_switch_ready(self, ev):
        # Not at the features reply: os-ken hands a reply to the handlers
        # of the state the switch was in when it arrived, and the switch
        # stays in CONFIG until os-ken's own port-description request is
        # answered. Replies to requests sent before then may be lost.
        datapath = ev.datapath
        # Before any flow of ours: the FlowRemoveds of our own deletes are
        # not wanted (see `openflow.async_config`).
        datapath.send_msg(openflow.async_config(datapath))
        datapath.send_msg(
            datapath.ofproto_parser.OFPDescStatsRequest(datapath, 0))
        # The switch answers in order: its meter features come before its
        # ports, which start the resync.
        datapath.send_msg(
            datapath.ofproto_parser.OFPMeterFeaturesStatsRequest(datapath, 0))
        self._request_ports(datapath)

    def _request_ports(self, datapath):
        """Ask for the port descriptions; their reply resyncs the switch."""
        self._port_desc_parts[datapath.id] = []
        datapath.send_msg(
            datapath.ofproto_parser.OFPPortDescStatsRequest(datapath, 0))

    @handler.set_ev_cls(ofp_event.EventOFPDescStatsReply, MAIN)
    def on_switch_desc(self, ev):
        datapath = ev.msg.datapath
        in_order = (self.switch_barriers == 'auto'
                    and openflow.executes_in_order(ev.msg.body))
        self._writer.executes_in_order(datapath.id, in_order)
        LOG.info('dpid=%#x is %s: %s', datapath.id,
                 openflow.switch_description(ev.msg.body) or 'undescribed',
                 'it carries out our messages in order, no barriers'
                 if in_order else 'barriers where order matters')

    @handler.set_ev_cls(ofp_event.EventOFPMeterFeaturesStatsReply, MAIN)
    def on_meter_features(self, ev):
        datapath = ev.msg.datapath
        ofproto = datapath.ofproto
        settings = self.policy.settings
        max_meter_id = max([
            f.max_meter for f in ev.msg.body
            if f.band_types & (1 << ofproto.OFPMBT_DROP)
            and f.capabilities & ofproto.OFPMF_PKTPS
            and f.capabilities & ofproto.OFPMF_BURST], default=0)
        self._max_meter_id[datapath.id] = max_meter_id
        needed = model.last_shared_meter_id(settings)
        if max_meter_id < needed and settings.packet_in_rate:
            LOG.warning('dpid=%#x: no usable OpenFlow meters (max %s, '
                        'need ids %d-%d, pktps, drop): PacketIns are not '
                        'rate-limited', datapath.id,
                        [f.max_meter for f in ev.msg.body],
                        settings.first_meter_id, needed)

    @handler.set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN)
    def on_port_desc(self, ev):
        datapath = ev.msg.datapath
        parts = self._port_desc_parts.setdefault(datapath.id, [])
        parts.extend(ev.msg.body)
        if ev.msg.flags & datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        del self._port_desc_parts[datapath.id]
        port_states = openflow.port_states_from_desc(parts, datapath.ofproto)
        self._datapaths[datapath.id] = datapath
        self._port_states[datapath.id] = port_states
        LOG.info('switch connected: dpid=%#x ports=%s', datapath.id,
                 sorted(port_states.items()))
        if self.election is None:
            self._send(datapath, self.policy.on_switch_connected(
                datapath.id, port_states, self.clock(),
                max_meter_id=self._max_meter_id.get(datapath.id, 0)))
        else:
            self._switch_roles.join(datapath)

    @handler.set_ev_cls(ofp_event.EventOFPStateChange, handler.DEAD_DISPATCHER)
    def on_switch_gone(self, ev):
        datapath = ev.datapath
        if datapath.id is None:
            return
        LOG.info('switch disconnected: dpid=%#x', datapath.id)
        if self._datapaths.get(datapath.id) is not datapath:
            # An old connection's end, handled after the switch came back
            # on a new one (or before it ever finished its handshake): the
            # live switch is not gone.
            return
        del self._datapaths[datapath.id]
        self._port_desc_parts.pop(datapath.id, None)
        self._switch_roles.forget(datapath.id)
        self._send(datapath, self.policy.on_switch_disconnected(
            datapath.id, self.clock()))

    # Events ---------------------------------------------------------------

    @handler.set_ev_cls(ofp_event.EventOFPPortStatus, MAIN)
    def on_port_status(self, ev):
        msg = ev.msg
        datapath = msg.datapath
        is_up = (msg.reason != datapath.ofproto.OFPPR_DELETE
                 and openflow.is_port_up(msg.desc, datapath.ofproto))
        now = self.clock()
        LOG.info('t=%.6f dpid=%#x port %d %s', now, datapath.id,
                 msg.desc.port_no, 'up' if is_up else 'down')
        ports = self._port_states.setdefault(datapath.id, {})
        if msg.reason == datapath.ofproto.OFPPR_DELETE:
            ports.pop(msg.desc.port_no, None)
        else:
            ports[msg.desc.port_no] = is_up
        if not self._switch_roles.is_master(datapath.id):
            return
        # One link can carry many services' primaries: each chunk goes on
        # the wire as soon as it is made, so the first redirects do not
        # wait for the whole burst to be computed and encoded, and the
        # PacketIns that arrive meanwhile are answered between chunks.
        version = self.policy.version
        sent = False
        paced = self._can_pace(datapath)
        unconfirmed = 0
        ahead = None        # the xid of our last barrier in this burst
        for chunk in self.policy.on_port_status_in_chunks(
                datapath.id, msg.desc.port_no, is_up, now):
            if chunk:
                if sent:
                    # (The first, one service's, goes as it is.)
                    chunk = switch_io.bundle_runs(datapath.id, chunk)
                self._send(datapath, chunk)
                sent = True
                unconfirmed += _message_count(chunk)
            self._answer_packet_ins_behind(datapath)
            # (The burst's last chunk ends in its barrier: nothing follows.)
            if paced and unconfirmed >= BURST_PACE_MESSAGES and not (
                    chunk and type(chunk[-1]) is model.Barrier):
                paced, ahead = self._keep_pace(datapath, ahead)
                unconfirmed = 0
        if ahead is not None:
            datapath.socket.forget_barrier_replies()
        ev.no_news = self.policy.version == version
        if sent and hasattr(ev, 'received_at'):
            self.metrics.reaction.observe(time.monotonic() - ev.received_at)

    @handler.set_ev_cls(ofp_event.EventOFPPacketIn, MAIN)
    def on_packet_in(self, ev):
        ev = self._backlog.take(ev)
        datapath = ev.msg.datapath
        if not self._serves_packet_ins(datapath):
            return
        try:
            packet = openflow.decode_packet_in(ev.msg)
        except (openflow.MalformedPacket, KeyError) as exc:
            self._note_malformed(datapath, exc)
            return
        self._on_packet(datapath, packet)

    def _serves_packet_ins(self, datapath):
        """Not from a connection that has ended or not resynced, and ours
        to answer."""
        return self._datapaths.get(datapath.id) is datapath and (
            self._switch_roles.is_master(datapath.id))

    def _on_packet(self, datapath, packet, chunks=None):
        """The policy's answer to a decoded PacketIn: sent, or packed into
        `chunks` for the caller to send."""
        if packet is None:
            return
        counter = self._packet_in_counters.get(datapath.id)
        if counter is None:
            counter = self._packet_in_counters[datapath.id] = (
                self.metrics.packet_ins.labels(f'{datapath.id:#x}'))
        counter.inc()
        messages = self.policy.on_packet(datapath.id, packet, self.clock())
        if chunks is None:
            self._send(datapath, messages)
        elif self._switch_roles.permits(datapath.id, messages):
            self._writer.pack(datapath, messages, chunks)

    def _note_malformed(self, datapath, exc):
        self.packet_ins_malformed += 1
        self.metrics.packet_ins_malformed.labels(f'{datapath.id:#x}').inc()
        # A flood of crafted frames must not flood the log too.
        now = time.monotonic()
        if now - self._malformed_logged_at >= MALFORMED_LOG_INTERVAL:
            self._malformed_logged_at = now
            LOG.warning('dpid=%#x: dropped a malformed PacketIn: %s (%d so '
                        'far; logged at most once a second)', datapath.id,
                        exc, self.packet_ins_malformed)

    # Below the queue: a switch's SwitchReader calls these in its receive
    # thread ------------------------------------------------------------

    def take_packet_ins(self, datapath, packet_ins):
        """Handle a run of PacketIns (`decoder.PacketInFields`) here, as
        `on_packet_in` would, if nothing of this switch waits in the app's
        queue or is being handled; else False: they queue behind it."""
        if datapath.state != MAIN:
            return False
        with self._policy_lock:
            if id(datapath) in self._queued or self._backlog.holds(
                    datapath.id):
                return False
        for start in range(0, len(packet_ins), FAST_PATH_BATCH):
            self._handle_fast_batch(
                datapath, packet_ins[start:start + FAST_PATH_BATCH])
        return True

    @staticmethod
    def exempt_from_total(fields):
        return fields.cookie & 0xffff == model.ROLE_PROBE

    def shed_packet_ins(self, datapath, shed):
        self._backlog.count_shed(collections.Counter(
            {(datapath.id, port): count for port, count in shed.items()}))
        self._count_shed(sum(shed.values()))

    def malformed_packet_in(self, datapath, exc):
        with self._policy_lock:
            self._note_malformed(datapath, exc)

    def _answer_packet_ins_behind(self, datapath):
        """Between two chunks of a burst (a PortStatus handled in its
        switch's receive thread, so under the policy lock): answer the
        PacketIns that came right behind it. A new connection of a service
        not yet settled settles it first (the policy sees to that), so a
        SYN waits for one chunk, not for a thousand services' changes."""
        reader = getattr(datapath, 'socket', None)
        if self._in_place is not datapath or not isinstance(
                reader, fast_path.SwitchReader):
            return
        try:
            run = reader.packet_ins_behind()
        except Exception:
            LOG.exception('%s: reading PacketIns between chunks failed; '
                          'serving on', self.name)
            return
        for start in range(0, len(run), FAST_PATH_BATCH):
            self._answer_fast_batch(datapath,
                                    run[start:start + FAST_PATH_BATCH])

    def _can_pace(self, datapath):
        """Whether this burst can wait for the switch between chunks: it
        is handled in the switch's receive thread, which can read the
        replies (not over TLS)."""
        reader = getattr(datapath, 'socket', None)
        return (self._in_place is datapath
                and isinstance(reader, fast_path.SwitchReader)
                and reader.can_wait_for_switch())

    def _keep_pace(self, datapath, ahead):
        """Between two chunks of a burst: a barrier behind what was sent,
        then read until the reply to the barrier before it (`ahead`),
        answering the PacketIns that come meanwhile as between chunks. So
        the switch holds at most two chunks unprocessed, and always one
        to work on. Returns whether to go on pacing (not if the switch did
        not reply within BURST_PACE_TIMEOUT: the rest of the burst goes
        without waiting) and the new barrier's xid."""
        reader = datapath.socket
        xid = self._writer.send_barrier(datapath)
        # Only this thread reads the switch: no reply can be missed.
        reader.expect_barrier_reply(xid)
        if ahead is None:
            return True, xid
        deadline = time.monotonic() + BURST_PACE_TIMEOUT
        while True:
            replied = reader.wait_for_switch(ahead, deadline)
            self._answer_packet_ins_behind(datapath)
            if replied is not None:
                break
        if not replied:
            LOG.info('dpid=%#x: no barrier reply within %d ms during a '
                     'burst of changes; sending the rest without waiting',
                     datapath.id, BURST_PACE_TIMEOUT * 1000)
        return replied, xid

    def _handle_fast_batch(self, datapath, packet_ins):
        """Some PacketIns, under the policy lock, their answers in one
        write."""
        with self._policy_lock:
            self._answer_fast_batch(datapath, packet_ins)

    def _answer_fast_batch(self, datapath, packet_ins):
        """`_handle_fast_batch` with the policy lock already held."""
        chunks = []
        try:
            for fields in packet_ins:
                if not self._serves_packet_ins(datapath):
                    break
                try:
                    packet = decoder.decode_fields(fields)
                except openflow.MalformedPacket as exc:
                    self._note_malformed(datapath, exc)
                    continue
                except Exception:
                    # Any other decoding failure costs this packet
                    # only, not the rest of its batch.
                    LOG.exception('%s: PacketIn below the queue did '
                                  'not decode; serving on', self.name)
                    continue
                try:
                    self._on_packet(datapath, packet, chunks)
                except Exception:
                    LOG.exception('%s: PacketIn below the queue failed; '
                                  'serving on', self.name)
            self._refresh_metrics(every_time=False)
        except Exception:
            LOG.exception('%s: PacketIns below the queue failed; '
                          'serving on', self.name)
        finally:
            # Written before the policy is let go: what it decides next
            # (for any thread) goes out after this.
            if chunks:
                switch_io.write(datapath, b''.join(chunks))

    @handler.set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN)
    def on_flow_removed(self, ev):
        datapath = ev.msg.datapath
        self.metrics.flows_removed.labels(
            f'{datapath.id:#x}',
            FLOW_REMOVED_REASONS.get(ev.msg.reason, str(ev.msg.reason))).inc()
        if not self._switch_roles.is_master(datapath.id):
            return
        cookie, match = openflow.decode_flow_removed(ev.msg)
        self._send(datapath, self.policy.on_flow_removed(
            datapath.id, cookie, match, self.clock()))

    @handler.set_ev_cls(ofp_event.EventOFPErrorMsg,
                        [handler.CONFIG_DISPATCHER, MAIN])
    def on_switch_error(self, ev):
        msg = ev.msg
        datapath = msg.datapath
        culprit = self._writer.culprit(datapath.id, msg.xid)
        if openflow.is_expected_error(msg, culprit):
            return
        if self._switch_roles.on_error(datapath, msg):
            return
        self.metrics.switch_errors.labels(f'{datapath.id:#x}',
                                          str(msg.type)).inc()
        LOG.error('dpid=%#x rejected %s: %s', datapath.id,
                  openflow.describe(culprit) if culprit else f'xid {msg.xid}',
                  openflow.describe_error(msg))
        if isinstance(culprit, model.MeterMod) and self._max_meter_id.get(
                datapath.id):
            # Flows that name a missing meter fail, and with them the
            # resync's bundle: serve unmetered rather than not at all.
            LOG.warning('dpid=%#x: resynchronising without meters',
                        datapath.id)
            self._max_meter_id[datapath.id] = 0
            self._request_ports(datapath)
        if culprit is not None:
            self._send(datapath, self.policy.on_flow_rejected(
                datapath.id, culprit, self.clock()))

    # Several controllers: roles and takeovers ------------------------------

    @handler.set_ev_cls(EventLeadership)
    def on_leadership(self, ev):
        self._switch_roles.on_leadership(ev)

    @handler.set_ev_cls(ofp_event.EventOFPRoleReply, MAIN)
    def on_role_reply(self, ev):
        self._switch_roles.on_role_reply(ev.msg)

    @handler.set_ev_cls(EventAdoptionTimeout)
    def on_adoption_timeout(self, ev):
        self._switch_roles.on_read_timeout(ev)

    @handler.set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN)
    def on_group_desc(self, ev):
        self._switch_roles.take_read(ev.msg, 'groups')

    def _adopt(self, adopted):
        """MASTER after the takeover's read: change only what differs."""
        datapath, snapshot = adopted.datapath, adopted.snapshot
        messages = self.policy.on_switch_adopted(
            datapath.id, self._port_states.get(datapath.id, {}),
            self.clock(), snapshot,
            max_meter_id=self._max_meter_id.get(datapath.id, 0))
        self._send(datapath, messages)
        LOG.warning('t=%.6f dpid=%#x: MASTER (generation %d) after %.1f ms '
                    'reading %d flows of ours and %d groups; %d changes',
                    self.clock(), datapath.id, self.election.generation,
                    (self.clock() - adopted.since) * 1000,
                    snapshot.flow_count, adopted.group_count,
                    adoption.count_changes(messages))

    @property
    def _roles(self):
        """dpid -> this controller's role there (tests set it directly)."""
        return self._switch_roles.roles

    # Operator requests -------------------------------------------------

    def _ask_app_thread(self, request):
        """Runs in the control socket's thread: the policy is only touched
        by the app's own event thread, so hand the request over."""
        ev = EventControl(request)
        self.send_event(self.name, ev)
        try:
            return ev.answers.get(timeout=CONTROL_TIMEOUT + 1)
        except queue.Empty:
            return {'ok': False, 'error': 'the controller did not answer in '
                    'time'}

    @handler.set_ev_cls(EventControl)
    def on_control(self, ev):
        self._operator.on_control(ev)

    @handler.set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN)
    def on_flow_stats(self, ev):
        if not self._switch_roles.take_read(ev.msg, 'flows'):
            self._operator.on_flow_stats(ev.msg)

    @handler.set_ev_cls(EventStatsTimeout)
    def on_stats_timeout(self, ev):
        self._operator.on_stats_timeout(ev)

    def _status(self, counts):
        return self._operator.status(counts)

    # Sending --------------------------------------------------------------

    def _send_all(self, messages):
        """Send messages that may be for any connected switch."""
        for message in messages:
            datapath = self._datapaths.get(message.datapath_id)
            if datapath is not None:
                self._send(datapath, [message])

    def _send(self, datapath, messages):
        """Send one event's messages in order, if this controller may."""
        if self._switch_roles.permits(datapath.id, messages):
            self._writer.send(datapath, messages)
