"""One Optuna study shared by every worker of a sweep: where it is stored, how a worker takes its next trial, and
how trials left behind by a dead worker are found.

* Storage (`hydra.sweeper.storage`): `sqlite` (a file in the sweep dir: one machine), `journal` (Optuna's
  JournalStorage on a file in the sweep dir; its lock works on NFS: many machines on a shared filesystem), an RDB
  URL (`postgresql://...`, `mysql+pymysql://...`, `sqlite:///...`), or a path to a `.journal` file.
  `address` is what `optuna-dashboard <address>` opens.
* Taking a trial (`next_trial`) happens under a lock file in the sweep dir (the one place every worker shares),
  so that counting the trials and asking the next one is one step: workers never start more than `n_trials`, and
  the sampler's seed is derived from `seed` and the number of trials already in the study (a rerun or a second
  worker continues the sequence instead of restarting it: same seed + same storage = same suggestion).
* Every trial records its worker (host, pid) and a heartbeat while it runs; a RUNNING trial whose worker died
  (same host, process gone) or whose heartbeat is older than `stale_after_s` is recorded as FAIL, marked
  `interrupted` (it does not count against `max_failure_rate`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from synth.errors import SynthError

log = logging.getLogger(__name__)

WORKER, HEARTBEAT = "synth:worker", "synth:heartbeat"         # system attrs: who runs a trial, when it last said so
INTERRUPTED, PRUNED_AT = "interrupted", "pruned_at_step"          # user attrs: a dead worker's trial; where a job pruned itself
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def address(storage: str, sweep_dir: str | Path) -> str:
    """The study's storage as one string: an RDB URL, or the path of a journal file."""
    storage = str(storage).strip()
    sweep_dir = Path(sweep_dir).resolve()
    if storage == "sqlite":
        return f"sqlite:///{sweep_dir / 'optuna.db'}"
    if storage == "journal":
        return str(sweep_dir / "optuna.journal")
    if "://" in storage:
        return storage
    if storage.endswith((".journal", ".log")):
        return str(Path(storage).resolve())
    raise SynthError(f"hydra.sweeper.storage={storage} is not a storage synth knows: use sqlite (one machine), journal (a "
                     "shared filesystem), an RDB URL such as postgresql://user@host/db, or a path ending in .journal")


def open_storage(addr: str) -> optuna.storages.BaseStorage:
    """The storage at `addr` (see `address`); a journal file uses Optuna's NFS-safe symlink lock."""
    if "://" in addr:
        engine = {"connect_args": {"timeout": 60}} if addr.startswith("sqlite") else {}
        if addr.startswith("sqlite:///"):
            Path(addr[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(addr, engine_kwargs=engine)
    from optuna.storages.journal import JournalFileBackend

    Path(addr).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(addr))


def derive_seed(seed: int | None, n_trials_in_study: int) -> int | None:
    """The sampler seed for the trial asked after `n_trials_in_study` trials (None: unseeded)."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, n_trials_in_study]).generate_state(1)[0] & 0x7FFFFFFF)


@contextlib.contextmanager
def ask_lock(sweep_dir: str | Path, grace_s: int = 600) -> Iterator[None]:
    """One worker at a time counts trials and asks the next one (a lock file in the sweep dir, NFS-safe; a lock
    left by a killed worker is taken over after `grace_s`)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    path = Path(sweep_dir) / "optuna.ask"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileSymlinkLock(str(path), grace_period=grace_s)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def mark_running(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    storage.set_trial_system_attr(trial_id, WORKER, me())
    storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int, every_s: float) -> Iterator[None]:
    """While a trial runs, its worker records that it is alive every `every_s` seconds."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
            except Exception as err:  # noqa: BLE001  (the trial was finished elsewhere, or the storage hiccuped)
                log.debug(f"heartbeat of trial {trial_id}: {err}")

    thread = threading.Thread(target=beat, daemon=True, name=f"synth-heartbeat-{trial_id}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(trial: FrozenTrial, stale_after_s: float, now: float | None = None) -> bool:
    """A RUNNING trial nobody runs any more: its worker's process is gone (same host), or no heartbeat for long."""
    worker = trial.system_attrs.get(WORKER)
    if trial.state != TrialState.RUNNING or not worker:
        return False
    host, _, pid = str(worker).rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
        return True
    beat = trial.system_attrs.get(HEARTBEAT)
    return beat is not None and (now or time.time()) - float(beat) > stale_after_s


def fail_stale(study: optuna.Study, storage: optuna.storages.BaseStorage, stale_after_s: float) -> list[int]:
    """Record trials left running by dead workers as FAIL (`interrupted`); returns their numbers."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_stale(trial, stale_after_s):
            storage.set_trial_user_attr(trial_id(storage, study.study_name, trial.number), INTERRUPTED, True)
            tell(study, trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
    if failed:
        log.warning(f"trial(s) {', '.join(map(str, failed))} were left running by a worker that is gone: recorded as failed "
                    "(interrupted; not counted against max_failure_rate)")
    return failed


def tell(study: optuna.Study, trial: Any, **kwargs: Any) -> None:
    """study.tell for a trial run outside study.optimize (a finished one is left as it is)."""
    try:
        study.tell(trial, skip_if_finished=True, **kwargs)
    except RuntimeError as err:  # GridSampler calls Study.stop once its grid is done: there is no optimize loop to stop
        # (optuna says so only in the message; tests/test_sweeps.py::test_grid_sampler_visits_every_point_once_across_reruns pins it)
        if "Study.stop" not in str(err):
            raise


def counts(trials: list[FrozenTrial], baseline_failures: set[int] = frozenset()) -> dict[str, int]:
    """finished (COMPLETE or PRUNED: what n_trials counts), running, and failed since `baseline_failures`."""
    return {
        "finished": sum(t.state in FINISHED for t in trials),
        "running": sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials),
        "failed": sum(t.state == TrialState.FAIL and t.number not in baseline_failures and not t.user_attrs.get(INTERRUPTED)
                      for t in trials),
    }


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial `number` of a study (Optuna's public storage API)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def load(storage: optuna.storages.BaseStorage, study_name: str, **kwargs: Any) -> optuna.Study:
    """An existing study (a job reporting to its trial)."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage, **kwargs)
    except KeyError:
        raise SynthError(f"no study {study_name} in its storage: the sweep that started this trial created it; "
                         "run the trial through its sweep (python train.py -m sweep=...)") from None
