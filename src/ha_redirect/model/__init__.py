"""Frozen value types shared by the policy core, the OpenFlow layer and tests.

Nothing here knows about os-ken: a flow is plain data with value equality, so
the policy can be tested by comparing what it returns, and the OpenFlow layer
(`ha_redirect.openflow`) is the only place that turns it into wire messages.

One package, one name (`model.X`) for callers; its modules by subject:
`services` (what to keep available), `settings` (deployment choices and the
flow layout they place), `flows` (the flow vocabulary and packets) and
`validation` (the errors and the checks they share).
"""

# Re-exports: each module's __all__ is its public API.
from ha_redirect.model.flows import *  # noqa: F401,F403,H303
from ha_redirect.model.services import *  # noqa: F401,F403,H303
from ha_redirect.model.settings import *  # noqa: F401,F403,H303
from ha_redirect.model.validation import *  # noqa: F401,F403,H303
from ha_redirect.model import flows as _flows
from ha_redirect.model import services as _services
from ha_redirect.model import settings as _settings
from ha_redirect.model import validation as _validation

__all__ = (_validation.__all__ + _services.__all__ + _settings.__all__
           + _flows.__all__)
