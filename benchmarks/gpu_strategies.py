"""GPU check of the distributed strategies: trains a tiny DDPM through `train.py` with trainer=ddp and each of
strategy=ddp, deepspeed_stage_2, deepspeed_stage_3 and fsdp on every visible GPU, then samples from each run with
generate.py, and prints one table (status, steps, seconds, final val/loss, samples written).

    python benchmarks/gpu_strategies.py            # on a GPU machine (a minute or two)
    python benchmarks/gpu_strategies.py --cpu      # the same path with 2 CPU processes (gloo; ddp only)

Each run is a subprocess in a temporary directory, so a strategy that fails does not stop the others."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=ddpm", "experiment=tiny_ddpm", "data=phantom", "data.image_size=[32,32]", "data.source.n_subjects=32", "data.batch_size=8",
        "trainer.max_steps=20", "trainer.val_check_interval=10", "trainer.enable_progress_bar=false", "callbacks.sample_grid.n=4"]


def run(strategy: str, cpu: bool, workdir: Path) -> dict:
    trainer = ["trainer=ddp_cpu"] if cpu else ["trainer=ddp"]
    args = [sys.executable, str(ROOT / "train.py"), *TINY, *trainer, f"strategy={strategy}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    res = subprocess.run(args, cwd=workdir, capture_output=True, text=True, env=env, timeout=900)
    row = {"strategy": strategy, "seconds": round(time.perf_counter() - start, 1), "rc": res.returncode}
    runs = sorted((workdir / "outputs" / "train").glob("*/run.json"))
    if res.returncode or not runs:
        row["error"] = (res.stderr.strip().splitlines() or ["?"])[-1][:160]
        return row
    info = json.loads(runs[-1].read_text())
    row.update(steps=info["global_step"], val_loss=info["metrics"].get("val/loss"))
    gen = subprocess.run([sys.executable, str(ROOT / "generate.py"), f"run_dir={runs[-1].parent}", "n=4", "steps=5"],
                         cwd=workdir, capture_output=True, text=True, env=env, timeout=600)
    row["samples"] = len(list(runs[-1].parent.glob("samples/*/sample_*"))) if gen.returncode == 0 else f"failed: {gen.stderr.strip()[-120:]}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="2 CPU processes (gloo), strategy=ddp only")
    parser.add_argument("--strategies", default="ddp,deepspeed_stage_2,deepspeed_stage_3,fsdp")
    args = parser.parse_args()
    strategies = ["ddp"] if args.cpu else args.strategies.split(",")
    rows = []
    for strategy in strategies:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(strategy, args.cpu, Path(tmp)))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| strategy | rc | steps | val/loss | samples | seconds | error |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} | {r['rc']} | {r.get('steps', '')} | {r.get('val_loss', '')} | {r.get('samples', '')} | {r['seconds']} | {r.get('error', '')} |")
    sys.exit(0 if all(r["rc"] == 0 for r in rows) else 1)


if __name__ == "__main__":
    main()
