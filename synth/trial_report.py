"""A sweep trial, seen from inside its training run (conf/callbacks/default.yaml: `sweep_report`).

The sweeper gives every job its trial in the config (`sweep_trial: {number, study, storage}`; null outside a
sweep, and then this callback does nothing). At each validation rank 0 reports the monitored metric (the sweep's
`optimized_metric` when it is a `val/...` metric) to the trial, where `optuna-dashboard` plots it, and asks the
sweep's pruner (`hydra/sweeper/pruner`) whether the trial is hopeless next to the others at the same step. A
pruned run stops cleanly: every rank stops at that step, last.ckpt and run.json are written as for any run, and
the trial is marked so that the sweeper records it as PRUNED (not FAIL)."""
from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


class TrialReport(L.Callback):
    def __init__(self, trial: dict | None = None, monitor: Any = None, pruner: Any = None) -> None:
        """`trial`: {number, study, storage} set by the sweeper; `monitor`: the metric reported; `pruner`: an
        Optuna pruner (the sweep's, from `hydra.sweeper.pruner`; None: report only)."""
        self.info = dict(trial) if trial else None
        self.monitor = monitor if isinstance(monitor, str) else None  # several objectives: nothing to prune on
        self.pruner = pruner
        self._trial = None
        self._missing_warned = False
        self.pruned_at: int | None = None

    @property
    def active(self) -> bool:
        return self.info is not None and self.monitor is not None

    def _optuna_trial(self):
        if self._trial is None:
            import optuna

            from synth import sweep_study

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage, name = sweep_study.open_storage(str(self.info["storage"])), str(self.info["study"])
            study = sweep_study.load(storage, name, pruner=self.pruner)
            self._trial = optuna.trial.Trial(study, sweep_study.trial_id(storage, name, int(self.info["number"])))
        return self._trial

    def _decide(self, trainer: L.Trainer) -> bool:
        """Rank 0: report the metric of this validation; True when the pruner stops the trial here."""
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self._missing_warned:
                log.warning(f"sweep trial {self.info['number']}: {self.monitor} is not logged at validation, so it is not reported "
                            "and the trial cannot be pruned")
                self._missing_warned = True
            return False
        value, step = float(value), int(trainer.global_step)
        from synth import sweep_study

        trial = self._optuna_trial()
        if not math.isfinite(value):
            return False  # FiniteGuard stops a diverged run; the sweeper records it as failed
        trial.report(value, step)
        if self.pruner is None or not trial.should_prune():
            return False
        trial.set_user_attr(sweep_study.PRUNED_AT, step)
        log.info(f"sweep trial {self.info['number']} pruned at step {step}: {self.monitor}={value:.5g} is worse than the "
                    f"sweep's pruner ({type(self.pruner).__name__}) allows at this step; stopping with a checkpoint")
        return True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active or trainer.sanity_checking or trainer.state.fn != "fit" or self.pruned_at is not None:
            return
        prune = self._decide(trainer) if rank_zero_only.rank == 0 else False
        if trainer.world_size > 1:
            prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            self.pruned_at = int(trainer.global_step)
            trainer.should_stop = True
