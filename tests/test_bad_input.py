"""The bad-input matrix (issue #6): each mistake a user can make stops with exit code 2 and ONE line
`synth: error: <cause>: <what to do>`, before anything is trained or written, and the user's files are left
as they were. Hydra-level mistakes go through the real entry script; the rest run the same code in-process
(synth.cli.run_task, what the entry scripts call), which is faster."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from PIL import Image

import torch

from synth.cli import run_task
from synth.data.phantom import write_fake_brats
from synth.errors import SynthError
from synth.tasks import generate, train

from tests.conftest import CONF, ROOT, TINY, compose_train, phantom, quick, run_script


# ----- helpers ----------------------------------------------------------------------------------------------
def one_line_error(capsys, task, cfg) -> str:
    """Run `task` as the entry scripts do; assert exit code 2 and exactly one error line; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_task(task, cfg)
    assert exc.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("synth: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
    line = errors[0]
    assert ": " in line[len("synth: error: "):], f"no cause/fix split: {line}"
    return line


def cli_error(res) -> str:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("synth: error: ") and "Traceback" not in res.stderr, res.stderr
    assert sum(ln.startswith("synth: error") for ln in lines) == 1
    return lines[-1]


def nothing_trained(run: Path) -> None:
    """A refused run leaves no checkpoint, metrics or run record behind."""
    assert not (run / "checkpoints").exists() and not (run / "run.json").exists() and not (run / "csv").exists()


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def train_error(capsys, tmp_path, overrides, model="ddpm") -> str:
    cfg = compose_train(tmp_path, [f"model={model}", *TINY[model], *quick(2), "callbacks.sample_grid.n=0", *overrides])
    line = one_line_error(capsys, train, cfg)
    nothing_trained(tmp_path / "run")
    return line


def nifti(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), path)
    return path


def noise(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 100


def folder_of(tmp_path: Path, arrays: dict[str, np.ndarray]) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for name, arr in arrays.items():
        if name.endswith(".png"):
            Image.fromarray(arr).save(root / name)
        else:
            nifti(root / name, arr)
    return root


def folder_data(root: Path, channels: int = 1, extra=()) -> list[str]:
    return ["data=folder", f"data.root={root}", f"data.channels={channels}", "data.image_size=[16,16]", "data.batch_size=2",
            "data.intensity=percentile", *extra]


# ----- 1. config: unknown group option, unknown key --------------------------------------------------------
def test_unknown_config_group_option_lists_the_valid_ones(tmp_path):
    line = cli_error(run_script("train.py", ["model=ddpmm"], cwd=tmp_path))
    assert "model=ddpmm is not an option of the model config group" in line and "did you mean model=ddpm?" in line
    assert "ae, controlnet, dcgan, ddpm, ldm, rflow, stylegan2, vae, vqvae, wgan_gp" in line
    assert not (tmp_path / "outputs").exists(), "refused before Hydra made a run dir"


@pytest.mark.parametrize("where", ["command_line", "yaml_file"])
def test_unknown_key_is_refused_with_the_closest_valid_one(tmp_path, capsys, where):
    if where == "command_line":
        line = cli_error(run_script("train.py", ["data=phantom", "trainer.max_stepz=3"], cwd=tmp_path))
        assert "trainer.max_stepz is not a key of trainer: did you mean trainer.max_steps?" in line
        assert not (tmp_path / "outputs").exists()
    else:  # a typo inside a config file (here an experiment YAML adds it): caught before anything is built
        cfg = compose_train(tmp_path, ["model=ddpm", *TINY["ddpm"], *phantom(2), "+model.net.num_res_block=2"])
        line = one_line_error(capsys, train, cfg)
        assert "model.net.num_res_block is not a setting of DiffusionModelUNet" in line and "did you mean model.net.num_res_blocks?" in line
        assert not (tmp_path / "run").exists(), "nothing written"


def test_every_shipped_config_passes_the_key_and_type_check(tmp_path):
    """No false alarms: every config the repo ships passes the check of keys and value types."""
    from synth.config_check import check_targets

    conf = Path(CONF)
    choices = [[f"model={p.stem}"] for p in (conf / "model").glob("*.yaml")]
    choices += [[f"data={p.stem}"] for p in (conf / "data").glob("*.yaml")]
    family = {"tiny_gan": "dcgan", "tiny_vae": "vae", "tiny_vqvae": "vqvae", "tiny_rflow": "rflow",
              "tiny_stylegan2": "stylegan2"}  # flavours of one family; the rest compose with the default ddpm
    choices += [[*([] if "override /model:" in p.read_text() else [f"model={family.get(p.stem, 'ddpm')}"]), f"experiment={p.stem}"]
                for p in (conf / "experiment").glob("*.yaml")]  # a recipe that picks its model keeps it
    choices += [["logger=many", "trainer=ddp", f"strategy={p.stem}"] for p in (conf / "strategy").glob("*.yaml")]
    choices += [[f"callbacks={p.stem}", f"debug={d.stem}"] for p in (conf / "callbacks").glob("*.yaml") for d in (conf / "debug").glob("*.yaml")]
    for overrides in choices:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            check_targets(compose(config_name="train", overrides=overrides))


def test_a_typo_in_a_multirun_is_one_line(tmp_path):
    line = cli_error(run_script("train.py", ["-m", "model=dcgan,wgan_gp", "model.latent_dimm=16"], cwd=tmp_path))
    assert "model.latent_dimm is not a key of model" in line
    assert not (tmp_path / "outputs").exists()


# ----- 2. shapes and channels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model,size,expect", [
    ("ddpm", "[15,15]", "image size [15, 15] is not divisible by 2 (the UNet has 2 levels): set data.image_size=[16, 16]"),
    ("vae", "[15,16]", "image size [15, 16] is not divisible by 2 (the autoencoder has 2 levels)"),
    ("dcgan", "[18,18]", "image size [18, 18] is not divisible by 4"),
])
def test_image_shape_the_network_cannot_take_is_refused_before_training(tmp_path, capsys, model, size, expect):
    line = train_error(capsys, tmp_path, [*phantom(2), f"data.image_size={size}"], model=model)
    assert expect in line
    assert not (tmp_path / "run" / "data_meta.json").exists(), "refused before the data was even loaded"


def test_channel_count_mismatch_between_data_and_model(tmp_path, capsys):
    rgb = {f"p{i}.png": (noise((16, 16, 3), i) * 2).astype(np.uint8) for i in range(4)}
    root = folder_of(tmp_path, rgb)
    line = train_error(capsys, tmp_path, folder_data(root, channels=1, extra=["data.source.recursive=false"]))
    # the folder source sees it from the file headers, before decoding
    assert "3 channel" in line and "data.channels=1" in line and "set data.channels=3" in line


# ----- 3. where the data is -----------------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["root", "csv", "csv_row"])
def test_missing_data_root_csv_or_listed_file(tmp_path, capsys, what):
    if what == "root":
        overrides, expect = ["data=folder", f"data.root={tmp_path / 'nope'}", "data.channels=1"], "does not exist: point data.root"
    elif what == "csv":
        overrides, expect = ["data=csv", f"data.csv_path={tmp_path / 'list.csv'}"], "list.csv does not exist: point data.csv_path"
    else:
        nifti(tmp_path / "a.nii.gz", noise((16, 16, 4)))
        (tmp_path / "list.csv").write_text("SubjectID,Channel_0\ns0,a.nii.gz\ns1,b.nii.gz\n")
        overrides, expect = ["data=csv", f"data.csv_path={tmp_path / 'list.csv'}"], "row 3 (SubjectID s1) Channel_0: file"
    line = train_error(capsys, tmp_path, [*overrides, "data.image_size=[16,16]"])
    assert expect in line
    if what == "csv_row":
        assert "b.nii.gz does not exist: fix the path in the CSV" in line


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_nifti_names_the_file(tmp_path, capsys, damage):
    root = folder_of(tmp_path, {f"s{i}.nii.gz": noise((16, 16, 8), i) for i in range(4)})
    bad = root / "s2.nii.gz"
    raw = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(raw[: len(raw) // 2]) if damage == "truncated" else b"\x00not a nifti")
    before = snapshot(root)
    line = train_error(capsys, tmp_path, folder_data(root))
    assert f"cannot read NIfTI {bad}" in line and "replace or remove the corrupt file" in line
    assert snapshot(root) == before, "the user's files are left as they were"


@pytest.mark.parametrize("case", ["no_images", "empty_csv", "no_training_split"])
def test_empty_dataset_after_filtering(tmp_path, capsys, case):
    if case == "no_images":
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "notes.txt").write_text("not an image")
        overrides, expect = folder_data(tmp_path / "images"), "no .nii/.nii.gz/.png/.jpg/.tif images in data.root"
    elif case == "empty_csv":
        (tmp_path / "list.csv").write_text("SubjectID,Channel_0\n")
        overrides, expect = ["data=csv", f"data.csv_path={tmp_path / 'list.csv'}"], "lists no subjects: add rows"
    else:
        overrides, expect = [*phantom(2), "data.split=[0.0,0.5,0.5]"], "produced no training images"
    assert expect in train_error(capsys, tmp_path, overrides)


def test_mixed_shapes_without_resize(tmp_path, capsys):
    root = folder_of(tmp_path, {"a.png": noise((16, 16)).astype(np.uint8), "b.png": noise((20, 12), 1).astype(np.uint8),
                                "c.png": noise((16, 16), 2).astype(np.uint8)})
    line = train_error(capsys, tmp_path, folder_data(root, extra=["data.resize=none", "data.split=[1.0,0.0,0.0]"]))
    assert "has shape [20, 12], not data.image_size=[16, 16], and data.resize=none: set data.resize=resize or crop_pad" in line


@pytest.mark.parametrize("kind,expect", [("nan", "has NaN/inf voxels: fix or remove that image"), ("constant", "is constant")])
def test_nan_or_constant_images(tmp_path, capsys, kind, expect):
    bad = np.full((16, 16, 4), np.nan if kind == "nan" else 7.0, np.float32)
    root = folder_of(tmp_path, {"good0.nii.gz": noise((16, 16, 4)), "bad.nii.gz": bad, "good1.nii.gz": noise((16, 16, 4), 1)})
    line = train_error(capsys, tmp_path, folder_data(root, extra=["data.split=[1.0,0.0,0.0]"]))
    assert "subject bad " in line and expect in line


@pytest.mark.parametrize("case", ["missing_column", "unlabelled_for_conditional"])
def test_wrong_label_column(tmp_path, capsys, case):
    for i in range(4):
        nifti(tmp_path / f"s{i}.nii.gz", noise((16, 16, 4), i))
    (tmp_path / "list.csv").write_text("SubjectID,Channel_0,Diagnosis\n" + "".join(f"s{i},s{i}.nii.gz,{i % 2}\n" for i in range(4)))
    data = ["data=csv", f"data.csv_path={tmp_path / 'list.csv'}", "data.spatial_dims=3", "data.image_size=[16,16,4]",
            "data.split=[0.5,0.25,0.25]", "model.num_classes=2"]
    if case == "missing_column":
        line = train_error(capsys, tmp_path, [*data, "data.source.label_column=Label_"], model="dcgan")
        assert "data.source.label_column=Label_ is not a column of" in line and "one of ['Diagnosis']" in line
    else:  # the default column (Label) is absent: a conditional model has no labels to learn from
        line = train_error(capsys, tmp_path, data, model="dcgan")
        assert "model.num_classes=2 but the data has 0 label classes" in line


def test_brats_tree_with_a_missing_modality(tmp_path, capsys):
    dirs = write_fake_brats(tmp_path / "brats", n_subjects=3, layout="2021", shape=(16, 16, 8))
    (dirs[1] / f"{dirs[1].name}_flair.nii.gz").unlink()
    before = snapshot(tmp_path / "brats")
    line = train_error(capsys, tmp_path, ["data=brats", f"data.root={tmp_path / 'brats'}", "data.source.modalities=[t1,flair]",
                                          "data.image_size=[16,16]"])
    assert f"BraTS subject {dirs[1].name} is missing" in line and "_flair.nii.gz: restore the file or remove the subject folder" in line
    assert snapshot(tmp_path / "brats") == before


# ----- 4. generate and latent diffusion against trained runs ------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained ddpm run and one tiny vae run."""
    out = {}
    for model in ("ddpm", "vae"):
        tmp = tmp_path_factory.mktemp(model)
        _, objs = train(compose_train(tmp, [f"model={model}", *TINY[model], *phantom(2, size=16, n=8), *quick(2), "callbacks.sample_grid.n=0"]))
        out[model] = objs["run_dir"]
    return out


def compose_generate(out_dir: Path, overrides: list[str]):
    """The generate config as generate.py would see it, writing into `out_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="generate", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.mark.parametrize("case,expect", [
    ("no_checkpoint", "no last checkpoint in"),
    ("other_family", "last.ckpt holds a vae (autoencoder) model but"),
    ("condition_unconditional", "this ddpm model is unconditional: drop condition="),
    ("steps_out_of_range", "steps=100000 is out of range for a model trained with 100 timesteps: use 1..100"),
    ("steps_negative", "steps=-1 must be a whole number >= 1"),
])
def test_generate_refuses(runs, tmp_path, capsys, case, expect):
    """(generate.py's own exit code 2 on such a refusal: tests/test_cli.py::test_generate_refuses_bad_requests)"""
    run = runs["ddpm"]
    args = ["n=2", "steps=2"]
    if case == "no_checkpoint":
        run = tmp_path / "copy"
        run.mkdir()
        shutil.copy(runs["ddpm"] / "config.yaml", run / "config.yaml")
    elif case == "other_family":
        args.append(f"ckpt={runs['vae'] / 'checkpoints' / 'last.ckpt'}")
    elif case == "condition_unconditional":
        args.append("condition=1")
    elif case.startswith("steps"):
        args = ["n=2", "steps=100000" if case == "steps_out_of_range" else "steps=-1"]
    out = tmp_path / "samples"
    line = one_line_error(capsys, generate, compose_generate(out, [f"run_dir={run}", *args]))
    assert expect in line
    assert not out.exists() or not any(out.glob("sample_*")), "no sample written"


def test_train_time_sampler_steps_out_of_range(tmp_path, capsys):
    line = train_error(capsys, tmp_path, [*phantom(2), "model.sampling_steps=500"])
    assert "model.sampling_steps=500 is out of range for model.scheduler.num_train_timesteps=100: use 1..100" in line


@pytest.mark.parametrize("target", ["diffusion_run", "not_a_run"])
def test_ldm_pointing_at_a_non_autoencoder_run(runs, tmp_path, capsys, target):
    where = runs["ddpm"] if target == "diffusion_run" else tmp_path / "nothing"
    if target == "not_a_run":
        where.mkdir()
    line = train_error(capsys, tmp_path, [*phantom(2, size=16, n=8), f"model.autoencoder_run={where}"], model="ldm")
    assert f"model.autoencoder_run={where}" in line
    assert ("is a diffusion run: latent diffusion needs a vae, ae or vqvae run" if target == "diffusion_run" else "no config.yaml") in line


# ----- 5. values of the wrong type or out of range: refused before Hydra makes a run dir ------------------------------
@pytest.mark.parametrize("override,expect", [
    ("trainer.max_steps=abc", "trainer.max_steps=abc is not a whole number, which Trainer needs"),
    ("data.batch_size=two", "data.batch_size=two is not a whole number, which SynthDataModule needs"),
    ("data.batch_size=0", "data.batch_size=0 must be at least 1: e.g. data.batch_size=16"),
    ("data.batch_size=-1", "data.batch_size=-1 must be at least 1"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5 is negative: set a positive number of steps"),
    ("trainer.max_steps=0", "trainer.max_steps=0 trains nothing"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 trains nothing"),
    ("model.optimizer.lr=nan", "model.optimizer.lr=nan is not a positive finite number: set a learning rate"),
    ("model.optimizer.lr=0", "model.optimizer.lr=0 learns nothing"),
    ("model.net.in_channels=3", "model.net.in_channels=3 but the data has data.channels=1"),
    ("model.net.num_head_channels=3", "model.net.num_head_channels=3 does not divide the widths with attention [16]"),
    ("model.net.norm_num_groups=5", "model.net.norm_num_groups=5 does not divide every width in model.net.channels=[8, 16]"),
    ("trainer.precision=8", "trainer.precision=8 is not one of 64, 32, 16, transformer-engine"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0 must be > 0"),
])
def test_wrong_type_or_range_is_one_line(tmp_path, capsys, override, expect):
    line = train_error(capsys, tmp_path, [*phantom(2), override])
    assert expect in line
    assert not (tmp_path / "run").exists(), "refused before anything was written"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("override,expect", [
    ("trainer.accelerator=gpu", "trainer.accelerator=gpu (e.g. trainer=gpu or trainer=ddp) but no CUDA GPU is visible here: use trainer=cpu"),
    ("strategy=fsdp", "strategy=fsdp shards a model over GPUs but no CUDA GPU is visible here: use strategy=auto"),
    ("strategy=deepspeed_stage_2", "strategy=deepspeed shards a model over GPUs"),
])
def test_gpu_settings_without_a_gpu(tmp_path, capsys, override, expect):
    assert expect in train_error(capsys, tmp_path, [*phantom(2), override])


def test_refusals_through_the_entry_script_leave_no_run_dir(tmp_path):
    """The same checks, as a user meets them: one line, exit 2, and no outputs/ folder at all (the Hydra callback
    checks the composed config before Hydra makes the run dir)."""
    for override in ("trainer.max_steps=abc", "model.optimizer.lr=nan"):
        line = cli_error(run_script("train.py", ["data=phantom", override], cwd=tmp_path))
        assert override in line
    assert not (tmp_path / "outputs").exists()


def test_data_refused_after_the_run_dir_was_made_leaves_nothing_behind(tmp_path):
    """A refusal found while reading the data (after Hydra made the run dir): the dir and its records are removed."""
    line = cli_error(run_script("train.py", ["data=folder", f"data.root={tmp_path / 'nope'}", "data.channels=1"], cwd=tmp_path))
    assert "does not exist: point data.root" in line
    assert list((tmp_path / "outputs" / "train").glob("*")) == [], "a refused run leaves nothing that looks like a run"


def test_same_run_dir_for_two_runs_is_refused(tmp_path):
    run = tmp_path / "shared"
    args = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=8), "trainer.max_steps=2", "trainer.val_check_interval=2",
            "callbacks.sample_grid.n=0", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"]
    first = run_script("train.py", args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = snapshot(run)
    line = cli_error(run_script("train.py", [*args, "model.optimizer.lr=1e-3"], cwd=tmp_path))
    assert f"{run} already belongs to another run" in line and f"ckpt_path={run}" in line
    assert snapshot(run) == before, "the first run's files are left exactly as they were"


def test_edited_run_config_is_refused_with_one_line(runs, tmp_path, capsys):
    """A config.yaml edited by hand: a misspelled _target_, a value of the wrong type."""
    for edit, expect in [(("synth.models.DiffusionModule", "synth.models.DifusionModule"), "model._target_=synth.models.DifusionModule does not exist"),
                         (("max_steps: 2", "max_steps: two"), "trainer.max_steps=two is not a whole number")]:
        run = tmp_path / f"copy_{len(edit[1])}"
        shutil.copytree(runs["ddpm"], run)
        text = (run / "config.yaml").read_text()
        assert edit[0] in text
        (run / "config.yaml").write_text(text.replace(edit[0], edit[1]))
        line = one_line_error(capsys, generate, compose_generate(tmp_path / f"out_{len(edit[1])}", [f"run_dir={run}", "n=1"]))
        assert str(run / "config.yaml") in line and expect in line


def test_resume_with_a_checkpoint_of_another_architecture_is_one_line(runs, tmp_path, capsys):
    line = train_error(capsys, tmp_path, [*phantom(2, size=16, n=8), "model.net.channels=[8,8]", f"ckpt_path={runs['ddpm']}"])
    assert "does not fit the network of this run (model=ddpm)" in line and "use a checkpoint of the same architecture" in line
    line = train_error(capsys, tmp_path / "other", [*phantom(2, size=16, n=8), f"ckpt_path={runs['vae']}"])
    assert "holds a vae (autoencoder) model but this run (model=ddpm) is a ddpm (diffusion) run" in line


@pytest.mark.parametrize("override,expect", [("steps=0", "steps=0 must be a whole number >= 1"), ("n=0", "n=0 must be a whole number >= 1"),
                                             ("batch_size=-2", "batch_size=-2 must be a whole number >= 1"), ("guidance=abc", "guidance=abc must be a number")])
def test_generate_request_out_of_range(runs, tmp_path, capsys, override, expect):
    assert expect in one_line_error(capsys, generate, compose_generate(tmp_path / "out", [f"run_dir={runs['ddpm']}", override]))


def test_checkpoint_write_on_a_full_disk_is_one_line(tmp_path):
    """A file-size limit makes the checkpoint write fail as a full disk does (EFBIG / ENOSPC): one line, and no
    half-written file is left behind."""
    import resource
    import signal as _signal

    def limit():
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    args = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=8), "trainer.max_steps=2", "trainer.val_check_interval=2",
            "callbacks.sample_grid.n=0", "trainer.enable_progress_bar=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=600, preexec_fn=limit)
    line = cli_error(res)
    assert "while writing" in line and "last.ckpt" in line and "free space" in line
    ckpts = list(tmp_path.glob("outputs/train/*/checkpoints/*"))
    assert not any(".partial" in p.name for p in ckpts) and not any(p.name == "last.ckpt" for p in ckpts)


@pytest.mark.parametrize("model,args,expect", [
    ("vae", ["sampler=ddim"], "sampler=ddim: a vae model (autoencoder) draws each sample in one pass and takes no sampler settings"),
    ("vae", ["steps=5"], "steps=5: a vae model (autoencoder) draws each sample in one pass"),
    ("ddpm", ["guidance=2"], "guidance=2 steers a conditional model toward its class: this ddpm model is unconditional"),
])
def test_sampler_settings_a_model_does_not_take_are_refused(runs, tmp_path, capsys, model, args, expect):
    line = one_line_error(capsys, generate, compose_generate(tmp_path / "out", [f"run_dir={runs[model]}", "n=2", *args]))
    assert expect in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("sample_*"))


def test_nan_samples_are_refused_and_nothing_is_kept(runs, tmp_path, capsys):
    run = tmp_path / "nan_run"
    shutil.copytree(runs["ddpm"], run)
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for key, value in state["state_dict"].items():
        if key.startswith("ema.") and value.is_floating_point():
            value.fill_(float("nan"))
    torch.save(state, ckpt)
    out = tmp_path / "out"
    line = one_line_error(capsys, generate, compose_generate(out, [f"run_dir={run}", "n=3", "batch_size=1"]))
    assert "produced NaN/inf values" in line and "no sample was kept" in line
    assert not list(out.glob("sample_*")), "no NaN image is left as a sample"


def test_an_unreadable_file_says_permission_denied_not_corrupt(tmp_path, monkeypatch):
    """A file the user may not read gets the permissions fix, a damaged one the replace fix. chmod 000 cannot stop
    root (as CI runs), so when root the permission error comes from the OS call nibabel/PIL make."""
    import builtins

    from synth.data.readers import read_image

    nii, png = tmp_path / "a.nii.gz", tmp_path / "b.png"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), nii)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    for path in (nii, png):
        path.chmod(0)
        if os.geteuid() == 0:
            real_open = builtins.open

            def denied(file, *args, _path=path, **kwargs):
                if str(file) == str(_path):
                    raise PermissionError(13, "Permission denied", str(file))
                return real_open(file, *args, **kwargs)
            monkeypatch.setattr(builtins, "open", denied)
        with pytest.raises(SynthError, match=rf"cannot read .* {path}: permission denied; fix its permissions \(chmod u\+r"):
            read_image(path)
        monkeypatch.undo()
        path.chmod(0o644)
    nii.write_bytes(b"not a nifti at all")
    with pytest.raises(SynthError, match="replace or remove the corrupt file"):
        read_image(nii)


@pytest.mark.parametrize("space,expect", [
    ("model.optimizer.lr=interval(2e-3,1e-4)", "model.optimizer.lr has low 0.002 > high 0.0001"),
    ("model.optimizer.lr=tag(log,interval(0,1e-3))", "model.optimizer.lr is searched on a log scale, which needs low > 0"),
    ("model.optimizer.lr=choice(a,b)", "model.optimizer.lr is a number"),
])
def test_a_sweep_space_that_cannot_be_sampled_is_one_line(tmp_path, space, expect):
    line = cli_error(run_script("train.py", ["-m", "sweep=ddpm", *phantom(2, size=16, n=24), space], cwd=tmp_path))
    assert expect in line
    assert not list(tmp_path.glob("outputs/sweeps/*/[0-9]*_*")), "no trial ran"
