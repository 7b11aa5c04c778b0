"""Benchmarks; run the scripts directly (see benchmarks/RESULTS.md), they are not tests."""
