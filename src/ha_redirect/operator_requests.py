"""The operator's requests (`ha_redirect.control`'s socket): drain, undrain
and status, answered from the app's event thread.

A status counts each server's open connections from the pins the switch
holds: `OperatorRequests` asks the switches for them and answers once every
reply is in, or without counts after `CONTROL_TIMEOUT`.
"""

import dataclasses
import logging
import queue
import typing

from os_ken.controller import event

from ha_redirect import openflow
from ha_redirect import shell_part

# The shell's logger: operators and the lab read one source for all of it.
LOG = logging.getLogger('ha_redirect.app')

# How long a control request may wait for the switch's flow statistics.
CONTROL_TIMEOUT = 5.0


@dataclasses.dataclass(eq=False)
class EventControl(event.EventBase):
    """An operator's request from the control socket, and where to answer."""
    request: typing.Dict[str, typing.Any]
    answers: queue.Queue = dataclasses.field(
        init=False, default_factory=lambda: queue.Queue(maxsize=1))

    def answer(self, response):
        """The first answer counts; a late one (after a timeout) is
        dropped."""
        try:
            self.answers.put_nowait(response)
        except queue.Full:
            pass


@dataclasses.dataclass(eq=False)
class EventStatsTimeout(event.EventBase):
    """A status request's flow statistics did not all come in time."""
    pending: typing.Dict[str, typing.Any]


class OperatorRequests(shell_part.ShellPart):
    """Answers `EventControl`s. `send_all(messages)` sends the policy's
    messages to whichever switch each is for; `roles` is the shell's
    `ha_redirect.roles.SwitchRoles`."""

    def __init__(self, policy, roles, clock, datapaths, send_all,
                 post_later):
        super().__init__(policy, clock, datapaths, post_later)
        self._roles = roles
        self._send_all = send_all
        self.stats_waiting = {}     # (dpid, xid) -> (event, flows so far)

    def on_control(self, ev):
        request = ev.request
        command = request['command']
        election = self._roles.election
        if command in ('drain', 'undrain') and election is not None and (
                not election.may_write(self._clock())):
            ev.answer({'ok': False, 'error': 'this controller is not the '
                       'master: drain on the one that is (see status)'})
            return
        if command in ('drain', 'undrain'):
            try:
                index = self._policy.server_index(request['service'],
                                                  request['server'])
                change = (self._policy.drain if command == 'drain'
                          else self._policy.undrain)
                self._send_all(change(request['service'], index,
                                      self._clock()))
            except (KeyError, ValueError) as exc:
                # KeyError's str() adds quotes: take its message itself.
                ev.answer({'ok': False, 'error': str(exc.args[0])})
                return
            LOG.info('operator: %s %s %s', command, request['service'],
                     request['server'])
        # Counting open connections reads every pin from the switch: a
        # caller that polls (the lab, a monitoring script) may skip it.
        queries = self._policy.pin_queries() if request.get(
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
            ev.answer(self.status(None))
            return
        pending = {'event': ev, 'flows': [], 'waiting': set(sent)}
        for key in sent:
            self.stats_waiting[key] = pending
        # The timer only posts an event: the app's own thread cleans up.
        self._post_later(CONTROL_TIMEOUT, EventStatsTimeout(pending))

    def on_flow_stats(self, msg):
        """Part of the pins a status request asked for (else ignored)."""
        key = (msg.datapath.id, msg.xid)
        pending = self.stats_waiting.get(key)
        if pending is None:
            return
        pending['flows'] += openflow.decode_flow_stats(msg.body)
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        self.stats_waiting.pop(key, None)
        pending['waiting'].discard(key)
        if not pending['waiting']:
            pending['event'].answer(self.status(
                self._policy.count_pins(pending['flows'])))

    def on_stats_timeout(self, ev):
        pending = ev.pending
        for key in pending['waiting']:
            self.stats_waiting.pop(key, None)
        if pending['waiting']:
            pending['waiting'].clear()
            pending['event'].answer(self.status(None))

    def status(self, counts):
        """The answer to a status request: `counts` of open connections
        ({service: {server index: n}}) or None, not counted."""
        services = self._policy.status()
        for service in services:
            if self._roles.election is not None:
                service['switch_role'] = self._roles.roles.get(
                    service['datapath_id'], 'not connected')
            for index, server in enumerate(service['servers']):
                server['open_connections'] = None if counts is None else (
                    counts.get(service['service'], {}).get(index, 0))
        return {'ok': True, 'services': services,
                'controller': self._roles.controller_status()}
