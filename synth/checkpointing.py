"""Checkpoints that never lose work, as Lightning callbacks (conf/callbacks/default.yaml):

* `LastCheckpoint`: checkpoints/last.ckpt at EVERY validation (Lightning's own `save_last` follows the monitored
  best when a monitor is set, so a run killed at step 36 with validations every 10 steps resumed from step 10),
  and at the end of training; a SIGKILL costs at most one validation interval.
* `BestCheckpoint`: Lightning's ModelCheckpoint for best-*.ckpt, except that a non-finite validation metric (NaN,
  inf) never becomes the best.
* `SafeInterrupt`: Ctrl-C (SIGINT), SIGTERM and SIGUSR1 only set a flag; at the next step boundary every rank
  agrees to stop (one collective, so it is safe under DDP), last.ckpt is written at that step, and the run ends
  with one line that gives the resume command: no step is lost. Under a submitit launcher (SLURM), submitit keeps
  preemption: its warning signal first gets the checkpoint, then submitit requeues the job, which resumes in place.
Writes are atomic (synth.checkpoint_io.AtomicCheckpointIO)."""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from synth.errors import TrainingInterrupted

log = logging.getLogger(__name__)


class BestCheckpoint(ModelCheckpoint):
    """best-*.ckpt by the model's monitored metric; a NaN/inf value is never the best."""

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        if current is not None and not bool(torch.isfinite(torch.as_tensor(current)).all()):
            log.warning(f"{self.monitor} is {float(current)} at step {trainer.global_step}: not kept as a best checkpoint")
            return False
        return super().check_monitor_top_k(trainer, current)


class LastCheckpoint(L.Callback):
    """`<dirpath>/last.ckpt` at every validation, at the end of fit (`save`), and when SafeInterrupt stops a run."""

    def __init__(self, dirpath: str) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.saved_step: int | None = None

    def save(self, trainer: L.Trainer) -> None:
        """Write last.ckpt for the current step unless it holds it already (a collective call: every rank calls it)."""
        if self.saved_step == trainer.global_step and self.path.is_file():
            return
        trainer.save_checkpoint(str(self.path))
        self.saved_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit" and not trainer.fast_dev_run:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:
            self.save(trainer)


@contextlib.contextmanager
def startup_guard(trainer: L.Trainer):
    """Around trainer.fit: a Ctrl-C or SIGTERM before the first step (data setup, DDP start-up) ends the run with
    one line and takes the DDP ranks this process launched with it (left alone, they would wait for rank 0 until
    their rendezvous timed out). From the first step on, SafeInterrupt handles signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def early(signum: int, frame: Any) -> None:
        launcher = trainer.strategy.launcher
        if launcher is not None:
            launcher.kill(signal.SIGKILL)
        raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} before the first training step: nothing was trained yet; "
                                  "rerun the same command", signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, early)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class SafeInterrupt(L.Callback):
    """Stop on a signal at the next step boundary with a checkpoint of that step (see the module docstring)."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._stopping: tuple | None = None  # (signal, step, where the checkpoint is, the handler it replaced)

    # ----- handlers: installed when training starts (after Lightning's own), restored when it ends ------------------
    def _note(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step to end
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous) and self._submitit():
            previous(signum, frame)  # submitit ignores the SIGTERM that precedes its own preemption signal
            return
        self.received = signum

    @staticmethod
    def _submitit() -> bool:
        return callable(signal.getsignal(signal.SIGUSR2)) if hasattr(signal, "SIGUSR2") else False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        submitit = self._submitit()
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None or (name == "SIGUSR2" and not submitit):
                continue
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()  # a signal during the very last step: the run finished anyway, nothing to resume

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    # ----- the stop: all ranks agree at a step boundary, save, then end the run --------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._stopping is not None or not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        signum = self.received if self.received is not None else signal.SIGTERM
        last = next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
        if last is not None:
            last.save(trainer)
        where = f"checkpoint of step {trainer.global_step} in {last.path}" if last is not None else "no checkpoint callback configured"
        self._stopping = (signum, trainer.global_step, where, self._previous.get(signum))
        self._restore()
        # the run ends at the next hook, once Lightning has logged this step's metrics

    def _stop(self, trainer: L.Trainer) -> None:
        if self._stopping is None:
            return
        signum, step, where, previous = self._stopping
        name = signal.Signals(signum).name
        if hasattr(signal, "SIGUSR2") and signum == signal.SIGUSR2 and callable(previous):
            log.warning(f"{name} at step {step}: {where}; handing over to submitit to requeue the job")
            for logger in trainer.loggers:
                logger.save()
            previous(signum, None)  # submitit requeues the job and exits (rank 0); the requeued job resumes in place
        raise TrainingInterrupted(
            f"training stopped by {name} at step {step} ({where}): resume with the same command plus ckpt_path={Path(trainer.default_root_dir)}",
            signum,
        )

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._stop(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop(trainer)
