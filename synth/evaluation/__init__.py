"""Evaluation of synthetic images (evaluate.py) and comparison of runs (compare.py).

`evaluate_run`, `evaluate_samples`, `summary_line` (run.py), `verdict` (verdicts.py), `compare_runs`,
`flat_metrics` (compare.py) are importable from here; importing the package itself is cheap (no torch): it only
registers the `eval_dir` config resolver.

Modules: run.py (tasks) -> measure.py (one evaluation) -> reference.py (real sets: test split, val
calibration), scoring.py (rows with intervals) -> frd.py (FRD feature space), distances.py (SSIM, kernels),
bootstrap.py (intervals), features.py (radiomic extraction), memorization.py, verdicts.py; report.py +
figures.py (report.md); compare.py + compare_table.py (compare.md)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["evaluate_run", "evaluate_samples", "summary_line", "verdict", "compare_runs", "flat_metrics", "find_metrics"]


def eval_dir(run_dir, log_dir) -> str:
    """Where evaluate.py writes: <run>/eval for a run, <log_dir>/evaluate for a folder of samples."""
    if run_dir in (None, "", "null"):
        return str(Path(str(log_dir)) / "evaluate")
    from synth.runs import resolve_run_dir

    return str(resolve_run_dir(str(run_dir), log_dir) / "eval")


OmegaConf.register_new_resolver("eval_dir", eval_dir, replace=True)


def __getattr__(name: str):
    import importlib

    if name in ("evaluate_run", "evaluate_samples", "summary_line"):
        return getattr(importlib.import_module("synth.evaluation.run"), name)
    if name == "verdict":
        return importlib.import_module("synth.evaluation.verdicts").verdict
    if name in ("compare_runs", "flat_metrics", "find_metrics"):
        return getattr(importlib.import_module("synth.evaluation.compare"), name)
    raise AttributeError(f"module 'synth.evaluation' has no attribute {name!r}")
