"""Procedural brain-like phantoms (2D or 3D, 1-4 contrasts, optional lesion) and fake BraTS trees.

Everything here is pure numpy + nibabel and deterministic by seed. `make_phantom` draws one subject;
`write_fake_brats` writes real NIfTI files in the BraTS 2021 or 2023 layout so the BraTS reader is
tested on the real on-disk structure. The `Phantom` source class that serves these to the DataModule
lives in `synth.data.sources`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Tissue classes, in the order they are painted (later wins).
BACKGROUND, SKULL, CSF, GREY, WHITE, LESION = range(6)

# Contrast name -> intensity per tissue (background, skull, CSF, grey, white, lesion), roughly [0, 1].
CONTRASTS: dict[str, tuple[float, ...]] = {
    "T1": (0.0, 0.90, 0.15, 0.45, 0.75, 0.35),
    "T2": (0.0, 0.30, 0.95, 0.60, 0.40, 0.85),  # CSF bright, contrast inverted
    "FLAIR": (0.0, 0.40, 0.08, 0.55, 0.42, 1.00),  # CSF suppressed, lesion brightest
    "T1ce": (0.0, 0.90, 0.15, 0.45, 0.75, 0.95),  # enhancing lesion
}
CONTRAST_NAMES = list(CONTRASTS)

FOV_MM = 192.0  # field of view of a phantom along every axis (sets its voxel spacing)


def _grid(shape: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Coordinates in [-1, 1] per axis (x, y, z), broadcastable; 2D gets a random axial level z."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    coords = list(np.meshgrid(*axes, indexing="ij", sparse=True))
    if len(shape) == 2:
        coords.append(np.full((1, 1), rng.uniform(-0.1, 0.3), dtype=np.float32))
    return coords


def _deform(coords: list[np.ndarray], rng: np.random.Generator, amount: float = 0.04) -> list[np.ndarray]:
    """Smooth random displacement: a few low-frequency sinusoids per axis."""
    out = []
    for c in coords:
        d = c
        for _ in range(3):
            k = rng.normal(0.0, 2.0, size=3).astype(np.float32)
            phase = rng.uniform(0, 2 * np.pi)
            d = d + amount * np.sin(k[0] * coords[0] + k[1] * coords[1] + k[2] * coords[2] + phase)
        out.append(d)
    return out


def _radius(coords: list[np.ndarray], centre, radii) -> np.ndarray:
    return np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii)))


def make_phantom(
    shape: tuple[int, ...],
    channels: int = 1,
    seed: int = 0,
    lesion: bool | None = None,  # None: draw with lesion_prob
    lesion_prob: float = 0.5,
    noise: float = 0.02,
    lesion_radius: tuple[float, float] = (0.08, 0.16),  # range of the lesion radius, in half fields of view
) -> dict:
    """One brain-like subject at `shape` ((X,Y) axial slice or (X,Y,Z) volume, RAS axis order).

    Returns {"image": float32 (C,*shape) in ~[0,1], "tissue": uint8 (*shape) tissue classes,
    "seg": uint8 lesion mask, "lesion": bool, "lesion_r": float32 distance to the lesion centre in
    lesion radii (inf without lesion), "channel_names": list[str]}.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise ValueError(f"phantom shape must be 2 or 3 sizes >= 4, got {shape}")
    if not 1 <= channels <= len(CONTRASTS):
        raise ValueError(f"phantom channels must be 1..{len(CONTRASTS)}, got {channels}")
    rng = np.random.default_rng(seed)
    has_lesion = bool(rng.random() < lesion_prob) if lesion is None else bool(lesion)
    xyz = _deform(_grid(shape, rng), rng)
    full = np.broadcast_shapes(*(c.shape for c in xyz))

    scale = rng.uniform(0.88, 1.02)
    head = np.array([0.80, 0.92, 0.85]) * scale * rng.uniform(0.95, 1.05, size=3)
    r_head = _radius(xyz, (0.0, 0.0, 0.0), head)
    # cortical folding: the grey/white boundary wobbles with angle
    angle = np.arctan2(xyz[1], xyz[0]) + 0.7 * xyz[2]
    folds = 0.035 * np.sin(rng.integers(7, 12) * angle + rng.uniform(0, 2 * np.pi))

    tissue = np.zeros(full, dtype=np.uint8)
    tissue[r_head < 1.0] = SKULL
    tissue[r_head < 0.90] = CSF
    tissue[r_head < 0.84 + folds] = GREY
    tissue[r_head < 0.68 + folds] = WHITE
    # two lateral ventricles, mirrored about the midline, size varies per subject
    vr = np.array([0.07, 0.26, 0.16]) * scale * rng.uniform(0.7, 1.3)
    vy, vz = rng.uniform(-0.05, 0.10), rng.uniform(0.0, 0.15)
    for side in (-1.0, 1.0):
        tissue[_radius(xyz, (side * 0.14, vy, vz), vr) < 1.0] = CSF

    lesion_r = np.full(full, np.inf, dtype=np.float32)
    if has_lesion:
        wm = np.argwhere(tissue == WHITE)
        if len(wm) == 0:  # tiny or off-centre slice: fall back to anything inside the brain
            wm = np.argwhere(tissue >= GREY)
        centre_idx = wm[rng.integers(len(wm))]
        centre = [float(np.broadcast_to(c, full)[tuple(centre_idx)]) for c in xyz]
        radius = rng.uniform(*lesion_radius)
        lesion_r = _radius(xyz, centre, (radius,) * 3).astype(np.float32)
        lesion_r = np.broadcast_to(lesion_r, full).copy()
        tissue[(lesion_r < 1.0) & (tissue >= GREY)] = LESION
        if not (tissue == LESION).any():  # always at least the centre voxel
            tissue[tuple(centre_idx)] = LESION
    seg = (tissue == LESION).astype(np.uint8)

    # smooth multiplicative bias field + noise, one per contrast
    bias = 1.0 + 0.08 * np.sin(2.0 * xyz[0] + rng.uniform(0, 6)) * np.cos(1.5 * xyz[1] + rng.uniform(0, 6))
    bias = np.broadcast_to(bias, full)
    names = CONTRAST_NAMES[:channels]
    image = np.empty((channels, *full), dtype=np.float32)
    for i, name in enumerate(names):
        lut = np.asarray(CONTRASTS[name], dtype=np.float32) * rng.uniform(0.95, 1.05)
        lut[BACKGROUND] = 0.0
        ch = lut[tissue] * bias + noise * rng.standard_normal(full, dtype=np.float32)
        ch[tissue == BACKGROUND] = np.abs(ch[tissue == BACKGROUND]) * 0.5  # Rician-like dark floor
        image[i] = np.clip(ch, 0.0, None)
    return {
        "image": image,
        "tissue": tissue,
        "seg": seg,
        "lesion": bool(seg.any()),
        "lesion_r": lesion_r,
        "channel_names": names,
    }


def phantom_spacing(shape: tuple[int, ...]) -> tuple[float, ...]:
    """Voxel spacing in mm of a phantom drawn at `shape` (fixed field of view)."""
    return tuple(FOV_MM / int(s) for s in shape)


BRATS_MODALITIES = {  # 2021 name -> (2023 name, phantom contrast)
    "t1": ("t1n", "T1"),
    "t1ce": ("t1c", "T1ce"),
    "t2": ("t2w", "T2"),
    "flair": ("t2f", "FLAIR"),
}


def write_fake_brats(
    root: str | Path,
    n_subjects: int = 4,
    layout: str = "2021",  # "2021": BraTS2021_XXXXX/..._t1ce.nii.gz | "2023": BraTS-GLI-XXXXX-000/...-t1c.nii.gz
    shape: tuple[int, int, int] = (48, 48, 32),
    seed: int = 0,
) -> list[Path]:
    """Write a BraTS-layout tree of phantom subjects (4 modalities + seg, 1 mm RAS); returns subject dirs.

    seg labels: 2021 uses 0 background, 1 necrotic core, 2 oedema, 4 enhancing tumour; 2023 uses 3 for
    enhancing tumour.
    """
    import nibabel as nib

    if layout not in ("2021", "2023"):
        raise ValueError(f"layout must be '2021' or '2023', got {layout!r}")
    root = Path(root)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-s / 2.0 for s in shape]
    enhancing = 4 if layout == "2021" else 3
    dirs = []
    for i in range(n_subjects):
        p = make_phantom(shape, channels=4, seed=seed * 10_000 + i, lesion=True)
        brain = p["tissue"] >= GREY
        seg = np.zeros(shape, dtype=np.uint8)
        seg[(p["lesion_r"] < 1.8) & brain] = 2
        seg[(p["lesion_r"] < 1.0) & brain] = enhancing
        seg[(p["lesion_r"] < 0.5) & brain] = 1
        seg[p["seg"] > 0] = np.where(seg[p["seg"] > 0] == 0, enhancing, seg[p["seg"] > 0])
        if layout == "2021":
            sid = f"BraTS2021_{i:05d}"
            name = lambda m: f"{sid}_{m}.nii.gz"  # noqa: E731
        else:
            sid = f"BraTS-GLI-{i:05d}-000"
            name = lambda m: f"{sid}-{m}.nii.gz"  # noqa: E731
        d = root / sid
        d.mkdir(parents=True, exist_ok=True)
        for m2021, (m2023, contrast) in BRATS_MODALITIES.items():
            vol = p["image"][p["channel_names"].index(contrast)] * 1000.0  # MRI-like scanner units
            img = nib.Nifti1Image(vol.astype(np.float32), affine)
            nib.save(img, d / name(m2021 if layout == "2021" else m2023))
        nib.save(nib.Nifti1Image(seg, affine), d / name("seg"))
        dirs.append(d)
    return dirs
