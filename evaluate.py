"""Evaluate synthetic images: `python evaluate.py run_dir=outputs/train/<run>` or `samples=<folder> data=<data config>`."""
import hydra
from omegaconf import DictConfig

import synth.evaluation  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from synth.cli import run_task
    from synth.evaluation.run import evaluate

    run_task(evaluate, cfg)


if __name__ == "__main__":
    from synth.cli import launch

    launch(main)
