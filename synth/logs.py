"""How synth speaks: status through `logging` (one logger per module), shown on the terminal as `[synth] ...`,
while the job's log file keeps every library's INFO lines with timestamps (conf/hydra/job_logging/synth.yaml).

* `ConsoleFilter`: the terminal gets synth's INFO lines, and WARNING or worse from anyone; a record logged with
  `extra={"console": False}` goes to the file only (the final error line, which synth.cli prints itself).
* `ConsoleFormatter`: `[synth] message`, `[synth] warning: ...`, `[lightning] warning: ...`.
* `quiet_libraries`: warnings that ask nothing of the user (deprecations inside dependencies, Lightning's hints
  about worker counts and logging intervals synth sets on purpose) are not shown; W&B prints only problems.
"""
from __future__ import annotations

import logging
import os
import warnings

NOT_ON_CONSOLE = {"console": False}


class ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        return record.name.split(".")[0] == "synth" or record.levelno >= logging.WARNING


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        source = record.name.split(".")[0]
        source = "synth" if source in ("synth", "__main__") else source
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"[{source}] {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


QUIET_WARNINGS = (
    r".*treespec.*LeafSpec.*",                                   # a deprecation inside Lightning
    r".*does not have many workers.*",                           # synth picks 0 workers for cached data on purpose
    r".*smaller than the logging interval.*",                    # short runs: FinalValidation logs their last step
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def quiet_libraries() -> None:
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's banner lines; its errors still show
    logging.captureWarnings(True)  # the rest reach the log file, and the terminal as [py.warnings] lines
