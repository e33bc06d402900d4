"""Does synthetic data help a classifier? `downstream=classification` (a class-conditional run): a small MONAI
`Classifier` is trained four ways with the same seed, steps, batch size and learning rate, and each is tested on the
real TEST split only (never val, never train):

  real            the real training images with their labels
  synthetic       the model's images for the training split's labels (its class mix)
  real+synthetic  both
  noise           the synthetic labels with uniform-noise images in [-1, 1]: the floor (the images carry no class, so
                  whatever it learns is chance on real images: AUC about 0.5)

Per arm: accuracy (Wilson 95 % interval), balanced accuracy and ROC AUC (binary; macro one-vs-rest for more classes),
both with 95 % bootstrap intervals over test images (synth.evaluation.bootstrap). The network, its budget and where
the synthetic labels came from are recorded with the numbers (metrics.json `downstream`)."""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import torch

from synth.errors import SynthError
from synth.evaluation.bootstrap import draws, interval, wilson
from synth.evaluation.downstream import ARMS, arm_sets, fit, num, record, separated

log = logging.getLogger(__name__)


def _net(shape: tuple[int, ...], num_classes: int, cfg: dict) -> torch.nn.Module:
    from monai.networks.nets import Classifier

    return Classifier(in_shape=shape, classes=num_classes, channels=tuple(cfg["channels"]), strides=tuple([2] * len(cfg["channels"])),
                      num_res_units=int(cfg.get("num_res_units", 1)))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: dict, seed: int,
                     device: torch.device) -> torch.nn.Module:
    """A fresh classifier trained on (images, labels) for cfg.steps steps of cfg.batch_size (cross-entropy, Adam)."""
    torch.manual_seed(seed)
    net = _net(tuple(images.shape[1:]), num_classes, cfg).to(device)
    return fit(net, images, labels, torch.nn.functional.cross_entropy, cfg, seed, device)


@torch.no_grad()
def predict_proba(net: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32) -> np.ndarray:
    """(N, K) class probabilities."""
    out = [torch.softmax(net(images[i:i + batch_size].to(device)), 1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


def auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC: of the class-1 probability for two classes, macro one-vs-rest over the classes present for more
    (MONAI's compute_roc_auc); nan when the labels hold a single class."""
    from monai.metrics import compute_roc_auc

    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if probs.shape[1] == 2:
            return float(compute_roc_auc(torch.from_numpy(probs[:, 1]), torch.from_numpy(labels)))
        onehot = np.eye(probs.shape[1])[labels][:, present]
        return float(compute_roc_auc(torch.from_numpy(probs[:, present]), torch.from_numpy(onehot), average="macro"))


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present of the fraction of that class predicted right."""
    return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))


def summarize(probs: np.ndarray, labels: np.ndarray, n_boot: int, seed: int) -> dict:
    """Accuracy (Wilson interval), balanced accuracy and AUC (bootstrap intervals over test images)."""
    rng = np.random.default_rng(seed)
    pred = probs.argmax(1)
    k, n = int((pred == labels).sum()), len(labels)
    out: dict[str, Any] = {"n_test": n, "accuracy": k / n, "accuracy_ci": wilson(k, n)}
    idx = draws(n, n_boot, rng) if n > 1 else np.zeros((0, n), dtype=np.int64)
    for key, fn in (("balanced_accuracy", lambda i: balanced_accuracy(pred[i], labels[i])), ("auc", lambda i: auc(probs[i], labels[i]))):
        est = fn(np.arange(n))
        out[key] = est if np.isfinite(est) else None
        out[f"{key}_ci"] = interval([fn(i) for i in idx], est) if len(idx) else None
    out["predicted_counts"] = {int(c): int(v) for c, v in zip(*np.unique(pred, return_counts=True))}
    return out


def classification(
    real: tuple[torch.Tensor, torch.Tensor],       # real training images and labels
    test: tuple[torch.Tensor, torch.Tensor],       # real TEST images and labels
    synthetic: tuple[torch.Tensor, torch.Tensor],  # the model's images and the labels they were drawn for
    num_classes: int,
    cfg: dict,                                     # conf/downstream/classification.yaml
    label_source: dict,                            # where the synthetic labels came from
    class_names: list[str] | None = None,
    seed: int = 0,
    n_boot: int = 500,
    device: str | torch.device = "cpu",
) -> dict:
    """Train the four arms with one seed and budget, test each on the real test split; the `downstream` section of
    metrics.json."""
    device = torch.device(device)
    for name, (_, y) in (("test", test), ("training", real), ("synthetic", synthetic)):
        if not len(y):
            raise SynthError(f"downstream=classification: the {name} set is empty: check data.split and downstream.n_synthetic")
        if (y < 0).any() or (y >= num_classes).any():
            raise SynthError(f"downstream=classification: the {name} labels lie outside 0..{num_classes - 1} (or are missing): "
                             "evaluate a class-conditional run on data with class labels")
    if len(torch.unique(test[1])) < 2:
        raise SynthError("downstream=classification: the test split holds one class only, so nothing can be scored: "
                         "add subjects or raise the test fraction of data.split")
    sets = arm_sets(real, synthetic, seed)
    test_labels = test[1].numpy().astype(np.int64)
    arms = {}
    for name in ARMS:
        start = time.perf_counter()
        net = train_classifier(*sets[name], num_classes, cfg, seed, device)
        arms[name] = {**summarize(predict_proba(net, test[0], device), test_labels, n_boot, seed), "n_train": int(len(sets[name][0])),
                      "seconds": round(time.perf_counter() - start, 2)}
        log.info("downstream %s: accuracy %.3f, AUC %s on %d test images", name, arms[name]["accuracy"],
                 f"{arms[name]['auc']:.3f}" if arms[name]["auc"] is not None else "—", len(test_labels))
    return {
        "task": "classification",
        "tested_on": "test split (real images and labels only)",
        **record(_net(tuple(real[0].shape[1:]), num_classes, cfg), "monai.networks.nets.Classifier", "cross-entropy", cfg, seed),
        "label_source": label_source,
        "classes": list(class_names) if class_names else [str(c) for c in range(num_classes)],
        "test_class_counts": {int(c): int(v) for c, v in zip(*np.unique(test_labels, return_counts=True))},
        "arms": arms,
        "real_above_noise": separated(arms["real"], arms["noise"], "auc"),
        "synthetic_above_noise": separated(arms["synthetic"], arms["noise"], "auc"),
    }


def section(d: dict) -> list[str]:
    """report.md lines for metrics.json's `downstream` section (classification)."""
    b, nw, src = d["budget"], d["network"], d["label_source"]
    counts = ", ".join(f"{d['classes'][c] if c < len(d['classes']) else c}: {k}" for c, k in sorted(d["test_class_counts"].items()))
    lines = ["", "## Does synthetic data help? (downstream classification)", "",
             f"A {nw['class']} ({nw['parameters']:,} parameters, channels {nw['channels']}) trained {b['steps']} steps at batch "
             f"{b['batch_size']} (lr {b['lr']:g}, seed {b['seed']}, the same for every arm), tested on the real **test** split only "
             f"({counts}). Synthetic images: the model's samples for {src.get('source')}.",
             "", "| arm | train images | accuracy (95 % CI) | balanced accuracy (95 % CI) | AUC (95 % CI) |", "|---|---|---|---|---|"]
    for name, a in d["arms"].items():
        lines.append(f"| {name} | {a['n_train']} | {num(a['accuracy'], a.get('accuracy_ci'))} | "
                     f"{num(a['balanced_accuracy'], a.get('balanced_accuracy_ci'))} | {num(a['auc'], a.get('auc_ci'))} |")
    lines += ["", f"Real above noise (AUC intervals separated): {'yes' if d['real_above_noise'] else 'no'}; synthetic above noise: "
              f"{'yes' if d['synthetic_above_noise'] else 'no'}. The noise arm's images carry no class (its AUC is chance, about 0.5); "
              "compare accuracies with the test split's majority rate.", ""]
    return lines
