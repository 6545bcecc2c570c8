"""OpenFlow meters that limit what our flows send to the controller.

Where a switch has meters that drop by packet rate, every flow of ours that
sends to the controller passes one first: the monitors' own, the copies of
servers' RSTs (the passive check), or the clients', and with enough meter
ids one per client port, so one flooding host cannot use up the others'
share of `packet_in_rate`. A server port's would-be meter limits the bare
RSTs held from its servers for redispatch.
"""

import dataclasses
import typing

from ha_redirect import model
from ha_redirect.monitors import passive_check
from ha_redirect.strategies import base


class PacketInMeters:
    """Which meters each switch has of ours; `apply` puts them in flows."""

    def __init__(self, settings: model.PolicySettings,
                 services: typing.Sequence[model.Service]):
        self._settings = settings
        self._services = services
        # Switches with our meters -> their client ports' own meters.
        self._port_meters: typing.Dict[int, typing.Dict[int, int]] = {}
        # ... and their server ports' meters, for the servers' bare RSTs.
        self._server_meters: typing.Dict[int, typing.Dict[int, int]] = {}

    def meet(self, datapath_id: int, port_states: typing.Mapping[int, bool],
             max_meter_id: int) -> typing.List[model.MeterMod]:
        """Choose a (re)connected switch's meters, given the highest meter
        id it has (0: none); the MeterMods that set them up."""
        settings = self._settings
        self._port_meters.pop(datapath_id, None)
        self._server_meters.pop(datapath_id, None)
        if settings.packet_in_rate and max_meter_id >= (
                model.last_shared_meter_id(settings)):
            servers = {p for s in self._services
                       if s.datapath_id == datapath_id
                       for p in s.server_ports}

            def meters(ports):
                return {port: meter for port in ports
                        for meter in (model.port_meter_id(settings, port),)
                        if meter <= max_meter_id}

            self._port_meters[datapath_id] = meters(
                port for port in port_states if port not in servers)
            self._server_meters[datapath_id] = meters(servers)
            return self._meter_mods(datapath_id)
        return []

    def keep_adopted(self, datapath_id: int, snapshot: typing.Any,
                     strategy: base.Strategy) -> None:
        """Meter per client port only where the old master did: ports it
        never knew (added since it met the switch) share the first meter,
        as they would have under it, and nothing changes for them."""
        port_meters = self._port_meters.get(datapath_id)
        if not port_meters:
            return
        # The flows that send clients' packets to the controller do not
        # depend on the services' state: any state shows them.
        flows = []
        for index, service in enumerate(self._services):
            if service.datapath_id != datapath_id:
                continue
            count = len(service.servers)
            view = base.ServiceView(service, index, self._settings,
                                    (True,) * count, 0, (True,) * count)
            flows += [m for m in strategy.service_flows(view)
                      if _to_controller(m)
                      and m.cookie & 0xffff == model.ROLE_SERVICE]
        metered = self.apply(datapath_id, flows)
        for port, meter_id in list(port_meters.items()):
            uses = [m for m in metered if model.Meter(meter_id) in m.actions]
            if uses and not snapshot.contains(uses[0]):
                del port_meters[port]

    def apply(self, datapath_id: int,
              messages: typing.List[model.Message]
              ) -> typing.List[model.Message]:
        """Flows that send to the controller pass a meter first, where the
        switch has ours: the monitors' own, or the clients'. A service flow
        for clients on any port gets a copy per known client port, one
        priority up, each with the port's own meter, so one flooding host
        cannot use up the others' share; a port that appears later shares
        the first meter until the switch reconnects."""
        port_meters = self._port_meters.get(datapath_id)
        if port_meters is None:
            return messages
        settings = self._settings
        result = []
        for message in messages:
            if not _to_controller(message):
                result.append(message)
                continue
            role = message.cookie & 0xffff
            # A second pass (reg6) is the passive check's RST copy, or a
            # client SYN's copy for redispatch: one flow for every service
            # on the switch, metered as clients' packets are.
            syn_copy = (message.match.reg6 is not None
                        and role == model.ROLE_SERVICE)
            if message.match.reg6 is not None and not syn_copy:
                shared = settings.first_meter_id + model.METER_PASSIVE
            else:
                shared = settings.first_meter_id + (
                    model.METER_MONITORS if role == model.ROLE_PROBE
                    else model.METER_CLIENTS)
            if message.match.tcp_flags == passive_check.BARE_RST:
                # Held for redispatch: a flood when a service dies, so
                # each server's pass its own port's meter, apart from
                # the refusals (see `passive_check`).
                meter = self._server_meters[datapath_id].get(
                    message.match.in_port, shared)
            else:
                meter = port_meters.get(message.match.in_port, shared)
            index = (message.cookie >> 16) & 0xffff
            if (role == model.ROLE_SERVICE and message.match.in_port is None
                    and port_meters
                    and (syn_copy or index < len(self._services))):
                service = None if syn_copy else self._services[index]
                for port in sorted(port_meters):
                    if service is not None and service.client_ports and (
                            port not in service.client_ports):
                        continue
                    copy = dataclasses.replace(
                        message, priority=message.priority + 1,
                        match=dataclasses.replace(message.match,
                                                  in_port=port))
                    result.append(_with_meter(copy, port_meters[port]))
            result.append(_with_meter(message, meter))
        return result

    def _meter_mods(self, datapath_id):
        """Our meters: ADD for a fresh switch, then MODIFY for one that
        kept them (the switch refuses the other; its error is expected)."""
        rate = self._settings.packet_in_rate
        # A tenth of a second's worth may come at once.
        burst = max(10, rate // 10)
        ids = [self._settings.first_meter_id + offset
               for offset in (model.METER_CLIENTS, model.METER_MONITORS,
                              model.METER_PASSIVE)]
        ids += sorted(set(self._port_meters[datapath_id].values())
                      | set(self._server_meters[datapath_id].values()))
        return [model.MeterMod(datapath_id, command, meter_id, rate, burst)
                for command in (model.MeterCommand.ADD,
                                model.MeterCommand.MODIFY)
                for meter_id in ids]


def _to_controller(message):
    return (isinstance(message, model.FlowMod)
            and message.command is model.FlowCommand.ADD
            and model.Output(model.SpecialPort.CONTROLLER) in message.actions
            and not any(isinstance(a, model.Meter) for a in message.actions))


def _with_meter(flow, meter_id):
    return dataclasses.replace(
        flow, actions=(model.Meter(meter_id),) + flow.actions)
