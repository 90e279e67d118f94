"""Benchmarks (not tests): the service against its own model-only ceiling and a naive server.

Run from the repository root, e.g. ``python -m bench.serve_bench --quick``.
"""
