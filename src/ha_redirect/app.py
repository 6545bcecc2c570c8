"""The os-ken app: a thin shell that feeds switch events to a RedirectPolicy.

Each handler finds the datapath, asks the policy, and sends what it returns
through `ha_redirect.openflow`. Nothing here decides anything.
"""

import collections
import logging
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

from ha_redirect import control
from ha_redirect import openflow
from ha_redirect import opts
from ha_redirect import policy as policy_mod

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
        self.answers.put_nowait(response)


# How long a control request may wait for the switch's flow statistics.
CONTROL_TIMEOUT = 5.0


class RedirectApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION, ofproto_v1_4.OFP_VERSION,
                    ofproto_v1_5.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        redirect_policy = kwargs.pop('redirect_policy', None)
        self.control_socket = kwargs.pop('control_socket', None)
        super().__init__(*args, **kwargs)
        if redirect_policy is None:
            opts.register_opts(self.CONF)
            config = opts.load_policy_config(self.CONF)
            redirect_policy = policy_mod.RedirectPolicy(
                config.services, config.settings)
            self.control_socket = self.CONF[opts.GROUP].control_socket
        self.policy = redirect_policy
        self._control = None
        self._stats_waiting = {}     # (dpid, xid) -> (event, flows so far)
        self.clock = time.monotonic
        self._datapaths = {}
        self._port_desc_parts = {}
        self._sent = collections.OrderedDict()
        self._tick_pending = False

    def start(self):
        thread = super().start()
        interval = self.policy.tick_interval
        if interval:
            hub.spawn(self._tick_loop, interval)
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

    @handler.set_ev_cls(EventTick)
    def on_tick(self, ev):
        self._tick_pending = False
        self._send_all(self.policy.on_tick(self.clock()))

    # Switch life cycle ----------------------------------------------------

    @handler.set_ev_cls(ofp_event.EventOFPSwitchFeatures,
                        handler.CONFIG_DISPATCHER)
    def on_switch_features(self, ev):
        datapath = ev.msg.datapath
        self._port_desc_parts[datapath.id] = []
        datapath.send_msg(
            datapath.ofproto_parser.OFPPortDescStatsRequest(datapath, 0))

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
        LOG.info('switch connected: dpid=%#x ports=%s', datapath.id,
                 sorted(port_states.items()))
        self._send(datapath, self.policy.on_switch_connected(
            datapath.id, port_states, self.clock()))

    @handler.set_ev_cls(ofp_event.EventOFPStateChange, handler.DEAD_DISPATCHER)
    def on_switch_gone(self, ev):
        datapath = ev.datapath
        if datapath.id is None:
            return
        LOG.info('switch disconnected: dpid=%#x', datapath.id)
        self._port_desc_parts.pop(datapath.id, None)
        if self._datapaths.get(datapath.id) is datapath:
            del self._datapaths[datapath.id]
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
        self._send(datapath, self.policy.on_port_status(
            datapath.id, msg.desc.port_no, is_up, now))

    @handler.set_ev_cls(ofp_event.EventOFPPacketIn, MAIN)
    def on_packet_in(self, ev):
        datapath = ev.msg.datapath
        try:
            packet = openflow.decode_packet_in(ev.msg)
        except (openflow.MalformedPacket, KeyError) as exc:
            LOG.warning('dpid=%#x: dropped a malformed PacketIn: %s',
                        datapath.id, exc)
            return
        if packet is None:
            return
        self._send(datapath, self.policy.on_packet(datapath.id, packet,
                                                   self.clock()))

    @handler.set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN)
    def on_flow_removed(self, ev):
        datapath = ev.msg.datapath
        cookie, match = openflow.decode_flow_removed(ev.msg)
        self._send(datapath, self.policy.on_flow_removed(
            datapath.id, cookie, match, self.clock()))

    @handler.set_ev_cls(ofp_event.EventOFPErrorMsg,
                        [handler.CONFIG_DISPATCHER, MAIN])
    def on_switch_error(self, ev):
        msg = ev.msg
        culprit = self._sent.get((msg.datapath.id, msg.xid))
        LOG.error('dpid=%#x rejected %s: %s', msg.datapath.id,
                  openflow.describe(culprit) if culprit else f'xid {msg.xid}',
                  openflow.describe_error(msg))

    # Operator requests -------------------------------------------------

    @handler.set_ev_cls(EventControl)
    def on_control(self, ev):
        request = ev.request
        command = request['command']
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
        queries = self.policy.pin_queries()
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
        hub.spawn_after(CONTROL_TIMEOUT, self._stats_timed_out, pending)

    @handler.set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN)
    def on_flow_stats(self, ev):
        msg = ev.msg
        key = (msg.datapath.id, msg.xid)
        pending = self._stats_waiting.get(key)
        if pending is None:
            return
        pending['flows'] += openflow.decode_flow_stats(msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        self._stats_waiting.pop(key, None)
        pending['waiting'].discard(key)
        if not pending['waiting'] and not pending['event'].answers.full():
            pending['event'].answer(self._status(
                self.policy.count_pins(pending['flows'])))

    def _stats_timed_out(self, pending):
        # A timer thread: only answer (a queue is thread-safe); a late reply
        # finds its event answered and is dropped.
        if not pending['event'].answers.full():
            pending['event'].answer(self._status(None))

    def _status(self, counts):
        services = self.policy.status()
        for service in services:
            for index, server in enumerate(service['servers']):
                server['open_connections'] = None if counts is None else (
                    counts.get(service['service'], {}).get(index, 0))
        return {'ok': True, 'services': services}

    # Sending --------------------------------------------------------------

    def _send_all(self, messages):
        """Send messages that may be for any connected switch."""
        for message in messages:
            datapath = self._datapaths.get(message.datapath_id)
            if datapath is not None:
                self._send(datapath, [message])

    def _send(self, datapath, messages):
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
