"""Run dirs, the one owner: where runs live (`outputs_dir`), claiming a run dir for one run before anything is
written (`claim`), removing what a run refused before training left behind (`discard_unstarted`), resolving
`run_dir=latest` (the newest run that holds a checkpoint) and `ckpt_path=last` (the newest run of the same model
and data), finding and reading checkpoints (tensors and plain data only) and a run's saved config, and loading a
trained module from a run dir.

A run dir is claimed by creating `.synth_run.json` with O_CREAT|O_EXCL: of two runs given one dir, exactly one
gets it; the other is refused with one line. The marker stays as the run's record (pid, host, start time)."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from synth.errors import SynthError

log = logging.getLogger(__name__)

MARKER = ".synth_run.json"
HYDRA_RECORDS = (".hydra", "train.log", "config.yaml", "data_meta.json", MARKER)  # what a run writes before training
RUN_GLOBS = ("train/*", "train_multirun/*/*", "sweeps/*/*")


def outputs_dir(log_dir: str | Path | None = None) -> Path:
    """Where run dirs live: `log_dir` when given (the config's paths.log_dir), else $PROJECT_ROOT/outputs or ./outputs."""
    if log_dir not in (None, ""):
        return Path(str(log_dir))
    return Path(os.environ.get("PROJECT_ROOT", ".")) / "outputs"


# ----- claiming a run dir -----------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / MARKER).read_text())
    except (OSError, ValueError):
        return {}


_HELD: dict[str, str] = {}  # run dir -> token of the claim this process holds for a run in progress


def _key(run_dir: str | Path) -> str:
    return str(Path(run_dir).resolve())


def claimed_by_me(run_dir: str | Path) -> bool:
    """True while this process runs the run that claimed `run_dir` (between claim and release)."""
    token = _HELD.get(_key(run_dir))
    return token is not None and _owner(Path(run_dir)).get("token") == token


def release(run_dir: str | Path) -> None:
    """The run is over (finished, failed or refused): the dir stays claimed on disk, never to be reused."""
    _HELD.pop(_key(run_dir), None)


def _running(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell from here: assume it runs
    pid = int(owner.get("pid", -1))
    if pid == os.getpid():
        return owner.get("token") in _HELD.values()
    return _alive(pid)


def claim(run_dir: str | Path, resume_in_place: bool = False) -> Path:
    """Make `run_dir` this run's own before anything is written into it. Refused when another run has (or had) it,
    or when it holds files that are not a synth run's. `resume_in_place` (a job requeued by SLURM / submitit):
    the dir of an earlier attempt that no longer runs is taken over."""
    run_dir = Path(run_dir)
    if claimed_by_me(run_dir):
        return run_dir
    owner = _owner(run_dir) if run_dir.is_dir() else {}
    if owner:
        running = _running(owner)
        if not resume_in_place or running:
            state = "is running" if running else "ran"
            raise SynthError(
                f"{run_dir} already belongs to another run (it {state} there, started {owner.get('started', '?')}, pid {owner.get('pid')}): "
                f"a run dir is never shared; drop hydra.run.dir to get a fresh one, or resume that run with ckpt_path={run_dir}"
            )
        (run_dir / MARKER).unlink(missing_ok=True)
    elif run_dir.is_dir() and any(p.name not in HYDRA_RECORDS for p in run_dir.iterdir()):
        raise SynthError(f"{run_dir} already holds files that are not a synth run's: choose an empty or new hydra.run.dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "token": token, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    try:
        fd = os.open(run_dir / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        raise SynthError(f"{run_dir} was claimed by another run a moment ago: a run dir is never shared; drop hydra.run.dir to get a fresh one") from None
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    _HELD[_key(run_dir)] = token
    return run_dir


def discard_unstarted(run_dir: str | Path) -> bool:
    """A run refused before its first training step leaves nothing that looks like a run: its Hydra records,
    saved config and claim marker are removed (only those names; anything else keeps the dir). True if removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not claimed_by_me(run_dir):
        return False
    release(run_dir)
    if any(p.name not in HYDRA_RECORDS for p in run_dir.iterdir()):
        return False
    for p in run_dir.iterdir():
        if p.is_dir():
            for q in p.iterdir():
                q.unlink(missing_ok=True)
            p.rmdir()
        else:
            p.unlink(missing_ok=True)
    run_dir.rmdir()
    return True


# ----- finding runs ---------------------------------------------------------------------------------------------
def _started(run: Path) -> float:
    """When a run began (its claim marker's time, else its config's), for ordering runs by age."""
    for name in (MARKER, "config.yaml"):
        if (run / name).is_file():
            return (run / name).stat().st_mtime
    return run.stat().st_mtime


def trained_runs(outputs: str | Path | None = None) -> list[Path]:
    """Run dirs under `outputs` that hold checkpoints/last.ckpt, oldest first."""
    root = outputs_dir(outputs)
    runs = {p.parent.parent for pattern in RUN_GLOBS for p in root.glob(f"{pattern}/checkpoints/last.ckpt")}
    return sorted((r for r in runs if (r / "config.yaml").is_file()), key=_started)


def resolve_run_dir(run_dir: str | Path, outputs: str | Path | None = None) -> Path:
    """`latest` -> the newest run under outputs/ that holds a checkpoint; otherwise the path, which must be a run dir."""
    if str(run_dir) == "latest":
        runs = trained_runs(outputs)
        if not runs:
            raise SynthError(f"run_dir=latest but no run under {outputs_dir(outputs)} holds a checkpoint: train one first (python train.py), "
                             "or set PROJECT_ROOT to where your outputs/ folder is")
        return runs[-1].resolve()
    path = Path(str(run_dir))
    if not (path / "config.yaml").is_file():
        raise SynthError(f"run_dir={run_dir} is not a synth run dir (no config.yaml): pass a dir made by train.py (or run_dir=latest)")
    return path.resolve()


def newest_run_like(cfg: DictConfig, outputs: str | Path | None = None, exclude: Path | None = None) -> Path:
    """`ckpt_path=last`: the newest run of the same model and data (model.name, data.name, spatial_dims) that holds
    a last.ckpt; never `exclude` (this run's own dir)."""
    want = (str(cfg.model.name), str(cfg.data.name), int(cfg.data.spatial_dims))
    for run in reversed(trained_runs(outputs)):
        if exclude is not None and run.resolve() == Path(exclude).resolve():
            continue
        try:
            other = OmegaConf.load(run / "config.yaml")
            have = (str(other.model.name), str(other.data.name), int(other.data.spatial_dims))
        except Exception:  # noqa: BLE001  (an unreadable config is simply not a match)
            continue
        if have == want:
            return run
    raise SynthError(
        f"ckpt_path=last but no run of model={want[0]} on data={want[1]} ({want[2]}D) under {outputs_dir(outputs)} holds a checkpoint: "
        "pass ckpt_path=<run dir or .ckpt file>, or start without ckpt_path"
    )


# ----- checkpoints ------------------------------------------------------------------------------------------
def find_checkpoint(run_dir: str | Path, which: str = "last") -> Path:
    """`last`, `best`, or a path. Errors name the run and what to do."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if which not in ("last", "best"):
        path = Path(which)
        if not path.is_file():
            raise SynthError(f"ckpt={which} does not exist: pass ckpt=last, ckpt=best or a .ckpt file")
        return path
    if which == "last":
        path = ckpt_dir / "last.ckpt"
    else:
        best = sorted(ckpt_dir.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        path = best[-1] if best else ckpt_dir / "best.ckpt"
    if not path.is_file():
        raise SynthError(f"no {which} checkpoint in {ckpt_dir}: train the run first (or let it reach a validation), or pass ckpt=<file>")
    return path


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """Tensors and plain data only (weights_only): a checkpoint cannot run code on load. `mmap` reads lazily."""
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError:
        raise SynthError(f"cannot read checkpoint {path}: permission denied; fix its permissions (chmod u+r)") from None
    except Exception as err:  # noqa: BLE001  (torch raises many types for truncated or foreign files)
        try:  # a file that would run code on load, told apart by what it asks to import (public torch API)
            code = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001  (not even a torch.save file)
            code = []
        if code:
            raise SynthError(f"checkpoint {path} holds pickled Python objects ({', '.join(code[:3])}), which synth never loads "
                             "(they could run code): use a checkpoint written by train.py") from None
        raise SynthError(f"cannot read checkpoint {path} ({type(err).__name__}): it is corrupt or not a synth checkpoint; use another (ckpt=best)") from None
    if not isinstance(state, dict) or "synth" not in state or "state_dict" not in state:
        raise SynthError(f"{path} is not a synth checkpoint (no synth metadata): pass a checkpoint written by train.py")
    return state


def check_fits(model: Any, state: dict, path: str | Path, what: str) -> None:
    """Refuse a checkpoint of another model or architecture with one line (before training or sampling starts)."""
    info = state.get("synth", {})
    if info.get("family") != model.family or info.get("model", model.name) != model.name:
        raise SynthError(f"{path} holds a {info.get('model')} ({info.get('family')}) model but {what} is a {model.name} ({model.family}) run: "
                         "pass a checkpoint of the same model")
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
        raise SynthError(f"{path} does not fit the network of {what} ({detail[:160]}): use a checkpoint of the same architecture") from None


def resolve_resume(cfg: DictConfig, run_dir: Path) -> str | None:
    """cfg.ckpt_path -> the checkpoint file to resume from: a .ckpt file, a run dir (its last.ckpt), or `last`
    (the newest run of the same model and data). The file is checked to be a readable synth checkpoint."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in (None, ""):
        return None
    path = Path(str(ckpt_path))
    if str(ckpt_path) == "last" and not path.exists():
        path = find_checkpoint(newest_run_like(cfg, cfg.paths.get("log_dir"), exclude=run_dir), "last")
    elif path.is_dir():
        path = find_checkpoint(path, "last")
    elif not path.is_file():
        raise SynthError(f"ckpt_path={ckpt_path} does not exist: pass a .ckpt file, a run dir that holds checkpoints/last.ckpt, or ckpt_path=last")
    load_checkpoint(path, mmap=True)  # a broken or foreign file is refused now, with its name
    return str(path)


# ----- a run's config and trained module ---------------------------------------------------------------------
def load_run_config(run_dir: str | Path) -> DictConfig:
    """A run's saved config.yaml, read as plain YAML data (no Python tags, no code) and checked: every `_target_`
    must exist and take the keys it is given, so an edited or damaged file is refused with one line."""
    from synth.config_check import check_targets

    path = Path(run_dir) / "config.yaml"
    try:
        cfg = OmegaConf.load(path)
    except PermissionError:
        raise SynthError(f"cannot read {path}: permission denied; fix its permissions (chmod u+r)") from None
    except Exception as err:  # noqa: BLE001
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SynthError(f"cannot read {path} ({first}): it is not a config written by train.py; retrain or restore that file") from None
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "_target_" not in cfg.model:
        raise SynthError(f"{path} has no model section: it is not a config written by train.py; pass a run dir made by train.py")
    try:
        check_targets(cfg, where=str(path))
    except SynthError as err:
        raise SynthError(f"{path}: {err}") from None
    return cfg


def load_run(run_dir: str | Path, ckpt: str = "last", config: DictConfig | None = None):
    """A trained module from a run dir: its saved config (`config`: already read) builds the network, its checkpoint
    fills it."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    run_dir = resolve_run_dir(run_dir)
    train_cfg = load_run_config(run_dir) if config is None else config
    path = find_checkpoint(run_dir, ckpt)
    state = load_checkpoint(path)
    try:
        model = instantiate(train_cfg.model)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, SynthError):
            raise cause from None
        raise SynthError(f"{run_dir / 'config.yaml'} cannot build its model ({type(cause).__name__}: {str(cause).splitlines()[0] if cause else err}): "
                         "restore the config.yaml train.py wrote") from None
    check_fits(model, state, path, str(run_dir))
    model.data_meta = state["synth"].get("data_meta", {})
    return model, train_cfg


def load_frozen_run(run_dir: Any, key: str, image_shape: tuple[int, ...], refuse: Callable[[DictConfig], str | None],
                    train_first: str, kind: str, noun: str):
    """A trained run another model builds on, frozen (the LDM's autoencoder, a ControlNet's base): `run_dir` checked
    to be a synth run, its config vetted by `refuse` (why it cannot serve, or None), its best checkpoint (else last)
    loaded and its image shape checked against this data. Errors name `key` (the config key that gave the dir)."""
    if run_dir in (None, "", "???") or not Path(str(run_dir)).is_dir():
        raise SynthError(f"{key}={run_dir} is not a run dir: {train_first}")
    run = Path(str(run_dir)).resolve()
    if not (run / "config.yaml").is_file():
        raise SynthError(f"{key}={run_dir} is not a synth run dir (no config.yaml): pass the dir of {kind}")
    cfg = load_run_config(run)
    reason = refuse(cfg)
    if reason:
        raise SynthError(f"{key}={run_dir} {reason}")
    model, _ = load_run(run, "best" if any((run / "checkpoints").glob("best-*.ckpt")) else "last", config=cfg)
    if tuple(model.image_shape) != tuple(image_shape):
        raise SynthError(f"the {noun} of {run_dir} was trained on images {list(model.image_shape)} (channels, size) but this data gives "
                         f"{list(image_shape)}: use the same data.channels and data.image_size as that run")
    return model, cfg, run
