"""Comparing evaluated runs: flat metric names (`flat_metrics`, also what loggers get), finding a run's latest
evaluation, and `compare_runs` -> one table (compare.md, compare.csv) and realism_vs_speed.png, with intervals,
reference-set groups and interval-based ranks (compare_table.py). Runs without an evaluation are listed with the
command that evaluates them (or evaluated first with evaluate_missing)."""
from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from synth.errors import SynthError
from synth.evaluation.compare_table import markdown, notes, rank_by_interval, reference_groups
from synth.evaluation.scoring import CI_METRICS as ROW_KEYS  # the row metrics, named once (scoring.py)
SUFFIX = {"synthetic": "", "real_vs_real": "_real_vs_real", "noise_vs_real": "_noise_vs_real"}
COLUMNS = [
    "run", "family", "model", "data", "ref_set", "verdict", "frd", "frd_lo", "frd_hi", "frd_rank", "frd_real_vs_real", "frd_noise_vs_real",
    "frd_dropped", "mmd_rbf", "mmd", "first_order_wasserstein", "first_order_ks", "diversity_gap", "ms_ssim_diversity", "ms_ssim_diversity_real",
    "sharpness_ratio", "recon_ssim", "recon_psnr", "memorization_fraction", "seconds_per_sample", "batch_size", "device", "parameters",
    "train_seconds", "n_real", "split", "reference_fingerprint", "frd_space", "status", "path",
]


def flat_metrics(metrics: dict, prefix: str = "eval/") -> dict[str, float]:
    """metrics.json -> {"eval/frd": .., "eval/frd_lo": .., "eval/frd_real_vs_real": .., "eval/recon_ssim": .., ...}
    (numbers only; `_lo` / `_hi`: the 95 % interval)."""
    out: dict[str, Any] = {}

    def put(name: str, value, ci=None) -> None:
        out[name] = value
        if ci:
            out[f"{name}_lo"], out[f"{name}_hi"] = ci

    for row, suffix in SUFFIX.items():
        r = metrics["rows"].get(row) or {}
        for key in ROW_KEYS:
            put(f"{key}{suffix}", r.get(key), (r.get("ci") or {}).get(key))
        out[f"frd_dropped{suffix}"] = r.get("frd_dropped_images")
    ref = metrics.get("reference", {})
    put("ms_ssim_diversity_real", ref.get("ms_ssim_diversity_real"), ref.get("ms_ssim_diversity_real_ci"))
    recon = metrics.get("reconstruction") or {}
    for key in ("ssim", "psnr", "mae"):
        put(f"recon_{key}", recon.get(key), (recon.get("ci") or {}).get(key))
    mem = metrics.get("memorization") or {}
    syn = mem.get("synthetic") or {}
    put("memorization_fraction", syn.get("fraction_above"), syn.get("fraction_above_ci"))
    out["memorization_mean"] = syn.get("mean")
    out["memorization_fraction_real_held_out"] = (mem.get("real_held_out") or {}).get("fraction_above")
    out["memorization_threshold"] = mem.get("threshold")
    for key in ("seconds_per_sample", "parameters", "peak_memory_mb", "train_seconds"):
        out[key] = (metrics.get("cost") or {}).get(key)
    out["n_real"], out["n_samples"] = metrics.get("n_real"), metrics.get("n_samples")
    for arm, a in ((metrics.get("downstream") or {}).get("arms") or {}).items():  # downstream=: Dice, or accuracy and AUC, per arm
        for key in ("dice", "accuracy", "auc"):
            if key in a:
                put(f"{key}_{arm.replace('+', '_')}", a.get(key), a.get(f"{key}_ci"))
    return {f"{prefix}{k}": float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def find_metrics(path: Path) -> Path | None:
    """The metrics.json of an eval dir, or the newest <run>/eval/<time>/metrics.json of a run dir."""
    path = Path(path)
    if (path / "metrics.json").is_file():
        return path / "metrics.json"
    # newest by the time it was written: names sort wrongly ("after_training" after every "<date>_<time>")
    found = sorted((path / "eval").glob("*/metrics.json"), key=lambda p: (p.stat().st_mtime, p.parent.name))
    return found[-1] if found else None


def expand_runs(runs: Any) -> list[Path]:
    """A multirun dir (its run subdirs), a run or eval dir, a glob, or a list of any of these."""
    if isinstance(runs, (ListConfig, DictConfig)):
        runs = OmegaConf.to_container(runs)
    items = runs if isinstance(runs, (list, tuple)) else [runs]
    out: list[Path] = []
    for item in items:
        text = str(item)
        paths = [Path(p) for p in sorted(glob.glob(text))] if any(c in text for c in "*?[") else [Path(text)]
        for p in paths:
            if not p.is_dir():
                raise SynthError(f"runs: {p} is not a folder: pass a multirun dir, run dirs, or a glob such as 'outputs/train/*'")
            if (p / "config.yaml").is_file() or (p / "metrics.json").is_file():
                out.append(p)
            else:
                out += sorted(c for c in p.iterdir() if c.is_dir() and ((c / "config.yaml").is_file() or (c / "metrics.json").is_file()))
    if not out:
        raise SynthError(f"runs={runs} holds no run dirs (config.yaml) or evaluations (metrics.json): pass the dir of a multirun or a list of run dirs")
    return list(dict.fromkeys(p.resolve() for p in out))


def _run_info(run: Path) -> dict:
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").is_file() else {}
    if not info and (run / "config.yaml").is_file():
        cfg = OmegaConf.load(run / "config.yaml")
        info = {"model": cfg.model.get("name"), "family": cfg.model.get("family"), "data": cfg.data.get("name")}
    return info


def _row(run: Path, metrics_path: Path | None) -> dict:
    if metrics_path is None:
        info = _run_info(run)
        return {"run": run.name, "family": info.get("family"), "model": info.get("model"), "data": info.get("data"),
                "parameters": info.get("parameters"), "train_seconds": info.get("train_seconds"),
                "status": f"not evaluated: python evaluate.py run_dir={run}", "path": str(run)}
    m = json.loads(metrics_path.read_text())
    flat = {k.removeprefix("eval/"): v for k, v in flat_metrics(m).items()}
    name = Path(m["run_dir"]).name if m.get("run_dir") else run.name
    cost, ref = m.get("cost") or {}, m.get("reference") or {}
    return {**flat, "run": name, "family": m.get("family"), "model": m.get("model"), "data": m.get("data"),
            "verdict": (m.get("verdict") or {}).get("label"), "frd_dropped": flat.get("frd_dropped"),
            "split": ref.get("split", "val + test"), "reference_fingerprint": ref.get("fingerprint"), "frd_space": (m.get("frd") or {}).get("fingerprint"),
            "batch_size": cost.get("batch_size"), "device": cost.get("device"), "status": "evaluated", "path": str(metrics_path.parent)}


def _plot(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["frd"].notna() & df["seconds_per_sample"].notna()] if "frd" in df and "seconds_per_sample" in df else df.iloc[0:0]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {"diffusion": "tab:blue", "gan": "tab:red", "autoencoder": "tab:green"}
    for _, r in ok.iterrows():
        ax.scatter(r["seconds_per_sample"], r["frd"], color=colors.get(r["family"], "tab:gray"), s=30, zorder=3)
        if "frd_lo" in r and r["frd_lo"] == r["frd_lo"]:
            ax.errorbar(r["seconds_per_sample"], r["frd"], yerr=[[r["frd"] - r["frd_lo"]], [r["frd_hi"] - r["frd"]]],
                        color=colors.get(r["family"], "tab:gray"), capsize=2, linewidth=0.8, zorder=2)
        ax.annotate(f"{r['model']} ({r['run'][-24:]})", (r["seconds_per_sample"], r["frd"]), fontsize=6, xytext=(4, 3), textcoords="offset points")
    for (data, key), style in zip([(d, k) for d in ok["data"].dropna().unique() for k in ("frd_real_vs_real", "frd_noise_vs_real")], ["--", ":"] * 99):
        vals = ok.loc[ok["data"] == data, key].dropna()
        if len(vals):
            ax.axhline(float(vals.median()), linestyle=style, color="k", linewidth=0.8,
                       label=f"{key.removeprefix('frd_').replace('_', ' ')} ({data})")
    for fam, c in colors.items():
        if fam in set(ok["family"]):
            ax.scatter([], [], color=c, label=fam)
    if len(ok):
        ax.set_xscale("log")
    ax.set_xlabel("seconds per sample (log)")
    ax.set_ylabel("FRD (lower is more realistic; bars: 95 % interval)")
    ax.set_title("realism vs sampling speed" + ("" if len(ok) else " (no evaluated runs)"), fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_runs(run_dirs: list[Path], out_dir: Path, evaluate_missing: bool = False, **eval_kwargs: Any):
    """One row per run (its newest evaluation): writes compare.md, compare.csv, realism_vs_speed.png into
    `out_dir` and returns the table as a pandas DataFrame."""
    import pandas as pd

    out_dir = Path(out_dir)
    if (out_dir / "compare.csv").exists():
        raise SynthError(f"{out_dir} already holds a comparison: it is never overwritten, pick another out_dir")
    rows = []
    for run in (Path(r) for r in run_dirs):
        metrics_path = find_metrics(run)
        if metrics_path is None and evaluate_missing and (run / "config.yaml").is_file():
            from synth.evaluation.run import evaluate_run

            metrics_path = Path(evaluate_run(run, **eval_kwargs)["out_dir"]) / "metrics.json"
        rows.append(_row(run, metrics_path))
    df = rank_by_interval(reference_groups(pd.DataFrame(rows)))
    df = df[[c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]]
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "compare.csv", index=False)
    missing = df[df["status"] != "evaluated"]
    text = [
        "# Comparison of runs",
        "",
        "Each run is scored against the real **test split** of its data (the reference set R); `_real_vs_real` and `_noise_vs_real` "
        "give the scale (a good model sits near real-vs-real). Brackets are 95 % bootstrap intervals over images: **a difference "
        "between two runs is real only where their intervals do not overlap**. `frd_rank` = 1 + the number of runs in the same "
        "`ref_set` whose FRD interval lies wholly below this run's: runs that share a rank cannot be told apart. `ref_set` groups "
        "runs scored against the same real images with the same FRD feature set; numbers in different groups are not comparable. "
        "`verdict` combines realism, diversity, sharpness and memorization (see each report.md). `ms_ssim_diversity` is best near "
        "`ms_ssim_diversity_real`, `sharpness_ratio` near 1. `memorization_fraction`: samples above the memorization threshold "
        "calibrated on the val split. Seconds per sample are only comparable between rows with the same device. compare.csv holds "
        "every metric and interval bound.",
        "",
        *[f"{n}" + "\n" for n in notes(df)],
        markdown(df),
        "",
        "![realism vs speed](realism_vs_speed.png)",
        "",
    ]
    if len(missing):
        text += ["Runs without an evaluation (run these, or compare with evaluate_missing=true):", ""]
        text += [f"- `{s.removeprefix('not evaluated: ')}`" for s in missing["status"]] + [""]
    (out_dir / "compare.md").write_text("\n".join(text))
    _plot(df, out_dir / "realism_vs_speed.png")
    return df


def compare(cfg: DictConfig):
    """The compare.py task: `runs=<multirun dir | [run, run, ...] | 'outputs/train/*'>`."""
    from hydra.core.hydra_config import HydraConfig

    out_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    eval_kwargs = {"n": cfg.evaluate.n, "batch_size": int(cfg.evaluate.batch_size), "device": str(cfg.evaluate.device), "seed": int(cfg.evaluate.seed)}
    df = compare_runs(expand_runs(cfg.runs), out_dir, evaluate_missing=bool(cfg.evaluate_missing), **eval_kwargs)
    logging.getLogger(__name__).info(f"{len(df)} runs ({int((df['status'] == 'evaluated').sum())} evaluated) compared in {out_dir / 'compare.md'}")
    if cfg.get("loggers"):
        from synth.tracking import log_comparison

        log_comparison(df, out_dir, [str(x) for x in cfg.loggers], project=str(cfg.get("project", "synth")), group=cfg.get("group"))
    return df
