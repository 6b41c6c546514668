"""Benchmarks (not tests): each script measures its figures side by side in one run and prints ratios.
Run from the repository root, e.g. `python -m bench.bm25_cache --data-dir ../shared/data`."""
