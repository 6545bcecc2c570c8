"""Switch-local failover: an OpenFlow fast-failover group per service.

The group's first bucket watches the primary's port and outputs to it; each
eligible backup follows, in order, watching its own port and rewriting the
destination IP and MAC to itself. When a watched link drops, the switch moves
new connections to the next live bucket by itself: the controller is not on
the failover path. Replies are rewritten back by static flows that match only
the service's replies: the backup's port, its IP and MAC, and the service's
TCP source port; the backup's other traffic keeps its own address. (Without
per-connection state the reply's port is known only when there is one
client port; otherwise the reply is forwarded NORMAL with the primary's IP
but the backup's MAC: see `_reply_actions`.)

The controller still shapes the group: a server leaves it when its monitors
call it unhealthy (a dead service on a live link) and returns only once it is
eligible again (after `failback_hold_down`), so a link that comes back before
its service is ready takes no connections.

This strategy is stateless: nothing pins a connection to its server, so a
failback moves connections running on the backup back to the primary, which
resets them. The `stateful` strategy pins them with conntrack. (OVS executes
a bucket's actions as an action set and silently drops `learn` there, so
pins cannot be learned inside the group.)
"""

from ha_redirect import model
from ha_redirect.model import Bucket
from ha_redirect.model import Group
from ha_redirect.model import GroupMod
from ha_redirect.model import Output
from ha_redirect.strategies import base


def group_id(view):
    return view.settings.first_group_id + view.index


def group_mod(view, command, bucket_actions):
    """The service's fast-failover group: the active server first, then the
    other eligible servers in failover order (without failback the active
    server may be a backup). `bucket_actions(view, index)` fills a bucket."""
    order = sorted(range(len(view.service.servers)),
                   key=lambda index: index != view.active)
    buckets = tuple(
        Bucket(bucket_actions(view, index),
               watch_port=view.service.servers[index].port)
        for index in order if view.eligible[index])
    return GroupMod(view.datapath_id, command, group_id(view), buckets)


def replace_group(view, bucket_actions):
    # A reconnecting switch may still hold our group: replace it. The group
    # comes first, since the flows that point at it need it.
    return [GroupMod(view.datapath_id, model.GroupCommand.DELETE,
                     group_id(view)),
            group_mod(view, model.GroupCommand.ADD, bucket_actions)]


class FastFailoverStrategy(base.Strategy):
    pins_connections = False
    pins_in_flows = False

    def service_flows(self, view):
        flows = replace_group(view, self._bucket_actions)
        flows += base.server_bypass_flows(view)
        service = view.service
        for tcp_port in service.tcp_ports:
            for match in base.client_service_matches(service, tcp_port):
                flows.append(self._flow(view, match, (Group(group_id(view)),)))
            for server in service.backups:
                # The group may move to a backup without the controller:
                # its replies are always sent as the primary's.
                flows.append(self._flow(
                    view, base.server_reply_match(server, tcp_port),
                    base.reply_as_primary(service, server)))
        return flows

    def on_servers_changed(self, view, previous):
        return [group_mod(view, model.GroupCommand.MODIFY,
                          self._bucket_actions)]

    @staticmethod
    def _bucket_actions(view, index):
        server = view.service.servers[index]
        return base.rewrite_towards(view.service, server) + (
            Output(server.port),)

    @staticmethod
    def _flow(view, match, actions):
        return base.service_flow(view, view.settings.table, match, actions,
                                 model.PRIORITY_SERVICE)
