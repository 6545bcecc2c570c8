"""Measurements of an evaluation run: pure functions, no processes.

* `segments`: TCP segments read from pcap files.
* `clients`: the clients' connections, when the backup first answered
  them, how the failure met each client, iperf3 throughput.
* `health_log`: health transitions and redirects from the controller's
  and HAProxy's logs; detection time and false failovers.
* `stats`: summaries over repetitions (mean, median and range).

Clock.  Everything is expressed in CLOCK_MONOTONIC seconds, the clock the
agents and the failure injection use (shared by all network namespaces).
Capture timestamps are CLOCK_REALTIME; the runner samples the offset
`realtime - monotonic` when the captures start (and again when they stop,
to bound drift) and `segments.read_segments` subtracts it.
"""
