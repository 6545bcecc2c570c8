"""Metrics of one evaluation run, from captures, iperf3 and the prober.

The functions live in `ha_redirect.lab.measure`, one module per job; this
module keeps the names the evaluation and the reports import from here.
"""

from ha_redirect.lab.measure.clients import client_class
from ha_redirect.lab.measure.clients import ClientOutcome
from ha_redirect.lab.measure.clients import Connection
from ha_redirect.lab.measure.clients import connections
from ha_redirect.lab.measure.clients import failover_resets
from ha_redirect.lab.measure.clients import first_backup_response
from ha_redirect.lab.measure.clients import iperf3_outcome
from ha_redirect.lab.measure.clients import reset_connections
from ha_redirect.lab.measure.clients import resets_after
from ha_redirect.lab.measure.health_log import controller_redirects
from ha_redirect.lab.measure.health_log import controller_transitions
from ha_redirect.lab.measure.health_log import detection_time
from ha_redirect.lab.measure.health_log import false_failovers
from ha_redirect.lab.measure.health_log import haproxy_transitions
from ha_redirect.lab.measure.health_log import HealthTransition
from ha_redirect.lab.measure.segments import ACK
from ha_redirect.lab.measure.segments import FIN
from ha_redirect.lab.measure.segments import PAYLOAD_PREFIX
from ha_redirect.lab.measure.segments import read_segments
from ha_redirect.lab.measure.segments import RST
from ha_redirect.lab.measure.segments import Segment
from ha_redirect.lab.measure.segments import SYN
from ha_redirect.lab.measure.stats import mean
from ha_redirect.lab.measure.stats import Spread

__all__ = [
    'ACK',
    'client_class',
    'ClientOutcome',
    'Connection',
    'connections',
    'controller_redirects',
    'controller_transitions',
    'detection_time',
    'failover_resets',
    'false_failovers',
    'FIN',
    'first_backup_response',
    'haproxy_transitions',
    'HealthTransition',
    'iperf3_outcome',
    'mean',
    'PAYLOAD_PREFIX',
    'read_segments',
    'reset_connections',
    'resets_after',
    'RST',
    'Segment',
    'Spread',
    'SYN',
]
