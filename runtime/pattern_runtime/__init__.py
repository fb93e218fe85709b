"""Running the stack outside the server: the launcher (embedded tritonserver, or the NGC image with
Docker), Redis, Prometheus, process supervision, the stub watchdog, the services `serve` starts,
the data sets the store is seeded from, and `stack`, the local stack the demo, jobs and load
tests start."""

from pattern_runtime import paths as _paths  # noqa: F401  (names the checkout's admin key file for the SDK)
