"""Tools for people: the `triton-patterns` CLI, the repository checker, the inference template,
the demo, perf and tune."""
