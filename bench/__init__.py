"""Benchmarks: seeded workloads, the naive baseline engine, and the timing scripts."""
