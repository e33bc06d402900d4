"""Sources that read a user's files: BraTS (2021 / 2023 folder layouts), CSVList (a GaNDLF-style data list) and
Folder (a directory of NIfTI / PNG / JPG / TIFF images, with subject keys so that tiles of one slide or patches of
one patient stay in one split). See synth/data/sources.py for the Source contract."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from synth.data import phantom as _phantom
from synth.data.readers import NIFTI_SUFFIXES, Subject, Volume, _stack, is_image, read_header, read_image, read_nifti, stem
from synth.data.sources import Source, _as_list
from synth.errors import SynthError

BRATS_2021_TO_2023 = {k: v[0] for k, v in _phantom.BRATS_MODALITIES.items()}
BRATS_2023_TO_2021 = {v: k for k, v in BRATS_2021_TO_2023.items()}


class BraTS(Source):
    """BraTS 2021 (`BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz`) or 2023
    (`BraTS-GLI-XXXXX-XXX/BraTS-GLI-XXXXX-XXX-{t1n,t1c,t2w,t2f,seg}.nii.gz`, any `BraTS-*` prefix)
    subject folders under `root`, detected per folder. `modalities` may use either naming.
    With `label_from_seg` (default), each image is labelled by its segmentation: 1 = tumour in the slice
    (2D) or volume (3D), else 0; a subject without a seg file then has no label (-1)."""

    label_from_seg = True

    def __init__(self, root: str | Path | None = None, modalities: list[str] = ("t1ce",), label_from_seg: bool = True):
        self.root = _location(root, "root", "data=brats data.root=/data/BraTS2021")
        self.label_from_seg = bool(label_from_seg)
        if self.label_from_seg:
            self.num_classes, self.class_names = 2, ["no_tumour", "tumour"]
        self.modalities = [str(m) for m in _as_list(modalities)]
        known = sorted(BRATS_2021_TO_2023) + sorted(BRATS_2023_TO_2021)
        for m in self.modalities:
            if m not in known:
                raise SynthError(f"data.source.modalities has unknown BraTS modality {m!r}: use some of {known}")
        if not self.modalities:
            raise SynthError("data.source.modalities is empty: list at least one, e.g. [t1ce]")

    def _files(self, folder: Path) -> tuple[list[Path], Path | None]:
        sid = folder.name
        if sid.startswith("BraTS2021_") or not sid.startswith("BraTS-"):
            names, sep = [BRATS_2023_TO_2021.get(m, m) for m in self.modalities], "_"
        else:
            names, sep = [BRATS_2021_TO_2023.get(m, m) for m in self.modalities], "-"

        def find(m: str) -> Path | None:
            for suffix in NIFTI_SUFFIXES:
                if (p := folder / f"{sid}{sep}{m}{suffix}").is_file():
                    return p
            return None

        paths = []
        for m in names:
            if (p := find(m)) is None:
                raise SynthError(f"BraTS subject {sid} is missing {folder / f'{sid}{sep}{m}.nii.gz'}: restore the file or remove the subject folder")
            paths.append(p)
        return paths, find("seg")

    def subjects(self) -> list[Subject]:
        if not self.root.is_dir():
            raise SynthError(f"data.root={self.root} does not exist: point data.root at your BraTS folder")
        pattern = re.compile(r"^(BraTS2021_\d+|BraTS-[A-Za-z]+-\d+-\d+)$")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and pattern.match(p.name))
        if not folders:
            raise SynthError(f"no BraTS subject folders in data.root={self.root}: expected BraTS2021_XXXXX/ or BraTS-GLI-XXXXX-XXX/ folders there")
        out = []
        for f in folders:
            paths, seg = self._files(f)
            out.append(Subject(f.name, None, paths, {"seg": seg}))
        return out

    def load(self, subject: Subject) -> Volume:
        vol = _stack(subject, list(self.modalities))
        if subject.extra.get("seg") is not None:
            seg = read_nifti(subject.extra["seg"])[0][0]
            vol.seg = seg.astype(np.int64)  # another grid than the image: Preprocess drops it (data.masks=true: refused)
        return vol


class CSVList(Source):
    """GaNDLF-style data list: columns SubjectID, Channel_0..Channel_N (paths absolute or relative to
    the CSV's folder), optional class column `label_column` (default Label; ints kept; strings mapped to
    sorted class indices) and optional mask column `mask_column` (default Mask: a label map per row on the
    image's grid, read as its lesion mask; served with data.masks=true). Each Channel_ column is one channel, except that a single column may hold
    multi-channel files (e.g. RGB); the DataModule checks the decoded channel count."""

    def __init__(self, csv: str | Path | None = None, channels: int = 1, label_column: str | None = "Label",
                 subject_column: str | None = None, mask_column: str | None = "Mask"):
        self.csv = _location(csv, "csv_path", "data=csv data.csv_path=/data/list.csv")
        self.channels = int(channels)
        self.label_column = None if label_column in (None, "") else str(label_column)
        self.subject_column = None if subject_column in (None, "") else str(subject_column)
        self.mask_column = None if mask_column in (None, "") else str(mask_column)

    def subjects(self) -> list[Subject]:
        import pandas as pd

        if not self.csv.is_file():
            raise SynthError(f"data.csv_path={self.csv} does not exist: point data.csv_path at your data list")
        df = pd.read_csv(self.csv, dtype=str, keep_default_na=False)
        df.columns = [c.strip() for c in df.columns]
        cols = sorted((c for c in df.columns if re.fullmatch(r"Channel_\d+", c)), key=lambda c: int(c.split("_")[1]))
        if "SubjectID" not in df.columns or not cols:
            raise SynthError(f"{self.csv} needs columns SubjectID and Channel_0..Channel_N, found {list(df.columns)}: rename its columns")
        if len(cols) != self.channels and len(cols) != 1:
            raise SynthError(f"{self.csv} has {len(cols)} Channel_ columns but data.channels={self.channels}: set data.channels={len(cols)}")
        if df.empty:
            raise SynthError(f"{self.csv} lists no subjects: add rows to it")
        labels = None
        col = self.label_column
        if col is not None and col not in df.columns and col != "Label":  # the default may be absent: unlabelled data
            others = [c for c in df.columns if c != "SubjectID" and c not in cols]
            raise SynthError(f"data.source.label_column={col} is not a column of {self.csv} (it has {list(df.columns)}): "
                             f"set data.source.label_column to one of {others or ['Label']}, or null for unlabelled data")
        if col is not None and col in df.columns:
            raw = [v.strip() for v in df[col]]
            if "" in raw:
                raise SynthError(f"{self.csv} row {raw.index('') + 2} has an empty {col}: fill it in or set data.source.label_column=null")
            if all(re.fullmatch(r"-?\d+", v) for v in raw):
                labels = [int(v) for v in raw]
                if min(labels) < 0:
                    raise SynthError(f"{self.csv} column {col} holds a negative class {min(labels)}: use classes 0..K-1 (or class names)")
                self.num_classes = max(labels) + 1
                self.class_names = [str(i) for i in range(self.num_classes)]
            else:
                self.class_names = sorted(set(raw))
                self.num_classes = len(self.class_names)
                labels = [self.class_names.index(v) for v in raw]
        if self.subject_column is not None and self.subject_column not in df.columns:
            raise SynthError(f"data.source.subject_column={self.subject_column} is not a column of {self.csv} (it has {list(df.columns)}): "
                             "name the column that holds the patient / slide of each row, or set it to null")
        ids = [str(v).strip() for v in df["SubjectID"]]
        if self.subject_column is not None:  # several rows (patches, tiles) per subject: ids made unique per row
            groups = [str(v).strip() for v in df[self.subject_column]]
            ids = ids if len(set(ids)) == len(ids) else [f"{sid}_r{i + 2}" for i, sid in enumerate(ids)]
        elif len(set(ids)) < len(ids):
            dup = next(v for v in ids if ids.count(v) > 1)
            raise SynthError(f"{self.csv} lists SubjectID {dup} more than once: make SubjectID values unique, or set "
                             "data.source.subject_column=SubjectID when rows are patches of one subject (they are then split together)")
        base = self.csv.parent
        out = []
        for i, row in enumerate(df.itertuples(index=False)):
            r = dict(zip(df.columns, row))
            paths = []
            for c in cols:
                p = Path(r[c].strip()).expanduser()
                p = p if p.is_absolute() else base / p
                if not p.is_file():
                    raise SynthError(f"{self.csv} row {i + 2} (SubjectID {r['SubjectID']}) {c}: file {p} does not exist: fix the path in the CSV")
                paths.append(p)
            extra = {"row": i + 2}
            if self.mask_column is not None and self.mask_column in df.columns and str(r[self.mask_column]).strip():
                m = Path(str(r[self.mask_column]).strip()).expanduser()
                extra["mask"] = m if m.is_absolute() else base / m
                if not extra["mask"].is_file():
                    raise SynthError(f"{self.csv} row {i + 2} (SubjectID {r['SubjectID']}) {self.mask_column}: mask file {extra['mask']} "
                                     "does not exist: fix the path in the CSV")
            out.append(Subject(ids[i], None if labels is None else labels[i], paths, extra,
                               group=None if self.subject_column is None else groups[i]))
        return out

    def load(self, subject: Subject) -> Volume:
        vol = _stack(subject)
        if len(subject.paths) > 1:
            vol.channel_names = [f"Channel_{i}" for i in range(len(subject.paths))]
        if subject.extra.get("mask") is not None:
            vol.seg = read_mask(subject.extra["mask"])
        return vol


class Folder(Source):
    """A directory of NIfTI / PNG / JPG / TIFF files, one image per file (id = file stem). RGB images give 3
    channels (R, G, B), grayscale 1, a 4D NIfTI its 4th axis. With `label_from_subdir`, each file's parent folder
    name is its class (sorted class names -> 0..K-1). Tiles or patches of one slide / patient share a subject key,
    so that they land in one split: `subject_regex` (searched in the file's path below root; its first group, or
    the whole match, is the key) or `subject_folder` (the folder level below root that names the subject, 1 = the
    first). Sub-folders are searched when any of these needs them (or with `recursive`). With `mask_dir`, each image's
    lesion mask is the file of the same relative path there (served with data.masks=true)."""

    def __init__(self, root: str | Path | None = None, recursive: bool = False, label_from_subdir: bool = False,
                 subject_regex: str | None = None, subject_folder: int | None = None, mask_dir: str | Path | None = None):
        self.root = _location(root, "root", "data=folder data.root=/data/images")
        self.recursive = bool(recursive)
        self.label_from_subdir = bool(label_from_subdir)
        self.subject_regex = None if subject_regex in (None, "") else str(subject_regex)
        self.subject_folder = None if subject_folder is None else int(subject_folder)
        self.mask_dir = None if mask_dir in (None, "") else Path(str(mask_dir)).expanduser()
        if self.mask_dir is not None and not self.mask_dir.is_dir():
            raise SynthError(f"data.source.mask_dir={mask_dir} is not a folder: point it at the folder of mask files (same names as the images)")
        if self.subject_regex is not None and self.subject_folder is not None:
            raise SynthError("data.source.subject_regex and data.source.subject_folder are both set: the subject key comes from one of them")
        if self.subject_folder is not None and self.subject_folder < 1:
            raise SynthError(f"data.source.subject_folder={subject_folder} must be >= 1 (1 = the first folder level below data.root)")
        if self.subject_regex is not None:
            try:
                self._regex = re.compile(self.subject_regex)
            except re.error as e:
                raise SynthError(f"data.source.subject_regex={self.subject_regex!r} is not a valid regular expression ({e}): fix it") from None

    def files(self) -> list[Path]:
        if not self.root.is_dir():
            raise SynthError(f"data.root={self.root} does not exist: point data.root at your image folder")
        deep = self.recursive or self.label_from_subdir or self.subject_folder is not None
        walk = self.root.rglob("*") if deep else self.root.iterdir()
        files = sorted(p for p in walk if is_image(p))
        if not files:
            raise SynthError(f"no .nii/.nii.gz/.png/.jpg/.tif images in data.root={self.root}: put images there (or set data.source.recursive=true)")
        return files

    def subject_key(self, path: Path) -> str | None:
        rel = path.relative_to(self.root)
        if self.subject_folder is not None:
            if len(rel.parts) <= self.subject_folder:
                raise SynthError(f"{rel} lies less than data.source.subject_folder={self.subject_folder} folders below data.root: "
                                 "put every file inside its subject's folder, or lower subject_folder")
            return rel.parts[self.subject_folder - 1]
        if self.subject_regex is not None:
            m = self._regex.search(rel.as_posix())
            if m is None:
                raise SynthError(f"data.source.subject_regex={self.subject_regex!r} does not match {rel.as_posix()}: "
                                 "every file name needs the subject key (e.g. '^(slide[0-9]+)_' for slide12_tile003.png)")
            return m.group(1) if m.groups() else m.group(0)
        return None

    def subjects(self) -> list[Subject]:
        files = self.files()
        headers = [read_header(p) for p in files]
        counts = {}
        for p, h in zip(files, headers):
            counts.setdefault(h.channels, p)
        if len(counts) > 1:
            example = ", ".join(f"{p.name} has {c}" for c, p in counts.items())
            raise SynthError(f"images in {self.root} have mixed channel counts ({example}): convert them to one colour mode")
        if self.label_from_subdir:
            self.class_names = sorted({p.parent.name for p in files})
            self.num_classes = len(self.class_names)
        ids = [stem(p) for p in files]
        if len(set(ids)) < len(ids):  # same stem in different folders: use the relative path
            ids = [str(p.relative_to(self.root).parent / stem(p)).replace("/", "_") for p in files]
        out = []
        for i, p, h in zip(ids, files, headers):
            extra = {"header": h}
            if self.mask_dir is not None:
                extra["mask"] = self.mask_dir / p.relative_to(self.root)
                if not extra["mask"].is_file():
                    raise SynthError(f"image {p} has no mask {extra['mask']} in data.source.mask_dir: add it (same relative path and name)")
            out.append(Subject(i, self.class_names.index(p.parent.name) if self.label_from_subdir else None, [p], extra, group=self.subject_key(p)))
        return out

    def load(self, subject: Subject) -> Volume:
        vol = read_image(subject.paths[0])
        if subject.extra.get("mask") is not None:
            vol.seg = read_mask(subject.extra["mask"])
        return vol


def read_mask(path: Path) -> np.ndarray:
    """A label map (NIfTI, canonical RAS like the images, or PNG/TIFF) as int64 (*S); one channel only."""
    arr = read_image(Path(path)).array
    if arr.shape[0] != 1:
        raise SynthError(f"mask {path} has {arr.shape[0]} channels: a mask is one label map (0 = background)")
    return np.rint(arr[0]).astype(np.int64)


def _location(value, key: str, usage: str) -> Path:
    """data.root / data.csv_path, which the YAML passes to the source; unset is one line naming the key."""
    if value in (None, "", "???"):
        raise SynthError(f"data.{key} is not set: {usage}")
    return Path(str(value)).expanduser()


__all__ = ["BraTS", "CSVList", "Folder"]
