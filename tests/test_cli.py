"""The entry scripts as users run them: composed configs, one-line errors, generate.py output files."""
import json

import nibabel as nib
import numpy as np
import pytest

from synth.tasks import train
from tests.conftest import TINY, phantom, run_script


def test_cfg_job_prints_composed_config(tmp_path):
    res = run_script("train.py", ["--cfg", "job", "data.spatial_dims=3"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "DiffusionModelUNet" in res.stdout and "name: mni152" in res.stdout
    assert "spatial_dims: 3" in res.stdout and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "args,expect",
    [
        # unknown options/keys, shapes, missing data ...: the full matrix is tests/test_bad_input.py
        (["data=phantom", "data.image_size=[30,30]", "trainer.max_steps=1"], "not divisible by 8"),
        (["data=phantom", "data.resize=bogus"], "data.resize=bogus"),
        (["-m", "data=phantom", "trainer=ddp_cpu"], "cannot launch multi-process DDP"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, args, expect):
    res = run_script("train.py", args, cwd=tmp_path)
    assert res.returncode != 0
    assert expect in res.stderr
    if "synth: error" in res.stderr:
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.conftest import compose_train, quick

    tmp = tmp_path_factory.mktemp("gen")
    cfg = compose_train(tmp, ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=8), *quick(2)])
    _, objs = train(cfg)
    return objs["run_dir"], json.loads((objs["run_dir"] / "data_meta.json").read_text())


def test_generate_writes_nifti_with_geometry(trained_run, tmp_path):
    run, meta = trained_run
    res = run_script("generate.py", [f"run_dir={run}", "n=3", "batch_size=2", "steps=3"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = sorted((run / "samples").iterdir())[-1]
    files = sorted(out.glob("sample_*.nii.gz"))
    assert [f.name for f in files] == ["sample_00000.nii.gz", "sample_00001.nii.gz", "sample_00002.nii.gz"]
    img = nib.load(files[0])
    assert img.shape == (16, 16, 1) and img.get_data_dtype() == np.float32
    assert np.allclose(img.header.get_zooms()[:2], meta["spacing"]) and np.allclose(img.affine, meta["affine"])
    data = img.get_fdata()
    assert data.min() >= -1 and data.max() <= 1 and data.std() > 0
    info = json.loads((out / "samples.json").read_text())
    assert info["n"] == 3 and info["batch_size"] == 2 and info["seconds_per_sample"] > 0
    assert (out / "grid.png").is_file()
    # a second call never overwrites: it gets its own folder
    res = run_script("generate.py", [f"run_dir={run}", "n=1", "steps=2", "sampler=ddpm"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(list((run / "samples").iterdir())) == 2 and len(files) == len(list(out.glob("sample_*.nii.gz")))


@pytest.mark.parametrize(
    "args,expect",
    [
        (["ckpt=best", "n=1"], None),
        # condition for an unconditional model, out-of-range steps, no checkpoint: tests/test_bad_input.py
        (["sampler=euler", "n=1"], "not a sampler of this model"),
    ],
)
def test_generate_refuses_bad_requests(trained_run, tmp_path, args, expect):
    run, _ = trained_run
    res = run_script("generate.py", [f"run_dir={run}", *args], cwd=tmp_path)
    if expect is None:
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode == 2 and expect in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "overrides,check",
    [
        (["trainer=ddp"], lambda c: "strategy" not in c.trainer and c.strategy.name == "auto" and c.trainer.devices == "auto" and c.trainer.accelerator == "gpu"),
        (["trainer=gpu"], lambda c: c.trainer.precision == "bf16-mixed"),
        (["trainer=ddp_cpu"], lambda c: c.trainer.devices == 2 and c.trainer.accelerator == "cpu"),
        (["strategy=ddp"], lambda c: c.strategy._target_.endswith("DDPStrategy")),
        (["logger=many"], lambda c: set(c.logger) == {"csv", "tensorboard", "wandb"} and c.logger.wandb.group == "mni152"),
        (["data=brats", "data.root=/x", "data.source.modalities=[t1,t2,flair]"], lambda c: c.data.channels == 3 and c.model.net.in_channels == 3),
        (["data=mni152", "data.spatial_dims=3"], lambda c: list(c.data.image_size) == [32, 32, 32] and c.model.net.spatial_dims == 3),
        (["experiment=mni152_ddpm_hq"], lambda c: list(c.data.image_size) == [128, 128] and c.trainer.max_steps == 30000),
        (["debug=fdr"], lambda c: c.trainer.fast_dev_run is True),
        # StyleGAN2 at GPU size: R1 gamma by StyleGAN2-ADA's rule 2e-4 * pixels / batch, EMA half-life 10k images
        (["experiment=stylegan2_gpu"], lambda c: list(c.data.image_size) == [128, 128] and c.model.spatial_dims == 2 and c.model.mapping_layers == 8
         and c.data.batch_size == 32 and abs(c.model.r1_gamma - 2e-4 * 128**2 / 32) < 0.01 and abs(0.5 ** (32 / 1e4) - c.model.ema_decay) < 1e-3),
        (["experiment=stylegan2_gpu_3d"], lambda c: list(c.data.image_size) == [64, 64, 64] and c.model.spatial_dims == 3 and c.model.mapping_layers == 8
         and c.data.batch_size == 32 and abs(c.model.r1_gamma - 2e-4 * 64**3 / 32) < 0.05),
    ],
)
def test_config_options_compose(tmp_path, overrides, check):
    from omegaconf import OmegaConf

    from tests.conftest import compose_train

    cfg = compose_train(tmp_path, overrides)
    OmegaConf.resolve(cfg)
    assert check(cfg)


@pytest.mark.parametrize(
    "model,strategy,expect",
    [
        ("dcgan", "deepspeed_stage_2", "steps two optimizers by hand"),
        ("stylegan2", "deepspeed_stage_2", "steps two optimizers by hand"),
        ("wgan_gp", "fsdp", "steps two optimizers by hand"),
        ("ddpm", "deepspeed_stage_3", "needs the deepspeed package"),
    ],
)
def test_strategies_a_model_cannot_use_are_refused_before_training(tmp_path, model, strategy, expect):
    """The model-level refusal (synth.scale.strategy, called before any process starts); on a machine without a GPU
    the config check refuses sharded strategies even earlier (tests/test_bad_input.py::test_gpu_settings_without_a_gpu)."""
    from hydra.utils import instantiate

    from synth import scale
    from synth.errors import SynthError
    from tests.conftest import compose_train, quick

    cfg = compose_train(tmp_path, [f"model={model}", *TINY[model], *phantom(2, size=16, n=20), *quick(2), f"strategy={strategy}"])
    try:
        import deepspeed  # noqa: F401

        if expect.startswith("needs"):
            pytest.skip("deepspeed is installed here")
    except ImportError:
        pass
    with pytest.raises(SynthError, match=expect):
        scale.strategy(cfg, instantiate(cfg.model))


@pytest.mark.parametrize("strategy", ["ddp_find_unused", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3"])
def test_strategy_configs_print(tmp_path, strategy):
    res = run_script("train.py", ["--cfg", "job", f"strategy={strategy}", "trainer=ddp"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "lightning.pytorch.strategies." in res.stdout
