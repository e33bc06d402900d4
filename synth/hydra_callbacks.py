"""Hydra callbacks: a multirun whose jobs were evaluated (`evaluate=true`) ends with the comparison table of its
jobs (compare.py's markdown, CSV and realism-vs-speed plot in <sweep dir>/compare/, and to W&B / TensorBoard when
those loggers were chosen)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CompareOnMultirunEnd(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("evaluate"):
            return
        from synth.evaluation import compare_runs
        from synth.tracking import log_comparison

        sweep_dir = Path(str(config.hydra.sweep.dir))
        runs = sorted(p for p in sweep_dir.iterdir() if (p / "run.json").is_file()) if sweep_dir.is_dir() else []
        if not runs:
            return
        out_dir = sweep_dir / "compare"
        table = compare_runs(runs, out_dir)
        print(f"\n{(out_dir / 'compare.md').read_text()}\n[synth] comparison of {len(runs)} runs: {out_dir}", flush=True)
        loggers = [str(k) for k in (config.get("logger") or {})]
        wandb_cfg = (config.get("logger") or {}).get("wandb") or {}
        log_comparison(table, out_dir, loggers, project=str(wandb_cfg.get("project", "synth")),
                       group=str(config.get("experiment_name") or sweep_dir.name))
