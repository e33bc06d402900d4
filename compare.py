"""One table across runs: `python compare.py runs=<multirun dir | [run, ...] | 'outputs/train/*'>`."""
import hydra
from omegaconf import DictConfig

import synth  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    from synth.cli import run_task
    from synth.evaluation.compare import compare

    run_task(compare, cfg)


if __name__ == "__main__":
    from synth.cli import launch

    launch(main)
