"""The installed `radiomics` package (pyradiomics-bhklab, see pyproject.toml) gives synth's first-order and FRD
features equal to PyPI's pyradiomics 3.0.1 (tests/data/radiomics_reference.json, computed with it on the same
phantoms), and the first-order features are the statistics they are named after."""
import json
from pathlib import Path

import numpy as np
import pytest

from synth.data.phantom import make_phantom
from synth.evaluation import features

REFERENCE = json.loads((Path(__file__).parent / "data" / "radiomics_reference.json").read_text())
CASES = [(2, (32, 32)), (3, (16, 16, 16))]


def _image(shape):
    return make_phantom(shape, seed=0)["image"][None] * 2 - 1  # (1, 1, *S) in [-1, 1]


@pytest.mark.parametrize("dims,shape", CASES)
def test_features_equal_pyradiomics_3_0_1(dims, shape):
    ref = REFERENCE[f"{dims}d"]
    x = _image(shape)
    fo, names, empty = features.first_order(x, dims)
    assert empty == 0 and names == list(ref["first_order"])
    np.testing.assert_allclose(fo[0], list(ref["first_order"].values()), rtol=1e-6)
    frd = features.frd_features(x, dims, grey_levels=False)  # the extraction itself (the reference was not rounded)
    assert frd.shape == (1, len(ref["frd"])) and np.isfinite(frd).all()
    # atol: a few wavelet statistics over flat background are float round-off (~1e-30)
    np.testing.assert_allclose(frd[0], ref["frd"], rtol=1e-6, atol=1e-9)
    rounded = features.frd_features(x, dims)  # what evaluation uses: integer grey levels, a small change from unrounded
    assert np.isfinite(rounded).all() and np.corrcoef(rounded[0], frd[0])[0, 1] > 0.999


@pytest.mark.parametrize("dims,shape", CASES)
def test_first_order_features_are_the_named_statistics(dims, shape):
    x = _image(shape)
    fo, names, _ = features.first_order(x, dims, threshold=0.1)
    got = dict(zip(names, fo[0]))
    grey = ((np.clip(x[0, 0], -1, 1) + 1) * 127.5).astype(np.float32).astype(np.float64)
    inside = grey[grey > 0.1 * 255]
    assert 0.2 < inside.size / grey.size < 0.9  # a real foreground, not the whole image
    expected = {"Mean": inside.mean(), "Minimum": inside.min(), "Maximum": inside.max(), "Median": np.median(inside),
                "Energy": (inside**2).sum(), "Range": np.ptp(inside), "Variance": inside.var()}
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-5), name
