"""The benchmarks' shared plumbing, one concept per module (the WebSocket client is
`bench/benchlib.py`):

* `paths`: where the benchmarks and their results live.
* `options`: the options every benchmark takes, and typed options built from argparse.
* `loop`: the client side's event loop (uvloop when installed).
* `host`: what a benchmark takes from the host: file descriptors, source addresses, CPUs.
* `processes`: server processes (local stack, gateway, bare Sanic) and one run's `Bench`.
* `proc`: /proc readings (RSS, CPU) and the `CpuMeter`.
* `upstream_calls`: the gateway's upstream calls, from its /metrics.
* `stats`: percentiles.
* `results`: machine info, result files and the one summary line.
* `profiling`: py-spy around a measurement.
* `targets`: the issue's targets as a table, and the verdicts `run-all` prints.
* `stream_clients`: the stream benchmark's client side (sessions, subscribers, counting).
* `valkey`: the Valkey of the fleet benchmarks (`--url`, or one of their own).

The scripts run with `bench/` first on `sys.path`, so they import `lib.<module>`.
"""
