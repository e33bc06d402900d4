"""Diffusion samplers checked against an oracle denoiser (tests/diffusion_oracle.py): every sampler draws what its
equations say for Gaussian data (strided DDPM, DDIM on the schedule's real timesteps, rectified flow), latent
diffusion never clips its latents, and samples.json records the sampler actually used."""
import json

import pytest
import torch
from hydra.utils import instantiate

from synth.errors import SynthError
from synth.sampling import write_samples
from synth.tasks import train
from tests.conftest import TINY, compose_train, phantom, quick
from tests.diffusion_oracle import GaussianOracle, expected_moments

MU, S = 0.3, 0.2  # the oracle's data: N(MU, S^2) per pixel, well inside [-1, 1] (clip_sample stays inert)


def oracle_model(tmp_path, model: str = "ddpm", overrides=(), mu: float = MU, s: float = S):
    """A tiny diffusion module (1000 timesteps, the real schedule) whose network is the oracle."""
    over = [f"model={model}", *TINY[model], *phantom(2, size=16), *overrides]
    if model == "ddpm":
        over.append("model.scheduler.num_train_timesteps=1000")
    m = instantiate(compose_train(tmp_path, over).model)
    m.net = GaussianOracle(m.scheduler, mu, s, flow=m.flow)
    m.ema = None
    return m.eval()


def draw(m, n: int = 128, **sampler) -> torch.Tensor:
    return m.denoise(n, generator=torch.Generator().manual_seed(0), progress=False, **sampler)


def reference(m, sampler=None, steps=None, eta=None, mu=MU, s=S):
    settings = m.sampling_settings(sampler=sampler, steps=steps, eta=eta)
    sched = m.sampling_scheduler(settings["name"], settings["steps"])
    kind = "flow" if m.flow else ("ancestral" if settings["eta"] == 1 and settings["name"] == "ddpm" else "ddim")
    return expected_moments([int(t) for t in sched.timesteps], sched, kind, mu, s, eta=settings["eta"]), sched


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddpm", 50), ("ddpm", 10), ("ddim", 50), ("ddim", 10)])
def test_samplers_draw_what_their_equations_say_with_an_oracle_denoiser(tmp_path, prediction, sampler, steps):
    """Strided DDPM (MONAI's step assumes t-1) and DDIM (MONAI's step assumes a stride of T // steps, while the
    schedule's strides are (T-1)/(steps-1), rounded) both go to the schedule's real next timestep now."""
    m = oracle_model(tmp_path, overrides=[f"model.scheduler.prediction_type={prediction}"])
    x = draw(m, sampler=sampler, steps=steps)
    (mean, std), sched = reference(m, sampler, steps)
    assert m.net.calls == len(sched.timesteps) == (steps or 1000)
    assert abs(x.mean().item() - mean) < 0.01 and abs(x.std().item() / std - 1) < 0.03, (
        f"{sampler} {steps or 'all'} steps: drew mean {x.mean():.4f} std {x.std():.4f}, its equations give {mean:.4f} / {std:.4f}"
    )
    # and the chain does what a sampler is for: close to the data (few steps shrink the spread somewhat)
    assert abs(mean - MU) < 0.01 and 0.45 * S < std <= 1.01 * S
    if steps is None:
        assert abs(std / S - 1) < 0.03, "all 1000 ancestral steps reproduce the data's spread"


def test_the_validation_grids_default_ddim_chain(tmp_path):
    """SampleGrid draws with the model's defaults (`sample(n, generator=...)`: DDIM, model.sampling_steps). With the
    tiny flavour (100 timesteps, 5 steps) the schedule is 99, 74, 50, 25, 0 but MONAI's DDIM step moved the sample
    by 100 // 5 = 20 timesteps: every step of the grid's chain landed 4-5 timesteps away from where the network was
    told the sample was next (1000 timesteps / 50 steps: one timestep off at 2 steps in 5)."""
    over = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16)]
    m = instantiate(compose_train(tmp_path, over).model).eval()
    m.net, m.ema = GaussianOracle(m.scheduler, MU, S), None
    x = m.sample(128, generator=torch.Generator().manual_seed(0), progress=False)  # as SampleGrid calls it
    (mean, std), sched = reference(m)
    assert [int(t) for t in sched.timesteps] == [99, 74, 50, 25, 0] and m.net.calls == 5
    assert abs(x.mean().item() - mean) < 0.01 and abs(x.std().item() / std - 1) < 0.03, (x.mean(), x.std(), mean, std)


@pytest.mark.parametrize("steps", [30, 10])
def test_rectified_flow_with_an_oracle_velocity(tmp_path, steps):
    m = oracle_model(tmp_path, "rflow")
    x = draw(m, steps=steps)
    (mean, std), _ = reference(m, steps=steps)
    assert abs(x.mean().item() - mean) < 0.01 and abs(x.std().item() / std - 1) < 0.03
    assert abs(mean - MU) < 0.01 and 0.7 * S < std <= 1.01 * S


def test_ddim_eta_one_is_the_strided_ddpm_chain(tmp_path):
    """DDIM with eta=1 is the DDPM posterior on the same strided schedule: the same draws from the same noise."""
    m = oracle_model(tmp_path)
    assert torch.allclose(draw(m, sampler="ddim", steps=20, eta=1.0), draw(m, sampler="ddpm", steps=20), atol=1e-5)
    assert not torch.allclose(draw(m, sampler="ddim", steps=20, eta=0.0), draw(m, sampler="ddpm", steps=20), atol=1e-3)
    with pytest.raises(SynthError, match="ancestral sampling is eta=1"):
        m.sample(1, sampler="ddpm", eta=0.5)
    with pytest.raises(SynthError, match="eta=2.0 is out of range"):
        m.sample(1, sampler="ddim", eta=2.0)


def test_latent_diffusion_never_clips_its_latents(tmp_path):
    """model=ldm used to inherit clip_sample=true from ddpm.yaml: sampled latents were clamped at every step (std
    ~0.7 of the encoded latents'). With an oracle for the encoded latents' moments, the sampled latents (before
    decoding) have their spread; a config asking to clip is refused."""
    data = phantom(2, size=16, n=12)
    _, ae = train(compose_train(tmp_path / "ae", ["model=vae", *TINY["vae"], *data, *quick(2), "callbacks.sample_grid.n=0"]))
    over = ["model=ldm", *TINY["ldm"], *data, f"model.autoencoder_run={ae['run_dir']}", "model.scheduler.num_train_timesteps=1000"]
    cfg = compose_train(tmp_path / "ldm", over)
    assert cfg.model.scheduler.clip_sample is False
    m = instantiate(cfg.model).eval()
    images = torch.cat([ae["datamodule"].images(split) for split in ("train", "val")])
    z = m.autoencoder.encode_latents(images)
    m.scale_factor.fill_(1 / z.std().item())
    encoded = m.to_diffusion_space(images)
    mu, s = encoded.mean().item(), encoded.std().item()
    assert abs(s - 1) < 0.1  # about unit std (a VAE encodes with noise), so a third of the values lie outside [-1, 1]
    m.net, m.ema = GaussianOracle(m.scheduler, mu, s), None
    for sampler, steps in [("ddpm", None), ("ddim", 200)]:
        latents = draw(m, n=64, sampler=sampler, steps=steps)
        (_, expected), _ = reference(m, sampler, steps, mu=mu, s=s)
        assert latents.shape[1:] == m.sample_shape
        assert abs(latents.std().item() / expected - 1) < 0.03 and latents.std().item() > 0.95 * s, (
            f"{sampler}: sampled latent std {latents.std():.3f}, encoded {s:.3f}, unclipped chain {expected:.3f}"
        )
    with pytest.raises(Exception, match="clip_sample=true clamps the predicted latents"):
        instantiate(compose_train(tmp_path / "ldm2", [*over, "model.scheduler.clip_sample=true"]).model)


@pytest.mark.parametrize("model,conditional", [("ddpm", False), ("ddpm", True), ("rflow", False), ("dcgan", False)])
def test_samples_json_records_the_sampler_actually_used(tmp_path, model, conditional):
    over = [f"model={model}", *TINY[model], *phantom(2, size=16), *(["model.num_classes=2"] if conditional else [])]
    m = instantiate(compose_train(tmp_path, over).model).eval()
    m.data_meta = {"class_names": ["healthy", "lesion"]}
    cond = 1 if conditional else None
    info = write_samples(m, tmp_path / "defaults", n=2, condition=cond, grid=False)
    on_disk = json.loads((tmp_path / "defaults" / "samples.json").read_text())["sampler"]
    assert on_disk == info["sampler"]
    if model == "dcgan":
        assert on_disk is None  # one generator pass: no sampler settings
        return
    total = m.scheduler.num_train_timesteps
    default = {"ddpm": {"name": "ddim", "steps": 5, "eta": 0.0}, "rflow": {"name": "rflow", "steps": 5, "eta": None}}[model]
    assert on_disk == {**default, "guidance": 3.0 if conditional else None, "ema": True, "seed": 0}
    if model == "ddpm":
        guide = {"guidance": 1.5} if conditional else {}  # an unconditional model refuses guidance (tests/test_bad_input.py)
        info = write_samples(m, tmp_path / "ddpm", n=1, seed=7, condition=cond, grid=False, sampler="ddpm", **guide)
        assert info["sampler"] == {"name": "ddpm", "steps": total, "eta": 1.0, "guidance": 1.5 if conditional else None, "ema": True, "seed": 7}
