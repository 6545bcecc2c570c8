"""The model's errors, and the checks its value types share.

A check names the field at fault, so that a front end can report the same
error in its own terms: `ha_redirect.opts` turns the model's `backups.ip`
into ``[service:web] backup_ips``.
"""

import ipaddress
import re
import typing

__all__ = ['MAC_PATTERN', 'SWITCH_PORT_MAX', 'ValidationError',
           'ServiceDefinitionError', 'SettingsError', 'FlowError',
           'ServiceError', 'normalize_mac', 'normalize_ipv4']

# Either case: the model keeps MACs in lower case.
MAC_PATTERN = r'^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$'
_MAC_RE = re.compile(MAC_PATTERN)
SWITCH_PORT_MAX = 0xffffff00      # OFPP_MAX: the last physical port number


class ValidationError(ValueError):
    """Values the core refuses, because they could not work.

    Raised with a whole message, or by the model's checks through
    `for_field`: then `field` names the culprit (``'tcp_ports'``, or
    ``'backups.ip'`` for an attribute of the backups), `problem` says what
    is wrong with it and `owner` whose field it is (``"service 'web'"``).
    """
    field: typing.Optional[str] = None
    problem: str = ''
    owner: typing.Optional[str] = None
    others: typing.Tuple[str, ...] = ()

    @classmethod
    def for_field(cls, field, problem, *others, owner=None):
        """`problem` may name other fields as ``{}``, filled from `others`,
        so that `describe` renames them too."""
        error = cls()
        error.field, error.problem = field, problem
        error.owner, error.others = owner, others
        where = f'{owner}: ' if owner else ''
        error.args = (where + error.describe(),)
        return error

    def describe(self, name_of=str) -> str:
        """``field: problem``, each field name passed through `name_of`
        (the owner left out); the whole message for an error without one."""
        if self.field is None:
            return str(self)
        problem = self.problem
        if self.others:
            problem = problem.format(*map(name_of, self.others))
        return f'{name_of(self.field)}: {problem}'


class ServiceDefinitionError(ValidationError):
    """A `Service` or `Endpoint` that cannot work."""


class SettingsError(ValidationError):
    """`PolicySettings` that cannot work."""


class FlowError(ValidationError):
    """Flow data the switch would refuse (a conntrack action, a ct_state
    match, a bundle)."""


# The old name of the base class: it was raised for all of the above.
ServiceError = ValidationError

ErrorFactory = typing.Callable[..., ValidationError]


def normalize_mac(value: str, what: str = 'mac',
                  error: ErrorFactory = ValidationError.for_field) -> str:
    mac = str(value).strip().lower()
    if not _MAC_RE.match(mac):
        raise error(what, f'{value!r} is not a MAC address')
    return mac


def normalize_ipv4(value: str, what: str = 'ip',
                   error: ErrorFactory = ValidationError.for_field) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise error(what, f'{value!r} is not an IPv4 address') from None


def is_int_between(value, low: int, high: int) -> bool:
    """An int (not a bool) in [low, high]."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and low <= value <= high)


def check_switch_port(value, field: str, error: ErrorFactory) -> int:
    if not is_int_between(value, 1, SWITCH_PORT_MAX):
        raise error(field, f'{value!r} is not a switch port number')
    return value


def check_distinct(values, field: str, what: str,
                   error: ErrorFactory) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise error(field, f'{what} {value} is listed twice')
        seen.add(value)


def freeze_tuples(value, *names: str) -> None:
    """Store these fields of a frozen dataclass as tuples, so values built
    from lists still compare and hash."""
    for name in names:
        object.__setattr__(value, name, tuple(getattr(value, name)))
