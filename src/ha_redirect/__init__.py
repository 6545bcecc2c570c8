"""ha_redirect: keep TCP services reachable when a server fails.

The public API is OpenFlow-agnostic: build a `RedirectPolicy` from `Service`
definitions, feed it switch events, and send the flow data it returns.
"""

from ha_redirect.model import (  # noqa: F401
    ArpReply, ArpRequest, Barrier, Endpoint, FlowCommand, FlowMod, GotoTable,
    Learn, Match, Output, PacketOut, PolicySettings, Service, ServiceError,
    SetField, SpecialPort, TcpPacket)
