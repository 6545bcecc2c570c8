"""ha_redirect: keep TCP services reachable when a server fails.

The public API is OpenFlow-agnostic: build a `RedirectPolicy` from `Service`
definitions, feed it switch events, and send the flow data it returns (the
os-ken app in `ha_redirect.app` does exactly that; so can yours).
"""

from ha_redirect.model import ArpReply  # noqa: F401
from ha_redirect.model import ArpRequest  # noqa: F401
from ha_redirect.model import Barrier  # noqa: F401
from ha_redirect.model import Endpoint  # noqa: F401
from ha_redirect.model import FlowCommand  # noqa: F401
from ha_redirect.model import FlowMod  # noqa: F401
from ha_redirect.model import GotoTable  # noqa: F401
from ha_redirect.model import Learn  # noqa: F401
from ha_redirect.model import Match  # noqa: F401
from ha_redirect.model import Output  # noqa: F401
from ha_redirect.model import PacketOut  # noqa: F401
from ha_redirect.model import PolicySettings  # noqa: F401
from ha_redirect.model import Service  # noqa: F401
from ha_redirect.model import ServiceDefinitionError  # noqa: F401
from ha_redirect.model import ServiceError  # noqa: F401
from ha_redirect.model import SetField  # noqa: F401
from ha_redirect.model import SettingsError  # noqa: F401
from ha_redirect.model import SpecialPort  # noqa: F401
from ha_redirect.model import TcpPacket  # noqa: F401
from ha_redirect.model import ValidationError  # noqa: F401
from ha_redirect.policy import RedirectPolicy  # noqa: F401

__all__ = ['ArpReply', 'ArpRequest', 'Barrier', 'Endpoint', 'FlowCommand',
           'FlowMod', 'GotoTable', 'Learn', 'Match', 'Output', 'PacketOut',
           'PolicySettings', 'RedirectPolicy', 'Service',
           'ServiceDefinitionError', 'ServiceError', 'SetField',
           'SettingsError', 'SpecialPort', 'TcpPacket', 'ValidationError']
