"""ha_redirect: keep TCP services reachable when a server fails.

The public API is OpenFlow-agnostic: build a `RedirectPolicy` from `Service`
definitions, feed it switch events, and send the flow data it returns (the
os-ken app in `ha_redirect.app` does exactly that; so can yours).
"""

from ha_redirect.model import (  # noqa: F401
    ArpReply, ArpRequest, Barrier, Endpoint, FlowCommand, FlowMod, GotoTable,
    Learn, Match, Output, PacketOut, PolicySettings, Service, ServiceError,
    SetField, SpecialPort, TcpPacket)
from ha_redirect.policy import RedirectPolicy  # noqa: F401

__all__ = ['ArpReply', 'ArpRequest', 'Barrier', 'Endpoint', 'FlowCommand',
           'FlowMod', 'GotoTable', 'Learn', 'Match', 'Output', 'PacketOut',
           'PolicySettings', 'RedirectPolicy', 'Service', 'ServiceError',
           'SetField', 'SpecialPort', 'TcpPacket']
