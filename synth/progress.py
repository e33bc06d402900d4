"""Honest progress and complete short runs.

* `StepProgressBar`: the training bar counts optimizer steps toward `trainer.max_steps` (or the steps that
  `trainer.max_epochs` amounts to) with tqdm's rate and ETA, across epochs and from the resumed step, instead of
  Lightning's per-epoch bar ("Epoch 7/-2").
* `FinalValidation`: a run always ends with a validation at its last step (hence a sample grid, the metrics in
  csv/metrics.csv and last.ckpt written there), however max_steps / max_epochs fall against val_check_interval.
"""
from __future__ import annotations

import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


def planned_steps(trainer: L.Trainer) -> int | None:
    """The optimizer step the run will stop at: max_steps, or max_epochs' worth of steps (None: unbounded)."""
    if trainer.max_steps and trainer.max_steps > 0:
        return int(trainer.max_steps)
    batches = trainer.num_training_batches
    if trainer.max_epochs is None or trainer.max_epochs < 0 or batches in (None, float("inf")):
        return None
    return int(trainer.max_epochs * batches // max(1, trainer.accumulate_grad_batches))


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run, in optimizer steps. Written to a log file instead of a terminal (SLURM, nohup), it
    prints a line at most every `log_interval_s` seconds and no validation bars."""

    def __init__(self, refresh_rate: int = 1, log_interval_s: float = 60.0) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.log_interval_s = float(log_interval_s)

    @staticmethod
    def _terminal() -> bool:
        return sys.stdout.isatty()

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        if not self._terminal():
            bar.mininterval = bar.maxinterval = self.log_interval_s
        return bar

    def init_validation_tqdm(self):
        if self._terminal():
            return super().init_validation_tqdm()
        from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

        return Tqdm(disable=True)

    @property
    def train_description(self) -> str:
        return "training"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(total=planned_steps(trainer))
        self.train_progress_bar.initial = trainer.global_step  # resumed: the rate and ETA count from here
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.unit = "step"

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        pass  # one bar for the run: never reset per epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class FinalValidation(L.Callback):
    """Ask Lightning to validate at the last step when no scheduled validation falls there: `should_stop` on the
    final batch makes the fit loop validate (and checkpoint, and log) before it ends."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        final = planned_steps(trainer)
        last_batch_of_run = (final is not None and trainer.global_step >= final) or (
            trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch >= trainer.max_epochs - 1
            and batch_idx + 1 >= trainer.num_training_batches
        )
        if last_batch_of_run and trainer.num_val_batches and sum(trainer.num_val_batches) > 0:
            trainer.should_stop = True
