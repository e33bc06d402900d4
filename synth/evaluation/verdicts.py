"""One verdict from realism, diversity, sharpness and memorization together, decided from the 95 % intervals.

One number alone misleads: a VAE whose samples had no head outline scored FRD below real-vs-real, and only its
diversity (0.13 against 0.29 real) gave it away; a collapsed DCGAN had MS-SSIM 0.72 against 0.087 real. So:

  copies training images   the share of samples above the calibrated memorization threshold is, with its whole
                           interval, above the share expected of unseen real images (max(1 - quantile, 1 / (n_val + 1)))
  collapsed                mean pairwise MS-SSIM above R's (intervals apart) and over half-way from R's to 1 (over
                           90 % of the way when the set is blurry: blur alone raises MS-SSIM between distinct images)
  low diversity            above R's (intervals apart) by more than 10 % of the way to 1
  more varied than real    below R's (intervals apart) by more than 10 % of R's value: shared structure missing
  blurry / noisy           sharpness ratio below 0.8 / above 1.25 and its interval apart from real-vs-real's
  realism (always)         close to real: the FRD and RBF-MMD intervals reach real-vs-real's; far from real: FRD
                           at least half-way from real-vs-real to noise; otherwise between real and noise

`verdict(metrics)` returns (label, reasons): the label joins the problems found (or is the realism tier when
there are none); the reasons give the numbers behind each decision."""
from __future__ import annotations

import math


def _ci(row: dict, key: str) -> tuple[float, float, float]:
    """(value, lo, hi); nan bounds where there is no interval (too few images): no rule fires on a missing one."""
    v = row.get(key)
    v = float("nan") if v is None else float(v)
    ci = (row.get("ci") or {}).get(key) or [float("nan")] * 2
    return v, float(ci[0]), float(ci[1])


def copies(mem: dict) -> bool:
    """Whether the samples copy training images: the share above the calibrated threshold is, with its whole
    interval, above the share expected of unseen real images."""
    s = mem["synthetic"]
    expected = float((mem.get("calibration") or {}).get("expected_false_rate", 0.0))
    return (s.get("fraction_above_ci") or [s["fraction_above"]] * 2)[0] > expected


def _memorization(mem: dict | None, issues: list, reasons: list) -> None:
    if not mem:
        return
    s = mem["synthetic"]
    cal = mem.get("calibration") or {}
    expected = float(cal.get("expected_false_rate", 0.0))
    lo = (s.get("fraction_above_ci") or [s["fraction_above"]] * 2)[0]
    text = (f"{s['fraction_above']:.0%} of samples at or above the memorization threshold r = {mem['threshold']:.4f} "
            f"(interval {lo:.0%}-{(s.get('fraction_above_ci') or [0, s['fraction_above']])[1]:.0%}; unseen real images: about {expected:.0%}, "
            f"test split {mem['real_held_out']['fraction_above']:.0%})")
    if copies(mem):
        issues.append("copies training images")
        reasons.append("copies: " + text)
    else:
        reasons.append("no copying: " + text)


def _diversity(syn: dict, ref: dict, blurry: bool, issues: list, reasons: list) -> None:
    d, lo, hi = _ci(syn, "ms_ssim_diversity")
    r = float(ref.get("ms_ssim_diversity_real", float("nan")))
    r_lo, r_hi = ref.get("ms_ssim_diversity_real_ci") or [float("nan")] * 2
    if math.isnan(d) or math.isnan(r):
        return
    text = f"mean pairwise MS-SSIM {d:.3f} [{lo:.3f}, {hi:.3f}] vs real {r:.3f} [{r_lo:.3f}, {r_hi:.3f}] (1 = identical images)"
    if lo > r_hi and d >= r + (0.9 if blurry else 0.5) * (1 - r):
        issues.append("collapsed")
        reasons.append("collapsed: " + text)
    elif lo > r_hi and d - r >= 0.1 * (1 - r):
        issues.append("low diversity")
        reasons.append("low diversity: " + text)
    elif hi < r_lo and r - d >= 0.1 * r:
        issues.append("more varied than real")
        reasons.append("more varied than real (shared structure such as the anatomy outline missing?): " + text)
    else:
        reasons.append("diversity like real: " + text)


def _sharpness(syn: dict, rr: dict, issues: list, reasons: list) -> None:
    s, lo, hi = _ci(syn, "sharpness_ratio")
    _, r_lo, r_hi = _ci(rr, "sharpness_ratio")
    if math.isnan(s):
        return
    text = f"sharpness {s:.2f} [{lo:.2f}, {hi:.2f}] x the real reference's (real vs real [{r_lo:.2f}, {r_hi:.2f}])"
    if hi < r_lo and s < 0.8:
        issues.append("blurry")
        reasons.append("blurry: " + text)
    elif lo > r_hi and s > 1.25:
        issues.append("noisy")
        reasons.append("noisy: " + text)
    else:
        reasons.append("sharpness like real: " + text)


def _realism(syn: dict, rr: dict, nz: dict, issues: list, reasons: list) -> str:
    f, f_lo, f_hi = _ci(syn, "frd")
    r, _, r_hi = _ci(rr, "frd")
    n = float(nz.get("frd", float("nan")))
    m, m_lo, _ = _ci(syn, "mmd_rbf")
    _, _, mr_hi = _ci(rr, "mmd_rbf")
    dropped, count = int(syn.get("frd_dropped_images") or 0), int(syn.get("n") or 0)
    if dropped:
        reasons.append(f"FRD: radiomic features failed for {dropped} of {count} samples (left out of FRD)")
        if dropped * 2 >= count:
            issues.append("FRD unreliable")
    position = (f - r) / (n - r) if n > r else float("nan")
    text = (f"FRD {f:.3g} [{f_lo:.3g}, {f_hi:.3g}] vs real-vs-real {r:.3g} (upper {r_hi:.3g}), noise {n:.3g}; "
            f"RBF-MMD {m:.3g} (lower {m_lo:.3g}) vs real-vs-real upper {mr_hi:.3g}")
    if f_lo <= r_hi and (math.isnan(m_lo) or m_lo <= mr_hi):
        tier = "close to real"
    elif position >= 0.5:
        tier = "far from real"
    else:
        tier = "between real and noise"
    reasons.append(f"{tier}: {text}")
    return tier


def verdict(metrics: dict) -> tuple[str, list[str]]:
    """(label, reasons) for the synthetic row of an evaluation's metrics (metrics.json content)."""
    rows = metrics["rows"]
    syn = rows.get("synthetic")
    if syn is None:
        return "no samples", ["the model cannot sample on its own: only the reference rows were measured"]
    issues: list[str] = []
    reasons: list[str] = []
    _memorization(metrics.get("memorization"), issues, reasons)
    _sharpness(syn, rows["real_vs_real"], issues, reasons)
    _diversity(syn, metrics.get("reference") or {}, "blurry" in issues, issues, reasons)
    tier = _realism(syn, rows["real_vs_real"], rows["noise_vs_real"], issues, reasons)
    if not issues:
        return tier, reasons
    label = " / ".join(issues)
    return (label if tier == "close to real" else f"{label}; {tier}"), reasons
