"""Experiment tracking around runs: W&B stays offline unless the user chose a mode, evaluation metrics and
figures go to every logger of the run (W&B, TensorBoard, CSV), comparison tables go to W&B and TensorBoard as
their own runs, and each W&B run is closed at the end of its job so the jobs of a multirun get separate runs.
No API key is ever read or written here: `wandb login` (or WANDB_API_KEY in the environment) is the user's."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from lightning.pytorch.utilities import rank_zero_only


def default_wandb_offline() -> None:
    """WANDB_MODE=offline unless the user set a mode (online, offline, disabled): nothing leaves the machine by default."""
    os.environ.setdefault("WANDB_MODE", "offline")


def _kind(logger: Any) -> str:
    return type(logger).__name__


@rank_zero_only
def log_evaluation(loggers: Iterable[Any], flat: dict[str, float], step: int, eval_dir: Path | None = None) -> None:
    """Evaluation results (metrics.json as flat `eval/...` scalars, synth.evaluation.flat_metrics) to each logger:
    scalars everywhere, figures and the report to W&B and TensorBoard."""
    figures = sorted(Path(eval_dir).glob("*.png")) if eval_dir else []
    report = Path(eval_dir) / "report.md" if eval_dir else None
    for logger in loggers:
        logger.log_metrics(flat, step=step)
        if _kind(logger) == "WandbLogger":
            for fig in figures:
                logger.log_image(key=f"eval/{fig.stem}", images=[str(fig)], step=step)
            logger.experiment.summary.update(flat)
        elif _kind(logger) == "TensorBoardLogger":
            if report is not None and report.is_file():
                logger.experiment.add_text("eval/report", report.read_text(), step)
        logger.save()


def finish_wandb(loggers: Iterable[Any]) -> None:
    """Close the W&B run of this job (Lightning leaves it open: the next job of a multirun would log into it)."""
    if any(_kind(lg) == "WandbLogger" for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def log_comparison(table: Any, out_dir: Path, loggers: Iterable[str], project: str = "synth", group: str | None = None) -> None:
    """A comparison table (pandas DataFrame from compare_runs) and its plot as a run of its own, job_type=compare,
    in each named logger (`wandb`, `tensorboard`); CSV and markdown are written by compare_runs itself."""
    out_dir = Path(out_dir)
    names = set(loggers)
    if "wandb" in names:
        import wandb

        default_wandb_offline()
        run = wandb.init(project=project, group=group, job_type="compare", name=f"compare_{out_dir.name}", dir=str(out_dir),
                         reinit="finish_previous")
        run.log({"compare/table": wandb.Table(dataframe=table.reset_index(drop=True).astype(str))})
        for fig in sorted(out_dir.glob("*.png")):
            run.log({f"compare/{fig.stem}": wandb.Image(str(fig))})
        run.finish()
    if "tensorboard" in names:
        from torch.utils.tensorboard import SummaryWriter

        md = out_dir / "compare.md"
        with SummaryWriter(str(out_dir / "tensorboard")) as writer:
            writer.add_text("compare/table", md.read_text() if md.is_file() else table.to_markdown())
