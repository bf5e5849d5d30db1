"""Benchmarks, run as scripts (``python benchmarks/bench_update.py``); the tests import
``benchmarks.eager_reference``, the plain eager TD3+BC / ASPC they compare the optimised update with."""
