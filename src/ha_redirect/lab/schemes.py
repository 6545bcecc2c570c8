"""The schemes the lab compares, by the names its commands take.

`sdn-<strategy>` is our controller with an installed strategy;
`haproxy-<profile>` is HAProxy in front of the same servers.  `evaluate`,
`gaps` and `demo` all parse names here, so they accept the same ones.
"""

import dataclasses

from ha_redirect.lab import haproxy
from ha_redirect import plugins

SDN = 'sdn'
HAPROXY = 'haproxy'


def sdn_names():
    """Every installed strategy as `sdn-<strategy>`."""
    return tuple(f'{SDN}-{n}' for n in plugins.strategy_names())


def available_names():
    """HAProxy profiles and every installed strategy, as scheme names."""
    return ([f'{HAPROXY}-{p}' for p in sorted(haproxy.PROFILES)]
            + list(sdn_names()))


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A redirector set-up: `kind` SDN or HAPROXY, `variant` the strategy
    or the HAProxy profile."""
    kind: str
    variant: str

    @classmethod
    def parse(cls, name):
        """The scheme `name` means; ValueError listing the available ones."""
        available = available_names()
        if name not in available:
            raise ValueError(f'unknown scheme {name!r} (available: '
                             f'{", ".join(available)})')
        kind, _, variant = name.partition('-')
        return cls(kind, variant)

    @property
    def name(self):
        return f'{self.kind}-{self.variant}'

    @property
    def is_sdn(self):
        return self.kind == SDN


def parse_scheme(name):
    """(kind, variant) of a scheme name; ValueError if it is unknown."""
    return dataclasses.astuple(Scheme.parse(name))
