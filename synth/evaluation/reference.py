"""The real image sets an evaluation compares with, drawn from the data splits by `real_sets`:

  reference R    m images of the TEST split (val selects best-*.ckpt and drives sweeps, so it is never scored on)
  real_vs_real   m training images in R's class mix: two disjoint real sets, the value a perfect model reaches
  noise          m uniform-noise images in [-1, 1]: the value of no model at all
  train          every training image (memorization audit)
  calibration    the VAL split: where the memorization threshold is calibrated (checked on the test split)

m = min(test images (at most max_images), training images, samples). `fingerprint` names R (its images, split
and size) so that compare.py can tell whether two runs were scored against the same real set."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from synth.errors import SynthError
from synth.evaluation.frd import digest

log = logging.getLogger(__name__)


@dataclass
class RealSets:
    reference: np.ndarray           # (m, C, *S)
    reference_labels: np.ndarray    # (m,) class per image, -1 = none
    real_vs_real: np.ndarray
    real_vs_real_labels: np.ndarray
    noise: np.ndarray
    train: np.ndarray
    calibration: np.ndarray         # val split
    split: str                      # the split R is drawn from ("test")
    split_size: int                 # images in that split
    m: int
    notes: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return digest(self.split, self.m, np.round(self.reference.astype(np.float64), 4).astype(np.float32))

    @property
    def labelled(self) -> bool:
        return bool(len(self.reference_labels)) and bool((self.reference_labels >= 0).all())

    def describe(self) -> dict:
        counts = Counter(int(v) for v in self.reference_labels if v >= 0)
        return {"split": self.split, "split_size": int(self.split_size), "n_per_set": int(self.m), "fingerprint": self.fingerprint,
                "train_pool": int(len(self.train)), "calibration_split": "val", "calibration_size": int(len(self.calibration)),
                "class_counts": {str(k): int(v) for k, v in sorted(counts.items())} or None, "notes": self.notes}


def splits_from_datamodule(dm) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images (N, C, *S), labels (N,), -1 where an image has no class)} of a set-up data module."""
    dm.setup()
    out = {}
    for split in ("train", "val", "test"):
        ds = dm.datasets[split]
        labels = ds.labels if hasattr(ds, "labels") else [-1 if s.label is None else s.label for s in ds.subjects]
        out[split] = (dm.images(split).numpy(), np.asarray([int(v) for v in labels], dtype=np.int64).reshape(-1))
    return out


def match_mix(pool_labels: np.ndarray, target_labels: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Indices into the pool with the same class counts as `target_labels` (random within a class), or None when
    the labels are missing or a class has too few pool images."""
    if not len(target_labels) or (target_labels < 0).any() or (pool_labels < 0).any():
        return None
    picked = []
    for c, k in sorted(Counter(int(v) for v in target_labels).items()):
        members = np.flatnonzero(pool_labels == c)
        if len(members) < k:
            return None
        picked.append(rng.choice(members, k, replace=False))
    return np.sort(np.concatenate(picked))


def real_sets(splits: dict, n_samples: int | None, max_images: int, seed: int) -> RealSets:
    """R from the test split, the reference rows, the training images and the val calibration set."""
    (test, test_labels), (train, train_labels), (val, _) = splits["test"], splits["train"], splits["val"]
    if len(test) < 2:
        raise SynthError(f"the test split has {len(test)} image(s) but evaluation compares with the test split and needs >= 2: "
                         "give the data more subjects or a larger test fraction (e.g. data.split=[0.6,0.2,0.2])")
    if len(val) < 2:
        raise SynthError(f"the val split has {len(val)} image(s) but the memorization threshold is calibrated on it and needs >= 2: "
                         "give the data a val fraction (e.g. data.split=[0.8,0.1,0.1])")
    rng = np.random.default_rng(seed)
    m = min(len(test), len(train), max_images, n_samples or max_images)
    if m < 2:
        raise SynthError(f"only {m} image(s) per set (test {len(test)}, train {len(train)}, samples {n_samples}): evaluation needs >= 2 of each")
    pick = np.sort(rng.choice(len(test), m, replace=False)) if m < len(test) else np.arange(len(test))
    reference, reference_labels = test[pick], test_labels[pick]
    notes = []
    rr = match_mix(train_labels, reference_labels, rng)
    if rr is None:
        if (reference_labels >= 0).all() and len(reference_labels):
            notes.append("real vs real: the training split lacks images of some class, so its class mix differs from R's")
            log.warning(notes[-1])
        rr = np.sort(rng.choice(len(train), m, replace=False))
    if m < 10:
        notes.append(f"only {m} images per set: intervals from so few images are rough (some cannot be computed) and the verdict is provisional")
        log.warning(notes[-1])
    noise = rng.uniform(-1, 1, size=(m, *test.shape[1:])).astype(np.float32)
    return RealSets(reference=reference, reference_labels=reference_labels, real_vs_real=train[rr], real_vs_real_labels=train_labels[rr],
                    noise=noise, train=train, calibration=val, split="test", split_size=len(test), m=m, notes=notes)


def sample_conditions(sets: RealSets, n: int) -> list[int]:
    """Class labels for n samples of a conditional model: R's labels in order (cycled), so that the first m
    samples have exactly R's class mix."""
    if not sets.labelled:
        raise SynthError("the model is conditional but the test images have no class labels: evaluate against data with labels")
    return [int(sets.reference_labels[k % sets.m]) for k in range(n)]


def select_synthetic(samples: np.ndarray, labels: np.ndarray | None, sets: RealSets) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The m samples of the synthetic row: in R's class proportions when the samples' classes are known (a
    conditional model), else the first m. Returns (images, their labels or None, notes)."""
    if labels is None:
        return samples[:sets.m], None, []
    if len(samples) < sets.m:
        raise SynthError(f"{len(samples)} samples but the reference set has {sets.m} images: generate at least as many samples")
    idx = match_mix(np.asarray(labels), sets.reference_labels, np.random.default_rng(0)) if sets.labelled else None
    if idx is None:
        note = f"synthetic: the samples' classes do not cover R's class mix, so the first {sets.m} samples are used"
        log.warning(note)
        return samples[:sets.m], np.asarray(labels)[:sets.m], [note]
    return samples[idx], np.asarray(labels)[idx], []
