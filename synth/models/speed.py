"""Speed options of the networks, set from the model config: torch.compile (`model.compile`), the channels-last
memory format (`model.channels_last`) and activation checkpointing of a MONAI DiffusionModelUNet's blocks
(`model.gradient_checkpointing`). Each keeps the network's parameters and state_dict keys unchanged, so
checkpoints load with or without them. benchmarks/bench.py measures what each one buys."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from synth.errors import SynthError

COMPILE_CHOICES = {False: "none", True: "all", "none": "none", "false": "none", "sample": "sample", "train": "train", "all": "all", "true": "all"}


def compile_mode(value: Any) -> str:
    """model.compile -> none | sample | train | all (false/true mean none/all)."""
    key = value.lower() if isinstance(value, str) else value
    if key not in COMPILE_CHOICES:
        raise SynthError(f"model.compile={value} is not one of false, sample, train, true: e.g. model.compile=sample")
    return COMPILE_CHOICES[key]


def memory_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if int(spatial_dims) == 2 else torch.channels_last_3d


def to_channels_last(net: nn.Module, spatial_dims: int) -> nn.Module:
    """Convolution weights in channels-last order; convolutions then keep activations channels-last too."""
    return net.to(memory_format=memory_format(spatial_dims))


class _CheckpointedForward:
    """A block's forward that recomputes its activations in backward instead of storing them (training only).
    Holds the bound method, so `copy.deepcopy` of the network (EMA copies) binds the copy's own block."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, *args, **kwargs):
        if self.forward.__self__.training and torch.is_grad_enabled():
            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def checkpoint_unet_blocks(net: nn.Module) -> int:
    """Activation checkpointing for every down, middle and up block of a MONAI DiffusionModelUNet (which has no
    switch for it; AutoencoderKL has its own: net.use_checkpoint). Returns the number of blocks wrapped."""
    if not all(hasattr(net, a) for a in ("down_blocks", "middle_block", "up_blocks")):
        raise SynthError(f"model.gradient_checkpointing=true needs a MONAI DiffusionModelUNet, not {type(net).__name__}: set it to false")
    blocks = [*net.down_blocks, net.middle_block, *net.up_blocks]
    for block in blocks:
        if not isinstance(block.forward, _CheckpointedForward):
            block.forward = _CheckpointedForward(block.forward)
    return len(blocks)
