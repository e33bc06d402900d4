"""One table across runs: `python compare.py runs=<multirun dir | [run, ...] | 'outputs/train/*'>`."""
import hydra
from omegaconf import DictConfig

import synth  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    from synth.evaluation.compare import compare
    from synth.tasks import run_cli

    run_cli(compare, cfg)


if __name__ == "__main__":
    main()
