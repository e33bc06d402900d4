"""The "Sampler quality" section of BENCHMARKS.md (issue #12, item 15): is the few-step sampler's speed bought with
quality? FRD with its 95 % interval for DDPM-1000, DDIM-50 and DDIM-25 on one trained DDPM, and rectified flow with
10 (and its default 30) Euler steps on a rectified-flow run of the same network, data, budget and learning rate, all
against the same real test set (one FRD feature space: rows are comparable), with seconds per sample.

    python benchmarks/sampler_quality.py                     # train both runs (the demo recipe) and evaluate every row
    python benchmarks/sampler_quality.py --ddpm-run <dir> --rflow-run <dir>   # reuse trained runs
    python benchmarks/sampler_quality.py --render            # only rewrite docs/sampler_quality.md from its json

The runs are `make demo`'s recipe as it was when measured (2D MNI152 64², the 1.1 M UNet, lr 1e-3, 1000 steps): the default rflow run and
`model=ddpm model.optimizer.lr=1e-3`. Each row is `evaluate.py run_dir=<run> n=64 sampler=<s> steps=<k>` with one seed,
so every sampler starts from the same noise. docs/sampler_quality.json keeps every number; benchmarks/render.py appends
the rendered section to BENCHMARKS.md, so `make bench` keeps it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "sampler_quality.json"
MD = ROOT / "docs" / "sampler_quality.md"

# row name -> (run, evaluate.py sampler overrides)
ROWS = {
    "DDPM-1000": ("ddpm", ["sampler=ddpm", "steps=1000"]),
    "DDIM-50": ("ddpm", ["sampler=ddim", "steps=50"]),
    "DDIM-25": ("ddpm", ["sampler=ddim", "steps=25"]),
    "RFlow-30 (demo default)": ("rflow", ["sampler=rflow", "steps=30"]),
    "RFlow-10": ("rflow", ["sampler=rflow", "steps=10"]),
}
STEPS = ["trainer.max_steps=1000", "trainer.val_check_interval=250"]  # as measured (the demo's default became 800 steps later)
TRAIN = {"ddpm": ["model=ddpm", "model.optimizer.lr=1e-3", *STEPS], "rflow": STEPS}


def _run(script: str, args: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / script), *args]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def measure(name: str, run: Path, overrides: list[str], out: Path, n: int) -> dict:
    """One row: evaluate.py with this sampler; wall seconds and the load average around it."""
    eval_dir = out / name.split(" ")[0]
    load0, wall0 = os.getloadavg(), time.perf_counter()
    _run("evaluate.py", [f"run_dir={run}", f"n={n}", "seed=0", *overrides, f"hydra.run.dir={eval_dir}"])
    m = json.loads((eval_dir / "metrics.json").read_text())
    syn, rr, nz = m["rows"]["synthetic"], m["rows"]["real_vs_real"], m["rows"]["noise_vs_real"]
    return {"row": name, "run": str(run), "overrides": overrides, "wall_s": round(time.perf_counter() - wall0, 1),
            "load_before": round(load0[0], 2), "load_after": round(os.getloadavg()[0], 2), "sampler": m.get("sampler"),
            "seconds_per_sample": m["cost"]["seconds_per_sample"], "frd": syn["frd"], "frd_ci": (syn.get("ci") or {}).get("frd"),
            "frd_real": rr["frd"], "frd_real_ci": (rr.get("ci") or {}).get("frd"), "frd_noise": nz["frd"], "n_per_set": m["n_real"],
            "frd_space": (m.get("frd") or {}).get("fingerprint"), "reference": (m.get("reference") or {}).get("fingerprint"), "verdict": m["verdict"]["label"]}


def _ci(v, ci) -> str:
    return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def render(rows: list[dict]) -> str:
    spaces = {(r.get("frd_space"), r.get("reference")) for r in rows}
    lines = ["## Sampler quality", "",
             "Is a few-step sampler's speed bought with quality? (issue #12, item 15.) One trained DDPM sampled with DDPM-1000 "
             "(ancestral, every timestep), DDIM-50 and DDIM-25 (eta 0), and a rectified-flow run of the same network, data, "
             "training budget and learning rate sampled with 30 and 10 Euler steps; each row `evaluate.py n=64 seed=0` against "
             "the same real test set of 2D MNI152 (`make demo`'s data) in one FRD feature space"
             + (" (checked: every row has the same reference and feature-space fingerprints)" if len(spaces) == 1 else " (**reference sets or feature spaces differ: rows not comparable**)")
             + ". Written by `benchmarks/sampler_quality.py` (docs/sampler_quality.json holds every number).", "",
             "| sampler | FRD [95 % CI] | real-vs-real FRD [95 % CI] | noise FRD | seconds per sample (batch 16, CPU) | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {_ci(r['frd'], r['frd_ci'])} | {_ci(r['frd_real'], r['frd_real_ci'])} | {r['frd_noise']:.1f} | "
                     f"{r['seconds_per_sample']:.3g} | {r['verdict']} |")
    by = {r["row"]: r for r in rows}
    if "DDPM-1000" in by:
        ref = by["DDPM-1000"]
        lines += [""]
        for r in rows:
            if r is ref or not (r["frd_ci"] and ref["frd_ci"]):
                continue
            overlap = r["frd_ci"][0] <= ref["frd_ci"][1] and ref["frd_ci"][0] <= r["frd_ci"][1]
            speed = ref["seconds_per_sample"] / r["seconds_per_sample"] if r["seconds_per_sample"] else float("nan")
            verdict = ("intervals overlap: no quality difference is shown" if overlap else
                       ("better than DDPM-1000 (intervals apart)" if r["frd"] < ref["frd"] else "worse than DDPM-1000 (intervals apart)"))
            lines.append(f"- {r['row']}: {speed:.0f}x faster than DDPM-1000; {verdict}.")
    loads = [x for r in rows for x in (r["load_before"], r["load_after"])]
    lines += ["", f"- {rows[0]['n_per_set'] if rows else '?'} images per set; the 1-minute load average during these runs ranged "
              f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores (seconds per sample grow with the load; their ratios hold "
              "better). The realism verdicts are those of `evaluate.py` for each row; the memorization audit is in each run's report.",
              "- The DDPM rows share one network and start from the same noise (seed 0); the RFlow rows are another training "
              "objective on the same network and budget, so a difference between the DDPM and RFlow rows mixes sampler and training."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ddpm-run", help="a trained ddpm run dir (default: train one with the demo recipe)")
    p.add_argument("--rflow-run", help="a trained rflow run dir (default: train the demo's)")
    p.add_argument("--only", nargs="*", help="row names (or their first word) to run; default: all")
    p.add_argument("--n", type=int, default=64, help="samples per row")
    p.add_argument("--render", action="store_true", help="only rewrite docs/sampler_quality.md from docs/sampler_quality.json")
    p.add_argument("--out", default=str(ROOT / "outputs" / "sampler_quality"), help="where runs and evaluations go")
    a = p.parse_args()
    rows = json.loads(JSON.read_text()) if JSON.is_file() else []
    if not a.render:
        out = Path(a.out)
        runs = {"ddpm": a.ddpm_run, "rflow": a.rflow_run}
        for name, (kind, overrides) in ROWS.items():
            if a.only and name not in a.only and name.split(" ")[0] not in a.only:
                continue
            if runs[kind] is None:
                runs[kind] = str(out / f"train_{kind}")
                _run("train.py", [*TRAIN[kind], f"hydra.run.dir={runs[kind]}"])
            row = measure(name, Path(runs[kind]).resolve(), overrides, out / "eval", a.n)
            rows = [r for r in rows if r["row"] != name] + [row]
            rows.sort(key=lambda r: list(ROWS).index(r["row"]) if r["row"] in ROWS else 99)
            JSON.parent.mkdir(parents=True, exist_ok=True)
            JSON.write_text(json.dumps(rows, indent=1) + "\n")
    MD.write_text(render(rows))
    print(MD.read_text())


if __name__ == "__main__":
    main()
