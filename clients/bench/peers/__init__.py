"""Peers for the benchmark: Seldon MLServer beside our server, NVIDIA's perf_analyzer as an
outside check (`make bench-peers`, run.sh; docs/benchmarks/peers/README.md)."""
