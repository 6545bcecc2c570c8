"""What lets a backup stand in for a failed primary beyond the pinned
connections: ARP answers for the primary's address, and flows that send a
backup's stray service replies as the primary's.

Plain functions of the services' states on one switch (`states`: the
policy's `ServiceState`s there, in service order).
"""

import typing

from ha_redirect import model
from ha_redirect.service_state import ServiceState
from ha_redirect.strategies import base

States = typing.Sequence[ServiceState]


def reply_fallbacks(strategy: base.Strategy,
                    settings: model.PolicySettings, states: States,
                    datapath_id: int,
                    involving: typing.Optional[model.Service] = None
                    ) -> typing.List[model.FlowMod]:
    """Per backup and service port on the switch (of `involving`'s
    backups only, if given): where its replies go when no pin claims
    them. A reply can overtake its connection's pin (OVS's datapath
    flow cache keeps entries made before the pin until it revalidates,
    and `learn` runs in the slow path), so while one service has the
    backup standing in, they are sent as that service's primary's.
    Where that is ambiguous (two services have it standing in, or it
    is some service's primary on that port) they pass untouched. The
    match on the TCP source port also keeps the datapath cache from
    lumping service replies with the server's other traffic: an entry
    made by a ping cannot carry a SYN-ACK."""
    table = strategy.reply_fallback_table(settings)
    if table is None:
        return []
    keys = {(server.ip, tcp_port): server
            for state in states
            if involving is None or state.service is involving
            for server in state.service.backups
            for tcp_port in state.service.tcp_ports}
    cookie = model.make_cookie(settings.cookie, model.GLOBAL_SERVICE_INDEX,
                               model.ROLE_SERVICE)
    serving_port: typing.Dict[int, typing.List[ServiceState]] = {}
    for state in states:
        for tcp_port in state.service.tcp_ports:
            serving_port.setdefault(tcp_port, []).append(state)
    flows = []
    for (ip, tcp_port), server in sorted(keys.items()):
        serving = serving_port.get(tcp_port, [])
        stand_ins = [s for s in serving if s.active
                     and s.service.servers[s.active].ip == ip]
        is_primary = any(s.service.primary.ip == ip for s in serving)
        actions = (model.Output(model.SpecialPort.NORMAL),)
        if len(stand_ins) == 1 and not is_primary:
            actions = base.reply_as_primary(stand_ins[0].service, server)
        flows.append(model.FlowMod(
            datapath_id, model.FlowCommand.ADD,
            match=base.server_reply_match(server, tcp_port),
            actions=actions, table=table,
            priority=settings.base_priority + model.PRIORITY_SERVER_REPLY,
            cookie=cookie))
    return flows


def arp_owners(states: States) -> typing.List[ServiceState]:
    """One service per primary IP on the switch: services may share a
    primary, and one ARP responder flow (with the first one's cookie)
    serves them all."""
    owners = {}
    for state in states:
        owners.setdefault(state.service.primary.ip, state)
    return list(owners.values())


def arp_owner(states: States, primary_ip: str) -> ServiceState:
    """The service whose cookie the primary's ARP responder carries: the
    first with that primary, as in `arp_owners`, found without a pass
    over every service (a failover asks once per burst)."""
    return next(s for s in states if s.service.primary.ip == primary_ip)


def arp_responder(view: base.ServiceView, command: model.FlowCommand
                  ) -> model.FlowMod:
    """The flow that sends ARP requests for the primary to us (ADD), or
    its removal."""
    return model.FlowMod(
        view.datapath_id, command,
        match=model.Match(eth_type=model.ETH_TYPE_ARP,
                          arp_op=model.ARP_REQUEST,
                          arp_tpa=view.service.primary.ip),
        actions=(model.Output(model.SpecialPort.CONTROLLER),)
        if command == model.FlowCommand.ADD else (),
        table=view.settings.table,
        priority=view.priority(model.PRIORITY_ARP_RESPONDER),
        cookie=view.cookie(model.ROLE_ARP),
        cookie_mask=model.COOKIE_EXACT_MASK
        if command != model.FlowCommand.ADD else 0)


def arp_responders(settings: model.PolicySettings, states: States
                   ) -> typing.List[model.FlowMod]:
    """The responders a freshly (re)connected switch needs: one per
    primary some service sees down."""
    seen_down = {s.service.primary.ip for s in states if not s.healthy[0]}
    flows = []
    for owner in arp_owners(states):
        if owner.service.primary.ip in seen_down:
            flows.append(arp_responder(owner.view(settings),
                                       model.FlowCommand.ADD))
    return flows


def update_arp_responder(settings: model.PolicySettings, states: States,
                         state: ServiceState) -> typing.List[model.FlowMod]:
    """Answer ARP for a primary while any service sees it down: `state`'s
    primary just went up or down (`states`: those sharing it)."""
    ip = state.service.primary.ip
    down = not state.healthy[0]
    if state.primary_down_elsewhere():
        return []           # the responder is there already
    owner = arp_owner(states, ip)
    return [arp_responder(
        owner.view(settings), model.FlowCommand.ADD if down
        else model.FlowCommand.DELETE_STRICT)]


def answer_arp(states: States, datapath_id: int,
               request: model.ArpRequest) -> typing.List[model.ArpReply]:
    """Reply for a primary that is down, to anyone but the primary."""
    for state in states:
        primary = state.service.primary
        if (request.target_ip == primary.ip and not state.healthy[0]
                and request.in_port != primary.port):
            return [model.ArpReply(
                datapath_id, out_port=request.in_port,
                sender_mac=primary.mac, sender_ip=primary.ip,
                target_mac=request.sender_mac,
                target_ip=request.sender_ip)]
    return []
