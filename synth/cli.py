"""What the entry scripts share: `launch` runs a @hydra.main function so that every user mistake ends as ONE line
`synth: error: <cause>: <fix>` and exit code 2 (Hydra composition errors, a refused config, a SynthError raised
anywhere), an interrupt as one line with the resume command, and anything unexpected as a full traceback.
`run_task` runs a task inside a Hydra job: its errors are logged to the job's log (train.log) and, inside a
multirun, raised so the sweeper records the failed job and goes on."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

from omegaconf import DictConfig

from synth.errors import SynthError, TrainingInterrupted
from synth.logs import NOT_ON_CONSOLE, quiet_libraries

log = logging.getLogger("synth")


def die(message: str, code: int = 2, kind: str = "error") -> None:
    """The one line a user reads (`synth: error: ...`, or `synth: stopped: ...` for an interrupt), then exit `code`."""
    sys.stderr.write(f"synth: {kind}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _cause(err: BaseException) -> BaseException:
    """The innermost SynthError behind wrappers (Hydra's InstantiationException, OmegaConf's resolver errors)."""
    seen = err
    while seen is not None:
        if isinstance(seen, SynthError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return err


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _constructor_message(err: BaseException) -> str | None:
    """A class built from config refused its settings (ValueError/TypeError in its constructor): one line."""
    from hydra.errors import InstantiationException

    if not isinstance(err, InstantiationException):
        return None
    cause = err.__cause__
    while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
        cause = cause.__cause__
    if not isinstance(cause, (ValueError, TypeError, AssertionError)):
        return None
    # Hydra names the failing node only inside the message ("full_key: model.net"; no attribute holds it):
    # tests/test_bad_input.py pins the one line this gives
    key = next((line.split("full_key:")[1].strip() for line in str(err).splitlines() if "full_key:" in line), "the config")
    detail = " ".join(str(cause).split())[:200] or type(cause).__name__
    return f"{key} cannot be built with these settings ({detail}): fix the {key} settings in your config or overrides"


def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task inside a Hydra job; user errors go to the job log and end the job as one line (exit 2)."""
    try:
        return task(cfg)
    except TrainingInterrupted as err:
        log.warning(str(err), extra=NOT_ON_CONSOLE)  # the terminal gets it once, from die()
        die(str(err), code=err.exit_code, kind="stopped")
    except Exception as err:  # noqa: BLE001  (sorted below: user errors become one line, the rest re-raise)
        cause = _cause(err)
        message = str(cause) if isinstance(cause, SynthError) else _constructor_message(err)
        if message is None:
            log.exception("the run ended with an unexpected error")
            raise
        log.error(message, extra=NOT_ON_CONSOLE)  # the job's log file keeps the error that ended it
        if _in_multirun():  # one job of a sweep failed: the sweeper records it and goes on
            raise SynthError(message) from None
        die(message)


def user_error(err: BaseException) -> str | None:
    """The one-line message for an error a user caused (a SynthError anywhere in the chain, a Hydra composition
    mistake, a constructor that refused its settings), or None for an unexpected error."""
    from synth.config_check import explain_hydra_error

    cause = _cause(err)
    if isinstance(cause, SynthError):
        return str(cause)
    return explain_hydra_error(err) or _constructor_message(err)


def launch(main: Callable[[], Any]) -> None:
    """Run a @hydra.main entry: Hydra composes once, and its errors reach us (HYDRA_FULL_ERROR) to become one line."""
    quiet_libraries()
    user_wants_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing a partial trace and exiting 1
    try:
        main()
    except KeyboardInterrupt:  # outside training (training stops itself with a checkpoint and a resume line)
        if user_wants_traces:
            raise
        die("interrupted (Ctrl-C) outside training: rerun the same command to redo what was cut short", 130, kind="stopped")
    except Exception as err:  # noqa: BLE001
        if user_wants_traces:
            raise
        message = user_error(err)
        if message is None:
            from hydra.errors import HydraException

            if not isinstance(err, HydraException):
                raise
            message = " ".join(str(err).split("\n")[0:2]).strip() + ": fix the override or config named there"
        die(message)
