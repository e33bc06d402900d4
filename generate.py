"""Sample from a trained run: `python generate.py run_dir=outputs/train/<run> n=16` (or run_dir=latest)."""
import hydra
from omegaconf import DictConfig

import synth  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from synth.cli import run_task
    from synth.tasks import generate

    run_task(generate, cfg)


if __name__ == "__main__":
    from synth.cli import launch

    launch(main)  # every user mistake as one line (exit 2), checked before Hydra makes an output dir
