"""Config mistakes as one line, before anything runs.

* `explain_hydra_error`: Hydra's composition errors (an unknown option of a config group, a misspelled key on the
  command line, an unparsable override) as one line with the closest valid choice.
* `check_targets`: every node that builds a class (`_target_`) may only hold keys that class takes, with values of
  the types its signature declares (`trainer.max_steps=abc`, `data.batch_size=two`, `trainer.precision=8`).
* `validate`: one pass over a composed config before a run dir is made (the Hydra callback in
  synth/hydra_callbacks.py runs it): the checks above plus value ranges and what the machine can do
  (`trainer.max_steps=0`, `model.optimizer.lr=nan`, `trainer=gpu` without a GPU, channels that do not match).
"""
from __future__ import annotations

import collections.abc as cabc
import difflib
import inspect
import math
import re
import typing
from typing import Any, Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from synth.errors import SynthError


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else ""


def explain_hydra_error(err: BaseException) -> str | None:
    """One line for the Hydra composition errors a user can make, or None for anything else."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    text = str(err)
    if isinstance(err, MissingConfigException):
        found = re.search(r"Could not find '([^']+)'", text)
        if found and "/" in found.group(1) and err.options:
            group, option = found.group(1).rsplit("/", 1)
            near = _suggest(option, err.options)
            hint = f"did you mean {group}={near}? " if near else ""
            return f"{group}={option} is not an option of the {group} config group: {hint}use one of {', '.join(err.options)}"
        return None
    if isinstance(err, OverrideParseException):
        return f"cannot parse an override ({text.splitlines()[0]}): write it as key=value or group=option (https://hydra.cc/docs/advanced/override_grammar/basic)"
    if isinstance(err, ConfigCompositionException):
        found = re.search(r"Could not override '([^']+)'", text)
        cause = err.__cause__
        parent = getattr(cause, "parent_node", None)
        if found and parent is not None and "not in struct" in str(cause):
            key = found.group(1)
            prefix, _, leaf = key.rpartition(".")
            near = _suggest(leaf, [str(k) for k in parent.keys()]) if isinstance(parent, DictConfig) else ""
            hint = f"did you mean {prefix + '.' if prefix else ''}{near}? " if near else "check the spelling; "
            return f"{key} is not a key of {prefix or 'the config'}: {hint}(to add a new key on purpose, write +{key}=...)"
        if "MissingMandatoryValue" in type(cause).__name__ or "Missing mandatory value" in str(cause):
            key = getattr(cause, "full_key", "") or "a key"
            return f"{key} has no value (???): set it on the command line, e.g. {key}=..."
    return None


# ----- keys and types the built classes take ------------------------------------------------------------------
def _signature_chain(target: str) -> list | None:
    """The callables whose keywords `target` takes, following **kwargs through synth's own base classes."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001  (a missing target is reported by check_targets)
        return None
    return [c.__init__ for c in obj.__mro__ if "__init__" in c.__dict__] if inspect.isclass(obj) else [obj]


def _accepted(target: str) -> tuple[set[str] | None, dict[str, Any]]:
    """(keyword names `target` takes, or None: takes any; their type hints where they can be read)."""
    chain = _signature_chain(target)
    if chain is None:
        return None, {}
    names: set[str] = set()
    hints: dict[str, Any] = {}
    for fn in chain:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None, hints
        try:
            hints = {**typing.get_type_hints(fn), **hints}
        except Exception:  # noqa: BLE001  (unresolvable annotations: no type check)
            pass
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, hints
        if not getattr(fn, "__module__", "").startswith("synth."):
            return None, hints  # passes unknown keys on to code we cannot see
    return None, hints


def _matches(value: Any, hint: Any) -> bool:
    """Whether a config value can be given for a parameter annotated `hint` (True when it cannot be judged)."""
    if hint is Any or hint is None or isinstance(hint, (str, typing.TypeVar)):
        return True
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if isinstance(value, (DictConfig, dict)):
        return True  # a node that builds an object (or a mapping): judged by its own _target_
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, set, cabc.Sequence, cabc.Iterable, cabc.Collection, cabc.MutableSequence):
        return isinstance(value, (list, tuple, ListConfig))
    if container in (dict, cabc.Mapping, cabc.MutableMapping):
        return isinstance(value, (dict, DictConfig))
    if inspect.isclass(hint):
        if issubclass(hint, (str, bytes)) or hint.__name__ in ("Path", "PurePath", "PathLike"):
            return isinstance(value, str)
        return False  # a class instance cannot come from a plain value
    return True


def _literals(hint: Any) -> list:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return list(args)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        return [v for a in args for v in _literals(a)]
    return []


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    choices = list(dict.fromkeys(str(v) for v in _literals(hint)))
    if choices:
        return "one of " + ", ".join(choices)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(p for p in parts if p))
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(hint, "a list" if origin in (list, tuple, cabc.Sequence) else "")


def _walk(node: Any, path: str):
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _container(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001  (an interpolation only Hydra can resolve: judge the raw values)
        return OmegaConf.to_container(cfg, resolve=False)


def check_targets(cfg: DictConfig, where: str = "your config or overrides") -> None:
    """Every config node with a `_target_` may only hold keys that its class (or function) takes, with values of
    the declared types."""
    from hydra.utils import get_object

    for path, node in _walk(_container(cfg), ""):
        target = node["_target_"]
        try:
            get_object(target)
        except Exception:  # noqa: BLE001
            raise SynthError(f"{path}._target_={target} does not exist (no such class or function): fix the spelling in {where}") from None
        accepted, hints = _accepted(target)
        cls = target.rsplit(".", 1)[-1]
        for key, value in node.items():
            key = str(key)
            if key.startswith("_"):
                continue
            if accepted is not None and key not in accepted:
                near = _suggest(key, accepted)
                hint = f"did you mean {path}.{near}? " if near else ""
                raise SynthError(f"{path}.{key} is not a setting of {cls} (the class {path} builds): {hint}fix the spelling in {where}")
            unresolved = isinstance(value, str) and ("${" in value or value == "???")  # judged once it has a value
            if key in hints and isinstance(value, (str, int, float, bool)) and not unresolved and not _matches(value, hints[key]):
                want = _describe(hints[key]) or "of the type it takes"
                raise SynthError(f"{path}.{key}={value} is not {want}, which {cls} needs: fix {path}.{key} in {where}")


# ----- ranges and the machine -------------------------------------------------------------------------------------
def _get(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # noqa: BLE001
        return None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_ranges(cfg: DictConfig) -> None:
    steps = _get(cfg, "trainer.max_steps")
    if _is_num(steps) and not (steps == -1 or steps >= 1):
        raise SynthError(f"trainer.max_steps={steps} " + ("trains nothing" if steps == 0 else "is negative")
                         + ": set a positive number of steps (e.g. trainer.max_steps=1000), or -1 with trainer.max_epochs=N")
    epochs = _get(cfg, "trainer.max_epochs")
    if _is_num(epochs) and not (epochs == -1 or epochs >= 1):
        raise SynthError(f"trainer.max_epochs={epochs} trains nothing: set a positive number (e.g. trainer.max_epochs=10) or -1 (no limit)")
    interval = _get(cfg, "trainer.val_check_interval")
    if _is_num(interval) and interval <= 0:
        raise SynthError(f"trainer.val_check_interval={interval} must be > 0: steps between validations (e.g. 200) or a fraction of an epoch (e.g. 0.5)")
    for key in ("data.batch_size", "trainer.accumulate_grad_batches", "trainer.devices", "trainer.num_nodes"):
        v = _get(cfg, key)
        if _is_num(v) and v < 1 and not (key == "trainer.devices" and v == -1):
            raise SynthError(f"{key}={v} must be at least 1: e.g. {key}=" + ("16" if "batch" in key else "1"))
    for key in ("model.optimizer.lr", "model.d_optimizer.lr"):
        lr = _get(cfg, key)
        if _is_num(lr) and not (math.isfinite(lr) and lr > 0):
            raise SynthError(f"{key}={lr} " + ("learns nothing" if lr == 0 else "is not a positive finite number")
                             + f": set a learning rate such as {key}=1e-4")
    net_in, channels = _get(cfg, "model.net.in_channels"), _get(cfg, "data.channels")
    if _is_num(net_in) and _is_num(channels) and net_in != channels and _get(cfg, "model.autoencoder_run") is None:
        raise SynthError(f"model.net.in_channels={net_in} but the data has data.channels={channels}: drop the override "
                         f"(the network follows data.channels) or set data.channels={net_in} if the images have {net_in} channels")
    _check_unet(cfg)


def _check_unet(cfg: DictConfig) -> None:
    """Settings a MONAI UNet / autoencoder rejects with a traceback, as one line that names the key and value."""
    channels = _get(cfg, "model.net.channels")
    if not isinstance(channels, (list, ListConfig)) or not all(_is_num(c) for c in channels):
        return
    groups = _get(cfg, "model.net.norm_num_groups")
    if _is_num(groups) and groups >= 1 and any(c % groups for c in channels):
        raise SynthError(f"model.net.norm_num_groups={groups} does not divide every width in model.net.channels={list(channels)}: "
                         f"use a divisor of all of them, e.g. model.net.norm_num_groups={math.gcd(*[int(c) for c in channels])}")
    heads, levels = _get(cfg, "model.net.num_head_channels"), _get(cfg, "model.net.attention_levels")
    if _is_num(heads) and isinstance(levels, (list, ListConfig)):
        attended = [int(c) for c, a in zip(channels, levels) if a]
        if heads < 1 or any(c % heads for c in attended):
            raise SynthError(f"model.net.num_head_channels={heads} does not divide the widths with attention {attended}: "
                             f"use a divisor of them, e.g. model.net.num_head_channels={math.gcd(*attended) if attended else 8}")


def _check_machine(cfg: DictConfig) -> None:
    import torch

    if torch.cuda.is_available():
        return
    accelerator = str(_get(cfg, "trainer.accelerator") or "")
    if accelerator in ("gpu", "cuda"):
        raise SynthError(f"trainer.accelerator={accelerator} (e.g. trainer=gpu or trainer=ddp) but no CUDA GPU is visible here: "
                         "use trainer=cpu, trainer=ddp_cpu or trainer=default (it takes a GPU when there is one)")
    target = str(_get(cfg, "strategy._target_") or "")
    if "FSDP" in target or "DeepSpeed" in target:
        name = "fsdp" if "FSDP" in target else "deepspeed"
        raise SynthError(f"strategy={name} shards a model over GPUs but no CUDA GPU is visible here: use strategy=auto (or ddp) on this machine")


_VALIDATED: set[str] = set()  # runs whose config was checked in this process (by the Hydra callback, say)


def validate(cfg: DictConfig, task: str = "train", key: str | None = None) -> None:
    """One pass over a composed config before anything is made: keys and types of every built class, then value
    ranges and what this machine can run (train), or the sampling request (generate / evaluate). With `key` (the
    run's dir), a config already checked under that key is not checked again."""
    from pathlib import Path

    if key is not None:
        key = f"{task}:{Path(key).resolve()}"
        if key in _VALIDATED:
            return
    check_targets(cfg)
    if key is not None:
        _VALIDATED.add(key)
    if task == "train":
        _check_ranges(cfg)
        _check_machine(cfg)
        return
    _check_request(cfg)


def _check_request(cfg: DictConfig) -> None:
    for key in ("n", "batch_size", "steps", "max_images"):
        v = _get(cfg, key)
        if v is not None and not (_is_num(v) and float(v).is_integer() and v >= 1):
            raise SynthError(f"{key}={v} must be a whole number >= 1" + (" (or null for the model's default)" if key == "steps" else "") + f": e.g. {key}=16")
    guidance = _get(cfg, "guidance")
    if guidance is not None and not (_is_num(guidance) and math.isfinite(guidance)):
        raise SynthError(f"guidance={guidance} must be a number (1: no guidance), e.g. guidance=3")
    eta = _get(cfg, "eta")
    if eta is not None and not (_is_num(eta) and 0 <= eta <= 1):
        raise SynthError(f"eta={eta} must be a number in 0 (deterministic DDIM) .. 1 (ancestral), e.g. eta=0")
