"""Service flows installed up front: no PacketIn per connection.

The switch pins each new connection itself with OVS `learn`: the service's
default flow in the connection table forwards the packet to the active server
and learns two exact-match flows (forward and reverse) for its connection.
A failover replaces only the default flow, in one FlowMod per service port
followed by a barrier, so established connections keep their learned pins:
after a failback, connections running on the backup continue until they end.
"""

from ha_redirect import model
from ha_redirect.model import GotoTable
from ha_redirect.model import Learn
from ha_redirect.model import Match
from ha_redirect.model import Output
from ha_redirect.strategies import base

_TCP_FIXED = (('eth_type', model.ETH_TYPE_IPV4),
              ('ip_proto', model.IP_PROTO_TCP))


class ProactiveStrategy(base.Strategy):

    def service_flows(self, view):
        # Clients' packets and the servers' replies are looked up among
        # the learned pins.
        flows = base.divert_service_traffic(
            view, (GotoTable(view.settings.connection_table),))
        flows.extend(self._default_flows(view))
        return flows

    def reply_fallback_table(self, settings):
        # Server replies are looked up among the pins in this table.
        return settings.connection_table

    def switch_flows(self, settings, datapath_id, cookie):
        # Server replies that match no pin are the server's own business.
        return [model.FlowMod(
            datapath_id, model.FlowCommand.ADD,
            actions=(Output(model.SpecialPort.NORMAL),),
            table=settings.connection_table,
            priority=model.PRIORITY_TABLE_MISS, cookie=cookie)]

    def on_servers_changed(self, view, previous):
        # One FlowMod per service port replaces the default atomically; the
        # policy closes the change with a barrier.
        if view.active == previous:
            return []
        return self._default_flows(view)

    def _default_flows(self, view):
        """Per service port: send new connections to the active server and
        learn their pins. With no healthy server, new connections are
        dropped by a flow that does nothing."""
        flows = []
        for tcp_port in view.service.tcp_ports:
            actions = ()
            if view.active is not None:
                actions = self._pin_and_forward(view, view.active, tcp_port)
            flows.append(base.service_flow(
                view, view.settings.connection_table,
                self._new_connection_match(view, tcp_port), actions,
                model.PRIORITY_SERVICE))
        return flows

    @staticmethod
    def _new_connection_match(view, tcp_port):
        return Match(eth_dst=view.service.primary.mac,
                     eth_type=model.ETH_TYPE_IPV4,
                     ip_proto=model.IP_PROTO_TCP,
                     ipv4_dst=view.service.primary.ip, tcp_dst=tcp_port)

    def _pin_and_forward(self, view, server_index, tcp_port):
        """Forward to a server and learn the connection's two pins."""
        service = view.service
        server = view.server(server_index)
        cookie = view.connection_cookie(server_index)
        common = dict(table=view.settings.connection_table,
                      priority=view.priority(model.PRIORITY_CONNECTION),
                      cookie=cookie,
                      idle_timeout=view.settings.connection_idle_timeout,
                      fin_idle_timeout=view.settings.fin_idle_timeout)
        towards = base.rewrite_towards(service, server)
        back = base.rewrite_back(service, server)
        # Learn sees the packet as it is now: before any rewrite below.
        learn_forward = Learn(
            match_values=_TCP_FIXED + (('eth_dst', service.primary.mac),
                                       ('ipv4_dst', service.primary.ip),
                                       ('tcp_dst', tcp_port)),
            match_from=(('in_port', 'in_port'), ('eth_src', 'eth_src'),
                        ('ipv4_src', 'ipv4_src'), ('tcp_src', 'tcp_src')),
            set_values=tuple((a.field, a.value) for a in towards),
            output_port=server.port, **common)
        learn_reverse = Learn(
            match_values=_TCP_FIXED + (('in_port', server.port),
                                       ('eth_src', server.mac),
                                       ('ipv4_src', server.ip),
                                       ('tcp_src', tcp_port)),
            match_from=(('eth_dst', 'eth_src'), ('ipv4_dst', 'ipv4_src'),
                        ('tcp_dst', 'tcp_src')),
            set_values=tuple((a.field, a.value) for a in back),
            output_from='in_port', **common)
        return (learn_forward, learn_reverse) + towards + (
            Output(server.port),)
