"""Downstream segmentation (issue 18, parts D and E): the per-image scores on known cases, the four arms trained with
one seed and budget and tested on the real test split only, the report and compare rows; and, slow, the phantom
experiment: a ControlNet's lesions follow their masks, and real-trained beats noise-trained with separated intervals."""
from __future__ import annotations

import json

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
