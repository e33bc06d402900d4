"""GAN family: WGAN-GP (loss, gradient penalty, critic steps) and class-conditional dcgan / wgan_gp."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from synth.errors import SynthError
from synth.models.gan import d_loss_fn, g_loss_fn, gradient_penalty
from synth.runs import load_run
from synth.tasks import train
from tests.conftest import TINY, compose_train, phantom, quick, run_script



# ----- the loss and the penalty on their own ----------------------------------------------------------------
def test_gradient_penalty_of_a_linear_critic_is_exact():
    """D(x) = <w, x> has gradient w everywhere, so the penalty is (||w|| - 1)^2 whatever the interpolates."""
    torch.manual_seed(0)
    w = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    critic = lambda x: (x * w).flatten(1).sum(1, keepdim=True)  # noqa: E731
    real, fake = torch.randn(6, 2, 5, 5, dtype=torch.float64), torch.randn(6, 2, 5, 5, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake)
    norm = w.detach().norm()
    torch.testing.assert_close(gp.detach(), (norm - 1) ** 2)
    # the graph is kept (create_graph): the penalty trains the critic, d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    (grad,) = torch.autograd.grad(gp, w)
    torch.testing.assert_close(grad, 2 * (norm - 1) * w.detach() / norm)
    with torch.no_grad():
        w /= w.norm()
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0, abs=1e-12), "a 1-Lipschitz linear critic pays nothing"


def test_wasserstein_losses():
    real, fake = torch.tensor([3.0, 1.0]), torch.tensor([-1.0, 0.0])
    assert d_loss_fn("wgan", real, fake).item() == pytest.approx(-0.5 - 2.0)  # E[D(fake)] - E[D(real)]
    assert g_loss_fn("wgan", fake).item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "model,overrides,match",
    [
        ("wgan_gp", ["model.gp_weight=0"], "needs a Lipschitz constraint"),
        ("wgan_gp", ["model.discriminator.norm=BATCH"], "batch norm"),
        ("dcgan", ["model.loss=wasserstein"], "is unknown"),
        ("dcgan", ["model.num_classes=2", "model.discriminator.norm=INSTANCE"], "instance norm"),
    ],
)
def test_bad_gan_configs_are_refused(tmp_path, model, overrides, match):
    cfg = compose_train(tmp_path, [f"model={model}", *TINY[model], *phantom(2), *overrides])
    with pytest.raises(InstantiationException) as err:  # Hydra wraps what a constructor raises
        instantiate(cfg.model)
    assert isinstance(err.value.__cause__, SynthError) and re.search(match, str(err.value.__cause__))


# ----- WGAN-GP end to end --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [2, 3])
def test_wgan_gp_trains(train_cfg, dims):
    cfg = train_cfg("wgan_gp", ["trainer.log_every_n_steps=1"], dims=dims, steps=4, size=16 if dims == 2 else 8, n=20)
    assert cfg.model.loss == "wgan" and cfg.model.gp_weight == 10 and cfg.model.n_disc == 5
    metrics, objs = train(cfg)
    run, trainer = objs["run_dir"], objs["trainer"]
    assert trainer.global_step == 4, "global_step counts generator steps (= batches), not critic steps"
    opt_g, opt_d = trainer.optimizers
    assert list(opt_g.state.values())[0]["step"].item() == 4
    assert list(opt_d.state.values())[0]["step"].item() == 4 * 5, "n_disc=5 critic steps per batch"
    assert opt_d.param_groups[0]["betas"] == (0.0, 0.9) and opt_d.param_groups[0]["lr"] == 1e-4
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert np.isfinite(metrics["val/mmd"])
    gp = pd.read_csv(run / "csv" / "metrics.csv")["train/gp"].dropna().to_numpy()
    assert len(gp) == 4 and np.isfinite(gp).all() and (gp >= 0).all()


# ----- conditional generation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["dcgan", "wgan_gp"])
def test_conditional_gan_trains_and_samples_by_label(train_cfg, model):
    cfg = train_cfg(model, ["model.num_classes=2"], steps=2, n=20)
    metrics, objs = train(cfg)
    m = objs["model"].eval()
    assert m.conditional and m.data_meta["class_names"] == ["healthy", "lesion"]
    assert m.discriminator.net[0].conv.in_channels == 1 + 2, "one label map per class beside the image"
    assert np.isfinite(metrics["val/mmd"]) and (objs["run_dir"] / "grids" / "step_000002.png").is_file()
    assert m.sample(4, condition=1).shape == (4, 1, 16, 16)
    assert m.sample(2, condition=[0, 1]).shape == (2, 1, 16, 16)
    assert m.sample(3, condition="lesion").shape == (3, 1, 16, 16)
    # the label steers each sample: same noise, the second label kept, the first changed
    a = m.sample(2, condition=[0, 1], generator=torch.Generator().manual_seed(3))
    b = m.sample(2, condition=[1, 1], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[1], b[1]) and not torch.allclose(a[0], b[0])
    # the checkpoint round-trips the label embedding and the class names (generate.py condition=lesion)
    loaded, _ = load_run(objs["run_dir"])
    loaded.eval()
    assert torch.equal(loaded.sample(2, condition=["healthy", "lesion"], generator=torch.Generator().manual_seed(3)), a)
    with pytest.raises(SynthError, match="pass condition="):
        m.sample(2)
    with pytest.raises(SynthError, match="not a class of this model"):
        m.sample(2, condition=5)
    with pytest.raises(SynthError, match="2 labels for 3 samples"):
        m.sample(3, condition=[0, 1])


def test_unconditional_gan_refuses_a_condition(tmp_path):
    m = instantiate(compose_train(tmp_path, ["model=dcgan", *TINY["dcgan"], *phantom(2)]).model)
    assert not m.conditional and m.embed is None
    with pytest.raises(SynthError, match="unconditional"):
        m.sample(2, condition=1)


@pytest.mark.parametrize("model,steps", [
    pytest.param("dcgan", 400, marks=pytest.mark.slow),   # 400 adversarial steps: minutes on 2 cores
    pytest.param("wgan_gp", 400, marks=pytest.mark.slow),
    ("stylegan2", 250),                                   # fewer, slower steps
])
def test_conditional_samples_follow_their_class(tmp_path, dark_and_bright, model, steps):
    """The honest check: after brief training, samples drawn for `bright` are brighter than those for `dark`."""
    cfg = compose_train(tmp_path, [
        f"model={model}", *TINY[model], "model.num_classes=2", "data=folder", f"data.root={dark_and_bright}",
        "data.source.label_from_subdir=true", "data.channels=1", "data.image_size=[32,32]", "data.batch_size=8",
        *quick(steps), "seed=0",
    ])
    _, objs = train(cfg)
    m, dm = objs["model"].eval(), objs["datamodule"]
    assert dm.meta["class_names"] == ["bright", "dark"]  # sorted folder names: bright=0, dark=1
    batches = list(dm.train_dataloader())
    images, labels = torch.cat([b["image"] for b in batches]), torch.cat([b["label"] for b in batches])
    bright, dark = images[labels == 0].mean().item(), images[labels == 1].mean().item()
    assert bright - dark > 1.0, "the classes differ strongly after normalization"
    mid = (bright + dark) / 2
    g = torch.Generator().manual_seed(0)
    s_bright = m.sample(32, condition="bright", generator=g).flatten(1).mean(1)
    s_dark = m.sample(32, condition=1, generator=g).flatten(1).mean(1)
    right_bright, right_dark = (s_bright > mid).float().mean().item(), (s_dark < mid).float().mean().item()
    assert right_bright >= 0.75 and right_dark >= 0.75, (
        f"{model}: {right_bright:.0%} of bright and {right_dark:.0%} of dark samples on their side of {mid:.2f} "
        f"(sample means {s_bright.mean():.2f} / {s_dark.mean():.2f}, real {bright:.2f} / {dark:.2f})"
    )


@pytest.mark.slow
def test_gan_under_ddp_cpu(tmp_path):
    """Two gloo processes: DDP needs find_unused_parameters for the separate G/D backward passes (refused
    with a clear message otherwise), and val/mmd compares the validation shards gathered from both ranks."""
    args = ["model=wgan_gp", *TINY["wgan_gp"], "model.num_classes=2", *phantom(2, size=16, n=20), "trainer=ddp_cpu",
            "trainer.max_steps=4", "trainer.val_check_interval=2", "callbacks.sample_grid.n=2", "trainer.enable_progress_bar=false"]
    for d in ("refused", "ok"):
        (tmp_path / d).mkdir()
    res = run_script("train.py", args, cwd=tmp_path / "refused")
    assert res.returncode == 2 and "find_unused_parameters" in res.stderr, res.stderr[-2000:]
    res = run_script("train.py", [*args, "strategy=ddp_find_unused"], cwd=tmp_path / "ok")
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = list((tmp_path / "ok" / "outputs" / "train").iterdir())
    info = json.loads((run / "run.json").read_text())
    assert info["global_step"] == 4 and np.isfinite(info["metrics"]["val/mmd"])


# ----- mode collapse: the monitor and the training-time warning ------------------------------------------------
def test_collapse_watch_warns_once_on_a_collapsed_generator(caplog):
    """Synthetic batches: real images differ; a collapsed generator's batch is one image (plus a trace of noise).
    Over a window of 10 steps the watch warns once, in one line, and never for a diverse generator."""
    from synth.models.collapse import CollapseWatch

    g = torch.Generator().manual_seed(0)
    real = lambda: torch.rand(8, 1, 16, 16, generator=g) * 2 - 1  # noqa: E731
    collapsed = lambda: real()[:1].expand(8, -1, -1, -1) + 0.01 * torch.randn(8, 1, 16, 16, generator=g)  # noqa: E731
    cases = {"collapsed": (collapsed, 0.5), "diverse": (real, 0.5), "discriminator_wins": (real, 2e-5)}
    for name, (fake, loss_d) in cases.items():
        watch = CollapseWatch(window=10, loss_kind="bce")
        caplog.clear()
        with caplog.at_level("WARNING", logger="synth.models.collapse"):
            ratios = [watch.update(step, loss_d, real(), fake()) for step in range(1, 41)]
        lines = [r.getMessage() for r in caplog.records]
        if name == "diverse":
            assert lines == [] and min(ratios) > 0.8, (lines, min(ratios))
            continue
        assert len(lines) == 1 and "\n" not in lines[0] and "step 10: the GAN looks collapsed" in lines[0], lines
        assert ("spread 0.0" in lines[0]) == (name == "collapsed") and ("discriminator loss stayed below" in lines[0]) == (name != "collapsed")
    watch = CollapseWatch(window=10, loss_kind="wgan")  # a critic loss has no floor: only the spread counts
    assert all(watch.update(s, -1e-6, real(), real()) is not None for s in range(20)) and not watch.warned


def test_gan_monitor_is_the_rbf_mmd(train_cfg):
    cfg = train_cfg("dcgan", steps=2, n=20)
    assert cfg.model.monitor == "val/mmd_rbf"
    metrics, objs = train(cfg)
    assert np.isfinite(metrics["val/mmd_rbf"]) and np.isfinite(metrics["val/mmd"])
    model, dm = objs["model"].eval(), objs["datamodule"]
    real = next(iter(dm.val_dataloader()))["image"]  # limit_val_batches=1: the set validation compared with
    from synth.models.metrics import mmd_rbf

    fake = model.sample(len(real), generator=torch.Generator().manual_seed(1234))
    assert metrics["val/mmd_rbf"] == pytest.approx(mmd_rbf(fake, real).item(), rel=1e-4), "samples vs the validation set, seeded"
    assert "best-" in objs["trainer"].checkpoint_callback.best_model_path and "mmd_rbf" in objs["trainer"].checkpoint_callback.monitor


def test_adversarial_losses_are_the_closed_forms():
    """lsgan comes from MONAI's PatchAdversarialLoss; every loss equals its textbook formula on known scores."""
    import torch.nn.functional as F

    from synth.models.gan import d_loss_fn, g_loss_fn

    real, fake = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([[-3.0], [0.2], [1.5]])
    expect_d = {"bce": F.softplus(-real).mean() + F.softplus(fake).mean(),
                "lsgan": 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake ** 2).mean(),
                "hinge": F.relu(1 - real).mean() + F.relu(1 + fake).mean(),
                "wgan": fake.mean() - real.mean()}
    expect_g = {"bce": F.softplus(-fake).mean(), "lsgan": 0.5 * ((fake - 1) ** 2).mean(), "hinge": -fake.mean(), "wgan": -fake.mean()}
    for kind in expect_d:
        assert torch.allclose(d_loss_fn(kind, real, fake), expect_d[kind]), kind
        assert torch.allclose(g_loss_fn(kind, fake), expect_g[kind]), kind
