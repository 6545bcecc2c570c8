"""The os-ken app: a thin shell that feeds switch events to a RedirectPolicy.

Each handler finds the datapath, asks the policy, and sends what it returns
through `ha_redirect.openflow`. Nothing here decides anything.
"""

import collections
import logging
import math
import queue
import time

from os_ken.base import app_manager
from os_ken.controller import event
from os_ken.controller import handler
from os_ken.controller import ofp_event
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3
from os_ken.ofproto import ofproto_v1_4
from os_ken.ofproto import ofproto_v1_5

from ha_redirect import backlog
from ha_redirect import control
from ha_redirect import coordination
from ha_redirect import metrics as metrics_mod
from ha_redirect import model
from ha_redirect import openflow
from ha_redirect import opts
from ha_redirect import policy as policy_mod
from ha_redirect import snapshot as snapshot_mod

LOG = logging.getLogger(__name__)

MAIN = handler.MAIN_DISPATCHER
# Enough recent messages to name the culprit of any error the switch returns.
_SENT_MEMORY = 4096


class EventTick(event.EventBase):
    """Time passes: monitors may probe or time out (our own event, so the
    policy is only ever called from the app's event thread)."""


class EventControl(event.EventBase):
    """An operator's request from the control socket, and where to answer."""

    def __init__(self, request):
        super().__init__()
        self.request = request
        self.answers = queue.Queue(maxsize=1)

    def answer(self, response):
        """The first answer counts; a late one (after a timeout) is
        dropped."""
        try:
            self.answers.put_nowait(response)
        except queue.Full:
            pass


class EventLeadership(event.EventBase):
    """The election's news: ('elected', generation) or ('lost', why)."""

    def __init__(self, kind, detail):
        super().__init__()
        self.kind = kind
        self.detail = detail


class _EmptyReply:
    """A multipart reply with nothing in it (for a refused request)."""

    def __init__(self, datapath, xid):
        self.datapath = datapath
        self.xid = xid
        self.body = []
        self.flags = 0


class EventAdoptionTimeout(event.EventBase):
    """A takeover's reads of the switch did not all come in time."""

    def __init__(self, datapath_id, since):
        super().__init__()
        self.datapath_id = datapath_id
        self.since = since


class EventStatsTimeout(event.EventBase):
    """A status request's flow statistics did not all come in time."""

    def __init__(self, pending):
        super().__init__()
        self.pending = pending


# How long a control request may wait for the switch's flow statistics.
CONTROL_TIMEOUT = 5.0
# How long a new master waits for the switch's flows and groups.
ADOPTION_TIMEOUT = 10.0
# Seconds between refreshes of the gauges that move with every connection.
METRICS_REFRESH = 0.1

# PacketIns waiting in the app's queue, in all and per switch port (see
# ha_redirect.backlog). Past these, new ones are dropped on arrival. The
# total stays under os-ken's queue of 128, leaving room for other events;
# a port's share absorbs a legitimate burst (8 shed 1 % of 500 connections
# a second from one port).
# A role reply's generation id when the switch has seen none yet (Open
# vSwitch).
_NO_GENERATION = (1 << 64) - 1

PACKET_IN_BACKLOG = 100
PACKET_IN_BACKLOG_PER_PORT = 32


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
        super().__init__(*args, **kwargs)
        if redirect_policy is None:
            opts.register_opts(self.CONF)
            config = opts.load_policy_config(self.CONF)
            redirect_policy = policy_mod.RedirectPolicy(
                config.services, config.settings)
            self.control_socket = self.CONF[opts.GROUP].control_socket
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
        self._metrics_version = None
        self._metrics_switches = set()
        self._metrics_refreshed = -math.inf
        self._roles = {}         # dpid -> 'slave', 'claiming', 'master'
        self._role_requests = {}  # (dpid, xid) -> what we asked for
        self._adoptions = {}     # dpid -> what the switch holds, so far
        self._port_states = {}   # dpid -> {port: up}, kept in every role
        self._withheld = 0       # writes not sent: not the master
        self._control = None
        self._stats_waiting = {}     # (dpid, xid) -> (event, flows so far)
        self.clock = time.monotonic
        self._datapaths = {}
        self._port_desc_parts = {}
        self._sent = collections.OrderedDict()
        self._tick_pending = False
        self._max_meter_id = {}     # dpid -> highest usable meter id
        self._backlog = backlog.PacketInBacklog(
            PACKET_IN_BACKLOG, PACKET_IN_BACKLOG_PER_PORT)
        self._shed_reported = 0.0

    def _send_event(self, ev, state):
        # Runs in the thread that delivers the event: a switch's receive
        # thread, which must never block behind a flood of PacketIns.
        if isinstance(ev, ofp_event.EventOFPPacketIn):
            msg = ev.msg
            if not self._backlog.admit(
                    (msg.datapath.id, msg.match.get('in_port')), ev,
                    exempt_from_total=msg.cookie & 0xffff == model.ROLE_PROBE):
                self.metrics.packet_ins_dropped.inc()
                self._report_shed()
                return
        else:
            if isinstance(ev, ofp_event.EventOFPPortStatus):
                ev.received_at = time.monotonic()
            self._backlog.note_event()
        super()._send_event(ev, state)

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
            for event_handler in self.get_handlers(ev, state):
                try:
                    event_handler(ev)
                except Exception:
                    LOG.exception('%s: handler %s failed on %s; serving '
                                  'on', self.name,
                                  getattr(event_handler, '__name__',
                                          event_handler), type(ev).__name__)
            try:
                self._refresh_metrics(
                    every_time=not isinstance(ev, ofp_event.EventOFPPacketIn))
            except Exception:
                LOG.exception('metrics: refresh failed; serving on')

    def _refresh_metrics(self, every_time=True):
        """The gauges, after an event that may have moved them: the
        servers' at once; after a PacketIn, the rest (connection counts,
        switches) at most every METRICS_REFRESH s."""
        if self.policy.version != self._metrics_version:
            self._metrics_version = self.policy.version
            self.metrics.refresh_services(self.policy.status())
        now = time.monotonic()
        if not every_time and now - self._metrics_refreshed < (
                METRICS_REFRESH):
            return
        self._metrics_refreshed = now
        for name, count in self.policy.tracked_connections().items():
            self.metrics.tracked.labels(name).set(count)
        switches = set(self._datapaths)
        for dpid in switches | self._metrics_switches:
            self.metrics.switch_state(
                dpid, dpid in switches, dpid in switches and (
                    self.election is None or (
                        self._roles.get(dpid) == 'master'
                        and self.election.may_write(self.clock()))))
        self._metrics_switches = switches

    def start(self):
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
        datapath = ev.msg.datapath
        self._max_meter_id.pop(datapath.id, None)
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
        elif self.election.may_write(self.clock()):
            self._claim(datapath)
        else:
            self._yield(datapath)

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
        self._roles.pop(datapath.id, None)
        self._adoptions.pop(datapath.id, None)
        for key in [k for k in self._role_requests if k[0] == datapath.id]:
            del self._role_requests[key]
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
        if not self._is_master(datapath.id):
            return
        messages = self.policy.on_port_status(datapath.id, msg.desc.port_no,
                                              is_up, now)
        self._send(datapath, messages)
        if messages and hasattr(ev, 'received_at'):
            self.metrics.reaction.observe(time.monotonic() - ev.received_at)

    @handler.set_ev_cls(ofp_event.EventOFPPacketIn, MAIN)
    def on_packet_in(self, ev):
        ev = self._backlog.take(ev)
        datapath = ev.msg.datapath
        if self._datapaths.get(datapath.id) is not datapath or (
                not self._is_master(datapath.id)):
            return      # from a connection that has ended or not resynced
        try:
            packet = openflow.decode_packet_in(ev.msg)
        except (openflow.MalformedPacket, KeyError) as exc:
            LOG.warning('dpid=%#x: dropped a malformed PacketIn: %s',
                        datapath.id, exc)
            return
        if packet is None:
            return
        self.metrics.packet_ins.labels(f'{datapath.id:#x}').inc()
        self._send(datapath, self.policy.on_packet(datapath.id, packet,
                                                   self.clock()))

    @handler.set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN)
    def on_flow_removed(self, ev):
        datapath = ev.msg.datapath
        if not self._is_master(datapath.id):
            return
        cookie, match = openflow.decode_flow_removed(ev.msg)
        self._send(datapath, self.policy.on_flow_removed(
            datapath.id, cookie, match, self.clock()))

    @handler.set_ev_cls(ofp_event.EventOFPErrorMsg,
                        [handler.CONFIG_DISPATCHER, MAIN])
    def on_switch_error(self, ev):
        msg = ev.msg
        datapath = msg.datapath
        culprit = self._sent.get((datapath.id, msg.xid))
        if openflow.is_expected_error(msg, culprit):
            return
        if self.election is not None and self._on_role_error(datapath, msg):
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

    # Several controllers: roles ----------------------------------------

    def _is_master(self, datapath_id):
        return self.election is None or self._may_write(datapath_id)

    def _may_write(self, datapath_id):
        if self._roles.get(datapath_id) != 'master':
            return False
        if self.election.may_write(self.clock()):
            return True
        # Out of lease (stopped, or cut off from the coordination server):
        # another may be elected any moment now.
        self._demote('the lease ran out')
        return False

    def _ask_role(self, datapath, role, generation, purpose):
        ofproto = datapath.ofproto
        request = datapath.ofproto_parser.OFPRoleRequest(
            datapath, getattr(ofproto, role), generation)
        datapath.set_xid(request)
        self._role_requests[(datapath.id, request.xid)] = purpose
        datapath.send_msg(request)

    def _claim(self, datapath):
        """Become the switch's MASTER with our generation; then adopt."""
        generation = self.election.generation
        if generation is None or not self.election.may_write(self.clock()):
            self._yield(datapath)     # lost it meanwhile
            return
        self._roles[datapath.id] = 'claiming'
        self._adoptions.pop(datapath.id, None)
        self._ask_role(datapath, 'OFPCR_ROLE_MASTER', generation, 'master')

    def _yield(self, datapath):
        """Become SLAVE: ask the switch's generation first, since a SLAVE
        request with an older one is refused too."""
        self._roles[datapath.id] = 'slave'
        self._adoptions.pop(datapath.id, None)
        self._ask_role(datapath, 'OFPCR_ROLE_NOCHANGE', 0, 'query')

    @handler.set_ev_cls(EventLeadership)
    def on_leadership(self, ev):
        if ev.kind == 'elected':
            LOG.warning('t=%.6f elected: generation %d; claiming %d switches',
                        self.clock(), ev.detail, len(self._datapaths))
            for datapath in list(self._datapaths.values()):
                self._claim(datapath)
        elif any(role != 'slave' for role in self._roles.values()):
            self._demote(ev.detail)

    def _demote(self, why):
        """Stop being anyone's master: nothing more is written."""
        LOG.warning('t=%.6f stepping down to SLAVE: %s', self.clock(), why)
        self.election.resign(why)
        now = self.clock()
        for datapath in list(self._datapaths.values()):
            if self._roles.get(datapath.id) != 'slave':
                self.policy.on_switch_disconnected(datapath.id, now)
                self._yield(datapath)

    @handler.set_ev_cls(ofp_event.EventOFPRoleReply, MAIN)
    def on_role_reply(self, ev):
        msg = ev.msg
        datapath = msg.datapath
        purpose = self._role_requests.pop((datapath.id, msg.xid), None)
        if purpose is None or self._datapaths.get(datapath.id) is not (
                datapath):
            return
        generation = msg.generation_id
        if generation == _NO_GENERATION:
            # None yet. A SLAVE request sets the one it carries: 0 can
            # never make the next master's look stale.
            generation = 0
        self.election.note_switch_generation(generation)
        if purpose == 'query':
            if self._roles.get(datapath.id) == 'slave':
                self._ask_role(datapath, 'OFPCR_ROLE_SLAVE', generation,
                               'slave')
        elif purpose == 'slave':
            LOG.info('t=%.6f dpid=%#x: SLAVE (generation %d)', self.clock(),
                     datapath.id, generation)
        elif purpose == 'master' and self._roles.get(datapath.id) == (
                'claiming'):
            self._start_adoption(datapath)

    def _on_role_error(self, datapath, msg):
        """A refused role request, or a write refused because another
        controller is MASTER now: True if it was one."""
        ofproto = datapath.ofproto
        purpose = self._role_requests.get((datapath.id, msg.xid))
        if purpose in ('adopt flows', 'adopt groups'):
            # Read nothing, then: the takeover installs what is missing.
            LOG.warning('dpid=%#x: %s refused (%s); taking over without',
                        datapath.id, purpose,
                        openflow.describe_error(msg))
            kind = purpose.split()[1]
            reply = _EmptyReply(datapath, msg.xid)
            self._collect_adoption(reply, kind, (datapath.id, msg.xid))
            return True
        self._role_requests.pop((datapath.id, msg.xid), None)
        if msg.type == ofproto.OFPET_ROLE_REQUEST_FAILED:
            if purpose in ('master', None):
                self._demote(f'dpid={datapath.id:#x} refused generation '
                             f'{self.election.generation} as stale')
            elif self._roles.get(datapath.id) == 'slave':
                self._yield(datapath)     # the generation moved on: again
            return True
        if (msg.type == ofproto.OFPET_BAD_REQUEST
                and msg.code == ofproto.OFPBRC_IS_SLAVE):
            if self._roles.get(datapath.id) != 'slave':
                self._demote(f'dpid={datapath.id:#x} has another master')
            return True
        return False

    def _start_adoption(self, datapath):
        """MASTER now: read what the switch holds of ours, then change only
        what differs (`on_adoption_complete`)."""
        ofproto, parser = datapath.ofproto, datapath.ofproto_parser
        since = self.clock()
        self._adoptions[datapath.id] = {'flows': None, 'groups': None,
                                        'parts': {'flows': [], 'groups': []},
                                        'since': since}
        hub.spawn_after(ADOPTION_TIMEOUT, self.send_event, self.name,
                        EventAdoptionTimeout(datapath.id, since))
        # Per-connection pins can be tens of thousands: read them only
        # where the policy must remember them.
        mask = model.COOKIE_OURS_MASK
        if not self.policy.strategy.pins_by_controller:
            mask |= model.COOKIE_PIN_ROLE_MASK
        flows = parser.OFPFlowStatsRequest(
            datapath, 0, ofproto.OFPTT_ALL, ofproto.OFPP_ANY,
            ofproto.OFPG_ANY, self.policy.settings.cookie << 32, mask,
            parser.OFPMatch())
        groups = parser.OFPGroupDescStatsRequest(datapath, 0)
        for request, purpose in ((flows, 'adopt flows'),
                                 (groups, 'adopt groups')):
            datapath.set_xid(request)
            self._role_requests[(datapath.id, request.xid)] = purpose
            datapath.send_msg(request)

    @handler.set_ev_cls(EventAdoptionTimeout)
    def on_adoption_timeout(self, ev):
        adoption = self._adoptions.get(ev.datapath_id)
        datapath = self._datapaths.get(ev.datapath_id)
        if adoption is None or adoption['since'] != ev.since or (
                datapath is None):
            return
        LOG.warning('dpid=%#x: the switch did not report its flows and '
                    'groups within %g s; claiming it again', datapath.id,
                    ADOPTION_TIMEOUT)
        self._claim(datapath)

    @handler.set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN)
    def on_group_desc(self, ev):
        key = (ev.msg.datapath.id, ev.msg.xid)
        if self._role_requests.get(key) == 'adopt groups':
            self._collect_adoption(ev.msg, 'groups', key)

    def _collect_adoption(self, msg, kind, key):
        datapath = msg.datapath
        adoption = self._adoptions.get(datapath.id)
        if adoption is None or self._roles.get(datapath.id) != 'claiming':
            self._role_requests.pop(key, None)
            return
        adoption['parts'][kind].extend(msg.body)
        if msg.flags & datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        self._role_requests.pop(key, None)
        adoption[kind] = adoption['parts'][kind]
        if adoption['flows'] is None or adoption['groups'] is None:
            return
        del self._adoptions[datapath.id]
        snapshot = snapshot_mod.SwitchSnapshot(datapath, adoption['flows'],
                                               adoption['groups'])
        self._roles[datapath.id] = 'master'
        if not self.election.may_write(self.clock()):
            self._demote('the lease ran out during the takeover')
            return
        messages = self.policy.on_switch_adopted(
            datapath.id, self._port_states.get(datapath.id, {}),
            self.clock(), snapshot,
            max_meter_id=self._max_meter_id.get(datapath.id, 0))
        changes = [m for m in messages
                   if isinstance(m, (model.FlowMod, model.GroupMod,
                                     model.Bundle))]
        self._send(datapath, messages)
        LOG.warning('t=%.6f dpid=%#x: MASTER (generation %d) after %.1f ms '
                    'reading %d flows of ours and %d groups; %d changes',
                    self.clock(), datapath.id, self.election.generation,
                    (self.clock() - adoption['since']) * 1000,
                    snapshot.flow_count, len(adoption['groups']),
                    sum(len(m.messages) if isinstance(m, model.Bundle)
                        else 1 for m in changes))

    # Operator requests -------------------------------------------------

    @handler.set_ev_cls(EventControl)
    def on_control(self, ev):
        request = ev.request
        command = request['command']
        if command in ('drain', 'undrain') and self.election is not None and (
                not self.election.may_write(self.clock())):
            ev.answer({'ok': False, 'error': 'this controller is not the '
                       'master: drain on the one that is (see status)'})
            return
        if command in ('drain', 'undrain'):
            try:
                index = self.policy.server_index(request['service'],
                                                 request['server'])
                change = (self.policy.drain if command == 'drain'
                          else self.policy.undrain)
                self._send_all(change(request['service'], index,
                                      self.clock()))
            except (KeyError, ValueError) as exc:
                # KeyError's str() adds quotes: take its message itself.
                ev.answer({'ok': False, 'error': str(exc.args[0])})
                return
            LOG.info('operator: %s %s %s', command, request['service'],
                     request['server'])
        # Counting open connections reads every pin from the switch: a
        # caller that polls (the lab, a monitoring script) may skip it.
        queries = self.policy.pin_queries() if request.get(
            'counts', True) else []
        sent = []
        for query in queries:
            datapath = self._datapaths.get(query.datapath_id)
            if datapath is None:
                continue
            for ofp_msg in openflow.to_ofp_messages(datapath, query):
                datapath.set_xid(ofp_msg)
                datapath.send_msg(ofp_msg)
                sent.append((datapath.id, ofp_msg.xid))
        if not sent:
            ev.answer(self._status(None))
            return
        pending = {'event': ev, 'flows': [], 'waiting': set(sent)}
        for key in sent:
            self._stats_waiting[key] = pending
        # The timer only posts an event: the app's own thread cleans up.
        hub.spawn_after(CONTROL_TIMEOUT, self.send_event, self.name,
                        EventStatsTimeout(pending))

    @handler.set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN)
    def on_flow_stats(self, ev):
        msg = ev.msg
        key = (msg.datapath.id, msg.xid)
        if self._role_requests.get(key) == 'adopt flows':
            self._collect_adoption(msg, 'flows', key)
            return
        pending = self._stats_waiting.get(key)
        if pending is None:
            return
        pending['flows'] += openflow.decode_flow_stats(msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        self._stats_waiting.pop(key, None)
        pending['waiting'].discard(key)
        if not pending['waiting']:
            pending['event'].answer(self._status(
                self.policy.count_pins(pending['flows'])))

    @handler.set_ev_cls(EventStatsTimeout)
    def on_stats_timeout(self, ev):
        pending = ev.pending
        for key in pending['waiting']:
            self._stats_waiting.pop(key, None)
        if pending['waiting']:
            pending['waiting'].clear()
            pending['event'].answer(self._status(None))

    def _status(self, counts):
        services = self.policy.status()
        for service in services:
            if self.election is not None:
                service['switch_role'] = self._roles.get(
                    service['datapath_id'], 'not connected')
            for index, server in enumerate(service['servers']):
                server['open_connections'] = None if counts is None else (
                    counts.get(service['service'], {}).get(index, 0))
        return {'ok': True, 'services': services,
                'controller': self._controller_status()}

    def _controller_status(self):
        election = self.election
        if election is None:
            return {'role': 'single'}
        leading = election.may_write(self.clock())
        return {
            'role': 'master' if leading else 'slave',
            'member': election.member_id,
            'group': election.group,
            'generation': election.generation,
            'seen_generation': election.seen_generation,
            'lease_left_s': round(max(0.0, election.lease_deadline
                                      - self.clock()), 3) if leading else 0,
            'members': sorted(election.members),
            'master': election.master,
            'coordination_error': election.last_error,
            'switches': {f'{dpid:#x}': role if role != 'master' or leading
                         else 'lease expired'
                         for dpid, role in sorted(self._roles.items())},
            'writes_withheld': self._withheld,
        }

    # Sending --------------------------------------------------------------

    def _send_all(self, messages):
        """Send messages that may be for any connected switch."""
        for message in messages:
            datapath = self._datapaths.get(message.datapath_id)
            if datapath is not None:
                self._send(datapath, [message])

    def _send(self, datapath, messages):
        if self.election is not None and messages and not self._may_write(
                datapath.id):
            self._withheld += len(messages)
            return
        for message in messages:
            try:
                ofp_msgs = openflow.to_ofp_messages(datapath, message)
            except openflow.UnsupportedFlow as exc:
                # A policy bug must not take the switch connection down.
                LOG.error('dpid=%#x: not sending %s', datapath.id, exc)
                continue
            for ofp_msg in ofp_msgs:
                datapath.set_xid(ofp_msg)
                self._sent[(datapath.id, ofp_msg.xid)] = message
                if len(self._sent) > _SENT_MEMORY:
                    self._sent.popitem(last=False)
                datapath.send_msg(ofp_msg)
            self._count_sent(datapath.id, message)

    def _count_sent(self, datapath_id, message):
        if isinstance(message, model.Bundle):
            for inner in message.messages:
                self._count_sent(datapath_id, inner)
        elif isinstance(message, model.FlowMod):
            self.metrics.sent(datapath_id, 'flow', message.command.name)
        elif isinstance(message, model.GroupMod):
            self.metrics.sent(datapath_id, 'group', message.command.name)
