"""Benchmarks of synth (`make bench`): bench.py (CPU or GPU, ratios measured side by side, writes
BENCHMARKS.md), gpu.py (bf16 training and 3D sampling on a GPU), common.py (timing, configs, callbacks).
A package so that train.py subprocesses can instantiate its callbacks by `_target_`."""
