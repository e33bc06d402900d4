"""SynthDataModule: subject-level split, one-time decode + preprocess into an in-memory (optionally disk)
cache, dataloaders of `{"image", "label", "subject_id"}` batches (+ `"mask"`, the item's lesion mask, with `masks=True`), and `meta` (geometry, intensity, channels,
counts) that travels with every checkpoint into the written samples.

At setup it resolves what `auto` means for these files (synth.data.intensity: the intensity preset from the file
type; synth.data.geometry: the target grid from the headers), logs it, and splits: by subject key, as the
source assigned, or — one volume — into blocks with gaps (synth.data.splits).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import Dataset

from synth.data import geometry
from synth.data import intensity as _intensity
from synth.data.cache import ItemDataset, LazyDataset, load_cached, save_cached
from synth.data.loaders import Loaders
from synth.data.readers import Subject
from synth.data.sources import Source
from synth.data.splits import SPLITS, assigned_splits, block_items, block_settings, split_subjects, volume_blocks
from synth.data.transforms import Augment, Preprocess, Processed
from synth.errors import SynthError

log = logging.getLogger(__name__)
CACHE_VERSION = 4  # 3: intensity presets, resampling, block volumes; 4: masks
NOT_SET = "<not set>"  # data.root / data.csv_path not passed at all (a source built in Python)


def _plain(x):
    """ListConfig/DictConfig/tuple -> plain Python containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, (DictConfig, ListConfig)):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return list(x) if isinstance(x, tuple) else x


class SynthDataModule(Loaders, L.LightningDataModule):
    """Generic DataModule over any `Source` (see conf/data/*.yaml for the meaning of every argument)."""

    def __init__(
        self,
        source: Source,
        name: str = "data",
        spatial_dims: int = 2,
        channels: int = 1,
        image_size=(64, 64),
        batch_size: int = 16,
        num_workers: int | str = "auto",  # auto: see loader_settings
        pin_memory: bool | str = "auto",  # auto: pinned when a GPU is visible
        seed: int = 42,
        split=(0.8, 0.1, 0.1),  # train/val/test fractions, by subject
        resize: str = "resize",  # images and data.spacing=null: resize | crop_pad | none
        intensity="auto",  # auto | a preset of conf/data/intensity/ | a mapping (synth.data.intensity)
        spacing="auto",  # NIfTI target grid (synth.data.geometry): auto | null | mm
        blocks=None,  # one volume: gap_mm, slab_mm, stride, min_foreground (synth.data.splits.BLOCKS)
        slice_range=(0.2, 0.8),  # 2D from 3D: fraction of the foreground z-extent
        slice_step: int = 1,
        augment=(),  # torchio transforms (or their configs), train only
        cache: str = "memory",  # memory | disk | none
        cache_dir=None,
        root=NOT_SET,  # where the data lives (brats, folder); the source reads it via ${data.root}
        csv_path=NOT_SET,  # the data list (csv); the source reads it via ${data.csv_path}
        masks: bool = False,  # serve each item's lesion mask (seg > 0, same geometry) as batch["mask"] (mask-conditioned models)
    ):
        super().__init__()
        self.source = source
        self.name = str(name)
        for key, given, attr in (("root", root, "root"), ("csv_path", csv_path, "csv")):
            if given is None and getattr(source, attr, None) is not None:  # data.source.root=... typed instead of data.root=...
                raise SynthError(f"data.source.{attr} is set but data.{key} is not: the one key is data.{key} (write data.{key}={getattr(source, attr)})")
        given = [v for v in (root, csv_path) if v not in (None, NOT_SET)]
        self.location = str(given[0]) if given else None
        self.spatial_dims = int(spatial_dims)
        self.channels = int(channels)
        self.image_size = [int(s) for s in _plain(image_size)]
        self.batch_size = int(batch_size)
        self.num_workers = num_workers if num_workers == "auto" else int(num_workers)
        self.pin_memory = pin_memory if pin_memory == "auto" else bool(pin_memory)
        self.seed = int(seed)
        self.split = [float(f) for f in _plain(split)]
        self.cache = str(cache)
        self.cache_dir = None if cache_dir is None else Path(str(cache_dir)).expanduser()
        slice_range = [float(f) for f in _plain(slice_range)]
        self._check(resize, slice_range, int(slice_step))
        self.intensity_spec = _plain(intensity)
        fixed = None if self.intensity_spec == "auto" else _intensity.preset(self.intensity_spec)
        self.spacing = geometry.parse_spacing(_plain(spacing), self.spatial_dims)
        self.blocks = block_settings(_plain(blocks))
        self.masks = bool(masks)
        self.preprocess = Preprocess(self.spatial_dims, self.image_size, resize, fixed, None, slice_range, int(slice_step), self.masks)
        self.augment = Augment(self._instantiate(augment))
        if self.masks and self.augment.transform is not None:
            raise SynthError("data.augment with data.masks=true would move images without their masks: drop data.augment (data.augment=[])")
        self.n_decoded = 0  # source.load calls made by this DataModule (cache hits do not count)
        self.datasets: dict[str, Dataset] = {}
        self.subjects: dict[str, list[Subject]] = {}
        self.split_by = "subject"
        self._volumes: dict[str, Processed] = {}  # one-volume data: the processed volume its blocks are cut from
        self._info: Processed | None = None
        self._ready = False

    def _check(self, resize, slice_range, slice_step) -> None:
        def bad(key, value, fix):
            raise SynthError(f"data.{key}={value} {fix}")

        if self.spatial_dims not in (2, 3):
            bad("spatial_dims", self.spatial_dims, "is not 2 or 3: set data.spatial_dims=2 or 3")
        if len(self.image_size) != self.spatial_dims or min(self.image_size) < 1:
            bad("image_size", self.image_size, f"needs {self.spatial_dims} positive sizes for spatial_dims={self.spatial_dims}: e.g. data.image_size=[{','.join(['64'] * self.spatial_dims)}]")
        if self.channels < 1:
            bad("channels", self.channels, "must be >= 1: set data.channels to the number of image channels")
        if resize not in ("resize", "crop_pad", "none"):
            bad("resize", resize, "is not one of resize, crop_pad, none: set data.resize=resize")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            bad("split", self.split, "must be 3 non-negative fractions summing to 1: e.g. data.split=[0.8,0.1,0.1]")
        if len(slice_range) != 2 or not 0 <= slice_range[0] < slice_range[1] <= 1:
            bad("slice_range", slice_range, "must be [a, b] with 0 <= a < b <= 1: e.g. data.slice_range=[0.2,0.8]")
        if slice_step < 1:
            bad("slice_step", slice_step, "must be >= 1: set data.slice_step=1")
        if self.cache not in ("memory", "disk", "none"):
            bad("cache", self.cache, "is not one of memory, disk, none: set data.cache=memory")
        if self.cache == "disk" and self.cache_dir is None:
            bad("cache_dir", None, "is needed for cache=disk: set data.cache_dir=/some/folder")

    @staticmethod
    def _instantiate(augment) -> list:
        from hydra.utils import instantiate
        from omegaconf import DictConfig

        out = []
        for t in augment or []:
            out.append(instantiate(t) if isinstance(t, (dict, DictConfig)) else t)
        return out

    # ------------------------------------------------------------------------------- loading
    def cache_key(self) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "source": self.source.cache_key(), "preprocess": self.preprocess.config()}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def _cache_file(self, subject: Subject, whole: bool) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", subject.id) + ("-whole" if whole else "")
        return self.cache_dir / f"{self.name}-{self.cache_key()}" / f"{safe}.npz"

    def _process(self, subject: Subject, whole: bool = False) -> Processed:
        """Items of one subject: cut from its volume (blocks), from the disk cache when valid, else decode (counted)
        + preprocess."""
        if "parent" in subject.extra:
            return block_items(self._volumes[subject.extra["parent"]], subject)
        path = self._cache_file(subject, whole) if self.cache == "disk" else None
        if path is not None and (hit := load_cached(path, subject)) is not None:
            return hit
        vol = self.source.load(subject)
        self.n_decoded += 1
        if vol.array.shape[0] != self.channels:
            raise SynthError(f"subject {subject.id} has {vol.array.shape[0]} channel(s) but data.channels={self.channels}: set data.channels={vol.array.shape[0]}")
        p = self.preprocess(vol, subject.id, whole=whole)
        if path is not None:
            save_cached(path, subject, p)
        return p

    def resolve(self, subjects: list[Subject]) -> None:
        """What `auto` means for these files: the intensity preset and the target grid (logged)."""
        headers = [self.source.header(s) for s in subjects]
        if self.preprocess.intensity is None:
            self.preprocess.intensity = _intensity.auto(headers)
        one = len(subjects) == 1
        self.preprocess.grid = geometry.plan(headers, self.spatial_dims, self.image_size, self.spacing, one_volume=one)
        m, grid = self.preprocess.intensity, self.preprocess.grid
        why = f"auto: {m.detected}" if m.detected else "data.intensity"
        kinds = sorted({h.kind for h in headers if h is not None}) or ["generated"]
        log.info("%s: %d subject(s), %s; intensity %s (%s)", self.name, len(subjects), "/".join(kinds), m.name, why)
        if grid is not None:
            fov = " x ".join(f"{s * n:.0f}" for s, n in zip(grid.spacing, self.image_size))
            log.info("%s: resampled to RAS at %s mm (%s), field of view %s mm", self.name,
                     " x ".join(f"{v:g}" for v in grid.spacing), grid.why, fov)

    def _blocks(self, subjects: list[Subject]) -> list[Subject]:
        """One volume: its blocks (with their split) instead of the one subject; otherwise the subjects unchanged."""
        if len(subjects) != 1:
            return subjects
        parent = subjects[0]
        p = self._process(parent, whole=True)
        if not (self.spatial_dims == 3 or p.index is not None):
            return subjects  # one 2D image: nothing to cut along
        if self.cache == "none":
            raise SynthError("data.cache=none would decode the whole volume for every block of it: set data.cache=memory")
        self._volumes[parent.id] = p
        for _, message in p.notes or []:  # its blocks do not repeat them
            log.warning("%s", message)
        blocks = volume_blocks(parent, p, self.spatial_dims, self.image_size, self.split, self.seed, self.blocks)
        counts = {s: sum(b.split == s for b in blocks) for s in SPLITS}
        self.split_by = f"blocks of one volume, >= {self.blocks['gap_mm']:g} mm apart across splits"
        log.info("%s: one volume, cut into %d train / %d val / %d test blocks (held-out ones never overlap a training block and keep %g mm from it)",
                 self.name, counts["train"], counts["val"], counts["test"], self.blocks["gap_mm"])
        return blocks

    def setup(self, stage: str | None = None) -> None:
        """Resolve auto settings, split subjects and decode/preprocess every split once (idempotent)."""
        if self._ready:
            return
        from tqdm.auto import tqdm

        subjects = self.source.subjects()
        if not subjects:
            raise SynthError(f"data source {type(self.source).__name__} found no subjects: check data.source settings")
        ids = [s.id for s in subjects]
        if len(set(ids)) != len(ids):
            raise SynthError(f"data source {type(self.source).__name__} lists duplicate subject ids: make SubjectID values unique")
        self.resolve(subjects)
        subjects = self._blocks(subjects)
        self.subjects = assigned_splits(subjects) or split_subjects(subjects, self.split, self.seed)
        if any(s.group is not None for s in subjects):
            self.split_by = f"subject key ({len({s.group for s in subjects})} subjects, {len(subjects)} files)"
            log.info("%s: split by %s: %s", self.name, self.split_by,
                     " / ".join(f"{len({s.group for s in self.subjects[k]})} {k}" for k in SPLITS))
        augment = self.augment if self.augment.transform is not None else None
        if self.cache == "none":
            self._info = self._process(self.subjects["train"][0] if self.subjects["train"] else subjects[0])
            if len(self._info.items) != 1:
                raise SynthError("data.cache=none serves one item per subject but these volumes are sliced into 2D items: set data.cache=memory")
            for s in SPLITS:
                self.datasets[s] = LazyDataset(self.source, self.subjects[s], self.preprocess, augment if s == "train" else None)
            self._ready = True
            return
        bar = tqdm(total=len(subjects), desc=f"loading {self.name}", disable=not sys.stderr.isatty(), leave=False)
        notes: dict[str, list] = {}
        for split in SPLITS:
            items, labels, item_ids, masks = [], [], [], []
            for s in self.subjects[split]:
                p = self._process(s)
                self._info = self._info or p
                for kind, message in p.notes or []:
                    notes.setdefault(kind, [message, 0])[1] += 1
                items.append(p.items)
                if self.masks:
                    masks.append(p.masks)
                labels += self._item_labels(s, p)
                item_ids += [s.id] * len(p.items)
                bar.update()
            images = np.concatenate(items) if items else np.zeros((0, self.channels, *self.image_size), np.float32)
            mask_arr = None
            if self.masks:
                mask_arr = np.concatenate(masks) if masks else np.zeros((0, 1, *self.image_size), np.uint8)
            self.datasets[split] = ItemDataset(images, np.asarray(labels, np.int64), item_ids, augment if split == "train" else None, mask_arr)
        bar.close()
        for message, count in notes.values():
            log.warning("%s%s", message, f" (and {count - 1} more subject(s) alike)" if count > 1 else "")
        if len(self.datasets["train"]) == 0:
            raise SynthError(f"data {self.name} produced no training images: check data.slice_range and data.split")
        self._ready = True

    def _item_labels(self, subject: Subject, p: Processed) -> list[int]:
        """Per-item labels: from the segmentation when the source asks for it, else the subject's label."""
        if getattr(self.source, "label_from_seg", False):
            return [int(v) for v in p.seg_labels] if p.seg_labels is not None else [-1] * len(p.items)
        return [-1 if subject.label is None else int(subject.label)] * len(p.items)

    # ------------------------------------------------------------------------------- loaders
    @property
    def meta(self) -> dict:
        """Geometry, intensity preset, channels, labels and split sizes (JSON-serialisable); valid after setup()."""
        if self._info is None:
            raise SynthError("dm.meta was read before dm.setup(): call setup() first")
        info, grid = self._info, self.preprocess.grid
        if grid is not None:
            spacing, thickness = list(grid.spacing[: self.spatial_dims]), float(grid.spacing[2])
            geo = grid.to_meta(self.image_size)
        else:
            spacing, thickness = [float(s) for s in info.spacing], float(info.thickness)
            geo = {"spacing": spacing, "orientation": "RAS" if info.source_format == "nifti" else "image rows, cols", "resampled": False}
        affine = geometry.sample_affine(spacing + ([thickness] if self.spatial_dims == 2 else []), self.image_size, self.spatial_dims)
        out = {
            "name": self.name,
            "spatial_dims": self.spatial_dims,
            "channels": self.channels,
            "image_size": list(self.image_size),
            "spacing": spacing,
            "affine": affine.tolist(),
            "geometry": geo,
            "intensity": self.preprocess.intensity.to_meta(),
            "channel_names": list(info.channel_names),
            "num_classes": int(self.source.num_classes),
            "n_train": len(self.datasets["train"]),
            "n_val": len(self.datasets["val"]),
            "n_test": len(self.datasets["test"]),
            "split_by": self.split_by,
            "intensity_range": [-1.0, 1.0],
            "source_format": info.source_format,
            "location": self.location,
            "masks": self.masks,
        }
        if self.source.class_names:
            out["class_names"] = list(self.source.class_names)
        return out
