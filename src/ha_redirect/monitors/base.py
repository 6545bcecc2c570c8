"""What a health monitor is: a pure object that watches one service.

Monitors are plugins in the `ha_redirect.monitors` stevedore namespace. The
policy feeds each of a service's monitors the switch events and the time;
a server takes new connections only while every monitor says it is healthy.
Monitors may ask for flows (to see their replies) and send packets, as
flow data; they never touch os-ken.
"""

import abc
import typing

from ha_redirect import model


class Monitor(abc.ABC):
    """Health verdicts for the servers of one service, primary first.

    The contract the policy relies on: a monitor is built per service with
    `(service, settings, cookie)`; it must provide `is_healthy`; every
    other attribute and hook below has a default that suits a monitor
    fed by switch events alone.
    """

    name: typing.ClassVar[str] = ''
    """The monitor's entry-point name, for logs and reports."""

    needs_ticks: typing.ClassVar[bool] = False
    """Whether the monitor must be called on a clock (`on_tick`, every
    `RedirectPolicy.tick_interval`) to send probes and time them out.
    Default False: switch events are enough."""

    holds_server_resets: bool = False
    """Whether the monitor's flows hold servers' RSTs of the service for
    the controller (tcp_probe's passive check with `redispatch`), so a
    refused connection can be redispatched. Default False."""

    observer: typing.Any = None
    """Told of each check's result, if set (the policy sets it): an object
    with `probe_result(service_name, server_index, outcome, rtt_seconds)`
    (`ha_redirect.metrics` exports them to Prometheus), and optionally
    `passive_refusal(service_name, server_index)`: a client's connection
    the server refused, and `passive_abort(service_name, server_index)`:
    one it reset. Default None."""

    def __init__(self, service: model.Service,
                 settings: model.PolicySettings, cookie: int):
        self.service = service
        self.settings = settings
        self.cookie = cookie     # for the flows this monitor installs

    @abc.abstractmethod
    def is_healthy(self, server_index: int) -> bool:
        """May the server take new connections, as far as we can tell?"""

    def flows(self, datapath_id: int) -> typing.List[model.Message]:
        """Flows to install whenever the switch (re)connects (default:
        none). A takeover looks for them to trust the switch's state."""
        return []

    def on_switch_connected(self, port_states: typing.Mapping[int, bool],
                            now: float) -> None:
        """The switch (re)connected, its ports up or down as given."""

    def on_port_status(self, port_no: int, is_up: bool, now: float) -> None:
        """A port of the switch went up or down."""

    def on_packet(self, packet: model.Packet, now: float
                  ) -> typing.Optional[typing.List[model.Message]]:
        """Messages in answer to a packet meant for this monitor, or None
        if the packet is not this monitor's business."""
        return None

    def on_tick(self, now: float) -> typing.List[model.Message]:
        """Called on the policy's clock, every `tick_interval` while the
        switch is connected (often enough for probes only if some monitor
        `needs_ticks`); returns packets to send (probes). Default: none."""
        return []

    def adopt(self, server_index: int, healthy: bool, now: float) -> None:
        """Start from a verdict another controller reached (a takeover): the
        switch showed the server as `healthy`. Monitors that read the
        switch itself (port status) keep their own."""
