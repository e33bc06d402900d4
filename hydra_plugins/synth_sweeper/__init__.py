"""Hydra plugin entry point for synth's Optuna sweeper (Hydra only loads plugins from the `hydra_plugins`
namespace). The logic lives in `synth.sweeper`; this module stays import-light because Hydra imports every plugin
module at start-up."""
from typing import Any, List

from hydra.plugins.sweeper import Sweeper


class SynthOptunaSweeper(Sweeper):
    """`hydra/sweeper=synth_optuna`: resumable Optuna studies with pruning, many workers and Pareto fronts."""

    def __init__(self, **params: Any) -> None:
        from synth.sweeper import SynthSweeper

        self.sweeper = SynthSweeper(**params)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> None:
        return self.sweeper.sweep(arguments)
