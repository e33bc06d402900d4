"""Speed options give the same results as without them (tiny models), the loader's `auto` settings, and the
benchmark scripts run end to end at tiny sizes (--smoke). No timings are asserted: BENCHMARKS.md holds them."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from synth.errors import SynthError
from synth.models.speed import _CheckpointedForward, checkpoint_unet_blocks, compile_mode
from tests.conftest import ROOT


def _pair(train_cfg, option: str, model: str = "ddpm", dims: int = 2, size: int = 16):
    """The same tiny model without and with `option` (same weights), and a fixed batch."""
    base = instantiate(train_cfg(model, dims=dims, size=size).model)
    fast = instantiate(train_cfg(model, [option], dims=dims, size=size).model)
    fast.load_state_dict(base.state_dict())
    torch.manual_seed(0)
    batch = {"image": torch.rand(2, *base.image_shape) * 2 - 1}
    return base, fast, batch


def _loss_and_grads(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        loss = model._loss(batch, drop_labels=False)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.net.parameters()]


def _samples(model, sampler="ddim"):
    return model.eval().sample(2, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=3, progress=False)


def test_gradient_checkpointing_same_loss_and_gradients(train_cfg):
    base, ckpt, batch = _pair(train_cfg, "model.gradient_checkpointing=true", dims=3, size=8)
    assert base.state_dict().keys() == ckpt.state_dict().keys()  # checkpoints load either way
    wrapped = [b for b in [*ckpt.net.down_blocks, ckpt.net.middle_block, *ckpt.net.up_blocks]]
    assert all(isinstance(b.forward, _CheckpointedForward) for b in wrapped)
    # the EMA copy's blocks run its own weights, not the trained network's
    ema_block = ckpt.ema.module.down_blocks[0]
    assert ema_block.forward.forward.__self__ is ema_block
    loss_a, grads_a = _loss_and_grads(base, batch)
    loss_b, grads_b = _loss_and_grads(ckpt, batch)
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(_samples(base), _samples(ckpt))  # sampling (no grad) skips the checkpoints


def test_checkpointed_block_deepcopy_binds_the_copy(train_cfg):
    cfg = train_cfg("ddpm", ["model.ema_decay=0"])
    model = instantiate(cfg.model)
    plain = copy.deepcopy(model.net)  # before checkpointing: a reference with ordinary blocks
    checkpoint_unet_blocks(model.net)
    clone = copy.deepcopy(model.net).train()
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(0.01)
    plain.load_state_dict(clone.state_dict())
    x, t = torch.randn(2, *model.image_shape), torch.tensor([3, 7])
    torch.testing.assert_close(clone(x, timesteps=t), plain.train()(x, timesteps=t))


def test_channels_last_same_results(train_cfg):
    base, cl, batch = _pair(train_cfg, "model.channels_last=true", size=8)
    conv = cl.net.conv_in.conv.conv if hasattr(cl.net.conv_in.conv, "conv") else cl.net.conv_in.conv
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    loss_a, grads_a = _loss_and_grads(base, batch)
    loss_b, grads_b = _loss_and_grads(cl, batch)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_samples(base), _samples(cl), rtol=1e-4, atol=1e-4)


def test_compile_option_values(train_cfg):
    assert [compile_mode(v) for v in (False, True, "sample", "train", "false", "true")] == ["none", "all", "sample", "train", "none", "all"]
    with pytest.raises(SynthError, match="model.compile=fast"):
        compile_mode("fast")
    with pytest.raises(Exception, match="model.compile=fast"):
        instantiate(train_cfg("ddpm", ["model.compile=fast"]).model)


@pytest.mark.slow
def test_compiled_sampling_and_training_match_eager(train_cfg):
    base, comp, batch = _pair(train_cfg, "model.compile=true", model="rflow", size=8)
    torch.testing.assert_close(_samples(base, "rflow"), _samples(comp, "rflow"), rtol=1e-3, atol=1e-3)
    import lightning as L

    comp.trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    comp.on_train_start()  # what the trainer calls (at step 0): compiles the training network in place
    assert comp.net._compiled_call_impl is not None and comp.state_dict().keys() == base.state_dict().keys()
    loss_a, _ = _loss_and_grads(base, batch)
    loss_b, _ = _loss_and_grads(comp, batch)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-4, atol=1e-5)


def test_loader_auto_settings(train_cfg, monkeypatch):
    from omegaconf import OmegaConf

    for path in (ROOT / "conf" / "data").glob("*.yaml"):  # the data configs default to auto
        assert OmegaConf.load(path).get("num_workers") == "auto" and OmegaConf.load(path).get("pin_memory") == "auto", path
    dm = instantiate(train_cfg("ddpm", ["data.num_workers=auto"]).data)  # (the tests' debug config sets 0)
    assert dm.num_workers == "auto" and dm.pin_memory == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dm.loader_settings() == (0, False)  # cached, no augmentation, CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dm.loader_settings() == (0, True)  # cached items are served faster than a worker could
    dm.cache = "none"
    assert dm.loader_settings() == (min(4, (os.cpu_count() or 1) - 1), True)  # a decode per item feeding a GPU
    dm.num_workers, dm.pin_memory = 1, False  # explicit values win
    assert dm.loader_settings() == (1, False)


def _script(args: list[str], tmp_path, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_smoke_quick_sections(tmp_path, capsys):
    from benchmarks.bench import main

    out = tmp_path / "BENCH.md"
    main(["--smoke", "--only", "data,memory_format", "--out", str(out)])  # in process: the imports are already paid
    text = out.read_text()
    assert "| data |" in text and "channels-last" in text and "## Gaps" in text and "cores" in text
    assert text.rstrip().endswith((ROOT / "docs" / "demo_recipes.md").read_text().rstrip())  # #17: a re-generation keeps the section


def test_demo_recipes_section_is_rendered_from_its_measurements():
    """#17 item 4: docs/demo_recipes.md (appended to BENCHMARKS.md by every `make bench`) is what
    benchmarks/demo_recipes.py renders from the measurements in docs/demo_recipes.json, one row per recipe with FRD and
    its interval, both reference rows and the memorization count; BENCHMARKS.md holds it now."""
    import json

    from benchmarks import demo_recipes

    rows = json.loads(demo_recipes.JSON.read_text())
    text = demo_recipes.MD.read_text()
    assert text == demo_recipes.render(rows) and text.startswith("## Demo recipes")
    assert len(rows) >= 2 and any("default" in r["recipe"] for r in rows)
    for r in rows:
        m = r["metrics"]
        assert f"{m['frd']:.2f} [{m['frd_ci'][0]:.2f}, {m['frd_ci'][1]:.2f}]" in text and f"{m['mem_above']}/{m['mem_n']}" in text
        assert m["frd_ci"][0] <= m["frd"] <= m["frd_ci"][1] and m["frd_real"] < m["frd_noise"]
    assert text.rstrip() in (ROOT / "BENCHMARKS.md").read_text()


def test_sampler_quality_section_is_rendered_from_its_measurements():
    """#12 item 15: BENCHMARKS.md's "Sampler quality" section is benchmarks/sampler_quality.py's rendering of
    docs/sampler_quality.json: FRD with its interval for DDPM-1000, DDIM-50, DDIM-25 and RFlow-10 against one real set
    in one feature space, with seconds per sample and a speed/quality line per few-step sampler."""
    import json

    from benchmarks import sampler_quality

    rows = json.loads(sampler_quality.JSON.read_text())
    text = sampler_quality.MD.read_text()
    assert text == sampler_quality.render(rows) and text.startswith("## Sampler quality")
    assert {"DDPM-1000", "DDIM-50", "DDIM-25", "RFlow-10"} <= {r["row"] for r in rows}
    assert len({(r["frd_space"], r["reference"]) for r in rows}) == 1 and "checked: every row has the same" in text
    by = {r["row"]: r for r in rows}
    assert by["DDPM-1000"]["sampler"]["steps"] == 1000 and by["DDIM-25"]["sampler"]["name"] == "ddim" and by["RFlow-10"]["sampler"]["steps"] == 10
    for r in rows:
        assert f"{r['frd']:.2f} [{r['frd_ci'][0]:.2f}, {r['frd_ci'][1]:.2f}]" in text and r["frd_real"] < r["frd_noise"]
        assert r["frd_ci"][0] <= r["frd"] <= r["frd_ci"][1]
    assert by["DDPM-1000"]["seconds_per_sample"] > 10 * by["DDIM-50"]["seconds_per_sample"]  # what the table is about
    assert text.rstrip() in (ROOT / "BENCHMARKS.md").read_text()
    assert (ROOT / "docs" / "sampler_quality.md") in __import__("benchmarks.render", fromlist=["KEPT"]).KEPT


@pytest.mark.slow
def test_bench_smoke_all_sections(tmp_path):
    out = tmp_path / "BENCH.md"
    stdout = _script([str(ROOT / "benchmarks/bench.py"), "--smoke", "--out", str(out)], tmp_path)
    text = out.read_text()
    for measure in ("images/s, Lightning via synth", "DDPM-1000", "RFlow", "VAE", "DCGAN", "compile", "channels-last",
                    "gradient checkpointing", "first epoch", "first training step", "peak memory"):
        assert measure in text, measure
    assert "| section | measure |" in stdout


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.md"
    _script([str(ROOT / "benchmarks/gpu.py"), "--smoke", "--out", str(out)], tmp_path)
    text = out.read_text()
    for measure in ("2D", "3D", "DDPM training", "LDM training", "gradient checkpointing", "DDIM", "RFlow", "s/sample"):
        assert measure in text, measure


def test_bench_refuses_unknown_section(capsys):
    from benchmarks.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "warp"])
    assert exit_info.value.code == 2 and "unknown sections" in capsys.readouterr().err
