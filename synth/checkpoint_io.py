"""Checkpoint files that survive a kill: `AtomicCheckpointIO` (the Trainer's CheckpointIO plugin) writes each
checkpoint with synth.io.atomic_write (a hidden temp file in the same folder, fsync, rename), so a kill
at any moment leaves either the old complete file or the new complete one, never half of one. Loading is
restricted to tensors and plain data (weights_only), so a checkpoint cannot run code."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from synth.io import atomic_write

class _Writes:
    """A file that remembers the OSError of a failed write: torch's zip writer reports it only as a RuntimeError."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str):
        return getattr(self.f, name)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` through synth.io.atomic_write (a full disk: one line, the old file intact)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            writes = _Writes(f)
            try:
                torch.save(obj, writes)
            except RuntimeError:
                if writes.error is not None:  # the disk's error, not torch's wrapper of it
                    raise writes.error from None
                raise

    return atomic_write(path, write)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with atomic local writes (remote URLs keep Lightning's own writer) and
    weights_only loading unless the caller asks otherwise."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage, weights_only: Optional[bool] = None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True if weights_only is None else weights_only)
