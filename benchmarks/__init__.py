"""Speed benchmarks, run as scripts: ``python -m benchmarks.<name>``.

Each times difftransforms and its peers in the same run and appends a markdown table
to BENCHMARKS.md (see :mod:`benchmarks._harness`).
"""
