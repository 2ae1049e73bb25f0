"""Benchmarks of bayeshf against its peers; the harness lives in :mod:`bayeshf.bench`.

Run ``python -m benchmarks SUITE [options]`` from the repository root (or
``bayeshf bench SUITE`` anywhere). Recorded results: benchmarks/results/,
plots: benchmarks/plots/, summary: docs/benchmarks.md.
"""
