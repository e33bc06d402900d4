"""GPU benchmark in one file (a minute or two on one GPU): bf16 training images/s through synth's train stack for
2D 128² and 3D 64³ DDPM and LDM (the LDM on a VAE trained for one step), peak GPU memory of 3D DDPM training
with and without gradient checkpointing, and seconds per 3D sample with DDIM and RFlow (fp32 and bf16 autocast).

    python benchmarks/gpu.py                 # on a GPU machine; --out results.md to keep the table
    python benchmarks/gpu.py --smoke         # tiny sizes on CPU: checks the script runs (tests/test_speed.py)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from hydra.utils import instantiate

from benchmarks.common import StepTimer, compose_train, machine_info, timed

# (name, spatial dims, size, batch) at full size; --smoke shrinks them
CASES = [(2, 128, 16), (3, 64, 2)]
TINY_NET = ["experiment=tiny_unet"]  # the flavours of conf/experiment/
TINY_VAE = ["experiment=tiny_vae"]


class GPUBench:
    def __init__(self, smoke: bool, workdir: Path) -> None:
        self.smoke, self.workdir = smoke, workdir
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.steps = 2 if smoke else 10
        self.rows: list[tuple[str, str, str]] = []
        self._n = 0
        self.t0 = time.perf_counter()

    def progress(self, msg: str) -> None:
        print(f"[gpu {time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def base(self, dims: int, size: int, batch: int) -> list[str]:
        shape = ",".join([str(size)] * dims)
        # bf16 on the GPU; the CPU smoke run checks the script in full precision (CPU bf16 is slow and not the point)
        trainer = ["trainer=gpu", "trainer.precision=bf16-mixed"] if self.cuda else ["trainer=cpu", "trainer.precision=32-true"]
        # speed only: the networks train a few steps from scratch (LDM on a 1-step VAE), so a diverging loss is no error here
        return [*trainer, "~callbacks.finite_guard", "data=phantom", f"data.spatial_dims={dims}", f"data.image_size=[{shape}]",
                f"data.source.n_subjects={max(2 * batch, 8)}", f"data.batch_size={batch}", "data.split=[0.75,0.125,0.125]",
                "callbacks.sample_grid.n=0", "trainer.val_check_interval=100000", "trainer.enable_progress_bar=false", "logger=csv"]

    def train(self, overrides: list[str], steps: int):
        from synth.tasks import train

        self._n += 1
        run_dir = self.workdir / f"run{self._n}"
        cfg = compose_train([*overrides, f"trainer.max_steps={steps}", "+callbacks.timer._target_=benchmarks.common.StepTimer"], run_dir)
        _, objects = train(cfg)
        timer = next(cb for cb in objects["trainer"].callbacks if isinstance(cb, StepTimer))
        return objects, timer, run_dir

    def training(self) -> dict:
        models = {}
        precision = "bf16" if self.cuda else "fp32"
        for dims, size, batch in CASES:
            if self.smoke:
                size, batch = (16 if dims == 2 else 8), 2
            name = f"{dims}D {size}{'²' if dims == 2 else '³'}"
            base = self.base(dims, size, batch)
            tiny = TINY_NET if self.smoke else []
            self.progress(f"{name}: DDPM training, {precision}")
            objects, timer, _ = self.train([*base, "model=ddpm", *tiny], 3 + self.steps)
            models[dims] = objects["model"]
            self.record(f"{name} DDPM training, {precision}, batch {batch}", timer, batch)
            if dims == 3:
                self.progress(f"{name}: DDPM training with gradient checkpointing")
                _, timer_ck, _ = self.train([*base, "model=ddpm", *tiny, "model.gradient_checkpointing=true"], 3 + self.steps)
                self.record(f"{name} DDPM training + gradient checkpointing", timer_ck, batch)
            self.progress(f"{name}: VAE for one step (the LDM's autoencoder), then LDM training")
            _, _, vae_dir = self.train([*base, "model=vae", *(TINY_VAE if self.smoke else [])], 1)
            ldm_net = TINY_NET if self.smoke else []
            objects, timer, _ = self.train([*base, "model=ldm", f"model.autoencoder_run={vae_dir}", *ldm_net], 3 + self.steps)
            self.record(f"{name} LDM training (VAE encode + latent UNet), {precision}, batch {batch}", timer, batch)
            if dims == 3:
                models["ldm3"] = objects["model"]
        return models

    def record(self, what: str, timer: StepTimer, batch: int) -> None:
        step = timer.median()
        mem = f", peak {timer.peak_mb:.0f} MiB" if hasattr(timer, "peak_mb") else ""
        self.rows.append((what, f"{batch / step:.1f} images/s", f"{step * 1000:.0f} ms/step{mem}"))

    def sampling(self, models: dict) -> None:
        ddpm3 = models[3].to(self.device).eval()
        size = 8 if self.smoke else 64
        n = 2 if self.smoke else 4
        ddim_steps, rflow_steps = (3, 3) if self.smoke else (50, 10)
        tiny = TINY_NET if self.smoke else []
        rflow3 = instantiate(compose_train([*self.base(3, size, n), "model=rflow", *tiny], self.workdir / "rflow").model).to(self.device).eval()
        cases = [(f"DDIM-{ddim_steps}", ddpm3, "ddim", ddim_steps), (f"RFlow-{rflow_steps}", rflow3, "rflow", rflow_steps)]
        if "ldm3" in models:
            cases.append((f"LDM DDIM-{ddim_steps} (incl. decoding)", models["ldm3"].to(self.device).eval(), "ddim", ddim_steps))
        for label, model, sampler, steps in cases:
            for precision, ctx in (("fp32", nullcontext), ("bf16", lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))):
                def go():
                    with ctx():
                        model.sample(n, generator=torch.Generator(device=self.device).manual_seed(0), sampler=sampler, steps=steps, progress=False)
                self.progress(f"3D sampling {label} {precision}")
                with ctx():
                    model.sample(1, sampler=sampler, steps=2, progress=False)  # warm-up
                seconds = timed(go, self.device)
                self.rows.append((f"3D {size}³ sampling {label}, {precision}, batch {n}", f"{seconds / n:.2f} s/sample", f"{seconds:.1f} s/batch"))

    def render(self) -> str:
        info = machine_info()
        lines = ["# GPU benchmark (benchmarks/gpu.py)" + (" — SMOKE: tiny sizes on CPU, numbers not meaningful" if self.smoke else ""), "",
                 *[f"- {k}: {v}" for k, v in info.items()], f"- wall time: {time.perf_counter() - self.t0:.0f} s", "",
                 "| measure | result | detail |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in self.rows], ""]
        return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs on CPU (for tests)")
    parser.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible: run on a GPU machine, or pass --smoke to check the script on CPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory(prefix="synth-gpu-") as tmp:
        bench = GPUBench(args.smoke, Path(tmp))
        models = bench.training()
        bench.sampling(models)
    text = bench.render()
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
