"""Benchmarks: every speed and memory figure side by side in one run, as absolute numbers and ratios.

`python -m bench [--quick]` (what `make bench` / `make bench-quick` run) measures the running stack;
`python -m bench.gpu` is the gpu-profile script; `bench/preprocess_bench.py` times the DALI wrapper alone.
"""
