"""The Mininet/HAProxy testbed of the paper's Figure 1 (optional: `[lab]`).

Modules, lowest first:

* `scope`: `RunScope`, which owns a run's names, processes and undo steps.
* `topology`: addressing plans and Mininet topologies (SDN and HAProxy).
* `testbed`: `SdnTestbed` and `ProxyTestbed`, the running networks.
* `agent`: small programs run inside hosts (identity server, prober, ...).
* `traffic`: starting those programs and iperf3; service-gap analysis.
* `controller`: the controller config file and the controller process.
* `haproxy`: the rendered HAProxy config and the HAProxy process.
* `failures`: link down/up and service kill.
* `cli`: the `ha-redirect-lab` command.

Nothing in the core imports this package; it drives the controller as a
separate process, as a deployment would.
"""
