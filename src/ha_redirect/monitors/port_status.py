"""The paper's failure detector: a server is usable while its switch port is.

PortStatus messages arrive within milliseconds of a link change, which is
what makes the SDN scheme fast; a crashed service on a live link is not seen
here (that is the job of an in-band probe monitor).
"""

import typing


class PortStatusMonitor:
    name = 'port_status'

    def __init__(self):
        self._port_up: typing.Dict[typing.Tuple[int, int], bool] = {}

    def on_switch_connected(self, datapath_id: int,
                            port_states: typing.Mapping[int, bool]) -> None:
        for key in [k for k in self._port_up if k[0] == datapath_id]:
            del self._port_up[key]
        for port_no, is_up in port_states.items():
            self._port_up[(datapath_id, port_no)] = bool(is_up)

    def on_port_status(self, datapath_id: int, port_no: int,
                       is_up: bool) -> None:
        self._port_up[(datapath_id, port_no)] = bool(is_up)

    def is_healthy(self, datapath_id: int, port_no: int) -> bool:
        # A port the switch has not reported is not there to carry traffic.
        return self._port_up.get((datapath_id, port_no), False)
