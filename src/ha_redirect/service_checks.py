"""Rules that a set of services must follow together, whatever strategy
serves them: checked once, before anything is installed, so a bad config
stops the controller at start. (A strategy adds its own rules in
`Strategy.check_services`; one service's own rules are `model.Service`'s.)
"""

import typing

from ha_redirect import model


def check_services(services: typing.Sequence[model.Service],
                   settings: model.PolicySettings) -> None:
    """Raise model.ServiceError, naming the culprit, for services that
    cannot be served together on their switches."""
    names = [s.name for s in services]
    for name in names:
        if names.count(name) > 1:
            raise model.ServiceError(f'service {name!r}: defined twice')
    if len(services) >= model.GLOBAL_SERVICE_INDEX:
        raise model.ServiceError(f'services: at most '
                                 f'{model.GLOBAL_SERVICE_INDEX - 1}')
    # One host per address on a switch: services may share servers, but
    # an IP seen with two MACs or ports would get two rewrites (and two
    # ARP responders overwriting each other's flow).
    hosts = {}
    for service in services:
        for server in service.servers:
            key = (service.datapath_id, server.ip)
            seen = hosts.setdefault(key, (server, service.name))
            if seen[0] != server:
                raise model.ServiceError(
                    f'service {service.name!r}: server {server.ip} has MAC '
                    f'{server.mac} on port {server.port}, but service '
                    f'{seen[1]!r} has it with MAC {seen[0].mac} on port '
                    f'{seen[0].port}')
    if any('tcp_probe' in s.monitors for s in services):
        for service in services:
            for server in service.servers:
                if server.ip == settings.probe_ip:
                    raise model.ServiceError(
                        f'probe_ip: {server.ip} is a server of service '
                        f'{service.name!r}; probes need an unused address')
                if server.mac == settings.probe_mac:
                    raise model.ServiceError(
                        f'probe_mac: {server.mac} is a server of service '
                        f'{service.name!r}; probes need an unused address')
    seen = {}
    for service in services:
        for tcp_port in service.tcp_ports:
            key = (service.datapath_id, service.primary.ip, tcp_port)
            if key in seen:
                raise model.ServiceError(
                    f'service {service.name!r}: {service.primary.ip}:'
                    f'{tcp_port} is already served by {seen[key]!r}')
            seen[key] = service.name
