"""Train one composed run: `python train.py model=ddpm data=phantom` (see README for the config groups)."""
import hydra
from omegaconf import DictConfig

import synth  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from synth.cli import run_task
    from synth.tasks import train_and_score

    return run_task(train_and_score, cfg)  # the value of cfg.optimized_metric, for a sweeper (None without one)


if __name__ == "__main__":
    from synth.cli import launch

    launch(main)  # every user mistake as one line (exit 2), checked before Hydra makes a run dir
