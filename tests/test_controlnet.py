"""Mask-conditioned generation (issue 18, parts B and C): model=controlnet on a trained ddpm run, and generate.py
masks=... writing image + mask pairs on the mask's grid."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_train, phantom, quick
from synth.errors import SynthError
from synth.runs import load_run
from synth.tasks import generate, train
from test_bad_input import compose_generate


def _pair(tmp, dims=2, size=16, steps=4):
    data = [*phantom(dims, size=size, n=12), "data.masks=true"]
    _, base = train(compose_train(tmp / "base", ["model=ddpm", "experiment=tiny_ddpm", *data, *quick(steps)]))
    cfg = compose_train(tmp / "cn", ["model=controlnet", f"model.base_run={base['run_dir']}", *data, *quick(steps)])
    _, cn = train(cfg)
    return base["run_dir"], cn["run_dir"], cfg


@pytest.fixture(scope="module")
def runs2d(tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("cn2d"))


def test_untrained_controlnet_samples_as_its_base(runs2d):
    """Zero-initialised output convolutions: before training the ControlNet adds nothing, so it samples exactly what
    the frozen base UNet (its EMA weights) samples from the same noise, whatever the mask."""
    base_dir, _, cfg = runs2d
    base, _ = load_run(base_dir)
    fresh = instantiate(cfg.model)
    masks = torch.zeros(3, 1, 16, 16)
    masks[1, :, 4:9, 4:9] = 1
    a = base.sample(3, generator=torch.Generator().manual_seed(0), steps=3)
    b = fresh.sample(3, condition=masks, generator=torch.Generator().manual_seed(0), steps=3)
    assert torch.allclose(a, b, atol=1e-5)
    assert fresh.n_parameters == sum(p.numel() for p in fresh.controlnet.parameters()) < sum(p.numel() for p in fresh.parameters())
    assert not any(p.requires_grad for p in fresh.net.parameters())


def test_trained_controlnet_reloads_and_follows_its_mask_argument(runs2d):
    _, cn_dir, _ = runs2d
    model, cfg = load_run(cn_dir)
    assert cfg.model.base_run == str(runs2d[0].resolve())
    masks = torch.zeros(2, 1, 16, 16)
    masks[1, :, 3:13, 3:13] = 1
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    one, two = model.sample(2, condition=masks, generator=g(), steps=3), model.sample(2, condition=masks, generator=g(), steps=3)
    assert torch.equal(one, two) and one.shape == (2, 1, 16, 16) and one.abs().max() <= 1
    with pytest.raises(SynthError, match="draws images for given masks"):
        model.sample(2, condition=None, steps=3)
    with pytest.raises(SynthError, match="do not fit this model"):
        model.sample(2, condition=torch.zeros(2, 1, 8, 8), steps=3)


def test_training_moves_only_the_controlnet_and_its_ema_follows_it(runs2d):
    """The optimizer holds the ControlNet's parameters only, the EMA averages the ControlNet once per step, and the
    base UNet leaves training as it came in (its EMA weights)."""
    from synth.runs import find_checkpoint, load_checkpoint

    base_dir, cn_dir, _ = runs2d
    model, _ = load_run(cn_dir)
    base, _ = load_run(base_dir)
    state = load_checkpoint(find_checkpoint(cn_dir, "last"))
    assert type(model.ema.module) is type(model.controlnet) and int(model.ema.n_averaged) == state["global_step"] == 4
    assert sum(len(g["params"]) for g in state["optimizer_states"][0]["param_groups"]) == len(list(model.controlnet.parameters()))
    frozen, trained = model.net.state_dict(), base.ema.module.state_dict()
    assert all(torch.equal(frozen[k], trained[k]) for k in trained)
    ema, raw = dict(model.ema.module.named_parameters()), dict(model.controlnet.named_parameters())
    assert any(not torch.equal(ema[k], raw[k]) for k in raw)


def test_generate_writes_image_mask_pairs(runs2d, tmp_path):
    _, cn_dir, _ = runs2d
    out = tmp_path / "gen"
    info = generate(compose_generate(out, [f"run_dir={cn_dir}", "n=3", "batch_size=2", "masks=train", "steps=2"]))
    assert info["masks"]["source"] == "train" and len(info["masks"]["indices"]) == 3
    for i in range(3):
        img, mask = nib.load(out / f"sample_{i:05d}.nii.gz"), nib.load(out / f"mask_{i:05d}.nii.gz")
        assert np.allclose(img.affine, mask.affine) and img.shape == mask.shape
        assert set(np.unique(mask.get_fdata())) <= {0.0, 1.0}
    assert json.loads((out / "samples.json").read_text())["condition"] == "masks"
    # those masks given back as a folder give the same masks
    again = tmp_path / "again"
    info2 = generate(compose_generate(again, [f"run_dir={cn_dir}", "n=3", f"masks={out}", "steps=2"]))
    assert info2["masks"]["files"] == ["mask_00000.nii.gz", "mask_00001.nii.gz", "mask_00002.nii.gz"]
    for i in range(3):
        assert np.array_equal(nib.load(again / f"mask_{i:05d}.nii.gz").get_fdata(), nib.load(out / f"mask_{i:05d}.nii.gz").get_fdata())


def test_generate_refuses_bad_masks(runs2d, tmp_path):
    base_dir, cn_dir, _ = runs2d
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.uint8), np.eye(4)), tmp_path / "small.nii.gz")
    with pytest.raises(SynthError, match="has shape \\[8, 8\\] but the model draws images of size \\[16, 16\\]"):
        generate(compose_generate(tmp_path / "a", [f"run_dir={cn_dir}", "n=1", f"masks={tmp_path / 'small.nii.gz'}"]))
    with pytest.raises(SynthError, match="pass masks=train"):
        generate(compose_generate(tmp_path / "b", [f"run_dir={cn_dir}", "n=1"]))
    with pytest.raises(SynthError, match="not mask-conditioned"):
        generate(compose_generate(tmp_path / "c", [f"run_dir={base_dir}", "n=1", "masks=train"]))


def _refusal(cfg) -> str:
    from synth.cli import _cause

    with pytest.raises(Exception) as info:
        train(cfg)
    err = _cause(info.value)
    assert isinstance(err, SynthError), repr(info.value)
    return str(err)


def test_controlnet_refuses_data_without_masks_and_non_runs(runs2d, tmp_path):
    base_dir, cn_dir, _ = runs2d
    data = [*phantom(2, size=16, n=12), *quick(2)]
    assert "set data.masks=true" in _refusal(compose_train(tmp_path / "x", ["model=controlnet", f"model.base_run={base_dir}", *data]))
    assert "is not a run dir" in _refusal(compose_train(tmp_path / "y", ["model=controlnet", f"model.base_run={tmp_path / 'nowhere'}", *data, "data.masks=true"]))
    assert "a ControlNet steers an image-space diffusion run" in _refusal(
        compose_train(tmp_path / "z", ["model=controlnet", f"model.base_run={cn_dir}", *data, "data.masks=true"]))


@pytest.mark.slow
def test_controlnet_3d(tmp_path):
    _, cn_dir, _ = _pair(tmp_path, dims=3, size=16, steps=2)
    model, _ = load_run(cn_dir)
    masks = torch.zeros(1, 1, 16, 16, 16)
    masks[..., 4:10, 4:10, 4:10] = 1
    assert model.sample(1, condition=masks, generator=torch.Generator().manual_seed(0), steps=2).shape == (1, 1, 16, 16, 16)
