"""Downstream classification (issue 18, item 2): a classifier trained on real / synthetic / real+synthetic / noise
images with one seed and budget, tested on the real test split only; its scores on known cases, the report and
compare columns, and evaluate.py's wiring on a class-conditional run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY, compose_train, quick
from synth.errors import SynthError
from synth.evaluation.compare import flat_metrics
from synth.evaluation.downstream import ARMS
from synth.evaluation.downstream_classification import auc, balanced_accuracy, classification, section, summarize

CFG = {"channels": [8, 16], "steps": 40, "batch_size": 8, "lr": 3e-3}


def _two_classes(n_per_class: int, seed: int):
    """Phantom slices, class 1 brighter by a constant: a classifier separates them in a few steps."""
    from synth.data.phantom import make_phantom

    imgs, labels = [], []
    for c in (0, 1):
        for i in range(n_per_class):
            img = torch.from_numpy(make_phantom((16, 16), seed=seed * 1000 + c * 100 + i)["image"][:1]).float()
            imgs.append(img / img.abs().max().clamp_min(1e-6) * 0.5 + (0.4 if c else -0.4))
            labels.append(c)
    return torch.stack(imgs), torch.tensor(labels)


def test_scores_on_known_cases():
    labels = np.array([0, 0, 0, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    assert auc(probs, labels) == 1.0  # every class-1 probability of a 1 above every one of a 0
    assert balanced_accuracy(probs.argmax(1), labels) == pytest.approx((2 / 3 + 1) / 2)
    out = summarize(probs, labels, n_boot=200, seed=0)
    assert out["accuracy"] == 0.75 and out["n_test"] == 4 and out["predicted_counts"] == {0: 2, 1: 2}
    lo, hi = out["accuracy_ci"]
    assert 0 < lo < 0.75 < hi <= 1
    three = np.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.1  # three classes, all right: macro one-vs-rest AUC 1
    assert auc(three, np.array([0, 1, 2, 2])) == 1.0 and np.isnan(auc(three, np.array([1, 1, 1, 1])))


def test_arms_share_seed_and_budget_and_real_beats_noise():
    real, test = _two_classes(16, seed=0), _two_classes(12, seed=1)
    d = classification(real, test, real, 2, CFG, {"source": "test"}, class_names=["dark", "bright"], seed=0, n_boot=200)
    a = d["arms"]
    assert list(a) == list(ARMS) and d["budget"]["same_for_every_arm"] and d["test_class_counts"] == {0: 12, 1: 12}
    # the synthetic arm got the real images here: same data, seed and budget -> the same network and scores
    assert a["synthetic"]["accuracy"] == a["real"]["accuracy"] and a["synthetic"]["auc_ci"] == a["real"]["auc_ci"]
    assert a["real"]["accuracy"] > 0.9 and a["real"]["auc"] > 0.95
    assert d["real_above_noise"] and a["noise"]["auc_ci"][1] < a["real"]["auc_ci"][0], a["noise"]
    assert a["real+synthetic"]["n_train"] == 2 * a["real"]["n_train"] == 64 and all(v["n_test"] == 24 for v in a.values())
    text = "\n".join(section(d))
    assert "downstream classification" in text and "tested on the real **test** split only (dark: 12, bright: 12)" in text
    for arm in ARMS:
        assert f"| {arm} | {a[arm]['n_train']} |" in text
    flat = flat_metrics({"rows": {}, "downstream": d})
    assert flat["eval/accuracy_real"] == a["real"]["accuracy"] and flat["eval/auc_noise_lo"] == a["noise"]["auc_ci"][0]
    assert "eval/auc_real_synthetic" in flat and not any(k.startswith("eval/dice") for k in flat)


def test_refusals():
    real, test = _two_classes(4, seed=0), _two_classes(4, seed=1)
    one_class = (test[0][:4], test[1][:4])
    with pytest.raises(SynthError, match="test split holds one class only"):
        classification(real, one_class, real, 2, CFG, {})
    with pytest.raises(SynthError, match="labels lie outside 0..1"):
        classification(real, test, (real[0], real[1] + 1), 2, CFG, {})


def test_evaluate_a_class_conditional_run(tmp_path, dark_and_bright):
    """evaluate_run(downstream=classification) on a (briefly trained) conditional GAN: samples drawn for the training
    split's labels, four arms tested on the test split, the report section and metrics.json; an unconditional run is
    refused with one line."""
    from synth.evaluation import evaluate_run
    from synth.evaluation.reference import splits_from_datamodule
    from synth.tasks import train

    data = ["data=folder", f"data.root={dark_and_bright}", "data.source.label_from_subdir=true", "data.channels=1",
            "data.image_size=[16,16]", "data.batch_size=8", "data.split=[0.5,0.25,0.25]"]
    cfg = compose_train(tmp_path / "c", ["model=dcgan", *TINY["dcgan"], "model.num_classes=2", *data, *quick(2)])
    _, objs = train(cfg)
    ds = {"task": "classification", "n_synthetic": None, "channels": [8, 16], "num_res_units": 1, "steps": 30, "batch_size": 8, "lr": 3e-3}
    m = evaluate_run(objs["run_dir"], seed=0, n_boot=100, downstream=ds)
    d = m["downstream"]
    train_labels = splits_from_datamodule(objs["datamodule"])["train"][1].tolist()
    assert d["task"] == "classification" and d["arms"]["synthetic"]["n_train"] == len(train_labels) == 24
    assert d["label_source"]["class_counts"] == {c: train_labels.count(c) for c in set(train_labels)}  # the training mix
    assert sum(d["test_class_counts"].values()) == d["arms"]["real"]["n_test"] == 12
    assert d["arms"]["real"]["auc"] > 0.9 and d["real_above_noise"], d["arms"]  # dark vs bright: trivially learned from real images
    run_eval = next((objs["run_dir"] / "eval").iterdir())
    assert "downstream classification" in (run_eval / "report.md").read_text()
    assert json.loads((run_eval / "metrics.json").read_text())["downstream"]["arms"]["noise"]["n_train"] == 24
    plain = compose_train(tmp_path / "u", ["model=dcgan", *TINY["dcgan"], *data, *quick(2)])
    _, objs = train(plain)
    with pytest.raises(SynthError, match="is not class-conditional"):
        evaluate_run(objs["run_dir"], seed=0, n_boot=50, downstream=ds)


@pytest.mark.slow
def test_a_trained_conditional_model_teaches_a_classifier(tmp_path, dark_and_bright):
    """The experiment: a conditional StyleGAN2 trained on dark/bright slices (its samples follow their class,
    tests/test_gan.py); a classifier trained on its samples alone scores well above the noise arm on the real test
    split, with separated intervals (the README's classification table comes from these settings)."""
    from synth.evaluation import evaluate_run
    from synth.tasks import train

    data = ["data=folder", f"data.root={dark_and_bright}", "data.source.label_from_subdir=true", "data.channels=1",
            "data.image_size=[32,32]", "data.batch_size=8", "data.split=[0.5,0.25,0.25]"]
    _, objs = train(compose_train(tmp_path, ["model=stylegan2", *TINY["stylegan2"], "model.num_classes=2", *data, *quick(250), "seed=0"]))
    ds = {"task": "classification", "n_synthetic": 48, "channels": [8, 16, 32], "num_res_units": 1, "steps": 150, "batch_size": 16, "lr": 3e-3}
    d = evaluate_run(objs["run_dir"], seed=0, n_boot=500, downstream=ds)["downstream"]
    a = d["arms"]
    print(json.dumps({k: {m: v[m] for m in ("accuracy", "accuracy_ci", "auc", "auc_ci", "n_train")} for k, v in a.items()}))
    assert d["real_above_noise"] and d["synthetic_above_noise"], a
    assert a["synthetic"]["accuracy"] > 0.75 and a["synthetic"]["n_train"] == 48
