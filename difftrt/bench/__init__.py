"""Benchmarks: per-stage timing of the sampling pipeline, statistics and reports."""
