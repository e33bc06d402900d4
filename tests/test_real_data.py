"""#15 done-when, on real file formats built in the tests (tests/realdata.py): a folder of mixed NIfTI brain MRIs
trains in 2D and 3D from `data=folder data.root=...` alone (plus tiny-model and image-size speed knobs), a head CT
trains with data.intensity=ct_brain and its samples carry HU and the grid's spacing, histology tiles split by slide
(file-name regex, sub-folder, CSV column), one volume is split into blocks with gaps, the documented spellings
work, and `python -m synth.inspect` describes each data set."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from synth.errors import SynthError
from synth.evaluation.samples import read_samples
from synth.tasks import train
from tests.conftest import CONF, ROOT, TINY, compose_train, quick
from tests.realdata import ct_volume, from_grid, mixed_mr_folder, mr_brain, tiles, write_world
from tests.test_data import make_dm

SPEED = {2: ["data.image_size=[16,16]", "data.batch_size=4"], 3: ["data.image_size=[16,16,16]", "data.batch_size=2"]}


@pytest.fixture(scope="module")
def mri(tmp_path_factory) -> Path:
    return mixed_mr_folder(tmp_path_factory.mktemp("mri") / "t1")


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ct") / "head_ct"
    root.mkdir()
    return ct_volume(root / "head_ct.nii.gz").parent


def _train(tmp_path, overrides, model="ddpm"):
    cfg = compose_train(tmp_path, [f"model={model}", *TINY[model], *quick(2), "sample_after=2", *overrides])
    _, objs = train(cfg)
    run = objs["run_dir"]
    meta = json.loads((run / "data_meta.json").read_text())
    return objs, meta, sorted((run / "samples" / "after_training").glob("sample_*"))


@pytest.mark.parametrize("dims", [2, pytest.param(3, marks=pytest.mark.slow)])  # 3D: ~40 s on a busy 2-core machine
def test_mixed_nifti_brain_folder_trains_from_data_root_alone(tmp_path, mri, dims):
    """Four T1 files (RAS, LPS, 1x1x4 mm, oblique; int16 up to ~383): channels, MR percentile scaling and one RAS grid
    are detected; samples are written on that grid and read back for evaluation."""
    extra = [] if dims == 2 else ["data.spatial_dims=3"]
    objs, meta, samples = _train(tmp_path, ["data=folder", f"data.root={mri}", *extra, *SPEED[dims]])
    assert meta["channels"] == 1 and meta["intensity"]["name"] == "percentile" and meta["intensity"]["detected_from"].startswith("NIfTI")
    geo = meta["geometry"]
    assert geo["resampled"] and geo["orientation"] == "RAS" and geo["chosen"].startswith("auto")
    s = geo["spacing"]
    assert s[0] == s[1] and (dims == 2 or s[2] == s[0])
    assert 9.0 < s[0] < 20.0  # the largest extent (~260 mm: the oblique file) over 16 voxels, one physical scale for every file
    assert len(samples) == 2
    img = nib.load(samples[0])
    np.testing.assert_allclose(img.affine, meta["affine"])
    assert img.header.get_zooms()[:3] == pytest.approx(s if dims == 3 else [s[0], s[1], s[2]])
    back, _ = read_samples(samples[0].parent, (1, *[16] * dims))
    assert back.shape == (2, 1, *[16] * dims) and back.min() >= -1 and back.max() <= 1


def test_head_ct_trains_with_ct_brain_and_samples_carry_hu(tmp_path, ct):
    """One int16 LPS head CT (thick slices) with data.intensity=ct_brain: split into slabs with gaps, samples written
    in HU on the grid's spacing, read back to [-1, 1] for the metrics."""
    objs, meta, samples = _train(tmp_path, ["data=folder", f"data.root={ct}", "data.intensity=ct_brain", *SPEED[2]])
    assert meta["intensity"]["name"] == "ct_brain" and meta["intensity"]["units"] == "HU" and meta["intensity"]["invertible"]
    assert meta["split_by"].startswith("blocks of one volume") and meta["n_val"] > 0 and meta["n_test"] > 0
    img = nib.load(samples[0])
    hu = img.get_fdata()
    assert -1024 <= hu.min() and hu.max() <= 3071 and hu.max() - hu.min() > 200  # Hounsfield units, not [-1, 1]
    assert img.header.get_zooms()[:3] == pytest.approx([*meta["spacing"], 3.0])  # in-plane grid, 3 mm slices
    np.testing.assert_allclose(img.affine, meta["affine"])
    back, _ = read_samples(samples[0].parent, (1, 16, 16))
    assert back.min() >= -1 and back.max() <= 1 and back.std() > 0.05


def _splits_by_key(dm, key):
    return {split: {key(sid) for sid in dm.datasets[split].ids} for split in ("train", "val", "test")}


def test_histology_tiles_split_by_slide_and_train(tmp_path):
    root = tiles(tmp_path / "tiles", slides=5, per_slide=4)
    objs, meta, samples = _train(tmp_path, ["data=folder", f"data.root={root}", "data.source.subject_regex='^(slide[0-9]+)_'",
                                            *SPEED[2]])
    by_slide = _splits_by_key(objs["datamodule"], lambda sid: sid.split("_")[0])
    assert not (by_slide["train"] & by_slide["val"]) and not (by_slide["train"] & by_slide["test"]) and not (by_slide["val"] & by_slide["test"])
    assert sum(map(len, by_slide.values())) == 5 and meta["split_by"].startswith("subject key (5 subjects, 20 files)")
    assert meta["channels"] == 3 and meta["intensity"]["name"] == "uint8"
    assert [p.suffix for p in samples] == [".png", ".png"]


def test_subject_key_from_folder_level_and_csv_column(tmp_path):
    nested = tiles(tmp_path / "nested", slides=4, per_slide=3, nested=True)
    dm = make_dm("folder", root=str(nested), image_size=[16, 16], **{"source.subject_folder": 1})
    by_slide = _splits_by_key(dm, lambda sid: sid.split("_")[0])
    assert sorted(len(v) for v in by_slide.values()) == [1, 1, 2] and len(set().union(*by_slide.values())) == 4
    flat = tiles(tmp_path / "flat", slides=4, per_slide=3)
    rows = ["SubjectID,Channel_0,Slide"] + [f"t{k}{j},{flat}/slide{k}_tile{j}.png,slide{k}" for k in range(4) for j in range(3)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    dm = make_dm("csv", csv_path=str(tmp_path / "list.csv"), image_size=[16, 16], **{"source.subject_column": "Slide"})
    by_slide = _splits_by_key(dm, lambda sid: sid[1])
    assert all(len(a & b) == 0 for a in by_slide.values() for b in by_slide.values() if a is not b)
    with pytest.raises(SynthError, match="subject_regex='nope' does not match slide0_tile0.png"):
        make_dm("folder", root=str(flat), **{"source.subject_regex": "nope"})
    with pytest.raises(SynthError, match="the subject key groups 12 files into 1"):
        make_dm("folder", root=str(flat), **{"source.subject_regex": "tile"})


@pytest.mark.parametrize("dims", [2, 3])
def test_one_volume_folder_is_split_into_blocks_with_gaps(tmp_path, dims):
    """#15 item 4: one brain volume gives train, val and test blocks (no more data.split=[1,0,0] dead end); no
    held-out voxel lies in a training block and 8 mm separate them."""
    from scipy.ndimage import distance_transform_edt

    root = tmp_path / "one"
    root.mkdir()
    base, sp = mr_brain(1)
    write_world(root / "brain.nii.gz", from_grid(base, sp), (1.5, 1.5, 1.5), (128, 128, 120), dtype=np.int16)
    dm = make_dm("folder", root=str(root), spatial_dims=dims, image_size=[16] * dims)
    meta = dm.meta
    assert meta["n_train"] > 4 * meta["n_test"] > 0 and meta["n_val"] > 0 and meta["split_by"].startswith("blocks of one volume")
    boxes = {k: [s.extra["box"] for s in dm.subjects[k]] for k in ("train", "val", "test")}
    grid = np.asarray(dm.subjects["train"][0].extra["affine"])
    shape = np.max([[b for _, b in box] for v in boxes.values() for box in v], axis=0)
    masks = {}
    for k, bs in boxes.items():
        masks[k] = np.zeros(shape, bool)
        for box in bs:
            masks[k][tuple(slice(a, b) for a, b in box)] = True
    spacing = np.linalg.norm(grid[:3, :3], axis=0)
    to_train = distance_transform_edt(~masks["train"], sampling=spacing)
    for k in ("val", "test"):
        assert not (masks[k] & masks["train"]).any()
        assert to_train[masks[k]].min() - spacing.min() >= 8.0 - 1e-6


def test_documented_spellings_work_and_the_other_is_refused(tmp_path, mri):
    """folder.yaml's and csv.yaml's own usage lines run as written (paths swapped for test files); the old spelling
    data.source.root= gets one line naming the key (it ended in MissingMandatoryValue)."""
    listing = tmp_path / "list.csv"
    listing.write_text("SubjectID,Channel_0\n" + "".join(f"s{i},{p}\n" for i, p in enumerate(sorted(mri.iterdir()))))
    for name, path in (("folder", mri), ("csv", listing)):
        usage = next(line for line in (Path(CONF) / "data" / f"{name}.yaml").read_text().splitlines() if "Usage:" in line)
        args = usage.split("Usage:")[1].split("(")[0].split()
        args = [re.sub(r"=/path/\S+", f"={path}", a) for a in args]
        assert args[0] == f"data={name}" and any(a.startswith(("data.root=", "data.csv_path=")) for a in args), usage
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*args, *SPEED[2]])
        dm = instantiate(cfg.data)
        dm.setup()
        assert dm.meta["n_train"] > 0 and dm.meta["location"] == str(path)
    with pytest.raises(SynthError, match=f"data.source.root is set but data.root is not: the one key is data.root \\(write data.root={mri}\\)"):
        make_dm("folder", **{"source.root": str(mri)})
    with pytest.raises(SynthError, match="data.root is not set: data=folder data.root=/data/images"):
        make_dm("folder")


def test_inspect_describes_each_data_set(tmp_path, mri, ct, capsys):
    from synth.inspect import main

    histo = tiles(tmp_path / "tiles", slides=3, per_slide=2)
    GlobalHydra.instance().clear()
    main(["data=folder", f"data.root={mri}", "--max-files", "2"])
    out = capsys.readouterr().out
    assert "data=folder: 4 subject(s), 4 file(s)" in out and "sub-01_T1w.nii.gz" in out and "LPS" in out and "(oblique)" in out
    assert "intensity: percentile (auto: NIfTI files" in out and "geometry: resampled to RAS at" in out
    assert "split: by file (one file = one subject): 2 / 1 / 1" in out
    assert re.search(r"mixed orientations \(\w+, LPS, RAS\)", out) and "anisotropic voxels (1 x 1 x 4 mm, ratio 4.0)" in out
    assert "percentiles of 2 of 4 subjects" in out
    main(["data=folder", f"data.root={ct}", "data.intensity=ct_brain", *SPEED[2]])
    out = capsys.readouterr().out
    assert "int16" in out and "-1024 /" in out and "intensity: ct_brain (data.intensity; invertible: samples written in HU)" in out
    assert re.search(r"split: one volume: cut into blocks with gaps -> \d+ / \d+ / \d+ train / val / test items", out)
    assert "one subject: everything comes from it" in out
    main(["data=folder", f"data.root={ct}"])
    assert "looks like CT in Hounsfield units: use data.intensity=ct_brain" in capsys.readouterr().out
    main(["data=folder", f"data.root={histo}", "data.source.subject_regex='^(slide[0-9]+)_'"])
    out = capsys.readouterr().out
    assert "slide0_tile0.png" in out and "RGB" in out and "intensity: uint8 (auto: 8-bit PNG/JPG/TIFF files" in out
    assert "split: by subject key (3 subjects in 6 files): 1 / 1 / 1" in out and "geometry: none" in out


@pytest.mark.slow  # a fresh interpreter (~20 s on a busy 2-core machine)
def test_inspect_runs_as_a_module(tmp_path, mri):
    def run(*args):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
        return subprocess.run([sys.executable, "-m", "synth.inspect", *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)

    res = run("data=folder", f"data.root={mri}", "--max-files", "1")
    assert res.returncode == 0, res.stderr
    assert "synth would use:" in res.stdout and not (tmp_path / "outputs").exists()
    res = run("data=folder", f"data.root={tmp_path / 'none'}")
    assert res.returncode == 2 and res.stderr.strip() == f"synth: error: data.root={tmp_path / 'none'} does not exist: point data.root at your image folder"
