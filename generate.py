"""Sample from a trained run: `python generate.py run_dir=outputs/train/<run> n=16` (or run_dir=latest)."""
import hydra
from omegaconf import DictConfig

import synth  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from synth.tasks import generate, run_cli

    run_cli(generate, cfg)


if __name__ == "__main__":
    from synth.config_check import check_cli

    check_cli("generate")  # config mistakes as one line (exit 2), before Hydra creates a run dir
    main()
