"""The paper's Algorithm 1 (Simple_TCP_Redirection), made safe to deploy.

Client service traffic is sent to the controller; each new connection gets
exact-match flows in both directions, to the primary while it is up and,
after PortStatus reports it down, rewritten to the backup. Unlike the paper,
the rewrite flows are per connection and match `in_port`: that is what lets a
failback leave connections already on the backup alone, and stops a host on
another port from having traffic rewritten for it.
"""

import dataclasses

from ha_redirect import model
from ha_redirect.strategies import base


class ReactiveStrategy(base.Strategy):
    pins_by_controller = True

    def service_flows(self, view):
        flows = base.server_bypass_flows(view)
        for tcp_port in view.service.tcp_ports:
            for match in base.client_service_matches(view.service, tcp_port):
                # Opening SYNs get a flow, and so a datapath cache entry, of
                # their own: the connection's next packets, sent after its
                # pin is installed but maybe before OVS has revalidated the
                # cache, then miss the SYN's entry and find the pin, rather
                # than reach the controller a second time.
                opening = dataclasses.replace(match,
                                              tcp_flags=model.TCP_OPENING)
                for match_, offset in ((opening, model.PRIORITY_SERVICE_SYN),
                                       (match, model.PRIORITY_SERVICE)):
                    flows.append(base.service_flow(
                        view, view.settings.table, match_,
                        (model.Output(model.SpecialPort.CONTROLLER),),
                        offset))
        return flows

    def reply_fallback_table(self, settings):
        return settings.table

    def on_servers_changed(self, view, previous):
        # New connections simply arrive as PacketIns and are pinned to the
        # new active server; the policy has already removed the flows of a
        # server that failed (Algorithm 1, SwitchPortChanged).
        return []
