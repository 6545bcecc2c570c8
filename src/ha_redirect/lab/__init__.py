"""The Mininet/HAProxy testbed of the paper's Figure 1 (optional: `[lab]`).

Modules, lowest first:

* `scope`: `RunScope`, which owns a run's names, processes and undo steps.
* `command`: what the command-line tools share (one-line argument errors,
  argument types, SIGTERM as a clean stop).
* `frames`: Ethernet, ARP, IPv4, IPv6 and TCP frames, built and parsed;
  `fuzz`: hostile frames for the fuzz and syn-flood agents.
* `topology`: addressing plans and Mininet topologies (SDN and HAProxy).
* `testbed`: `SdnTestbed` and `ProxyTestbed`, the running networks.
* `agent`: small programs run inside hosts (identity server, prober, ...).
* `traffic`: starting those programs and iperf3; service-gap analysis.
* `workload`: seeded Poisson client arrivals (the paper's Section IV).
* `captures`: a run's packet captures and the clock that places them.
* `controller`: the controller config file and the controller process;
  `coordinator`: a Redis server of the run's own, for elections.
* `haproxy`: the rendered HAProxy config and the HAProxy process.
* `ovs`: the switch as the fault suite sees it (flows, groups, a reboot).
* `failures`: link down/up and service kill.
* `schemes`: the schemes compared, by the names the commands take;
  `scenarios`: ready-made set-ups (a testbed, its servers, its redirector).
* `measure`: measurements of a run, pure functions (segments, clients,
  health log, stats); `metrics`: one run's metrics from captures, iperf3
  and the prober; `run_metrics`: a run's result from what it recorded.
* `takeover`: measuring a change of master.
* `sweep`: one sweep runner for `evaluate` and `gaps`; `evaluation_run`
  and `evaluation`: one run, and the paper's evaluation; `gaps` and
  `gaps_summary`: every scheme's service gap, and its summary.
* `formatting` and `report_sections`: how reports write numbers, and the
  Markdown they share; `report`, `health_report` and `figures`: report.md,
  its health comparison and its figures.
* `demo`: the README's short failover, told as it happens.
* `cli`: the `ha-redirect-lab` command.

Nothing in the core imports this package; it drives the controller as a
separate process, as a deployment would.
"""
