"""The model zoo beyond the spine: VQ-VAE, rectified flow, latent diffusion, EMA, classifier-free guidance."""
import nibabel as nib
import numpy as np
import pytest
import torch

from synth.errors import SynthError
from synth.runs import load_checkpoint, load_run
from synth.tasks import train
from tests.conftest import TINY, compose_train, phantom, quick, run_script


@pytest.mark.parametrize("dims", [2, 3])
def test_vqvae_trains_reconstructs_and_refuses_direct_sampling(train_cfg, dims):
    cfg = train_cfg("vqvae", dims=dims, steps=4, size=16 if dims == 2 else 8, n=12)
    metrics, objs = train(cfg)
    model, run = objs["model"], objs["run_dir"]
    assert "val/psnr" in metrics and list((run / "grids").glob("recon_*.png"))
    x = objs["datamodule"].images("val", 2)
    assert model.reconstruct(x).shape == x.shape
    z = model.encode_latents(x)
    assert tuple(z.shape[1:]) == model.latent_shape and model.decode_latents(z).shape == x.shape
    with pytest.raises(SynthError, match="model=ldm"):
        model.sample(1)


@pytest.mark.parametrize("dims", [2, 3])
def test_rflow_trains_and_samples_few_steps(train_cfg, dims):
    cfg = train_cfg("rflow", dims=dims, steps=4, size=16 if dims == 2 else 8, n=12)
    _, objs = train(cfg)
    model = objs["model"]
    assert model.flow and model.default_sampler == "rflow"
    out = model.sample(2, steps=3, progress=False)
    assert out.shape == (2, 1, *[16 if dims == 2 else 8] * dims) and torch.isfinite(out).all()
    with pytest.raises(SynthError, match="not a sampler of this model"):
        model.sample(1, sampler="ddim")


def test_ema_differs_from_raw_weights_and_is_used_to_sample(train_cfg):
    cfg = train_cfg("ddpm", ["model.ema_decay=0.9"], steps=6, n=12)
    _, objs = train(cfg)
    model = objs["model"].eval()
    raw = dict(model.net.named_parameters())
    ema = dict(model.ema.module.named_parameters())
    assert any(not torch.allclose(raw[k], ema[k]) for k in raw), "EMA weights follow the raw ones with a lag"

    def draw(use_ema):
        return model.sample(2, generator=torch.Generator().manual_seed(0), steps=3, progress=False, use_ema=use_ema)

    assert torch.equal(model.sample(2, generator=torch.Generator().manual_seed(0), steps=3, progress=False), draw(True))
    assert not torch.allclose(draw(True), draw(False))
    state = load_checkpoint(objs["run_dir"] / "checkpoints" / "last.ckpt")
    assert any(k.startswith("ema.module.") for k in state["state_dict"]), "EMA weights are saved"


@pytest.mark.parametrize("ae_model,dims,cond", [("vae", 2, False), ("vqvae", 2, False), ("vae", 3, True)])
def test_latent_diffusion_on_an_autoencoder_run(tmp_path, ae_model, dims, cond):
    size = 16 if dims == 2 else 8
    data = phantom(dims, size=size, n=12)
    ae_cfg = compose_train(tmp_path / "ae", [f"model={ae_model}", *TINY[ae_model], *data, *quick(4)])
    _, ae = train(ae_cfg)
    ldm_cfg = compose_train(tmp_path / "ldm", ["model=ldm", *TINY["ldm"], *data, *quick(4), f"model.autoencoder_run={ae['run_dir']}",
                                               f"model.num_classes={2 if cond else 0}"])
    _, objs = train(ldm_cfg)
    model, run = objs["model"], objs["run_dir"]
    assert float(model.scale_factor) > 0 and model.sample_shape == ae["model"].latent_shape
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert float(state["state_dict"]["scale_factor"]) == pytest.approx(float(model.scale_factor))
    assert any(k.startswith("autoencoder.") for k in state["state_dict"])
    res = run_script("generate.py", [f"run_dir={run}", "n=2", "steps=3", *(["condition=[lesion,0]"] if cond else [])], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    sample = nib.load(next((run / "samples").glob("*/sample_00000.nii.gz")))
    assert sample.shape == ((16, 16, 1) if dims == 2 else (8, 8, 8)) and np.isfinite(sample.get_fdata()).all()


def test_latent_diffusion_refuses_a_non_autoencoder_run(tmp_path):
    data = phantom(2, size=16, n=12)
    _, gan = train(compose_train(tmp_path / "gan", ["model=dcgan", *TINY["dcgan"], *phantom(2, size=16, n=20), *quick(2)]))
    with pytest.raises(Exception, match="latent diffusion needs a vae, ae or vqvae run"):
        train(compose_train(tmp_path / "ldm", ["model=ldm", *TINY["ldm"], *data, *quick(2), f"model.autoencoder_run={gan['run_dir']}"]))
    res = run_script("train.py", ["model=ldm", "data=phantom", f"model.autoencoder_run={tmp_path / 'nope'}"], cwd=tmp_path)
    assert res.returncode == 2 and "is not a run dir" in res.stderr and "Traceback" not in res.stderr


def test_conditional_ddpm_with_guidance(train_cfg):
    cfg = train_cfg("ddpm", ["model.num_classes=2"], steps=4, n=12)
    _, objs = train(cfg)
    model = objs["model"]
    out = model.sample(2, condition=[0, "lesion"], steps=3, progress=False, guidance=2.0)
    assert out.shape == (2, 1, 16, 16)
    with pytest.raises(SynthError, match="conditional on 2 classes"):
        model.sample(1, steps=2)
    with pytest.raises(SynthError, match="not a class of this model"):
        model.sample(1, condition=7, steps=2)
    run = objs["run_dir"]
    loaded, _ = load_run(run, "last")
    assert loaded.num_classes == 2 and loaded.data_meta["class_names"] == ["healthy", "lesion"]


def test_conditional_model_needs_labelled_data(train_cfg):
    with pytest.raises(SynthError, match="model.num_classes=3 but the data has 2 label classes"):
        train(train_cfg("ddpm", ["model.num_classes=3"], steps=2, n=12))


@pytest.mark.parametrize("model", ["ddpm", "rflow", "vae", "vqvae", "dcgan", "stylegan2"])
def test_four_channel_3d_networks(tmp_path, model):
    """1-4 channels in 3D: every family builds for 4-channel volumes and returns 4-channel output."""
    from hydra.utils import instantiate

    module = instantiate(compose_train(tmp_path, [f"model={model}", *TINY[model], *phantom(3, size=8, channels=4)]).model)
    x = torch.zeros(2, 4, 8, 8, 8)
    out = module.reconstruct(x) if not module.can_sample else module.sample(2, progress=False, steps=2)
    assert out.shape == x.shape


@pytest.mark.parametrize("model", ["ddpm", "rflow"])
def test_conditional_diffusion_follows_its_class(tmp_path, dark_and_bright, model):
    """The honest check for diffusion + classifier-free guidance: brief seeded training on two classes that
    differ in brightness, then samples drawn for each class fall on that class's side of the midpoint."""
    cfg = compose_train(tmp_path, [
        f"model={model}", *TINY[model], "model.num_classes=2", "data=folder", f"data.root={dark_and_bright}",
        "data.source.label_from_subdir=true", "data.channels=1", "data.image_size=[32,32]", "data.batch_size=8",
        "model.optimizer.lr=2e-3", *quick(150), "seed=0", "callbacks.sample_grid.n=0",
    ])
    _, objs = train(cfg)
    m, dm = objs["model"].eval(), objs["datamodule"]
    images, labels = dm.images("train"), torch.from_numpy(dm.datasets["train"].labels)
    bright, dark = images[labels == 0].mean().item(), images[labels == 1].mean().item()
    mid = (bright + dark) / 2
    g = torch.Generator().manual_seed(0)
    s_bright = m.sample(16, condition="bright", generator=g, steps=10, progress=False).flatten(1).mean(1)
    s_dark = m.sample(16, condition="dark", generator=g, steps=10, progress=False).flatten(1).mean(1)
    right = ((s_bright > mid).float().mean().item(), (s_dark < mid).float().mean().item())
    assert min(right) >= 0.75, f"{model}: {right} on the right side of {mid:.2f} (samples {s_bright.mean():.2f}/{s_dark.mean():.2f})"


def test_val_loss_is_the_ema_networks_loss(train_cfg):
    """Samples come from the EMA weights, so the monitor (val/loss) is the EMA network's loss; val/loss_raw is the
    trained network's, on the same seeded noise and timesteps."""
    cfg = train_cfg("ddpm", ["model.ema_decay=0.9"], steps=6, n=12)
    metrics, objs = train(cfg)
    model = objs["model"].eval()
    batch = next(iter(objs["datamodule"].val_dataloader()))  # limit_val_batches=1: the batch validation saw
    with torch.no_grad():
        raw = model._eval_loss(batch, 10_000).item()
        trained = model.net
        model.net = model.ema.module  # the EMA network in the trained one's place
        ema = model._eval_loss(batch, 10_000).item()
        model.net = trained
    assert abs(raw - ema) > 1e-4, "after 6 steps at decay 0.9 the two networks differ"
    assert metrics["val/loss"] == pytest.approx(ema, rel=1e-5) and metrics["val/loss_raw"] == pytest.approx(raw, rel=1e-5)


def test_ema_updates_once_per_optimizer_step_under_gradient_accumulation(train_cfg):
    cfg = train_cfg("ddpm", ["trainer.accumulate_grad_batches=2", "callbacks.sample_grid.n=0"], steps=3, n=12)
    _, objs = train(cfg)
    trainer, model = objs["trainer"], objs["model"]
    micro_batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
    assert trainer.global_step == 3 and micro_batches > 3, "two micro-batches per optimizer step (an epoch's last one steps alone)"
    assert int(model.ema.n_averaged) == trainer.global_step, f"EMA updated {int(model.ema.n_averaged)} times for {trainer.global_step} optimizer steps"


def test_ema_warm_up_is_one_formula_for_every_family():
    """The diffusion families' EMA and StyleGAN2's G_ema warm up the same way: decay (1+n)/(10+n) up to the set
    decay, so after the first update the average holds 90 % of the trained weights, not 0.1 %."""
    from synth.models.base import warmed_decay
    from synth.models.diffusion import ema_update

    assert warmed_decay(0.999, 0) == pytest.approx(0.1) and warmed_decay(0.999, 90) == pytest.approx(0.91)
    assert warmed_decay(0.999, 10**6) == 0.999 and warmed_decay(0.5, 90) == 0.5
    avg = ema_update(torch.zeros(3), torch.ones(3), torch.tensor(0), decay=0.999)
    assert torch.allclose(avg, torch.full((3,), 0.9))
