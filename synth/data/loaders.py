"""What a SynthDataModule serves once it is set up: DataLoaders per split (workers and pinned memory resolved from
`auto`), and whole splits as tensors (`images`, `mask_items`) for sample grids, evaluation and downstream training.
A mixin of synth.data.datamodule.SynthDataModule, which owns the splits and the cache (`self.datasets`)."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from synth.data.cache import ItemDataset, LazyDataset
from synth.data.splits import SPLITS
from synth.errors import SynthError


class Loaders:
    """Needs from the DataModule: setup(), datasets, batch_size, num_workers, pin_memory, cache, augment, masks,
    name, channels, image_size."""

    def loader_settings(self) -> tuple[int, bool]:
        """(num_workers, pin_memory), resolving `auto` (benchmarks/bench.py measures the loader's share of a step).
        Cached items without augmentation cost microseconds to serve, so workers (process start, IPC) would only add
        latency: 0. Augmentation or cache=none (a decode per item) feeding a GPU: up to 4 workers, a core left to the
        main process; on CPU-only machines the cores are better spent on the network: 0. Pinned memory with a GPU."""
        gpu = torch.cuda.is_available()
        workers = self.num_workers
        if workers == "auto":
            heavy = self.cache == "none" or self.augment.transform is not None
            workers = min(4, (os.cpu_count() or 1) - 1) if heavy and gpu else 0
        pin = gpu if self.pin_memory == "auto" else self.pin_memory
        return max(0, int(workers)), bool(pin)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        self.setup()
        ds = self.datasets[split]
        workers, pin = self.loader_settings()
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(ds) > self.batch_size,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def images(self, split: str = "train", n: int | None = None) -> torch.Tensor:
        """The first n un-augmented images of a split stacked as (n, C, *S)."""
        self.setup()
        if split not in SPLITS:
            raise SynthError(f"split={split} is not one of {list(SPLITS)}: pass train, val or test")
        ds = self.datasets[split]
        count = len(ds) if n is None else min(int(n), len(ds))
        if isinstance(ds, ItemDataset):
            return torch.from_numpy(np.array(ds.images[:count], dtype=np.float32))
        plain = LazyDataset(ds.source, ds.subjects, ds.preprocess)
        return torch.stack([plain[i]["image"] for i in range(count)]) if count else torch.zeros(0, self.channels, *self.image_size)

    def mask_items(self, split: str = "train", n: int | None = None) -> torch.Tensor:
        """The first n masks of a split (n, 1, *S) in {0, 1}, paired with `images(split, n)`; needs data.masks=true."""
        self.setup()
        if not self.masks:
            raise SynthError(f"data {self.name} serves no masks: set data.masks=true")
        ds = self.datasets[split]
        count = len(ds) if n is None else min(int(n), len(ds))
        if isinstance(ds, ItemDataset):
            return torch.from_numpy(np.array(ds.masks[:count], dtype=np.float32))
        return torch.stack([ds[i]["mask"] for i in range(count)]) if count else torch.zeros(0, 1, *self.image_size)

    def train_images(self, n: int | None = None) -> torch.Tensor:
        return self.images("train", n)
