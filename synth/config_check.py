"""Config mistakes as one line, before anything runs: `check_cli` turns Hydra's composition errors (an unknown
option of a config group, a misspelled key on the command line, an unparsable override) into
`synth: error: ...` + exit 2, and `check_targets` refuses a key that the class a config node builds
(`_target_`) does not take, such as a typo inside a YAML file, naming the closest valid key."""
from __future__ import annotations

import difflib
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from synth.errors import SynthError

CONF = Path(__file__).resolve().parents[1] / "conf"
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p"}  # flags that take the next argument
_OTHER_CONFIG = ("-cp", "-cn", "-cd", "--config-path", "--config-name", "--config-dir", "--experimental-rerun",
                 "-i", "--info", "-sc", "--shell-completion", "-h", "--help", "--hydra-help", "--version")


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else ""


def explain_hydra_error(err: Exception) -> str | None:
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
    return None


def check_cli(config_name: str, argv: list[str] | None = None, config_dir: Path = CONF) -> None:
    """Compose the command line's config once before @hydra.main does; a mistake exits with one line (code 2).
    Anything this check does not understand (sweeps, other config dirs, hydra/* settings) is left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from synth import _die

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in _OTHER_CONFIG or a.split("=")[0] in _OTHER_CONFIG for a in args):
        return
    overrides, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in _VALUE_FLAGS:
            skip = True
        elif not a.startswith("-"):
            overrides.append(a)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:
        message = explain_hydra_error(err)
        if message:
            _die(message)
        return
    keep = []
    for o in parsed:
        if o.get_key_element().lstrip("+~").startswith("hydra"):
            continue  # Hydra's own settings (launcher, sweeper, run dir): Hydra checks them
        if not o.is_sweep_override():
            keep.append(o.input_line)
            continue
        try:  # a sweep (-m a,b,c): check the first job's value, so keys that depend on the option are judged right
            first = next(iter(o.sweep_string_iterator()))
        except Exception:
            continue  # interval(...) and other sweeper syntax: left to the sweeper
        keep.append(f"{o.get_key_element()}={first}")
    was_initialized = GlobalHydra.instance().is_initialized()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose(config_name=config_name, overrides=keep)
    except Exception as err:
        message = explain_hydra_error(err)
        if message:
            _die(message)
    finally:
        if not was_initialized:
            GlobalHydra.instance().clear()


# ----- keys the built classes do not take -------------------------------------------------------------------
def _accepted(target: str) -> set[str] | None:
    """Keyword names `target` takes, following **kwargs through synth's own base classes; None: takes any."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception:
        return None  # instantiate will report it
    names: set[str] = set()
    chain = [c for c in obj.__mro__ if "__init__" in c.__dict__] if inspect.isclass(obj) else [obj]
    for fn in chain:
        try:
            params = inspect.signature(fn.__init__ if inspect.isclass(fn) else fn).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
        if not getattr(fn, "__module__", "").startswith("synth."):
            return None  # passes unknown keys on to code we cannot see
    return None


def _walk(node: Any, path: str):
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def check_targets(cfg: DictConfig) -> None:
    """Every config node with a `_target_` may only hold keys that its class (or function) takes."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    for path, node in _walk(tree, ""):
        accepted = _accepted(node["_target_"])
        if accepted is None:
            continue
        for key in node:
            if not str(key).startswith("_") and key not in accepted:
                near = _suggest(str(key), accepted)
                hint = f"did you mean {path}.{near}? " if near else ""
                cls = node["_target_"].rsplit(".", 1)[-1]
                raise SynthError(f"{path}.{key} is not a setting of {cls} (the class {path} builds): {hint}fix the spelling in your config or overrides")
