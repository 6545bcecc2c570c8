"""Switch-local failover that never moves a running connection: conntrack.

Each service gets a conntrack zone (`first_ct_zone` + service index). Client
service traffic and the servers' replies pass through the tracker in that
zone (`table` -> `connection_table`):

- A connection the tracker has not committed goes to the service's
  fast-failover group (the active server first, then the other eligible
  servers, as in `fast_failover`). Each bucket is one `ct(commit)` that
  DNATs the connection to its server (none for the primary), writes the
  server's number (index + 1) into `ct_mark` and the client's switch port
  into `ct_label[0..15]`, and continues in `route_table`. (OVS runs a
  bucket's actions as an action set: `ct` must be the bucket's only action,
  an `output` next to it would make OVS drop the commit silently.)
- Every later packet of the connection carries its `ct_mark` and goes from
  `route_table` to the server it was committed to, whatever the group says
  now: a failback sends new connections home while those on a backup
  continue there until they end.
- Replies are un-NATed by the tracker, so the client always sees the
  primary's IP; their source MAC is set to the primary's and they leave by
  the client's port, read back from `ct_label`.

The controller shapes the group (a server leaves it when its monitors call it
unhealthy, and returns once eligible again, after `failback_hold_down`) and
the route of each server's connections. When a server dies its connections
cannot be saved, and should end at once on the client rather than retry
into a dead link. The controller flushes their tracker entries (zone, and
the dead server's address as reply source: NXT_CT_FLUSH, Open vSwitch
3.1+), so their next packet is new to the tracker, goes through the group
to the active server and is reset there, the RST un-NATed like any reply.
Until the flush lands (or if the switch refuses it), `route_table` sends
the dead server's connections to the active server statelessly, whose RST
is rewritten to come from the primary like any packet a backup sends that
is not a tracked reply.

Conntrack state lives in the datapath: a restarted controller replaces the
flows and the group, and every connection keeps its server.
"""

from ha_redirect import model
from ha_redirect.model import Conntrack
from ha_redirect.model import GotoTable
from ha_redirect.model import Group
from ha_redirect.model import Match
from ha_redirect.model import Move
from ha_redirect.model import Output
from ha_redirect.model import OutputFrom
from ha_redirect.model import SetField
from ha_redirect.strategies import base
from ha_redirect.strategies import fast_failover

# Priorities (offsets above base_priority) in connection_table, where
# packets arrive tracked.
PRIORITY_TRACKED_REPLY = 40       # a server's reply to a tracked connection
PRIORITY_SERVER_UNTRACKED = 30    # anything else a server sends (its RSTs)
PRIORITY_NEW_CONNECTION = 20      # not committed yet: the group decides
PRIORITY_TRACKED = 10             # committed: route by ct_mark

# The client's switch port, kept in the connection's ct_label.
CLIENT_PORT_BITS = 16

_TCP = dict(eth_type=model.ETH_TYPE_IPV4, ip_proto=model.IP_PROTO_TCP)


def ct_zone(view) -> int:
    zone = view.settings.first_ct_zone + view.index
    if zone > 0xffff:
        raise model.ServiceError(
            f'service {view.service.name!r}: first_ct_zone + service index '
            f'{view.index} exceeds the 16-bit conntrack zone')
    return zone


def server_mark(server_index: int) -> int:
    """The ct_mark of a connection committed to a server (0: none yet)."""
    return server_index + 1


class StatefulStrategy(base.Strategy):
    pins_connections = True
    # Pins are conntrack entries, not flows: the switch's flow table cannot
    # count them (`ovs-appctl dpctl/dump-conntrack zone=Z` can).
    pins_in_flows = False

    def check_services(self, services, settings):
        last = settings.first_ct_zone + len(services) - 1
        if last > 0xffff:
            raise model.ServiceError(
                f'first_ct_zone: {settings.first_ct_zone} + {len(services)} '
                'services exceeds the last conntrack zone, 65535')

    def service_flows(self, view):
        settings = view.settings
        zone = ct_zone(view)
        track = (Conntrack(zone, table=settings.connection_table, nat=True),)
        flows = fast_failover.replace_group(view, self._bucket_actions)
        flows += base.divert_service_traffic(view, track)
        flows += self._tracked_flows(view, zone)
        flows += self._route_flows(view, zone)
        return flows + self._forget_dead(view)

    def on_servers_changed(self, view, previous):
        return [fast_failover.group_mod(view, model.GroupCommand.MODIFY,
                                        self._bucket_actions)
                ] + self._route_flows(view, ct_zone(view)) + (
                    self._forget_dead(view))

    @staticmethod
    def _forget_dead(view):
        """Drop the tracker entries of connections committed to servers
        that are down: their next packet is new to the tracker, goes to the
        active server and is reset there (Open vSwitch 3.1+; an older switch
        refuses the message, and the entries wait for conntrack's own
        timeout while `route_table` still sends them on to be reset)."""
        zone = ct_zone(view)
        return [model.ConntrackFlush(view.datapath_id, zone, server.ip)
                for server, healthy in zip(view.service.servers,
                                           view.healthy) if not healthy]

    def _tracked_flows(self, view, zone):
        """connection_table: what to do with a packet the tracker has seen."""
        service = view.service
        table = view.settings.connection_table
        flows = [base.service_flow(
            view, table,
            Match(ct_state=model.ct_state(model.CT_TRK | model.CT_RPL),
                  ct_zone=zone, **_TCP),
            (SetField('eth_src', service.primary.mac),
             OutputFrom('ct_label', CLIENT_PORT_BITS)),
            PRIORITY_TRACKED_REPLY)]
        for server in service.servers:
            flows.append(base.service_flow(
                view, table,
                Match(in_port=server.port,
                      ct_state=model.ct_state(model.CT_TRK, model.CT_RPL),
                      ct_zone=zone, **_TCP),
                base.rewrite_back(service, server)
                + (Output(model.SpecialPort.NORMAL),),
                PRIORITY_SERVER_UNTRACKED))
        from_client = model.ct_state(model.CT_TRK,
                                     model.CT_RPL | model.CT_INV)
        flows.append(base.service_flow(
            view, table,
            Match(ct_state=from_client, ct_zone=zone, ct_mark=0, **_TCP),
            (Group(fast_failover.group_id(view)),), PRIORITY_NEW_CONNECTION))
        flows.append(base.service_flow(
            view, table, Match(ct_state=from_client, ct_zone=zone, **_TCP),
            (GotoTable(view.settings.stateful_route_table),),
            PRIORITY_TRACKED))
        return flows

    def _route_flows(self, view, zone):
        """route_table: each server's connections go to it while it is
        healthy; a dead server's go to the active server, which resets
        them, or nowhere if no server is left."""
        flows = []
        for index, server in enumerate(view.service.servers):
            if view.healthy[index]:
                actions = (SetField('eth_dst', server.mac),
                           Output(server.port))
            elif view.active is not None:
                other = view.server(view.active)
                actions = (SetField('eth_dst', other.mac),
                           SetField('ipv4_dst', other.ip),
                           Output(other.port))
            else:
                actions = ()
            flows.append(base.service_flow(
                view, view.settings.stateful_route_table,
                Match(ct_zone=zone, ct_mark=server_mark(index), **_TCP),
                actions, model.PRIORITY_CONNECTION))
        return flows

    @staticmethod
    def _bucket_actions(view, index):
        server = view.service.servers[index]
        return (Conntrack(
            ct_zone(view), table=view.settings.stateful_route_table,
            commit=True, nat_dst=None if index == 0 else server.ip,
            actions=(SetField('ct_mark', server_mark(index)),
                     Move('in_port', 'ct_label', CLIENT_PORT_BITS))),)
