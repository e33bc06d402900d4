"""What the benchmarks share: the peer's DDPM case as config overrides, composing train configs outside
@hydra.main, timing helpers, machine info, and two callbacks (a plain PyTorch loop interleaved with Lightning's
steps, and a first-step time stamp for start-up runs)."""
from __future__ import annotations

import copy
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# The peer's exact DDPM (conf/experiment/peer_ddpm.yaml): 2,328,449 parameters in 2D; 1-channel 64x64 MNI152
# slices at batch 8, as the peer trains it.
PEER_DDPM = ["experiment=peer_ddpm", "data=mni152", "data.batch_size=8", "data.image_size=[64,64]"]
PEER_NET = ["experiment=peer_unet"]  # its network alone, for other diffusion models on the same net
PEER_NET_PARAMETERS = 2_328_449
# the peer's own figures, measured on a 2-core machine of this kind (issue #7): for reference only
PEER = {"train_img_s": 5.3, "plain_img_s": 6.3, "ddpm1000_s_per_image": 78.0, "first_step_s": 14.0, "import_rss_mb": 1300.0}

# The same recipe on the tiny UNet and 16x16 phantoms for --smoke runs (the tests): conf/experiment/peer_smoke.yaml.
SMOKE = ["experiment=peer_smoke", "data=phantom", "data.image_size=[16,16]", "data.source.n_subjects=24", "data.batch_size=4"]
SMOKE_NET = ["experiment=tiny_unet"]


def compose_train(overrides: list[str], run_dir: Path):
    """The train config as train.py would see it (Hydra's compose API), with its run dir at `run_dir`."""
    import synth  # noqa: F401  (resolvers)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.paths.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device="cpu") -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleave(fns: dict, reps: int, device="cpu") -> dict[str, float]:
    """Median seconds of each callable, run in turn (a, b, a, b, ...) so that machine noise hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(reps):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in order:
            times[k].append(timed(fns[k], device))
    return {k: statistics.median(v) for k, v in times.items()}


def machine_info() -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import lightning
    import monai

    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "load average (1 min) at start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else "?",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "monai": monai.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return info


class PlainLoopBeside(L.Callback):
    """Times Lightning's training steps and, between them, the same step as a plain PyTorch loop: the same
    MONAI network (a copy of the module's, same initial weights), the same optimizer config, the same loss
    (MSE of epsilon), batches drawn from the same training images held in memory. One plain step runs after
    each Lightning step, so both sides see the same machine noise. Lightning's interval runs from the end of
    one plain step to the end of the next Lightning step: it holds everything Lightning and synth do per step
    (data loader, hooks, logging, progress bar, optimizer step) but not the plain step."""

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = int(warmup)
        self.lightning: list[float] = []
        self.plain: list[float] = []
        self._mark: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        from hydra.utils import instantiate
        from monai.networks.schedulers import DDPMScheduler

        self.device = pl_module.device
        self.net = copy.deepcopy(pl_module.net).train()
        self.opt = instantiate(pl_module.optimizer_cfg)(params=self.net.parameters())
        cfg = {k: v for k, v in pl_module.scheduler_cfg.items() if k != "_target_"}
        self.sched = DDPMScheduler(**cfg)
        self.images = trainer.datamodule.images("train").to(self.device)
        self.batch = trainer.datamodule.batch_size
        self.gen = torch.Generator().manual_seed(0)
        precision = str(trainer.precision)
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if "bf16" in precision else None

    def _plain_step(self) -> None:
        idx = torch.randint(0, len(self.images), (self.batch,), generator=self.gen)
        x = self.images[idx]
        noise = torch.randn_like(x)
        t = torch.randint(0, self.sched.num_train_timesteps, (x.shape[0],), device=x.device)
        noisy = self.sched.add_noise(original_samples=x, noise=noise, timesteps=t)
        if self.autocast is not None:
            with self.autocast:
                pred = self.net(noisy, timesteps=t)
        else:
            pred = self.net(noisy, timesteps=t)
        loss = F.mse_loss(pred.float(), noise.float())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        now = time.perf_counter()
        if self._mark is not None:
            self.lightning.append(now - self._mark)
        self.plain.append(timed(self._plain_step, self.device))
        self._mark = time.perf_counter()

    def medians(self) -> tuple[float, float]:
        lit, plain = self.lightning[self.warmup:], self.plain[self.warmup:]
        return statistics.median(lit), statistics.median(plain)

    def means(self) -> tuple[float, float]:
        lit, plain = self.lightning[self.warmup:], self.plain[self.warmup:]
        return statistics.fmean(lit), statistics.fmean(plain)


class FirstStepStamp(L.Callback):
    """Prints `SYNTH_FIRST_STEP <unix time>` when the first training batch starts (start-up benchmark)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            print(f"SYNTH_FIRST_STEP {time.time():.6f}", file=sys.stderr, flush=True)


class StepTimer(L.Callback):
    """Seconds between the ends of consecutive training steps (GPU-synchronised), and peak GPU memory."""

    def __init__(self, warmup: int = 2) -> None:
        self.warmup = int(warmup)
        self.times: list[float] = []
        self._mark: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(pl_module.device)
        now = time.perf_counter()
        if self._mark is not None:
            self.times.append(now - self._mark)
        self._mark = now
        if pl_module.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(pl_module.device) / 2**20

    def median(self) -> float:
        return statistics.median(self.times[self.warmup:] or self.times)
