"""Training end to end on phantom data: every model in 2D and 3D, loss goes down, resume, checkpoints."""
import json

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from synth.runs import load_checkpoint
from synth.tasks import train
from tests.conftest import MODELS, TINY, compose_train, phantom


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_network_follows_data_config(tmp_path, model, dims):
    cfg = compose_train(tmp_path, [f"model={model}", *TINY[model], *phantom(dims, size=16, channels=2)])
    module = instantiate(cfg.model)
    assert module.spatial_dims == dims and module.image_shape == (2, *[16] * dims)
    x = torch.zeros(2, 2, *[16] * dims)
    out = module.sample(2, progress=False)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_and_checkpoints(train_cfg, model, dims):
    cfg = train_cfg(model, dims=dims, steps=4, size=16 if dims == 2 else 8, n=20)
    metrics, objs = train(cfg)
    run = objs["run_dir"]
    info = json.loads((run / "run.json").read_text())
    assert info["global_step"] == 4 and info["family"] == objs["model"].family and info["spatial_dims"] == dims
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt")), "best checkpoint by the monitored metric"
    assert cfg.model.monitor in metrics and torch.isfinite(torch.tensor(metrics[cfg.model.monitor]))
    assert list((run / "grids").glob("step_*.png")), "a sample grid at validation"
    assert (run / "config.yaml").is_file() and json.loads((run / "data_meta.json").read_text())["spatial_dims"] == dims
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")  # weights_only load works
    assert state["synth"]["family"] == objs["model"].family and state["global_step"] == 4


def _loss_curve(run, key="train/loss"):
    df = pd.read_csv(run / "csv" / "metrics.csv")
    return df[key].dropna().to_numpy()


@pytest.mark.parametrize(
    "model,extra,steps",
    [
        ("ddpm", ["model.optimizer.lr=2e-3"], 60),
        ("vae", ["model.optimizer.lr=3e-3"], 60),
    ],
)
def test_training_reduces_loss(train_cfg, model, extra, steps):
    cfg = train_cfg(model, [*extra, "trainer.log_every_n_steps=1", "data.batch_size=8"], steps=steps, size=16, n=24)
    _, objs = train(cfg)
    curve = _loss_curve(objs["run_dir"])
    assert len(curve) == steps
    first, last = curve[:10].mean(), curve[-10:].mean()
    assert last < 0.7 * first, f"{model} loss did not fall: {first:.4f} -> {last:.4f}"


def test_resume_continues_step_count(tmp_path, train_cfg):
    cfg = train_cfg("ddpm", steps=4, n=8)
    _, first = train(cfg)
    ckpt = first["run_dir"] / "checkpoints" / "last.ckpt"
    resumed = compose_train(tmp_path / "second", [
        "model=ddpm", *TINY["ddpm"], *phantom(2, n=8), "debug=default", "trainer.max_epochs=-1", "trainer.max_steps=8",
        "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=4", "callbacks.sample_grid.n=0",
        f"ckpt_path={first['run_dir']}",
    ])
    _, second = train(resumed)
    assert second["trainer"].global_step == 8
    assert load_checkpoint(second["run_dir"] / "checkpoints" / "last.ckpt")["global_step"] == 8
    assert load_checkpoint(ckpt)["global_step"] == 4, "the first run's checkpoint is left as it was"


def test_run_dir_is_never_reused(train_cfg):
    from synth.errors import SynthError

    cfg = train_cfg("dcgan", steps=2, n=20)
    train(cfg)
    with pytest.raises(SynthError, match="already belongs to another run"):
        train(cfg)


def test_ae_fits_its_latent_prior(train_cfg):
    cfg = train_cfg("ae", steps=6, n=8)
    _, objs = train(cfg)
    model = objs["model"]
    assert model.latent_prior == "fitted" and model.deterministic
    assert not torch.allclose(model.latent_std, torch.ones_like(model.latent_std)), "prior fitted from training latents"
    state = load_checkpoint(objs["run_dir"] / "checkpoints" / "last.ckpt")
    assert torch.equal(state["state_dict"]["latent_mean"], model.latent_mean.cpu())


def test_adversarial_autoencoder_trains(train_cfg):
    cfg = train_cfg("vae", ["model.adv_weight=0.1", "model.adv_start_step=2", "trainer.log_every_n_steps=1"], steps=4, n=8)
    _, objs = train(cfg)
    df = pd.read_csv(objs["run_dir"] / "csv" / "metrics.csv")
    assert df["train/adv_d"].dropna().size == 2, "discriminator steps only after the warm-up"


def test_test_split_and_samples_after_training(train_cfg):
    cfg = train_cfg("vae", ["test_after=true", "sample_after=3"], steps=4, n=12)
    metrics, objs = train(cfg)
    run = objs["run_dir"]
    assert "test/psnr" in metrics and "test/loss" in json.loads((run / "run.json").read_text())["metrics"]
    out = run / "samples" / "after_training"
    assert sorted(p.name for p in out.glob("sample_*.nii.gz")) == [f"sample_{i:05d}.nii.gz" for i in range(3)]
    assert (out / "grid.png").is_file() and json.loads((out / "samples.json").read_text())["n"] == 3


@pytest.mark.parametrize("budget", [["trainer.max_steps=3"], ["trainer.max_steps=-1", "trainer.max_epochs=2"]])
def test_a_short_run_is_complete(tmp_path, budget):
    """Any run that takes a step ends with a validation, a sample grid, metrics in csv/metrics.csv and last.ckpt at
    its final step, although the default val_check_interval (200) and log_every_n_steps are longer than the run."""
    import csv

    cfg = compose_train(tmp_path, ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=12), *budget,
                                   "trainer.enable_progress_bar=false"])
    assert cfg.trainer.val_check_interval > 3 and cfg.trainer.log_every_n_steps > 3  # the defaults this test is about
    train(cfg)
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    steps = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert steps >= 3 and (steps == 3 or budget[1] == "trainer.max_epochs=2")
    assert any(r.get("val/loss") not in (None, "") for r in rows), "no validation row"
    assert any(r.get("train/loss") not in (None, "") for r in rows), "no training row"
    assert [p.name for p in (run / "grids").glob("step_*.png")] == [f"step_{steps:06d}.png"]  # the final validation's grid
