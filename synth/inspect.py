"""A look at the data before training: `python -m synth.inspect data=folder data.root=/path/images [data.… overrides]`.

Reads every file's header and decodes up to `--max-files` of them (default 100) for intensity percentiles;
prints per file its shape, spacing, orientation, channels, dtype and percentiles, then the configuration synth
would use (channels, intensity preset, target grid and field of view, how the split is made) and warnings for
anything odd: mixed orientations, oblique or 4D files, label maps, extreme spacing ratios, CT values under an MR
preset, values outside a fixed range, a single subject. Nothing is written. The same overrides as train.py apply.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from synth.errors import SynthError

log = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parents[1] / "conf"
ANISOTROPY = 3.0  # spacing ratio within a file (or across files) worth a warning


def _fmt(values, digits: int = 3) -> str:
    return " x ".join(f"{v:.{digits}g}" for v in values)


def _file_row(header, stats: dict | None, root: Path | None) -> list[str]:
    name = str(header.path.relative_to(root)) if root is not None and header.path.is_relative_to(root) else header.path.name
    pct = "-" if stats is None else " / ".join(f"{v:.4g}" for v in stats["percentiles"])
    spacing = _fmt(header.spacing) + (" (oblique)" if header.oblique else "")
    return [name, _fmt(header.shape, 6), spacing if header.kind == "nifti" else "pixels", header.orientation or "-",
            str(header.channels), header.dtype, pct]


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def _stats(array: np.ndarray) -> dict:
    values = array[0] if array.shape[0] == 1 else array
    flat = values.ravel()
    uniques = np.unique(flat[:: max(1, flat.size // 200_000)])
    return {"percentiles": np.percentile(flat, [0.5, 50, 99.5]), "integer": bool(np.all(np.mod(uniques, 1) == 0)),
            "unique": len(uniques), "array": array}


def survey(dm, max_files: int = 100) -> str:
    """The report for a (not set up) SynthDataModule."""
    from synth.data.intensity import looks_like_ct
    from synth.data.readers import read_header
    from synth.data.splits import split_subjects

    source = dm.source
    subjects = source.subjects()
    root = Path(dm.location) if dm.location and Path(dm.location).is_dir() else None
    headers = [source.header(s) for s in subjects]
    files = []  # (header, subject) per file
    for s, h in zip(subjects, headers):
        paths = s.paths or []
        if h is not None:
            files += [(h, s)] if len(paths) <= 1 else [(read_header(p), s) for p in paths]
    chosen = set(np.linspace(0, len(subjects) - 1, min(max_files, len(subjects))).round().astype(int)) if subjects else set()
    stats = {}
    for i, s in enumerate(subjects):
        if i in chosen:
            stats[s.id] = _stats(np.asarray(source.load(s).array, dtype=np.float32))
    dm.resolve(subjects)
    m, grid = dm.preprocess.intensity, dm.preprocess.grid
    warnings = []
    vols = [h for h, _ in files if h is not None and h.kind == "nifti"]
    orients = sorted({h.orientation for h in vols})
    if len(orients) > 1:
        warnings.append(f"mixed orientations ({', '.join(orients)}): synth reorients every file to RAS; check that they hold the same anatomy")
    if any(h.oblique for h in vols):
        warnings.append(f"{sum(h.oblique for h in vols)} oblique file(s): resampled onto the RAS grid (interpolated)")
    for h in vols:
        if h.ndim == 4:
            warnings.append(f"{h.path.name} is 4D ({_fmt(h.shape, 6)} x {h.channels}): its 4th axis is read as {h.channels} channels; "
                            "a time or diffusion series needs one volume picked first")
        ratio = max(h.spacing) / min(h.spacing)
        if ratio >= ANISOTROPY:
            warnings.append(f"{h.path.name} has anisotropic voxels ({_fmt(h.spacing)} mm, ratio {ratio:.1f}): resampling across "
                            "thick slices blurs; 2D along its thin axes may suit it better")
    if vols:
        finest = np.array([min(h.spacing) for h in vols])
        if finest.max() / finest.min() >= ANISOTROPY:
            warnings.append(f"voxel sizes differ {finest.max() / finest.min():.1f}-fold across files ({finest.min():.3g} .. {finest.max():.3g} mm): all are resampled to one grid")
    for s in subjects:
        st = stats.get(s.id)
        if st is None:
            continue
        if st["integer"] and st["unique"] <= 10:
            warnings.append(f"{s.id} holds only {st['unique']} integer values: a label map? keep segmentations out of an image folder")
        if m.kind == "percentile" and m.detected and looks_like_ct(st["array"]):
            warnings.append(f"{s.id} looks like CT in Hounsfield units: use data.intensity=ct_brain (or ct_soft_tissue, ct_bone, ct)")
        far = m.outside(st["array"])
        if far is not None:
            warnings.append(f"{s.id}: {far[0]:.1%} of values far outside data.intensity={m.name}'s range {list(m.range)} (min {far[1]:g}, max {far[2]:g})")
    keys = {s.group if s.group is not None else s.id for s in subjects}
    if len(subjects) == 1:
        split = "one volume: cut into blocks with gaps"
        try:
            dm.setup()
            split += f" -> {dm.meta['n_train']} / {dm.meta['n_val']} / {dm.meta['n_test']} train / val / test items ({dm.split_by})"
        except SynthError as err:
            warnings.append(f"one subject and it cannot be split: {err}")
        warnings.append("one subject: everything comes from it (blocks of one volume are held out, not other people)")
    else:
        by = f"subject key ({len(keys)} subjects in {len(subjects)} files)" if any(s.group is not None for s in subjects) else "file (one file = one subject)"
        try:
            parts = split_subjects(subjects, dm.split, dm.seed)
            counts = " / ".join(str(len({s.group if s.group is not None else s.id for s in parts[k]})) for k in ("train", "val", "test"))
            split = f"by {by}: {counts} train / val / test subjects"
        except SynthError as err:
            split = f"by {by}: cannot split ({err})"
        if len(keys) == 1:
            warnings.append("all files share one subject key: there is one subject, so nothing can be held out by subject")
    head = ["file", "shape", "spacing (mm)", "orientation", "ch", "dtype", "p0.5 / p50 / p99.5"]
    rows = [_file_row(h, stats.get(s.id) if len(s.paths or []) <= 1 else None, root) for h, s in files]
    lines = [f"data={dm.name}: {len(subjects)} subject(s), {len(files)} file(s)" + (f" in {dm.location}" if dm.location else ""), ""]
    lines += [_table(rows, head), ""] if rows else ["(generated data: no files)", ""]
    if len(stats) < len(subjects):
        lines += [f"(percentiles of {len(stats)} of {len(subjects)} subjects: --max-files to read more)", ""]
    geo = "none: each image fitted to image_size on its own (data.resize)" if grid is None else (
        f"resampled to RAS at {_fmt(grid.spacing)} mm ({grid.why}), field of view {_fmt([s * n for s, n in zip(grid.spacing, dm.image_size)])} mm")
    lines += [
        "synth would use:",
        f"  spatial_dims {dm.spatial_dims}, image_size {dm.image_size}, channels {dm.channels}",
        f"  intensity: {m.name} ({'auto: ' + m.detected if m.detected else 'data.intensity'}; {'invertible: samples written in ' + str(m.units) if m.invertible else 'samples written in [-1, 1]'})",
        f"  geometry: {geo}",
        f"  split: {split} (data.split={dm.split}, seed {dm.seed})",
        "",
    ]
    lines += ["warnings:", *[f"  - {w}" for w in warnings]] if warnings else ["warnings: none"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from synth.cli import die, user_error

    args = list(sys.argv[1:] if argv is None else argv)
    max_files = 100
    if "--max-files" in args:
        i = args.index("--max-files")
        try:
            max_files = int(args[i + 1])
        except (IndexError, ValueError):
            die("--max-files needs a number, e.g. --max-files 20")
        del args[i:i + 2]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=args)
        print(survey(instantiate(cfg.data), max_files))
    except Exception as err:  # noqa: BLE001  (a user's mistake is one line; anything else a traceback)
        message = user_error(err)
        if message is None:
            raise
        die(message)


if __name__ == "__main__":
    main()
