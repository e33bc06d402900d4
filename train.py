"""Train one composed run: `python train.py model=ddpm data=phantom` (see README for the config groups)."""
import hydra
from omegaconf import DictConfig

import synth  # noqa: F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from synth.tasks import run_cli, train

    metrics, _ = run_cli(train, cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
