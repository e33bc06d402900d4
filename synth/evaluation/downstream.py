"""Does synthetic data help? `downstream=segmentation` (`downstream=classification`: downstream_classification.py,
which shares the arms defined here): a small MONAI UNet is trained four ways with the same seed,
steps, batch size and learning rate, and each is tested on the real TEST split only (never val, never train):

  real            the real training pairs (image, mask)
  synthetic       synthetic pairs: the model's images for masks drawn from the training split
  real+synthetic  both
  noise           the synthetic pairs' masks with uniform-noise images in [-1, 1]: the floor (nothing to learn)

Per arm: Dice (and HD95 in voxels, where both masks are non-empty) per test image that holds a lesion, their mean with
a 95 % bootstrap interval over test images (synth.evaluation.bootstrap), and the false-positive rate on lesion-free
test images. The network, its budget and the mask source are recorded with the numbers."""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from synth.errors import SynthError
from synth.evaluation.bootstrap import draws, interval, wilson

log = logging.getLogger(__name__)
ARMS = ("real", "synthetic", "real+synthetic", "noise")


def _net(spatial_dims: int, in_channels: int, cfg: dict) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, channels=tuple(cfg["channels"]),
                strides=tuple([2] * (len(cfg["channels"]) - 1)), num_res_units=int(cfg.get("num_res_units", 1)))


def fit(net: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, loss_fn, cfg: dict, seed: int,
        device: torch.device) -> torch.nn.Module:
    """cfg.steps Adam steps (lr cfg.lr) on random batches of cfg.batch_size, drawn by a generator seeded with `seed`:
    every arm sees the same schedule of draws. Returns the network in eval mode."""
    with torch.enable_grad():  # evaluate_run samples under no_grad
        opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
        g = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(int(cfg["steps"])):
            idx = torch.randint(0, len(images), (min(int(cfg["batch_size"]), len(images)),), generator=g)
            loss = loss_fn(net(images[idx].to(device)), targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def record(net: torch.nn.Module, name: str, loss: str, cfg: dict, seed: int) -> dict:
    """The `network` and `budget` entries of a downstream result: what was trained, and how long, for every arm."""
    return {"network": {"class": name, "channels": list(cfg["channels"]), "num_res_units": int(cfg.get("num_res_units", 1)),
                        "parameters": int(sum(p.numel() for p in net.parameters())), "loss": loss, "optimizer": "Adam"},
            "budget": {"steps": int(cfg["steps"]), "batch_size": int(cfg["batch_size"]), "lr": float(cfg["lr"]), "seed": int(seed),
                       "same_for_every_arm": True}}


def train_segmenter(images: torch.Tensor, masks: torch.Tensor, cfg: dict, seed: int, device: torch.device) -> torch.nn.Module:
    """A fresh UNet trained on (images, masks) for cfg.steps steps of cfg.batch_size (Dice + BCE loss, Adam)."""
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    return fit(_net(images.ndim - 2, images.shape[1], cfg).to(device), images, masks, DiceCELoss(sigmoid=True), cfg, seed, device)


@torch.no_grad()
def predict(net: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32) -> torch.Tensor:
    out = [(torch.sigmoid(net(images[i:i + batch_size].to(device))) > 0.5).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros_like(images[:, :1])


def per_image(pred: torch.Tensor, truth: torch.Tensor, hd95: bool = True) -> dict:
    """Dice and HD95 (voxels) per image with a lesion in `truth`; whether anything was predicted on lesion-free ones."""
    from monai.metrics import compute_dice, compute_hausdorff_distance

    has = truth.flatten(1).sum(1) > 0
    dice = compute_dice(pred[has], truth[has], include_background=True, ignore_empty=False).flatten().numpy() if has.any() else np.zeros(0)
    hd = np.full(len(dice), np.nan)
    if hd95 and has.any():
        both = (pred[has].flatten(1).sum(1) > 0).numpy()
        if both.any():
            hd[both] = compute_hausdorff_distance(pred[has][both], truth[has][both], include_background=True, percentile=95).flatten().numpy()
    fp = (pred[~has].flatten(1).sum(1) > 0).numpy()
    return {"dice": dice.astype(np.float64), "hd95": hd, "false_positive": fp}


def summarize(scores: dict, n_boot: int, seed: int) -> dict:
    """Mean Dice / HD95 with 95 % bootstrap intervals over test images; false-positive rate with its Wilson interval."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n_test_lesion": int(len(scores["dice"])), "n_test_healthy": int(len(scores["false_positive"]))}
    for key in ("dice", "hd95"):
        v = scores[key]
        ok = v[np.isfinite(v)]
        est = float(ok.mean()) if len(ok) else None
        out[key] = est
        out[f"{key}_ci"] = interval([np.nanmean(ok[i]) for i in draws(len(ok), n_boot, rng)], est) if len(ok) > 1 else None
    out["hd95_images"] = int(np.isfinite(scores["hd95"]).sum())
    k, n = int(scores["false_positive"].sum()), len(scores["false_positive"])
    out["false_positive_rate"] = k / n if n else None
    out["false_positive_rate_ci"] = wilson(k, n)
    return out


def separated(a: dict, b: dict, key: str = "dice") -> bool:
    """True when arm a's interval lies wholly above arm b's."""
    return bool(a.get(f"{key}_ci") and b.get(f"{key}_ci") and a[f"{key}_ci"][0] > b[f"{key}_ci"][1])


def arm_sets(real: tuple[torch.Tensor, torch.Tensor], synthetic: tuple[torch.Tensor, torch.Tensor], seed: int) -> dict:
    """The four arms' training sets of (images, targets): real, synthetic, real+synthetic, and noise (uniform-noise
    images in [-1, 1] with the synthetic targets)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(synthetic[0].shape, generator=g) * 2 - 1
    return {
        "real": real,
        "synthetic": synthetic,
        "real+synthetic": (torch.cat([real[0], synthetic[0]]), torch.cat([real[1], synthetic[1]])),
        "noise": (noise, synthetic[1]),
    }


def segmentation(
    real: tuple[torch.Tensor, torch.Tensor],       # real training pairs (images, masks)
    test: tuple[torch.Tensor, torch.Tensor],       # real TEST pairs
    synthetic: tuple[torch.Tensor, torch.Tensor],  # synthetic pairs (images for masks drawn from the training split)
    cfg: dict,                                     # conf/downstream/segmentation.yaml
    mask_source: dict,                             # where the synthetic pairs' masks came from
    seed: int = 0,
    n_boot: int = 500,
    device: str | torch.device = "cpu",
) -> dict:
    """Train the four arms with one seed and budget, test each on the real test split; the `downstream` section of
    metrics.json."""
    device = torch.device(device)
    if not len(test[0]) or not (test[1].flatten(1).sum(1) > 0).any():
        raise SynthError("downstream=segmentation: the test split holds no image with a lesion to score: add subjects or raise the test fraction of data.split")
    if not len(real[0]) or not len(synthetic[0]):
        raise SynthError("downstream=segmentation needs real training pairs and synthetic pairs: check data.split and downstream.n_synthetic")
    sets = arm_sets(real, synthetic, seed)
    arms = {}
    for name in ARMS:
        start = time.perf_counter()
        net = train_segmenter(*sets[name], cfg, seed, device)
        scores = per_image(predict(net, test[0], device), test[1], hd95=bool(cfg.get("hd95", True)))
        arms[name] = {**summarize(scores, n_boot, seed), "n_train": int(len(sets[name][0])), "seconds": round(time.perf_counter() - start, 2)}
        log.info("downstream %s: Dice %.3f on %d test images with lesions", name, arms[name]["dice"] or float("nan"), arms[name]["n_test_lesion"])
    return {
        "task": "segmentation",
        "tested_on": "test split (real images and masks only)",
        **record(_net(real[0].ndim - 2, real[0].shape[1], cfg), "monai.networks.nets.UNet", "DiceCELoss (sigmoid)", cfg, seed),
        "mask_source": mask_source,
        "arms": arms,
        "real_above_noise": separated(arms["real"], arms["noise"]),
        "synthetic_above_noise": separated(arms["synthetic"], arms["noise"]),
    }


def num(v, ci=None, f: str = "{:.3f}") -> str:
    """A report cell: the value and its interval, or a dash."""
    if v is None:
        return "—"
    return f.format(v) + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci else "")


def section(d: dict) -> list[str]:
    """report.md lines for metrics.json's `downstream` section (segmentation)."""
    b, nw, src = d["budget"], d["network"], d["mask_source"]
    lines = ["", "## Does synthetic data help? (downstream segmentation)", "",
             f"A {nw['class']} ({nw['parameters']:,} parameters, channels {nw['channels']}) trained {b['steps']} steps at batch "
             f"{b['batch_size']} (lr {b['lr']:g}, seed {b['seed']}, the same for every arm), tested on the real **test** split only. "
             f"Synthetic pairs: the model's images for masks from `{src.get('source')}`"
             + (f" ({src.get('with_lesion')} of {len(src.get('indices') or src.get('files') or [])} with a lesion)" if src.get("with_lesion") is not None else "") + ".",
             "", "| arm | train pairs | Dice (95 % CI) | HD95 voxels (95 % CI) | false-positive rate on lesion-free images |", "|---|---|---|---|---|"]
    for name, a in d["arms"].items():
        lines.append(f"| {name} | {a['n_train']} | {num(a['dice'], a.get('dice_ci'))} | {num(a['hd95'], a.get('hd95_ci'), '{:.2f}')} "
                     f"({a['hd95_images']} images) | {num(a['false_positive_rate'], a.get('false_positive_rate_ci'), '{:.2f}')} |")
    n = next(iter(d["arms"].values()))
    lines += ["", f"Dice is per test image with a lesion ({n['n_test_lesion']} images; {n['n_test_healthy']} lesion-free ones give the "
              f"false-positive rate). Real above noise with separated intervals: {'yes' if d['real_above_noise'] else 'no'}; "
              f"synthetic above noise: {'yes' if d['synthetic_above_noise'] else 'no'}.", ""]
    return lines
