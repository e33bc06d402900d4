"""Intensity presets: how source values (MR a.u., CT Hounsfield units, 8-bit pixels) map to the models' [-1, 1]
and, where the map is invertible, back to source units for written samples.

Presets are the YAML files of conf/data/intensity/ (that folder is the registry), chosen by name with
`data.intensity=ct_brain`, or given inline as a mapping (`data.intensity={kind: fixed, range: [0, 4095]}`).
`auto` picks from the file type: NIfTI -> percentile, 8-bit PNG/JPG/TIFF -> uint8, other images -> percentile.
Kinds:
- percentile: per image and channel, the given percentiles -> -1 / 1, clipped (not invertible);
- fixed: `range` [lo, hi] -> [-1, 1], clipped (invertible on the range);
- window: `window` [lo, hi] -> [-share, share] and the rest of `clip` [lo, hi] into the tails, piecewise linear
  (invertible on the clip range; share 1 is a classic display window, clipped outside it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from synth.errors import SynthError

PRESETS = Path(__file__).resolve().parents[2] / "conf" / "data" / "intensity"
KINDS = ("percentile", "fixed", "window")
FAR = 0.1  # "far outside" a fixed range: beyond 10 % of its width
TOLERATED = 0.001  # share of voxels far outside before a warning


def names() -> list[str]:
    """The preset names (files of conf/data/intensity/)."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


@dataclass(frozen=True)
class Intensity:
    name: str
    kind: str
    percentiles: tuple[float, float] = (0.5, 99.5)
    range: tuple[float, float] | None = None  # fixed: mapped range; window: the clip range
    window: tuple[float, float] | None = None
    share: float = 0.8
    units: str | None = None
    detected: str | None = None  # why `auto` chose it (e.g. "NIfTI files"), else None

    @property
    def invertible(self) -> bool:
        return self.kind in ("fixed", "window")

    def _knots(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.range
        if self.kind == "fixed":
            return np.array([lo, hi]), np.array([-1.0, 1.0])
        w0, w1 = self.window
        if self.share >= 1.0:
            return np.array([w0, w1]), np.array([-1.0, 1.0])
        s = self.share
        return np.array([lo, w0, w1, hi]), np.array([-1.0, -s, s, 1.0])

    def forward(self, array: np.ndarray, name: str = "") -> np.ndarray:
        """(C, *S) source values -> float32 in [-1, 1]."""
        if not np.isfinite(array).all():
            raise SynthError(f"subject {name} has NaN/inf voxels: fix or remove that image")
        out = np.empty(array.shape, dtype=np.float32)
        for c, ch in enumerate(array):
            if self.kind == "percentile":
                lo, hi = np.percentile(ch, self.percentiles)
                if hi <= lo:
                    lo, hi = float(ch.min()), float(ch.max())
                if hi <= lo:
                    raise SynthError(f"subject {name} channel {c} is constant ({lo:g}): remove that image from the data (constant images are an error, not skipped)")
                out[c] = np.clip((ch - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0)
            else:
                xs, ys = self._knots()
                out[c] = np.interp(ch, xs, ys)  # clips outside the knots
        return out

    def inverse(self, array: np.ndarray) -> np.ndarray:
        """[-1, 1] -> source units (float32); the identity when the map is not invertible."""
        if not self.invertible:
            return np.asarray(array, dtype=np.float32)
        xs, ys = self._knots()
        return np.interp(np.clip(array, -1.0, 1.0), ys, xs).astype(np.float32)

    def outside(self, array: np.ndarray) -> tuple[float, float, float] | None:
        """(share of values far outside the fixed/clip range, min, max), or None when within it or not fixed."""
        if self.kind == "percentile":
            return None
        lo, hi = self.range
        margin = FAR * (hi - lo)
        far = float(((array < lo - margin) | (array > hi + margin)).mean())
        return (far, float(array.min()), float(array.max())) if far > TOLERATED else None

    def to_meta(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "units": self.units, "invertible": self.invertible}
        if self.kind == "percentile":
            out["percentiles"] = list(self.percentiles)
        else:
            out["range" if self.kind == "fixed" else "clip"] = list(self.range)
        if self.kind == "window":
            out.update(window=list(self.window), share=self.share)
        if self.detected:
            out["detected_from"] = self.detected
        return out


def _pair(value, key: str, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is None or not lo < hi:
        raise SynthError(f"{where}: {key}={value} must be [low, high] with low < high")
    return lo, hi


def from_mapping(spec: dict, name: str, where: str) -> Intensity:
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in KINDS:
        raise SynthError(f"{where}: kind={kind} is not one of {', '.join(KINDS)}")
    units = spec.pop("units", None)
    allowed = {"percentile": {"percentiles"}, "fixed": {"range"}, "window": {"window", "clip", "share"}}[kind]
    if set(spec) - allowed:
        raise SynthError(f"{where}: {sorted(set(spec) - allowed)} are not settings of a {kind} map (it takes {sorted(allowed)})")
    if kind == "percentile":
        p = _pair(spec.get("percentiles", (0.5, 99.5)), "percentiles", where)
        if not 0 <= p[0] < p[1] <= 100:
            raise SynthError(f"{where}: percentiles={list(p)} must lie in 0..100")
        return Intensity(name, kind, percentiles=p, units=units)
    if kind == "fixed":
        return Intensity(name, kind, range=_pair(spec.get("range"), "range", where), units=units)
    clip = _pair(spec.get("clip"), "clip", where)
    window = _pair(spec.get("window"), "window", where)
    share = float(spec.get("share", 0.8))
    if not (clip[0] <= window[0] < window[1] <= clip[1]) or not 0 < share <= 1:
        raise SynthError(f"{where}: a window map needs clip[0] <= window[0] < window[1] <= clip[1] and 0 < share <= 1")
    return Intensity(name, kind, range=clip, window=window, share=share, units=units)


def preset(spec: Any) -> Intensity:
    """`data.intensity`: a preset name (conf/data/intensity/<name>.yaml) or an inline mapping."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(spec, DictConfig):
            spec = OmegaConf.to_container(spec, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(spec, dict):
        return from_mapping(spec, str(spec.get("name", "custom")), f"data.intensity={spec}")
    name = str(spec)
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise SynthError(f"data.intensity={name} is not a preset: use auto or one of {', '.join(names())} (conf/data/intensity/), "
                         "or a mapping such as data.intensity={{kind: fixed, range: [0, 4095]}}")
    import yaml

    return from_mapping(yaml.safe_load(path.read_text()) or {}, name, f"conf/data/intensity/{name}.yaml")


def auto(headers: Iterable) -> Intensity:
    """The preset a data set's file type implies (see the module docstring); `detected` says why."""
    kinds = {(h.kind, h.eight_bit) for h in headers if h is not None}
    if not kinds:
        return preset("percentile")
    if len({k for k, _ in kinds}) > 1:
        raise SynthError("the data mixes NIfTI volumes and PNG/JPG/TIFF images: keep one kind of file per data set")
    kind, eight = sorted(kinds)[0]
    if kind == "nifti":
        return _detected(preset("percentile"), "NIfTI files (MR-style percentile scaling)")
    if all(e for _, e in kinds):
        return _detected(preset("uint8"), "8-bit PNG/JPG/TIFF files")
    return _detected(preset("percentile"), "16-bit or float images (percentile scaling)")


def _detected(m: Intensity, why: str) -> Intensity:
    from dataclasses import replace

    return replace(m, detected=why)


def from_meta(meta: dict | None) -> Intensity | None:
    """The preset recorded in data_meta.json (or a sample's header), or None when absent."""
    if not meta or not isinstance(meta.get("intensity"), dict):
        return None
    spec = {k: v for k, v in meta["intensity"].items() if k not in ("name", "invertible", "detected_from")}
    return from_mapping(spec, meta["intensity"].get("name", "custom"), "recorded intensity")


def looks_like_ct(array: np.ndarray) -> bool:
    """Hounsfield units: air near -1000 fills a good part of the volume and soft tissue sits around 0..100."""
    return float(np.percentile(array, 5)) < -900 and float(np.percentile(array, 95)) > -200


def write_sample_nifti(image: np.ndarray, path, affine: np.ndarray, meta: dict | None) -> Path:
    """A generated image (C, *S) in [-1, 1] as NIfTI, in source units where data_meta's preset is invertible (HU for
    the CT presets, 0..255 for uint8), the preset stored in the file so that readers map it back to [-1, 1]."""
    from synth.io import save_nifti

    m = from_meta(meta)
    if m is None or not m.invertible:
        return save_nifti(image, path, affine)
    return save_nifti(m.inverse(image), path, affine, note={"intensity": meta["intensity"]})


def read_sample_units(path, array: np.ndarray) -> np.ndarray | None:
    """`array` read from a NIfTI that `write_sample_nifti` wrote in source units, mapped back to [-1, 1]; None when
    the file carries no invertible preset (its values should already be in [-1, 1])."""
    from synth.io import read_note

    m = from_meta(read_note(path))
    return m.forward(array, str(path)) if m is not None and m.invertible else None
