"""model=stylegan2: trains and samples in 2D and 3D, conditional by label, and the parts that make it StyleGAN2
(demodulation, lazy R1, style mixing, the EMA generator), through the same train/generate path as every family."""
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from synth.errors import SynthError
from synth.models.metrics import mmd_rbf
from synth.models.stylegan2_nets import ModulatedConv, r1_penalty
from synth.runs import load_checkpoint, load_run
from synth.tasks import train
from tests.conftest import TINY, compose_train, phantom, run_script


def module(tmp_path, overrides=(), dims=2, size=16):
    return instantiate(compose_train(tmp_path, ["model=stylegan2", *TINY["stylegan2"], *phantom(dims, size=size), *overrides]).model)


# ----- end to end on phantom -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_stylegan2_trains_and_samples(train_cfg, dims):
    size = 16 if dims == 2 else 8
    metrics, objs = train(train_cfg("stylegan2", dims=dims, steps=4, size=size, n=20))
    m, trainer = objs["model"].eval(), objs["trainer"]
    assert trainer.global_step == 4, "a step is one batch: one discriminator and one generator update"
    opt_g, opt_d = trainer.optimizers
    assert [list(o.state.values())[0]["step"].item() for o in (opt_g, opt_d)] == [4, 4]
    assert np.isfinite(metrics["val/mmd_rbf"]) and (objs["run_dir"] / "checkpoints" / "last.ckpt").is_file()
    x = m.sample(6, generator=torch.Generator().manual_seed(0))
    assert x.shape == (6, 1, *[size] * dims) and torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    assert x.flatten(1).std(0).mean() > 1e-3, "different z give different images"
    assert torch.equal(x, m.sample(6, generator=torch.Generator().manual_seed(0))), "seeded sampling repeats (z and noise)"
    with pytest.raises(SynthError, match="unconditional"):
        m.sample(2, condition=1)


def test_conditional_stylegan2_samples_by_label(train_cfg):
    _, objs = train(train_cfg("stylegan2", ["model.num_classes=2"], steps=2, n=20))
    m = objs["model"].eval()
    assert m.generator.embed.num_embeddings == 2 and m.discriminator.embed.num_embeddings == 2
    assert m.sample(4, condition=1).shape == (4, 1, 16, 16) and m.sample(3, condition="lesion").shape == (3, 1, 16, 16)
    # the label steers each sample through the mapping network: same z and noise, the second label kept
    a = m.sample(2, condition=[0, 1], generator=torch.Generator().manual_seed(3))
    b = m.sample(2, condition=[1, 1], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1]) and not torch.allclose(a[0], b[0])
    loaded, _ = load_run(objs["run_dir"])
    assert torch.equal(loaded.eval().sample(2, condition=["healthy", "lesion"], generator=torch.Generator().manual_seed(3)), a)
    with pytest.raises(SynthError, match="pass condition="):
        m.sample(2)
    with pytest.raises(SynthError, match="not a class of this model"):
        m.sample(2, condition=5)


def test_checkpoint_round_trip_through_generate(train_cfg, tmp_path):
    """generate.py run_dir=... n=4 (the path of every family) writes the EMA generator's samples, seed 0."""
    _, objs = train(train_cfg("stylegan2", steps=3, n=20))
    run = objs["run_dir"]
    res = run_script("generate.py", [f"run_dir={run}", "n=4"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    files = sorted(next((run / "samples").iterdir()).glob("sample_*.nii.gz"))
    assert len(files) == 4
    written = np.stack([nib.load(f).get_fdata() for f in files])
    assert written.shape == (4, 16, 16, 1) and np.isfinite(written).all() and written.std() > 0
    expected = objs["model"].eval().sample(4, generator=torch.Generator().manual_seed(0)).numpy()  # batch 0 draws with seed 0
    for got, want in zip(written, expected):  # compared as value sets: the file's axis order is the writer's business
        np.testing.assert_allclose(np.sort(got.ravel()), np.sort(want.ravel()), atol=1e-5)


def test_bf16_training_with_path_length_and_truncation(train_cfg):
    """bf16 autocast (trainer=gpu's precision) with every optional part on: path length every step, truncation."""
    overrides = ["trainer.precision=bf16-mixed", "model.pl_weight=2", "model.pl_every=1", "model.truncation=0.7",
                 "trainer.log_every_n_steps=1"]
    _, objs = train(train_cfg("stylegan2", overrides, steps=3, n=20))
    pl = pd.read_csv(objs["run_dir"] / "csv" / "metrics.csv")["train/pl"].dropna().to_numpy()
    m = objs["model"]
    assert len(pl) == 3 and np.isfinite(pl).all() and float(m.pl_mean) > 0
    assert m.g_ema.w_avg.abs().sum() > 0, "the mean w is tracked and reaches the EMA generator (truncation's centre)"
    assert torch.isfinite(m.sample(2)).all()


@pytest.mark.parametrize("size,match", [("[24,24]", "one power of two"), ("[16,32]", "one power of two")])
def test_sizes_stylegan2_cannot_make_are_refused(tmp_path, size, match):
    cfg = compose_train(tmp_path, ["model=stylegan2", *TINY["stylegan2"], *phantom(2), f"data.image_size={size}"])
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.model)
    assert isinstance(err.value.__cause__, SynthError) and match in str(err.value.__cause__)


# ----- the parts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_demodulation_gives_unit_variance_whatever_the_style_scale(dims):
    torch.manual_seed(0)
    conv = ModulatedConv(dims, 32, 8, 3, w_dim=16)
    x = torch.randn(4, 32, *[24] * dims)
    w = torch.randn(4, 16)
    inner = (slice(None), slice(None), *[slice(1, -1)] * dims)  # away from the zero padding
    stds = {}
    for scale in (0.1, 1.0, 30.0):
        with torch.no_grad():
            conv.affine.weight.normal_().mul_(scale)  # styles of very different sizes, and per-channel spreads
            out = conv.modulated(x, w)[inner]
            stds[scale] = out.std(dim=(0, *range(2, out.ndim))).numpy()  # per output channel
            # the paper's form: each sample's own weight s_i w_oik / sqrt(sum (s_i w_oik)^2), one convolution each
            s = conv.affine(w)
            for b in range(len(x)):
                wb = conv.weight * conv.gain * s[b].view(1, -1, *[1] * dims)
                wb = wb / wb.square().flatten(1).sum(1).add(1e-8).sqrt().view(-1, 1, *[1] * dims)
                ref = (F.conv2d, F.conv3d)[dims - 2](x[b:b + 1], wb, padding=1)[inner]
                torch.testing.assert_close(out[b:b + 1], ref, atol=1e-4, rtol=1e-4)
    for scale, std in stds.items():
        assert np.all(np.abs(std - 1) < 0.1), (scale, std)
    conv.demodulate = False  # without it the output variance follows the style's scale
    with torch.no_grad():
        assert conv.modulated(x, w)[inner].std() > 5


def test_r1_penalty_is_the_squared_gradient_norm_and_trains_d():
    """D(x) = <v, x> has gradient v at every image: R1 = ||v||^2, and d R1 / d v = 2 v (the graph is kept)."""
    v = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    real = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty((real * v).flatten(1).sum(1, keepdim=True), real)
    torch.testing.assert_close(r1.detach(), v.detach().square().sum())
    (grad,) = torch.autograd.grad(r1, v)
    torch.testing.assert_close(grad, 2 * v.detach())


def test_lazy_r1_runs_every_k_steps(train_cfg):
    k, steps = 2, 5
    _, objs = train(train_cfg("stylegan2", [f"model.r1_every={k}", "model.r1_gamma=10", "trainer.log_every_n_steps=1"], steps=steps, n=20))
    df = pd.read_csv(objs["run_dir"] / "csv" / "metrics.csv")
    assert len(df.dropna(subset=["train/loss_d"])) == steps
    with_r1 = df.dropna(subset=["train/r1"])
    assert list(with_r1["step"]) == [0, k, 2 * k], "lazy: on global steps 0, 2, 4 only (and not repeated in between)"
    assert (with_r1["train/r1"] > 0).all() and np.isfinite(with_r1["train/r1"]).all()
    # lazy regularisation's optimizer correction, c = k / (k + 1), on the regularised network only (path length is off)
    opt_g, opt_d = objs["trainer"].optimizers
    c = k / (k + 1)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2e-3 * c) and opt_d.param_groups[0]["betas"] == pytest.approx((0.0, 0.99**c))
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2e-3) and opt_g.param_groups[0]["betas"] == pytest.approx((0.0, 0.99))


def test_style_mixing_uses_two_ws(tmp_path):
    m = module(tmp_path, ["model.mixing_prob=1.0"])
    g, n_ws = m.generator, m.generator.num_ws
    z1, z2 = torch.randn(3, 16), torch.randn(3, 16)
    with torch.no_grad():
        ws = g.ws(z1, mix_z=z2, cutoff=2)
        torch.testing.assert_close(ws[:, :2], g.map(z1).unsqueeze(1).expand(-1, 2, -1))
        torch.testing.assert_close(ws[:, 2:], g.map(z2).unsqueeze(1).expand(-1, n_ws - 2, -1))
        pure1, pure2, mixed = (g.synthesis(w, noise=False) for w in (g.ws(z1), g.ws(z2), ws))
    assert not torch.allclose(mixed, pure1) and not torch.allclose(mixed, pure2), "both w's shape the image"
    torch.manual_seed(0)
    cutoffs = set()
    with torch.no_grad():
        for _ in range(30):
            ws = m.training_ws(4, None)
            distinct = (ws[:, 1:] - ws[:, :-1]).abs().sum(2) > 0      # (B, num_ws-1): where the w changes
            assert (distinct.sum(1) == 1).all() and (distinct == distinct[:1]).all(), "two w's, one cutoff per batch"
            cutoffs.add(int(distinct[0].nonzero()) + 1)
    assert cutoffs <= set(range(1, n_ws)) and len(cutoffs) > 1, cutoffs
    m.mixing_prob = 0.0
    with torch.no_grad():
        ws = m.training_ws(4, None)
    assert torch.equal(ws, ws[:, :1].expand_as(ws)), "no mixing: one w for every layer"


def test_ema_generator_lags_and_is_the_one_that_samples(train_cfg):
    metrics, objs = train(train_cfg("stylegan2", ["model.ema_decay=0.9"], steps=6, n=20))
    m = objs["model"].eval()
    raw, ema = dict(m.generator.named_parameters()), dict(m.g_ema.named_parameters())
    assert raw.keys() == ema.keys() and any(not torch.allclose(raw[k], ema[k]) for k in raw)
    assert not any(p.requires_grad for p in m.g_ema.parameters()) and m.n_parameters == sum(
        p.numel() for p in [*m.generator.parameters(), *m.discriminator.parameters()])

    def draw(**kw):
        return m.sample(3, generator=torch.Generator().manual_seed(0), **kw)

    assert torch.equal(draw(), draw(use_ema=True)) and not torch.allclose(draw(), draw(use_ema=False))
    # the monitor compares the EMA generator's seeded samples with the validation images
    real = next(iter(objs["datamodule"].val_dataloader()))["image"]
    fake = m.sample(len(real), generator=torch.Generator().manual_seed(1234))
    assert metrics["val/mmd_rbf"] == pytest.approx(mmd_rbf(fake, real).item(), rel=1e-4)
    state = load_checkpoint(objs["run_dir"] / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(k.startswith("g_ema.") for k in state) and "g_ema.w_avg" in state


@pytest.mark.parametrize("recipe,widths", [("stylegan2_gpu", [256, 256, 256, 256, 256, 128]), ("stylegan2_gpu_3d", [256, 256, 256, 128, 64])])
def test_gpu_recipes_build_their_networks(tmp_path, recipe, widths):
    m = instantiate(compose_train(tmp_path, [f"experiment={recipe}"]).model)
    g = m.generator
    assert [c.weight.shape[0] for c in g.convs[::2]] == widths and g.const.shape[0] == widths[0]
    assert len(g.mapping) == 8 and g.mapping[0].weight.shape == (512, 512) and m.discriminator.from_img.weight.shape[0] == widths[-1]


def test_collapse_warning_names_stylegan2_settings(tmp_path, caplog):
    m = module(tmp_path, ["model.collapse_window=3"])
    real, same = torch.randn(4, 1, 16, 16), torch.zeros(4, 1, 16, 16)
    with caplog.at_level("WARNING", logger="synth.models.collapse"):
        for step in range(3):
            m.collapse_watch.update(step, 0.5, real, same)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "model.r1_gamma" in line and "model.loss" not in line and "wgan_gp" not in line


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(InstantiationException) as err:
        module(tmp_path, ["model.mixing_prob=1.5"])
    assert isinstance(err.value.__cause__, SynthError) and "model.mixing_prob must be in [0, 1]" in str(err.value.__cause__)


@pytest.mark.slow
def test_stylegan2_under_ddp_cpu(tmp_path):
    """Two gloo processes, conditional, R1 (a double backward) on every other step: runs with find_unused_parameters."""
    import json

    args = ["model=stylegan2", *TINY["stylegan2"], "model.num_classes=2", "model.r1_every=2", *phantom(2, size=16, n=20),
            "trainer=ddp_cpu", "strategy=ddp_find_unused", "trainer.max_steps=4", "trainer.val_check_interval=2",
            "callbacks.sample_grid.n=2", "trainer.enable_progress_bar=false"]
    res = run_script("train.py", args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = list((tmp_path / "outputs" / "train").iterdir())
    info = json.loads((run / "run.json").read_text())
    assert info["global_step"] == 4 and np.isfinite(info["metrics"]["val/mmd_rbf"])
