"""Downstream segmentation (issue 18, parts D and E): the per-image scores on known cases, the four arms trained with
one seed and budget and tested on the real test split only, the report and compare rows; and, slow, the phantom
experiment: a ControlNet's lesions follow their masks, and real-trained beats noise-trained with separated intervals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONF, compose_train
from synth.data import SynthDataModule
from synth.data.sources import Phantom
from synth.errors import SynthError
from synth.evaluation.compare import flat_metrics
from synth.evaluation.downstream import ARMS, per_image, section, segmentation, summarize

CFG = {"channels": [8, 16], "steps": 12, "batch_size": 8, "lr": 3e-3}


def _phantom_pairs(n=16, size=16, seed=3):
    dm = SynthDataModule(Phantom([size, size], 2, channels=3, n_subjects=n, lesion_radius=(0.2, 0.3), seed=seed), spatial_dims=2,
                         channels=3, image_size=[size, size], masks=True, split=[0.5, 0.1, 0.4])
    dm.setup()
    return (dm.images("train"), dm.mask_items("train")), (dm.images("test"), dm.mask_items("test"))


def test_per_image_scores_on_known_cases():
    truth = torch.zeros(4, 1, 16, 16)
    truth[0, :, 2:8, 2:8] = 1
    truth[1, :, 8:12, 8:12] = 1  # images 2, 3: no lesion
    pred = truth.clone()
    pred[1] = 0  # missed lesion
    pred[3, :, 0:2, 0:2] = 1  # a false positive on a lesion-free image
    s = per_image(pred, truth)
    assert np.allclose(s["dice"], [1.0, 0.0]) and s["hd95"][0] == 0 and np.isnan(s["hd95"][1])
    assert s["false_positive"].tolist() == [False, True]
    out = summarize(s, n_boot=200, seed=0)
    assert out["dice"] == 0.5 and out["n_test_lesion"] == 2 and out["false_positive_rate"] == 0.5 and out["hd95_images"] == 1
    lo, hi = out["dice_ci"]
    assert 0 <= lo <= 0.5 <= hi <= 1


def test_arms_share_seed_and_budget_and_test_on_the_test_split():
    real, test = _phantom_pairs()
    d = segmentation(real, test, real, CFG, {"source": "train"}, seed=0, n_boot=100)
    assert list(d["arms"]) == list(ARMS) and d["budget"]["steps"] == 12 and d["budget"]["same_for_every_arm"]
    a = d["arms"]
    # the synthetic arm got the real pairs here: same data, same seed, same budget -> the very same network and scores
    assert a["synthetic"]["dice"] == a["real"]["dice"] and a["synthetic"]["dice_ci"] == a["real"]["dice_ci"]
    assert a["real+synthetic"]["n_train"] == 2 * a["real"]["n_train"] == 2 * len(real[0])
    n_lesion = int((test[1].flatten(1).sum(1) > 0).sum())
    assert all(v["n_test_lesion"] == n_lesion and v["n_test_lesion"] + v["n_test_healthy"] == len(test[0]) for v in a.values())
    # the report and compare.py's rows
    text = "\n".join(section(d))
    for arm in ARMS:
        assert f"| {arm} | {a[arm]['n_train']} |" in text
    assert "tested on the real **test** split only" in text
    flat = flat_metrics({"rows": {}, "downstream": d})
    assert flat["eval/dice_real"] == a["real"]["dice"] and "eval/dice_real_synthetic" in flat and "eval/dice_noise_lo" in flat


def test_downstream_needs_a_mask_conditioned_run(tmp_path):
    from synth.evaluation.run import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["samples=nowhere", "data=phantom", "downstream=segmentation", f"+output_dir={tmp_path / 'out'}"])
    with pytest.raises(SynthError, match="pass run_dir=<controlnet run>"):
        evaluate(cfg)


# ----- slow: the phantom experiment (the README table's numbers come from the same settings) -----------------------
EXPERIMENT_DATA = ["data=phantom", "data.spatial_dims=2", "data.image_size=[16,16]", "data.channels=3", "data.source.n_subjects=64",
                   "data.source.lesion_radius=[0.25,0.4]", "data.batch_size=16", "data.masks=true", "data.split=[0.5,0.1,0.4]"]
EXPERIMENT_STEPS = 400
FLAIR, LESION_THRESHOLD = 2, 0.5  # FLAIR: the lesion is the brightest tissue (1.0 vs grey matter 0.55 before scaling)


def _steps(n):
    return ["debug=default", "trainer.max_epochs=-1", f"trainer.max_steps={n}", "trainer.limit_val_batches=1", f"trainer.val_check_interval={n}",
            "trainer.check_val_every_n_epoch=null", "trainer.detect_anomaly=false", "callbacks.sample_grid.n=4", "trainer.enable_progress_bar=false"]


def train_experiment(root, steps=EXPERIMENT_STEPS):
    """A ddpm on 2D phantom slices with lesion masks, then a ControlNet on it (returns both run dirs)."""
    from synth.tasks import train

    net = ["model.net.channels=[16,32]", "model.net.attention_levels=[false,false]", "model.sampling_steps=20", "model.optimizer.lr=1e-3"]
    _, base = train(compose_train(root / "base", ["model=ddpm", *net, *EXPERIMENT_DATA, *_steps(steps)]))
    _, cn = train(compose_train(root / "cn", ["model=controlnet", f"model.base_run={base['run_dir']}", "model.sampling_steps=20",
                                              "model.optimizer.lr=1e-3", *EXPERIMENT_DATA, *_steps(steps)]))
    return base["run_dir"], cn["run_dir"]


def lesion_dice(images: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Per image: Dice between `masks` and the lesion segmented from the image by a FLAIR threshold."""
    seg = (images[:, FLAIR:FLAIR + 1] > LESION_THRESHOLD).float()
    inter = (seg * masks).flatten(1).sum(1)
    return (2 * inter / (seg.flatten(1).sum(1) + masks.flatten(1).sum(1)).clamp_min(1)).numpy()


def mask_following(run_dir, seed: int = 0) -> dict:
    """Samples for the test split's lesion masks: Dice with their own mask vs with another image's mask (shuffled),
    and the same threshold on the real test images (the ceiling of this segmentation)."""
    from hydra.utils import instantiate

    from synth.evaluation.bootstrap import draws, interval
    from synth.runs import load_run

    model, cfg = load_run(run_dir)
    dm = instantiate(cfg.data)
    dm.setup()
    images, masks = dm.images("test"), dm.mask_items("test")
    keep = masks.flatten(1).sum(1) > 0
    images, masks = images[keep], masks[keep]
    samples = model.sample(len(masks), condition=masks, generator=torch.Generator().manual_seed(seed), progress=False)
    shuffled = torch.roll(masks, 1, dims=0)
    rng = np.random.default_rng(seed)
    out = {"n": int(len(masks))}
    for name, d in (("given", lesion_dice(samples, masks)), ("shuffled", lesion_dice(samples, shuffled)), ("real", lesion_dice(images, masks))):
        out[name] = float(d.mean())
        out[f"{name}_ci"] = interval([d[i].mean() for i in draws(len(d), 500, rng)], float(d.mean()))
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return train_experiment(tmp_path_factory.mktemp("experiment"))


@pytest.mark.slow
def test_generated_lesions_follow_their_masks(experiment):
    r = mask_following(experiment[1])
    assert r["real"] > 0.7  # the threshold segments real lesions: the measure works
    assert r["given"] > r["shuffled"] + 0.2 and r["given_ci"][0] > r["shuffled_ci"][1], r


@pytest.mark.slow
def test_downstream_ranks_real_above_noise_and_reports_the_arms(experiment, tmp_path):
    from synth.evaluation.run import evaluate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"run_dir={experiment[1]}", "downstream=segmentation", f"+output_dir={tmp_path / 'out'}"])
    m = evaluate(cfg)
    out = Path(m["out_dir"])  # (Hydra's run dir when one is set, as under evaluate.py)
    d = json.loads((out / "metrics.json").read_text())["downstream"]
    assert d == json.loads(json.dumps(m["downstream"])) and d["mask_source"]["source"] == "train"
    real, noise = d["arms"]["real"], d["arms"]["noise"]
    assert d["real_above_noise"] and real["dice_ci"][0] > noise["dice_ci"][1], d["arms"]
    report = (out / "report.md").read_text()
    assert "## Does synthetic data help?" in report and all(f"| {arm} |" in report for arm in ARMS)
    from synth.evaluation.run import evaluate_run

    with pytest.raises(SynthError, match="draws no images for masks"):
        evaluate_run(experiment[0], out_dir=tmp_path / "out2", downstream={"task": "segmentation"})
