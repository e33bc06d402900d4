"""evaluate.py on phantom data: reference rows give the scale, a briefly trained model lies between them, the
memorization audit flags copies, samples=/data= mode, 3D, and one-line errors."""
import json
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from synth.errors import SynthError
from synth.evaluation import evaluate_run, evaluate_samples, flat_metrics
from synth.evaluation.run import ROW_METRICS
from synth.io import save_nifti
from synth.tasks import train
from tests.conftest import CONF, TINY, compose_train, phantom, quick, run_script

DATA = [*phantom(2, size=16, n=48), "data.split=[0.5,0.25,0.25]"]  # 24 training, 24 held-out 16x16 slices


def _data_cfg(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=overrides).data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE after 4 steps: enough for files, layout and the reference rows (which need no good model)."""
    cfg = compose_train(tmp_path_factory.mktemp("vae"), ["model=vae", *TINY["vae"], *DATA, *quick(4)])
    _, objs = train(cfg)
    return objs["run_dir"]


@pytest.fixture(scope="module")
def evaluated(trained):
    return evaluate_run(trained, n=16, max_images=12, seed=0)


def test_reference_rows_give_the_scale(evaluated):
    rows = evaluated["rows"]
    assert evaluated["n_real"] == 12 and all(rows[r]["n"] == 12 for r in rows), "every row compares the same number of images"
    for key in ROW_METRICS:
        assert rows["real_vs_real"][key] < rows["noise_vs_real"][key], f"{key}: real-vs-real must be below noise-vs-real"


@pytest.mark.slow  # ~13 s alone on 2 cores, several times that beside other jobs
def test_briefly_trained_model_lies_between_on_frd(tmp_path):
    """Rectified flow, 100 seeded steps on 24 phantom slices: its samples are rough but already more brain-like
    than noise. (A VAE trained as briefly is blurry, and blur scores worse than noise on FRD's texture features.)"""
    cfg = compose_train(tmp_path, ["model=rflow", *TINY["rflow"], *DATA, *quick(100), "model.optimizer.lr=2e-3"])
    _, objs = train(cfg)
    rows = evaluate_run(objs["run_dir"], seed=0)["rows"]
    assert rows["real_vs_real"]["frd"] < rows["synthetic"]["frd"] < rows["noise_vs_real"]["frd"], {r: v["frd"] for r, v in rows.items()}
    assert rows["real_vs_real"]["mmd"] < rows["synthetic"]["mmd"] < rows["noise_vs_real"]["mmd"]


def test_files_layout_and_report(evaluated, trained):
    out = trained / "eval"
    (eval_dir,) = list(out.iterdir())
    assert evaluated["out_dir"] == str(eval_dir)
    on_disk = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("run_dir", "model", "family", "data", "spatial_dims", "image_shape", "n_real", "n_samples", "rows",
                "reconstruction", "memorization", "cost", "features"):
        assert key in on_disk
    assert on_disk["model"] == "vae" and on_disk["family"] == "autoencoder" and on_disk["image_shape"] == [1, 16, 16]
    assert len(list((eval_dir / "samples").glob("sample_*.nii.gz"))) == on_disk["n_samples"] == 16
    for png in ("samples.png", "real.png", "features.png", "nearest_pairs.png", "memorization.png"):
        assert (eval_dir / png).stat().st_size > 1000, png
    report = (eval_dir / "report.md").read_text()
    assert "lower is better" in report and "real vs real" in report and "![closest pairs](nearest_pairs.png)" in report
    cost = on_disk["cost"]
    assert cost["seconds_per_sample"] > 0 and cost["batch_size"] == 16 and cost["device"] == "cpu"
    assert cost["parameters"] > 1000 and cost["train_seconds"] > 0 and cost["peak_memory_mb"] > 0
    recon = on_disk["reconstruction"]
    assert recon["noise_reference"]["ssim"] < recon["ssim"] <= 1 and recon["mae"] < recon["noise_reference"]["mae"]
    assert recon["split"] == "test" and recon["n"] == 12 and recon["ci"]["ssim"][0] <= recon["ssim"] <= recon["ci"]["ssim"][1]
    assert on_disk["reference"]["split"] == "test" and on_disk["verdict"]["label"] in report and "## Verdict:" in report
    feats = on_disk["features"]["synthetic"]
    assert {"Mean", "Entropy", "Skewness"} <= set(feats) and all(0 <= v["ks"] <= 1 for v in feats.values())
    flat = flat_metrics(on_disk)
    assert flat["eval/frd"] == on_disk["rows"]["synthetic"]["frd"] and "eval/frd_real_vs_real" in flat and "eval/recon_ssim" in flat
    assert all(isinstance(v, float) for v in flat.values())


def test_a_second_evaluation_never_overwrites(evaluated, trained):
    with pytest.raises(SynthError, match="already holds an evaluation"):
        evaluate_run(trained, out_dir=evaluated["out_dir"])


def test_memorization_audit_flags_verbatim_copies(tmp_path):
    """'Samples' that are training images verbatim are flagged; noise and real held-out images are not."""
    from hydra.utils import instantiate

    data = _data_cfg(DATA)
    dm = instantiate(data)
    copies = dm.images("train").numpy()
    for i, img in enumerate(copies):
        save_nifti(img, tmp_path / "copies" / f"sample_{i:05d}.nii.gz", np.eye(4))
    m = evaluate_samples(tmp_path / "copies", data, tmp_path / "eval", max_images=12)
    mem = m["memorization"]
    assert mem["synthetic"]["fraction_above"] == 1.0 and mem["synthetic"]["mean"] > 0.999
    assert mem["noise"]["fraction_above"] == 0.0 and mem["real_held_out"]["fraction_above"] < 0.5
    assert mem["calibration"]["split"] == "val" and mem["calibration"]["n"] == 12 and mem["threshold"] < 1
    assert m["verdict"]["label"].startswith("copies training images")
    assert m["family"] == "samples" and m["cost"]["parameters"] is None and (tmp_path / "eval" / "nearest_pairs.png").is_file()
    # copies of real images look real: their FRD is at the real-vs-real scale, far from noise
    rows = m["rows"]
    assert rows["synthetic"]["frd"] < rows["noise_vs_real"]["frd"]


def test_3d_run(tmp_path):
    cfg = compose_train(tmp_path, ["model=vae", *TINY["vae"], *phantom(3, size=8, n=16), "data.split=[0.5,0.25,0.25]", *quick(2)])
    _, objs = train(cfg)
    m = evaluate_run(objs["run_dir"], n=4, max_images=4, seed=1)
    assert torch.is_grad_enabled()  # evaluation turns gradients off for itself only (not for a next job in-process)
    assert m["spatial_dims"] == 3 and m["image_shape"] == [1, 8, 8, 8] and m["n_real"] == 4
    for row in m["rows"].values():
        assert all(math.isfinite(row[k]) for k in ROW_METRICS)
    assert m["rows"]["real_vs_real"]["frd"] < m["rows"]["noise_vs_real"]["frd"]
    out = objs["run_dir"] / "eval"
    (eval_dir,) = list(out.iterdir())
    assert (eval_dir / "samples.png").is_file() and (eval_dir / "report.md").read_text().count("mid axial slices") == 1


def test_errors_are_one_line(tmp_path, trained):
    import shutil

    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(trained / "config.yaml", no_ckpt / "config.yaml")
    with pytest.raises(SynthError, match="no last checkpoint"):
        evaluate_run(no_ckpt)
    data = _data_cfg(DATA)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthError, match="holds no NIfTI/PNG images"):
        evaluate_samples(tmp_path / "empty", data, tmp_path / "e1")
    save_nifti(np.zeros((1, 32, 32), np.float32), tmp_path / "big" / "sample_00000.nii.gz", np.eye(4))
    with pytest.raises(SynthError, match=r"shape \[1, 32, 32\].*real data has \[1, 16, 16\]"):
        evaluate_samples(tmp_path / "big", data, tmp_path / "e2")
    save_nifti(np.full((1, 16, 16), 300.0, np.float32), tmp_path / "raw" / "sample_00000.nii.gz", np.eye(4))
    with pytest.raises(SynthError, match="normalize_samples=true"):
        evaluate_samples(tmp_path / "raw", data, tmp_path / "e3")


@pytest.mark.parametrize(
    "args,expect",
    [
        ([], "nothing to evaluate"),
        (["samples=nowhere"], "needs the real data to compare with: add data="),
        (["samples=nowhere", "real=phantom"], "data=phantom"),
        (["samples=nowhere", "data=phantom"], "samples=nowhere is not a folder"),
        (["run_dir=x", "data=phantom"], "drop data="),
        (["samples=nowhere", "data=phantom", "+memorization.threshold=0.95"], "memorization.threshold is no longer fixed"),
    ],
)
def test_task_refuses_bad_arguments(tmp_path, args, expect):
    from synth.evaluation.run import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[*args, f"+output_dir={tmp_path / 'out'}"])
    with pytest.raises(SynthError, match=expect):
        evaluate(cfg)


@pytest.mark.parametrize("args,expect", [(["samples=nowhere", "real=phantom"], "data=phantom"), (["run_dir=nowhere"], "not a synth run dir")])
def test_cli_errors_are_one_line(tmp_path, args, expect):
    res = run_script("evaluate.py", args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert expect in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_samples_mode(tmp_path, trained):
    """evaluate.py samples=<what generate.py wrote> data=phantom ...: no model, output under outputs/evaluate/."""
    folder = next((trained / "eval").glob("*/samples"))
    res = run_script("evaluate.py", [f"samples={folder}", *DATA, "max_images=6"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (out,) = list((tmp_path / "outputs" / "evaluate").iterdir())
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_real"] == 6 and m["cost"]["seconds_per_sample"] > 0, "cost read from the folder's samples.json"
    assert (out / "report.md").is_file() and "FRD" in res.stdout and "verdict: " in res.stdout and "test split" in res.stdout
