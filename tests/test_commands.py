"""The README's commands as a user types them (slow: each is a full process on real configs)."""
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from synth.data import write_fake_brats
from synth.data.phantom import make_phantom
from tests.conftest import run_script

pytestmark = pytest.mark.slow


def _ok(res):
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-4000:])
    return res


def _runs(cwd):
    return sorted((cwd / "outputs" / "train").iterdir())


def test_ddpm_3d_phantom_then_generate(tmp_path):
    # the default UNet (attention only at 4^3; the tiny flavour attends at 16^3, far too costly in 3D), a few small
    # batches and a short sampling chain for the end-of-training grid: the command, not the model, is under test here
    _ok(run_script("train.py", ["model=ddpm", "data=phantom", "data.spatial_dims=3", "trainer=cpu", "trainer.max_steps=6",
                                "data.batch_size=2", "model.sampling_steps=10", "trainer.enable_progress_bar=false",
                                "callbacks.sample_grid.n=2"], cwd=tmp_path, timeout=1200))
    run = _runs(tmp_path)[-1]
    assert json.loads((run / "run.json").read_text())["global_step"] == 6
    _ok(run_script("generate.py", [f"run_dir={run}", "n=2", "steps=10"], cwd=tmp_path))
    sample = next((run / "samples").glob("*/sample_00000.nii.gz"))
    img = nib.load(sample)
    assert img.shape == (32, 32, 32) and np.allclose(img.header.get_zooms(), [6.0] * 3)


def test_vae_mni152_two_epochs(tmp_path):
    _ok(run_script("train.py", ["model=vae", "data=mni152", "trainer.max_epochs=2", "trainer.enable_progress_bar=false"], cwd=tmp_path))
    run = _runs(tmp_path)[-1]
    info = json.loads((run / "run.json").read_text())
    assert info["epochs"] == 2 and info["data"] == "mni152" and (run / "checkpoints" / "last.ckpt").is_file()


def test_dcgan_from_gandlf_csv(tmp_path):
    rows = ["SubjectID,Channel_0,Label"]
    (tmp_path / "imgs").mkdir()
    for i in range(20):
        ph = make_phantom((64, 64), seed=i)
        nib.save(nib.Nifti1Image(ph["image"][0].astype(np.float32), np.eye(4)), tmp_path / "imgs" / f"s{i}.nii.gz")
        rows.append(f"s{i},imgs/s{i}.nii.gz,{int(ph['lesion'])}")
    (tmp_path / "my_list.csv").write_text("\n".join(rows) + "\n")
    _ok(run_script("train.py", ["model=dcgan", "data=csv", "data.csv_path=my_list.csv", "trainer.max_steps=30",
                                "trainer.val_check_interval=15", "trainer.enable_progress_bar=false"], cwd=tmp_path))
    run = _runs(tmp_path)[-1]
    assert "val/mmd" in json.loads((run / "run.json").read_text())["metrics"]


def test_brats_tree_2023_trains(tmp_path):
    write_fake_brats(tmp_path / "brats", n_subjects=5, layout="2023", shape=(48, 48, 32))
    _ok(run_script("train.py", ["model=vae", "data=brats", f"data.root={tmp_path / 'brats'}", "data.source.modalities=[flair,t1ce]",
                                "data.image_size=[32,32]", "trainer.max_steps=6", "trainer.enable_progress_bar=false"], cwd=tmp_path))
    meta = json.loads((_runs(tmp_path)[-1] / "data_meta.json").read_text())
    assert meta["channels"] == 2 and meta["image_size"] == [32, 32]


def test_rgb_folder_samples_are_png(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "patches").mkdir()
    for i in range(12):
        img = np.zeros((32, 32, 3), np.uint8)
        img[..., 0] = 200
        img[..., 2] = rng.integers(0, 255, (32, 32))
        Image.fromarray(img).save(tmp_path / "patches" / f"p{i}.png")
    _ok(run_script("train.py", ["model=vae", "data=folder", f"data.root={tmp_path / 'patches'}", "data.image_size=[32,32]",
                                "trainer.max_steps=4", "trainer.enable_progress_bar=false"], cwd=tmp_path))
    run = _runs(tmp_path)[-1]
    _ok(run_script("generate.py", [f"run_dir={run}", "n=2"], cwd=tmp_path))
    png = next((run / "samples").glob("*/sample_00000.png"))
    assert np.asarray(Image.open(png)).shape == (32, 32, 3)


def test_all_loggers_offline(tmp_path):
    res = _ok(run_script("train.py", ["model=vae", "data=phantom", "data.image_size=[32,32]", "logger=many", "trainer.max_steps=4",
                                      "trainer.val_check_interval=2", "trainer.enable_progress_bar=false"], cwd=tmp_path,
                         env={"WANDB_API_KEY": "", "WANDB_MODE": "offline"}))
    run = _runs(tmp_path)[-1]
    assert "val/loss" in (run / "csv" / "metrics.csv").read_text()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), res.stderr[-2000:]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("model", ["ae", "vae", "vqvae", "dcgan", "wgan_gp", "ddpm", "rflow", "ldm"])
def test_default_model_configs_train_on_phantom(tmp_path, model, dims):
    """`python train.py model=<m> data=phantom [data.spatial_dims=3]` with the default (not tiny) networks."""
    from synth.tasks import train
    from tests.conftest import compose_train

    base = ["data=phantom", f"data.spatial_dims={dims}", "data.batch_size=4", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "callbacks.sample_grid.n=2"]
    extra = ["model.sampling_steps=2"] if model in ("ddpm", "rflow", "ldm") else []
    if model == "ldm":
        _, ae = train(compose_train(tmp_path / "ae", ["model=vae", *base]))
        extra += [f"model.autoencoder_run={ae['run_dir']}"]
    _, objs = train(compose_train(tmp_path / "m", [f"model={model}", *base, *extra]))
    assert objs["trainer"].global_step == 2
    if objs["model"].can_sample:
        out = objs["model"].sample(1, steps=2, progress=False)
        assert out.shape == (1, 1, *[64 if dims == 2 else 32] * dims)
