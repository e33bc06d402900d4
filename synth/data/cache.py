"""Where processed items live between epochs: `ItemDataset` (in memory), `LazyDataset` (cache=none: decoded on
every access) and the disk cache (cache=disk: one .npz per subject under a folder named by the source and the
preprocessing, used while the subject's files keep their size and mtime; written atomically)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from synth.data.readers import Subject
from synth.io import atomic_write
from synth.data.sources import Source
from synth.data.transforms import Augment, Preprocess, Processed

INFO = ("spacing", "thickness", "channel_names", "origin", "source_format", "notes", "affine", "index")
ARRAYS = ("seg_labels", "seg", "masks")


class ItemDataset(Dataset):
    """Cached items of one split (picklable: numpy arrays + torchio transforms)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, ids: list[str], augment: Augment | None = None,
                 masks: np.ndarray | None = None):  # data.masks=true: uint8 (N, 1, *S), served as batch["mask"]
        self.images, self.labels, self.ids, self.augment, self.masks = images, labels, ids, augment, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = torch.from_numpy(np.array(self.images[i], dtype=np.float32))
        if self.augment is not None:
            image = self.augment(image)
        out = {"image": image, "label": torch.tensor(int(self.labels[i]), dtype=torch.long), "subject_id": self.ids[i]}
        if self.masks is not None:
            out["mask"] = torch.from_numpy(np.array(self.masks[i], dtype=np.float32))
        return out


class LazyDataset(Dataset):
    """cache=none: decodes and preprocesses a subject on every access (one item per subject)."""

    def __init__(self, source: Source, subjects: list[Subject], preprocess: Preprocess, augment: Augment | None = None):
        self.source, self.subjects, self.preprocess, self.augment = source, subjects, preprocess, augment

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, i: int) -> dict:
        s = self.subjects[i]
        p = self.preprocess(self.source.load(s), s.id)
        image = torch.from_numpy(p.items[0])
        if self.augment is not None:
            image = self.augment(image)
        label = -1 if s.label is None else int(s.label)
        out = {"image": image, "label": torch.tensor(label, dtype=torch.long), "subject_id": s.id}
        if p.masks is not None:
            out["mask"] = torch.from_numpy(p.masks[0].astype(np.float32))
        return out


def stamp(subject: Subject) -> list:
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in (subject.paths or [])]


def load_cached(path: Path, subject: Subject) -> Processed | None:
    """A subject's items from the disk cache, or None when absent or stale."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        if info.pop("stamp") != stamp(subject):
            return None
        return Processed(z["items"], **info, **{k: z[k] if k in z else None for k in ARRAYS})


def save_cached(path: Path, subject: Subject, p: Processed) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {k: getattr(p, k) for k in INFO} | {"stamp": stamp(subject)}
    arrays = {k: getattr(p, k) for k in ARRAYS if getattr(p, k) is not None}
    # atomic: concurrent ranks never see half a file (no fsync: a cache can always be rebuilt)
    atomic_write(path, lambda tmp: np.savez(tmp, items=p.items, info=json.dumps(info), **arrays), fsync=False)
