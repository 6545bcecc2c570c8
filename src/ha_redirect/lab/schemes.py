"""The schemes the lab compares, by the names its commands take.

`sdn-<strategy>` is our controller with an installed strategy;
`haproxy-<profile>` is HAProxy in front of the same servers.  `evaluate`,
`gaps` and `demo` all parse names here, so they accept the same ones.
`flip` is a comparison only `gaps` takes (`parse(..., comparisons=True)`):
a minimal os-ken app that installs one service-wide rewrite when the
primary's port goes down (`lab.flip_app`), not a strategy of the product.
"""

import dataclasses

from ha_redirect.lab import haproxy
from ha_redirect import plugins

SDN = 'sdn'
HAPROXY = 'haproxy'
FLIP = 'flip'
COMPARISONS = (FLIP,)


def sdn_names():
    """Every installed strategy as `sdn-<strategy>`."""
    return tuple(f'{SDN}-{n}' for n in plugins.strategy_names())


def available_names(comparisons=False):
    """HAProxy profiles and every installed strategy, as scheme names;
    with `comparisons`, the lab-only comparisons (`flip`) too."""
    return ([f'{HAPROXY}-{p}' for p in sorted(haproxy.PROFILES)]
            + list(sdn_names()) + (list(COMPARISONS) if comparisons else []))


@dataclasses.dataclass(frozen=True)
class Scheme:
    """A redirector set-up: `kind` SDN or HAPROXY, `variant` the strategy
    or the HAProxy profile."""
    kind: str
    variant: str

    @classmethod
    def parse(cls, name, comparisons=False):
        """The scheme `name` means; ValueError listing the available ones.
        `comparisons`: accept the lab-only comparisons (`flip`)."""
        available = available_names(comparisons)
        if name not in available:
            raise ValueError(f'unknown scheme {name!r} (available: '
                             f'{", ".join(available)})')
        kind, _, variant = name.partition('-')
        return cls(kind, variant)

    @property
    def name(self):
        return f'{self.kind}-{self.variant}' if self.variant else self.kind

    @property
    def is_sdn(self):
        """Our controller (with an installed strategy)."""
        return self.kind == SDN

    @property
    def is_flip(self):
        """The controller-flip comparison app."""
        return self.kind == FLIP

    @property
    def has_controller(self):
        """An OpenFlow controller on the switch: it can serve several
        services on one bed."""
        return self.is_sdn or self.is_flip


def parse_scheme(name):
    """(kind, variant) of a scheme name; ValueError if it is unknown."""
    return dataclasses.astuple(Scheme.parse(name))
