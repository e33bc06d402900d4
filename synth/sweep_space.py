"""Search spaces of sweeps (sweeps/*.yaml, `hydra.sweeper.params`, and sweep overrides on the command line) in
Hydra's override grammar, turned into Optuna distributions:

    choice(a, b, ...)            -> CategoricalDistribution (values as Hydra encodes them: `[8,16]` stays a list)
    range(start, stop[, step])   -> IntDistribution / FloatDistribution with that step (stop excluded, as in Hydra)
    interval(low, high)          -> FloatDistribution(low, high)
    tag(log, interval(...))      -> FloatDistribution(..., log=True)
    tag(int, interval(...))      -> IntDistribution (tag(int, log, ...) both)
    key=value                    -> a fixed value, passed to every trial

A space that cannot be right is refused with one line naming the key, the bad value and the fix (`interval(2e-3,
1e-4)`, a log range from 0, `choice(a,b)` on a number, a key the config does not have). `grid_space` gives the
grid a GridSampler walks (every key must be discrete)."""
from __future__ import annotations

import difflib
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from synth.errors import SynthError

_MISSING = object()


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _base_value(config: DictConfig | None, key: str) -> Any:
    if config is None:
        return _MISSING
    return OmegaConf.select(config, key, default=_MISSING, throw_on_missing=False, throw_on_resolution_failure=False)


def _check_key(config: DictConfig | None, key: str, groups: set[str], line: str) -> Any:
    """The key's value in the composed config; a key the config lacks is refused (a typo would fail every trial)."""
    base = _base_value(config, key)
    if base is _MISSING and key not in groups and config is not None:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(config, parent, default=None) if parent else config
        near = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1) if isinstance(node, DictConfig) else []
        hint = f"did you mean {parent + '.' if parent else ''}{near[0]}? " if near else ""
        raise SynthError(f"sweep space {line}: {key} is not a key of the config: {hint}fix the key in the sweep space "
                         f"(or write +{key}=... to add a new key on purpose)")
    return base


def _interval(key: str, line: str, low: float, high: float, tags: set[str]) -> BaseDistribution:
    unknown = tags - {"log", "int"}
    if unknown:
        raise SynthError(f"sweep space {line}: tag {', '.join(sorted(unknown))} is not one synth knows: use tag(log, ...) and/or tag(int, ...)")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SynthError(f"sweep space {line}: {key} needs finite bounds: e.g. interval(1e-4, 1e-2)")
    if low > high:
        raise SynthError(f"sweep space {line}: {key} has low {low:g} > high {high:g}: write the smaller bound first, "
                         f"e.g. {key}={'tag(log, ' if 'log' in tags else ''}interval({high:g}, {low:g}){')' if 'log' in tags else ''}")
    log = "log" in tags
    if log and low <= 0:
        raise SynthError(f"sweep space {line}: {key} is searched on a log scale, which needs low > 0 (it is {low:g}): "
                         f"start the interval above zero, e.g. tag(log, interval({high / 1000:g}, {high:g})), or drop log")
    if "int" in tags:
        return IntDistribution(int(math.ceil(low)), int(math.floor(high)), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _range(key: str, line: str, value) -> BaseDistribution:
    start, stop, step = value.start, value.stop, value.step
    if not step or (stop - start) / step <= 0:
        raise SynthError(f"sweep space {line}: {key} gives no value (range(start, stop, step) counts from start towards stop, "
                         f"stop excluded): e.g. {key}=range(1, 5)")
    n = int(math.ceil((stop - start) / step - 1e-9))
    last = start + (n - 1) * step
    low, high = (start, last) if step > 0 else (last, start)
    if all(isinstance(v, int) for v in (start, stop, step)):
        return IntDistribution(int(low), int(high), step=abs(int(step)))
    return FloatDistribution(float(low), float(round(high, 12)), step=abs(float(step)))


def _choices(key: str, line: str, override, base: Any) -> CategoricalDistribution:
    from hydra.core.override_parser.types import Transformer

    encoded = list(override.sweep_iterator(transformer=Transformer.encode))
    plain = list(override.sweep_iterator())
    if not encoded:
        raise SynthError(f"sweep space {line}: {key} has no choices: e.g. {key}=choice(1, 2)")
    if _is_num(base):
        bad = [str(v) for v in plain if not _is_num(v)]
        if bad:
            raise SynthError(f"sweep space {line}: {key} is a number ({base}) but {', '.join(bad)} "
                             f"{'is' if len(bad) == 1 else 'are'} not: give numbers, e.g. {key}=choice({base}, {base * 2})")
    for v in encoded:
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise SynthError(f"sweep space {line}: {key} has a choice of type {type(v).__name__}: use numbers, strings, true/false or lists")
    return CategoricalDistribution(encoded)


def parse_space(lines: list[str], config: DictConfig | None = None) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions by key, fixed overrides by key) from override lines `key=sweep(...)`; `config` (the composed
    task config) lets keys and value types be checked before any trial runs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import OverrideParseException

    groups = set()
    if config is not None and OmegaConf.select(config, "hydra.runtime.choices", default=None) is not None:
        groups = {str(k) for k in config.hydra.runtime.choices.keys()}
    task = None
    if config is not None:
        task = OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"]) if "hydra" in config else config
    try:
        overrides = OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as err:
        raise SynthError(f"sweep space: cannot parse {str(err).splitlines()[0]}: write key=choice(...)|range(...)|interval(...) "
                         "(https://hydra.cc/docs/advanced/override_grammar/extended)") from None
    dists: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override, raw in zip(overrides, lines):
        key = override.get_key_element()
        line = raw.strip()
        if not override.is_sweep_override():
            fixed[key] = override.get_value_element_as_str()
            continue
        name = override.key_or_group
        adds = key.startswith(("+", "~"))
        base = _MISSING if adds else _check_key(task, name, groups, line)
        value = override.value()
        if isinstance(value, IntervalSweep):
            dists[key] = _interval(name, line, float(value.start), float(value.end), set(value.tags))
        elif isinstance(value, RangeSweep) and not value.shuffle:
            dists[key] = _range(name, line, value)
        elif isinstance(value, (ChoiceSweep, RangeSweep)):
            dists[key] = _choices(name, line, override, base)
        else:
            raise SynthError(f"sweep space {line}: {type(value).__name__} is not a search range synth can sweep: use choice, range or interval")
    for key in fixed:
        dists.pop(key, None)  # a fixed value on the command line wins over the config's search range
    return dists, fixed


def space_lines(params: DictConfig | dict | None, arguments: list[str]) -> list[str]:
    """`hydra.sweeper.params` as override lines, then the command line's own (a later line for a key wins)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items() if v is not None]
    by_key: dict[str, str] = {}
    for line in [*lines, *arguments]:
        by_key[line.split("=", 1)[0].strip()] = line
    return list(by_key.values())


def grid_space(dists: dict[str, BaseDistribution]) -> dict[str, list]:
    """The grid of a space whose every key is discrete: choice, range, or tag(int, interval)."""
    grid = {}
    for key, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            grid[key] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            grid[key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step)) + 1
            grid[key] = [round(d.low + i * d.step, 12) for i in range(n)]
        else:
            raise SynthError(f"hydra/sweeper/sampler=grid needs a finite set of values for every key, but {key} is a continuous "
                             f"range: give it as choice(...) or range(...), or use another sampler (tpe, gp, qmc)")
    return grid


def grid_size(grid: dict[str, list]) -> int:
    return math.prod(len(v) for v in grid.values()) if grid else 0
