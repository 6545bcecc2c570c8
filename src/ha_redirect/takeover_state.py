"""A takeover's reading of a switch another controller ran: which state of
each service its flows show, and which connections it pins.

The policy then starts each service in that state (`on_switch_adopted`),
so a switch that is as its last master left it needs no change at all.
`snapshot` offers `contains(message)` (see `ha_redirect.snapshot`).
"""

import itertools
import typing

from ha_redirect import model
from ha_redirect.packet_in_meters import PacketInMeters
from ha_redirect.service_state import ConnectionKey
from ha_redirect.service_state import ServiceState
from ha_redirect import stand_in
from ha_redirect.strategies import base

# (healthy, eligible, active): a service's state, as a takeover reads it.
Shown = typing.Tuple[typing.Tuple[bool, ...], typing.Tuple[bool, ...],
                     typing.Optional[int]]

# Past this many servers, a takeover considers only the states where the
# healthy servers are all eligible.
_ALL_STATES_UP_TO = 4


def state_shown(state: ServiceState, states: typing.Sequence[ServiceState],
                snapshot: typing.Any, port_states: typing.Mapping[int, bool],
                settings: model.PolicySettings, strategy: base.Strategy,
                meters: PacketInMeters) -> typing.Optional[Shown]:
    """The (healthy, eligible, active) of `state`'s service whose flows
    the switch holds, or None. Candidates are tried most plausible first:
    no server healthy whose port is down, then the most eligible and
    healthy. `states`: every service's on the switch."""
    service = state.service
    datapath_id = service.datapath_id
    monitor_flows = [m for monitor in state.monitors
                     for m in monitor.flows(datapath_id)]
    if not all(snapshot.contains(m)
               for m in meters.apply(datapath_id, monitor_flows)):
        return None
    owner = stand_in.arp_owner(states, service.primary.ip)
    responder = stand_in.arp_responder(owner.view(settings),
                                       model.FlowCommand.ADD)
    responder_held = snapshot.contains(
        meters.apply(datapath_id, [responder])[-1])
    sharing = any(s is not state and s.service.primary.ip
                  == service.primary.ip for s in states)
    port_up = [port_states.get(server.port, False)
               for server in service.servers]
    shown = []
    for healthy, eligible, active in candidates(
            len(service.servers), settings.failback, port_up):
        if not healthy[0] and not responder_held:
            continue
        if healthy[0] and responder_held and not sharing:
            continue
        view = base.ServiceView(service, state.index, settings,
                                healthy, active, eligible)
        flows = meters.apply(datapath_id, strategy.service_flows(view))
        if all(snapshot.contains(m) for m in flows):
            shown.append((healthy, eligible, active))
    # Where the service flows do not tell the active server apart
    # (reactive's go to the controller), the backups' reply fallbacks
    # may: they rewrite a backup's replies while it stands in.
    previous = state.active
    try:
        for candidate in shown:
            state.active = candidate[2]
            if all(snapshot.contains(m) for m in stand_in.reply_fallbacks(
                    strategy, settings, states, datapath_id,
                    involving=service)):
                return candidate
    finally:
        state.active = previous
    return shown[0] if shown else None


def candidates(count: int, failback: bool,
               port_up: typing.Sequence[bool]) -> typing.List[Shown]:
    """Every (healthy, eligible, active) a service of `count` servers can
    be in, most plausible first: fewest servers healthy on a down port,
    then most eligible, then most healthy."""
    found = []
    for healthy in itertools.product((True, False), repeat=count):
        choices = [i for i in range(count) if healthy[i]]
        if count <= _ALL_STATES_UP_TO:
            eligibles = itertools.product(
                *[(True, False) if ok else (False,) for ok in healthy])
        else:
            eligibles = [healthy]
        for eligible in eligibles:
            chosen = [i for i in choices if eligible[i]]
            actives = chosen[:1] if failback else chosen
            for active in actives or [None]:
                found.append((healthy, tuple(eligible), active))
    found.sort(key=lambda c: (
        sum(ok and not up for ok, up in zip(c[0], port_up)),
        -sum(c[1]), -sum(c[0]), count if c[2] is None else c[2]))
    return found


def pinned_in(state: ServiceState,
              pins: typing.Iterable[typing.Tuple[int, model.Match]]
              ) -> typing.Dict[ConnectionKey, int]:
    """The connections the switch holds pins for, as (cookie, match) of
    its flows: forward pins match the client's packets to the primary."""
    connections = {}
    primary = state.service.primary
    for cookie, match in pins:
        server = model.server_index_of_cookie(cookie)
        if ((cookie >> 16) & 0xffff != state.index or server is None
                or server >= len(state.service.servers)
                or match.ipv4_dst != primary.ip):
            continue
        connections[(match.in_port, match.ipv4_src, match.tcp_src,
                     match.tcp_dst)] = server
    return connections
