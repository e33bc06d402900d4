"""Data with masks (issue 18, part A): `data.masks=true` serves each item's lesion mask beside its image, for
phantom (2D, 3D), BraTS seg, a CSV mask column and a mask folder; missing or misfit masks are refused."""
from __future__ import annotations

import numpy as np
import pytest

from synth.data import SynthDataModule
from synth.data.phantom import make_phantom, write_fake_brats
from synth.data.sources import Phantom
from synth.data.user_sources import BraTS, CSVList, Folder
from synth.errors import SynthError


def _dm(source, dims, size, **kw):
    return SynthDataModule(source, spatial_dims=dims, image_size=size, masks=True, batch_size=4, **kw)


@pytest.mark.parametrize("dims,size", [(2, [32, 32]), (3, [16, 16, 16])])
def test_phantom_masks_are_the_lesions(dims, size):
    src = Phantom(size, dims, channels=3, n_subjects=10, lesion_radius=(0.2, 0.3), seed=5)
    dm = _dm(src, dims, size, channels=3)
    dm.setup()
    images, masks = dm.images("train"), dm.mask_items("train")
    assert masks.shape == (len(images), 1, *size) and set(np.unique(masks.numpy())) <= {0.0, 1.0}
    labels = dm.datasets["train"].labels
    assert ((masks.flatten(1).sum(1) > 0).numpy() == (labels == 1)).all()  # a mask exactly where the label says lesion
    # drawn at image_size: the served mask is the phantom's own lesion mask
    sid = dm.datasets["train"].ids[0]
    sub = next(s for s in dm.subjects["train"] if s.id == sid)
    p = make_phantom(tuple(size), 3, seed=5 * 100_003 + sub.extra["index"], lesion=sub.extra["lesion"], lesion_radius=(0.2, 0.3))
    assert np.array_equal(masks[0, 0].numpy(), p["seg"].astype(np.float32))
    # FLAIR (channel 2): the lesion is the brightest tissue
    flair, m = images[:, 2], masks[:, 0] > 0
    assert flair[m].mean() > flair[~m & (flair > -0.9)].mean() + 0.3
    batch = next(iter(dm.train_dataloader()))
    assert batch["mask"].shape == batch["image"][:, :1].shape


def test_no_mask_key_without_masks():
    dm = SynthDataModule(Phantom([16, 16], 2, n_subjects=6), spatial_dims=2, image_size=[16, 16])
    dm.setup()
    assert "mask" not in dm.datasets["train"][0] and dm.meta["masks"] is False
    with pytest.raises(SynthError, match="data.masks=true"):
        dm.mask_items("train")


@pytest.mark.parametrize("dims,size", [(2, [24, 24]), (3, [16, 16, 16])])
def test_brats_seg_is_the_mask(tmp_path, dims, size):
    write_fake_brats(tmp_path, 3, shape=(24, 24, 16))
    dm = _dm(BraTS(tmp_path, ["t1ce"]), dims, size, name="brats", split=[0.34, 0.33, 0.33])
    dm.setup()
    masks, labels = dm.mask_items("train"), dm.datasets["train"].labels
    assert masks.sum() > 0 and ((masks.flatten(1).sum(1) > 0).numpy() == (labels == 1)).all()


def _write_nifti(path, arr):
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    return path


def test_csv_mask_column_and_refusals(tmp_path):
    from PIL import Image

    rows = ["SubjectID,Channel_0,Mask"]
    for i in range(4):  # PNG: served on the file's own pixel grid, so the mask must come back unchanged
        p = make_phantom((20, 20), seed=i, lesion=True)
        Image.fromarray((np.clip(p["image"][0], 0, 1) * 255).astype(np.uint8)).save(tmp_path / f"img{i}.png")
        Image.fromarray(p["seg"] * 255).save(tmp_path / f"seg{i}.png")
        rows.append(f"s{i},img{i}.png,seg{i}.png")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    dm = _dm(CSVList(tmp_path / "list.csv"), 2, [20, 20], name="csv", split=[0.5, 0.25, 0.25])
    dm.setup()
    i = int(dm.datasets["train"].ids[0][1:])
    assert np.array_equal(dm.mask_items("train")[0, 0].numpy(), make_phantom((20, 20), seed=i, lesion=True)["seg"].astype(np.float32))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "seg0.png")  # another grid than the image
    with pytest.raises(SynthError, match="mask has shape"):
        _dm(CSVList(tmp_path / "list.csv"), 2, [20, 20], name="csv", split=[0.5, 0.25, 0.25]).setup()
    (tmp_path / "seg1.png").unlink()
    with pytest.raises(SynthError, match="mask file .* does not exist"):
        CSVList(tmp_path / "list.csv").subjects()


def test_folder_mask_dir_and_missing_masks(tmp_path):
    (tmp_path / "img").mkdir(), (tmp_path / "seg").mkdir()
    for i in range(4):
        p = make_phantom((16, 16), seed=i, lesion=True)
        _write_nifti(tmp_path / "img" / f"a{i}.nii.gz", p["image"][0])
        _write_nifti(tmp_path / "seg" / f"a{i}.nii.gz", p["seg"])
    dm = _dm(Folder(tmp_path / "img", mask_dir=tmp_path / "seg"), 2, [16, 16], name="folder", split=[0.5, 0.25, 0.25])
    dm.setup()
    assert dm.mask_items("train").sum() > 0
    with pytest.raises(SynthError, match="has no mask but data.masks=true"):
        _dm(Folder(tmp_path / "img"), 2, [16, 16], name="folder", split=[0.5, 0.25, 0.25]).setup()
    (tmp_path / "seg" / "a2.nii.gz").unlink()
    with pytest.raises(SynthError, match="has no mask .* in data.source.mask_dir"):
        Folder(tmp_path / "img", mask_dir=tmp_path / "seg").subjects()


def test_masks_refuse_augmentation():
    import torchio as tio

    with pytest.raises(SynthError, match="without their masks"):
        SynthDataModule(Phantom([16, 16], 2), spatial_dims=2, image_size=[16, 16], masks=True, augment=[tio.RandomFlip()])
