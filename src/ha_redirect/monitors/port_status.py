"""The paper's failure detector: a server is usable while its switch port is.

PortStatus messages arrive within milliseconds of a link change, which is
what makes the SDN scheme fast; a crashed service on a live link is not seen
here (that is the job of the `tcp_probe` monitor).
"""

from ha_redirect.monitors import base


class PortStatusMonitor(base.Monitor):
    name = 'port_status'

    def __init__(self, service, settings, cookie):
        super().__init__(service, settings, cookie)
        self._port_up = {}

    def on_switch_connected(self, port_states, now):
        self._port_up = {port: bool(up) for port, up in port_states.items()
                         if port in self.service.server_ports}

    def on_port_status(self, port_no, is_up, now):
        if port_no in self.service.server_ports:
            self._port_up[port_no] = bool(is_up)

    def is_healthy(self, server_index):
        # A port the switch has not reported is not there to carry traffic.
        port = self.service.servers[server_index].port
        return self._port_up.get(port, False)
