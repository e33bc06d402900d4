"""What makes compare.md readable by a referee: which rows may be compared at all, ranks only where intervals
separate, and cells that show each number with its 95 % interval.

* `reference_groups`: rows are comparable only when they were scored against the same real reference set R
  (same data, split, images and size: metrics.json's reference fingerprint) with the same FRD feature space (its
  fingerprint). Each distinct combination gets a letter (column `ref_set`); rows without fingerprints (older
  evaluations) get '?'. Ranks are computed within a group only.
* `rank_by_interval`: rank = 1 + the number of runs in the group whose FRD interval lies wholly below this
  run's (clearly better); runs whose intervals overlap share a rank.
"""
from __future__ import annotations

import math
import string

# downstream= columns per arm: Dice (segmentation), accuracy and AUC (classification)
DOWNSTREAM = tuple(f"{m}_{arm}" for m in ("dice", "accuracy", "auc") for arm in ("real", "synthetic", "real_synthetic", "noise"))
INTERVAL_KEYS = ("frd", "frd_real_vs_real", "mmd_rbf", "ms_ssim_diversity", "ms_ssim_diversity_real", "sharpness_ratio",
                 "memorization_fraction", "recon_ssim", *DOWNSTREAM)
MARKDOWN_COLUMNS = [  # the markdown table keeps to these; compare.csv has every column
    "run", "family", "model", "data", "ref_set", "verdict", "frd", "frd_rank", "frd_real_vs_real", "frd_noise_vs_real", "frd_dropped",
    "mmd_rbf", "ms_ssim_diversity", "ms_ssim_diversity_real", "sharpness_ratio", "first_order_wasserstein", "recon_ssim",
    "memorization_fraction", *DOWNSTREAM, "seconds_per_sample", "device", "parameters", "train_seconds", "n_real", "status",
]


def reference_groups(df):
    """Adds `ref_set` (A, B, ... per distinct reference set and feature space; '?' without fingerprints)."""
    letters, out = {}, []
    for _, r in df.iterrows():
        if r.get("status") != "evaluated":
            out.append(None)
            continue
        ref, space = r.get("reference_fingerprint"), r.get("frd_space")
        if not isinstance(ref, str) or not isinstance(space, str):
            out.append("?")
            continue
        key = (r.get("data"), ref, space, r.get("n_real"))
        letters.setdefault(key, string.ascii_uppercase[len(letters) % 26])
        out.append(letters[key])
    df["ref_set"] = out
    return df


def rank_by_interval(df, key: str = "frd"):
    """Adds `<key>_rank` within each ref_set group (lower is better)."""
    ranks = [None] * len(df)
    for group in {g for g in df["ref_set"] if isinstance(g, str) and g != "?"}:
        idx = [i for i, g in enumerate(df["ref_set"]) if g == group]
        lo = [df[f"{key}_lo"].iloc[i] if f"{key}_lo" in df else float("nan") for i in idx]
        hi = [df[f"{key}_hi"].iloc[i] if f"{key}_hi" in df else float("nan") for i in idx]
        for a, i in enumerate(idx):
            if _nan(lo[a]):
                continue
            ranks[i] = 1 + sum(1 for b in range(len(idx)) if b != a and not _nan(hi[b]) and hi[b] < lo[a])
    df[f"{key}_rank"] = ranks
    return df


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def cell(v) -> str:
    if _nan(v):
        return "—"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 100:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(df) -> str:
    """The table: interval columns shown as 'value [lo, hi]'."""
    shown = [c for c in MARKDOWN_COLUMNS if c in df.columns]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, r in df.iterrows():
        cells = []
        for c in shown:
            text = cell(r[c])
            if c in INTERVAL_KEYS and not _nan(r.get(f"{c}_lo")) and text != "—":
                text += f" [{cell(r[f'{c}_lo'])}, {cell(r[f'{c}_hi'])}]"
            if c == "frd_rank" and text != "—":
                text = str(int(float(text)))
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(df) -> list[str]:
    """Warnings under the table: several reference sets, rows without fingerprints, FRD with dropped images."""
    out = []
    groups = sorted({g for g in df["ref_set"] if isinstance(g, str) and g != "?"})
    if len(groups) > 1:
        out.append(f"**These runs were scored against {len(groups)} different real reference sets or feature sets (ref_set "
                   f"{', '.join(groups)}): numbers are comparable only within one ref_set, and ranks are per ref_set.**")
    if (df["ref_set"] == "?").any():
        out.append("**ref_set ?: evaluated before reference fingerprints were recorded (against val + test, a pair-dependent "
                   "FRD feature set and no intervals): not comparable with the others and not ranked; re-evaluate them.**")
    if "frd_dropped" in df and (df["frd_dropped"].fillna(0) > 0).any():
        out.append("frd_dropped: samples whose radiomic features failed and were left out of that run's FRD.")
    return out
