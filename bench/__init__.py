"""Benchmarks of the operator at scale, against the project's own control plane.

`python -m bench` (or `make bench`) runs one measured scenario and prints a table;
`--soak MINUTES` runs continuous churn and samples the operator's memory instead.
Results are also written as JSON; docs/benchmarks.md records the numbers.
"""
