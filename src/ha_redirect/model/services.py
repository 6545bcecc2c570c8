"""What to keep available: services and their servers."""

import dataclasses
import functools
import typing

from ha_redirect.model.validation import check_distinct
from ha_redirect.model.validation import check_switch_port
from ha_redirect.model.validation import freeze_tuples
from ha_redirect.model.validation import is_int_between
from ha_redirect.model.validation import normalize_ipv4
from ha_redirect.model.validation import normalize_mac
from ha_redirect.model.validation import ServiceDefinitionError

__all__ = ['Endpoint', 'Service']

_ENDPOINT_ATTRIBUTES = ('ip', 'mac', 'port')


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A server as the switch sees it: its addresses and its switch port."""
    ip: str
    mac: str
    port: int

    def __post_init__(self):
        error = ServiceDefinitionError.for_field
        object.__setattr__(self, 'ip', normalize_ipv4(self.ip, 'ip', error))
        object.__setattr__(self, 'mac',
                           normalize_mac(self.mac, 'mac', error))
        check_switch_port(self.port, 'port', error)


@dataclasses.dataclass(frozen=True)
class Service:
    """One highly available TCP service on one switch.

    Clients address the primary; while the primary is unavailable the switch
    rewrites their traffic to the first available backup, in order.
    `client_ports` empty means "any port that is not a server's".

    A bad definition raises `ServiceDefinitionError`, whose `field` is the
    attribute at fault; `backups.ip` (`.mac`, `.port`) for the backups'.
    """
    name: str
    datapath_id: int
    tcp_ports: typing.Tuple[int, ...]
    primary: Endpoint
    backups: typing.Tuple[Endpoint, ...]
    client_ports: typing.Tuple[int, ...] = ()
    monitors: typing.Tuple[str, ...] = ('port_status',)

    def __post_init__(self):
        freeze_tuples(self, 'tcp_ports', 'monitors', 'backups',
                      'client_ports')
        if not self.name:
            raise ServiceDefinitionError.for_field(
                'name', 'must not be empty', owner='service')
        error = functools.partial(ServiceDefinitionError.for_field,
                                  owner=f'service {self.name!r}')
        if not isinstance(self.datapath_id, int) or self.datapath_id < 0:
            raise error('datapath_id',
                        f'{self.datapath_id!r} is not a datapath id')
        self._check_tcp_ports(error)
        self._check_servers(error)
        self._check_client_ports(error)
        if not self.monitors:
            raise error('monitors', 'at least one monitor is required')
        check_distinct(self.monitors, 'monitors', 'monitor', error)

    def _check_tcp_ports(self, error):
        if not self.tcp_ports:
            raise error('tcp_ports', 'must not be empty')
        for port in self.tcp_ports:
            if not is_int_between(port, 1, 65535):
                raise error('tcp_ports', f'{port!r} is not a TCP port')
        check_distinct(self.tcp_ports, 'tcp_ports', 'TCP port', error)

    def _check_servers(self, error):
        if not self.backups:
            raise error('backups', 'at least one backup is required')
        for attr in _ENDPOINT_ATTRIBUTES:
            primary = getattr(self.primary, attr)
            backups = [getattr(backup, attr) for backup in self.backups]
            if primary in backups:
                raise error(f'backups.{attr}', f'{primary} is also {{}}',
                            f'primary.{attr}')
            check_distinct(backups, f'backups.{attr}', attr, error)

    def _check_client_ports(self, error):
        for port in self.client_ports:
            check_switch_port(port, 'client_ports', error)
        check_distinct(self.client_ports, 'client_ports', 'port', error)
        for port in self.client_ports:
            if port in self.server_ports:
                raise error('client_ports',
                            f'port {port} is also a server port')

    @property
    def servers(self) -> typing.Tuple[Endpoint, ...]:
        """Primary first, then the backups in failover order."""
        return (self.primary,) + self.backups

    @functools.cached_property
    def server_ports(self) -> typing.Tuple[int, ...]:
        # Cached: every monitor asks on every PortStatus, for each of up
        # to a thousand services.
        return tuple(s.port for s in self.servers)
