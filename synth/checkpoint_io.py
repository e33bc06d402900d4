"""Checkpoint files that survive a kill: `AtomicCheckpointIO` (the Trainer's CheckpointIO plugin) writes each
checkpoint to a hidden temp file in the same folder, fsyncs it, then renames it over the target, so a kill
at any moment leaves either the old complete file or the new complete one, never half of one. Loading is
restricted to tensors and plain data (weights_only), so a checkpoint cannot run code."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from synth.errors import SynthError

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def partial_path(path: Path) -> Path:
    """The temp file a save of `path` writes first (hidden; a kill may leave it, the next save replaces it)."""
    return path.with_name(f".{path.name}.partial")


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
    """torch.save `obj` to `path` atomically (same-folder temp file, fsync, os.replace, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    writes = None
    try:
        with open(tmp, "wb") as f:
            writes = _Writes(f)
            torch.save(obj, writes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        err = writes.error if writes is not None and writes.error is not None else err
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            raise SynthError(f"no space left on the disk of {path.parent} while writing {path} ({os.strerror(err.errno)}): "
                             "free space there (or move outputs/ with PROJECT_ROOT=<a larger disk>); the previous checkpoint is intact") from None
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with atomic local writes (remote URLs keep Lightning's own writer) and
    weights_only loading unless the caller asks otherwise."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage, weights_only: Optional[bool] = None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True if weights_only is None else weights_only)
