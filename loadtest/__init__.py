"""Benchmarks and load tests: `bench` (one-run ratio table against peers), `loadgen` (closed-loop
load generators), `peers/` (the servers Triton is compared with), `perf` (perf_analyzer),
`locustfile` + `locust_run` (the locust load test, `make loadtest`)."""
