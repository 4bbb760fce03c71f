"""Benchmarks and long-running trials: ``python -m benchmarks [NAME ...]``."""
