"""Numbers a referee can trust (issue #12, evaluation): one FRD feature space fixed by the real reference, the test
split as the only reference, SSIM on one range convention, a calibrated memorization threshold, dropped images
counted, per-class rows for conditional samples, intervals on every set-level number, and compare.md that
groups and ranks runs only where that is sound."""
import json
import shutil

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from scipy import stats

from synth.data.phantom import make_phantom
from synth.evaluation import bootstrap, compare_runs, distances, evaluate_samples, memorization, reference
from synth.evaluation.scoring import CI_METRICS
from synth.io import save_nifti
from tests.conftest import CONF, phantom

DATA = [*phantom(2, size=16, n=48), "data.split=[0.5,0.25,0.25]"]  # 24 training, 12 val, 12 test 16x16 slices


def _data_cfg(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=overrides).data


@pytest.fixture(scope="module")
def off(tmp_path_factory):
    """'Samples' that are the training images at 1/20 of their intensity (a model 20x off), with their classes in
    samples.json as generate.py writes them for a conditional model."""
    tmp = tmp_path_factory.mktemp("off")
    data = _data_cfg(DATA)
    dm = instantiate(data)
    dm.setup()
    x = dm.images("train").numpy() / 20
    labels = np.asarray(dm.datasets["train"].labels)
    for i, img in enumerate(x):
        save_nifti(img, tmp / "samples" / f"sample_{i:05d}.nii.gz", np.eye(4))
    (tmp / "samples" / "samples.json").write_text(json.dumps({"condition": [int(v) for v in labels]}))
    m = evaluate_samples(tmp / "samples", data, tmp / "eval", max_images=12)  # 55ab49c: 12 of the 24 val + test images
    return m, dm, tmp


def test_frd_sees_a_set_20x_off_in_intensity_with_one_feature_set(off):
    """Item 3 (fails on 55ab49c: FRD 5.80 there against 5.81 real vs real, noise 10.1). The kept columns and
    z-scoring come from R alone; every row and class uses them."""
    m, _, _ = off
    rows = m["rows"]
    frd = {r: v["frd"] for r, v in rows.items()}
    assert frd["synthetic"] > frd["real_vs_real"], frd
    assert (frd["synthetic"] - frd["real_vs_real"]) / (frd["noise_vs_real"] - frd["real_vs_real"]) > 0.5, "at least half-way to noise"
    assert rows["synthetic"]["ci"]["frd"][0] > rows["real_vs_real"]["ci"]["frd"][1], "the intervals separate"
    space = m["frd"]["fingerprint"]
    used = [r["frd_space"] for r in rows.values()] + [e[k]["frd_space"] for e in m["per_class"].values() for k in ("synthetic", "real_vs_real")]
    assert set(used) == {space} and m["frd"]["columns_kept"] > 300
    assert "far from real" in m["verdict"]["label"]


def test_frd_is_not_swamped_by_round_off_columns_of_a_flat_background():
    """Issue #17 (b): on real slices whose background is exactly flat (every MRI slice after percentile scaling), the
    mean and median of the wavelet high-pass bands are 0 up to round-off (SD ~1e-14 over R). Unseen real slices with
    a background a fraction of a grey level from flat sat 1e12 SDs away in those columns, and FRD read near the noise
    row for images that look real (the demo: 62 vs real-vs-real 7, noise 69). Round-off columns now count as
    constant, and features are taken on integer grey levels (as from an 8-bit image), so noise no saved image shows
    does not move FRD at all."""
    from synth.evaluation.features import frd_features
    from synth.evaluation.frd import FeatureSpace, log_frechet, numerically_constant

    def slices(seeds):
        out = []
        for s in seeds:
            img = make_phantom((32, 32), seed=s)["image"][:1]
            img = (img - img.min()) / (img.max() - img.min()) * 2 - 1
            out.append(np.where(img < -0.9, -1.0, img))  # an exactly flat background, as percentile scaling leaves it
        return np.stack(out).astype(np.float32)

    ref, other = slices(range(12)), slices(range(100, 112))
    rng = np.random.default_rng(0)
    sets = {"other": other, "noise": rng.uniform(-1, 1, other.shape).astype(np.float32)}
    for name, sd in (("invisible", 0.0005), ("speckled", 0.002)):  # 0.06 and 0.25 grey levels
        sets[name] = np.clip(other + rng.normal(0, sd, other.shape).astype(np.float32), -1, 1)
    ref_features = frd_features(ref, 2)
    space = FeatureSpace.fit(ref_features)
    z_ref = space.transform(ref_features)[0]
    frd = {k: log_frechet(space.transform(frd_features(v, 2))[0], z_ref) for k, v in sets.items()}
    assert abs(frd["invisible"] - frd["other"]) < 0.05, frd  # below half a grey level: the same 8-bit image
    # before: speckled 54 and noise 69 (1e12 SDs in round-off columns); now about 7.4 and 11.6 against 6.2
    assert frd["speckled"] - frd["other"] < 2.5 and frd["other"] + 3.0 < frd["noise"] < 20, frd
    assert numerically_constant(np.array([[1e-14], [-2e-14], [3e-15]]))[0] and not numerically_constant(np.array([[0.1], [0.12], [0.09]]))[0]


def test_reference_is_the_test_split(off):
    """Item 5: R is the test split (val only calibrates memorization); report and metrics.json say so."""
    m, dm, tmp = off
    test = dm.images("test").numpy()
    ref = m["reference"]
    assert ref["split"] == "test" and ref["split_size"] == len(test) == 12 and ref["n_per_set"] == m["n_real"] == 12
    expected = reference.real_sets(reference.splits_from_datamodule(dm), 24, 256, seed=0)
    assert np.array_equal(expected.reference, test) and ref["fingerprint"] == expected.fingerprint
    assert m["memorization"]["real_held_out"]["split"] == "test" and m["memorization"]["real_held_out"]["n"] == 12
    assert m["memorization"]["calibration"]["split"] == "val" and m["memorization"]["calibration"]["n"] == 12
    report = (tmp / "eval" / "report.md").read_text()
    assert "the **test split** (12 of its 12 images" in report and "calibrated on held-out real data" in report


def test_conditional_samples_get_per_class_rows_in_the_reference_class_mix(off):
    """Item 12: each class's samples against R's images of that class; the overall row in R's class mix."""
    m, _, _ = off
    pc = m["per_class"]
    assert set(pc) == {"0", "1"} and pc["0"]["name"] == "healthy" and pc["1"]["name"] == "lesion"
    assert m["reference"]["class_counts"] == {"0": 4, "1": 8}
    for c, e in pc.items():
        assert e["synthetic"]["n"] == e["real_vs_real"]["n"] == e["n_real"] == m["reference"]["class_counts"][c]
    for e in pc.values():
        assert e["synthetic"]["frd"] > e["real_vs_real"]["frd"] and e["synthetic"]["frd_space"] == m["frd"]["fingerprint"]


def test_every_set_level_number_has_an_interval(off):
    """Item 14: each row metric, R's diversity, memorization fractions and reconstruction carry a 95 % interval."""
    m, _, tmp = off
    for name, row in m["rows"].items():
        for key in CI_METRICS:
            lo, hi = row["ci"][key]
            assert lo <= row[key] <= hi, (name, key, row[key], lo, hi)
        assert row["ci"]["frd"][1] > row["ci"]["frd"][0] and row["ci"]["mmd_rbf"][1] > row["ci"]["mmd_rbf"][0]
    lo, hi = m["reference"]["ms_ssim_diversity_real_ci"]
    assert lo < m["reference"]["ms_ssim_diversity_real"] < hi
    for s in ("synthetic", "real_held_out", "noise"):
        lo, hi = m["memorization"][s]["fraction_above_ci"]
        assert lo <= m["memorization"][s]["fraction_above"] <= hi
    assert m["bootstrap"]["draws"] == 500
    report = (tmp / "eval" / "report.md").read_text()
    assert f"| FRD (Fréchet Radiomics Distance, frd-score v1) | {m['rows']['synthetic']['frd']:.4g} [" in report


def test_ssim_uses_unit_range_on_a_known_case():
    """Item 6: constant images at 0.2 and 0.6 of the range have SSIM = luminance term (2ab + C1) / (a^2 + b^2 + C1)
    with C1 = 0.01^2 on [0, 1] (data range 1); MS-SSIM = that to the last scale's weight. On [-1, 1] with data
    range 2 (55ab49c) the luminance term turns negative and MS-SSIM's ReLU made it 0."""
    a, b = 0.2, 0.6
    lum = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    for size in (16, 64):
        pair = np.stack([np.full((1, size, size), 2 * a - 1), np.full((1, size, size), 2 * b - 1)]).astype(np.float32)
        settings = distances.ms_ssim_settings((size, size))
        expected = lum ** settings["weights"][-1] if settings["scales"] > 1 else lum
        assert distances.pairwise_ms_ssim(pair, 2) == pytest.approx(expected, rel=1e-4), size
    x = torch.rand(3, 1, 16, 16) * 1.8 - 0.9
    assert torch.allclose(distances.ssim(x, x, 2), torch.ones(3), atol=1e-5)
    assert distances.psnr(x, x + 0.02).mean().item() == pytest.approx(10 * np.log10(1 / 0.01**2), rel=1e-3)


def _phantoms(seeds, size=32):
    out = []
    for s in seeds:
        img = make_phantom((size, size), seed=int(s))["image"].astype(np.float32)
        lo, hi = np.percentile(img, [0.5, 99.5])
        out.append(np.clip((img - lo) / (hi - lo) * 2 - 1, -1, 1))
    return np.stack(out)


def test_memorization_threshold_is_calibrated_on_val_and_checked_on_test():
    """Item 8: threshold = 0.99 quantile of val-to-train similarities; exact training copies >= 90 % flagged,
    held-out (test) images <= 5 %; the calibration is reported."""
    train, val, test = _phantoms(range(200)), _phantoms(range(1000, 1100)), _phantoms(range(2000, 2100))
    noise = np.random.default_rng(0).uniform(-1, 1, test.shape).astype(np.float32)
    copies = train[:40]
    result, _ = memorization.audit(copies, train, val, test, noise, quantile=0.99)
    cal = result["calibration"]
    assert cal["split"] == "val" and cal["n"] == 100 and cal["quantile"] == 0.99
    assert cal["threshold"] == pytest.approx(np.quantile(memorization.nearest(val, train)[0], 0.99))
    assert 0.5 < cal["threshold"] < 1.0, "calibrated to the data, not a fixed 0.95"
    assert result["synthetic"]["fraction_above"] >= 0.9
    assert result["real_held_out"]["fraction_above"] <= 0.05 and result["noise"]["fraction_above"] == 0.0
    assert cal["check_fraction_test"] == result["real_held_out"]["fraction_above"]
    assert result["closer_than_real"]["auc"] > 0.95 and result["closer_than_real"]["p_value"] < 1e-6
    held, _ = memorization.audit(test, train, val, test, noise, quantile=0.99)
    assert held["closer_than_real"]["auc"] == pytest.approx(0.5)


def _mni152_splits() -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train")
    return {k: v[0] for k, v in reference.splits_from_datamodule(instantiate(cfg.data)).items()}


def test_a_training_slice_moved_by_a_few_pixels_is_still_a_copy():
    """The similarity searches shifts of up to 1/16 of the image: on the demo's MNI152 slices, training slices
    moved by 3-4 pixels (scipy, edges repeated) scored 0.79-0.90 unshifted, far below the threshold that unseen
    slices 8 mm away set (0.98), so a model that learned to draw its training slices off-centre passed as 'no copies';
    they now score as the slices themselves and every one is flagged, while the threshold and the test slices
    barely move. Shifting is not a licence for everything: slices 8 mm away stay below the threshold."""
    from scipy import ndimage

    sp = _mni152_splits()
    train, val, test = sp["train"], sp["val"], sp["test"]
    rng = np.random.default_rng(0)
    moves = [tuple(rng.choice([-4, -3, 3, 4], 2)) for _ in range(len(train))]
    moved = np.stack([ndimage.shift(x, (0, *m), order=0, mode="nearest") for x, m in zip(train, moves)]).astype(np.float32)
    noise = rng.uniform(-1, 1, test.shape).astype(np.float32)
    result, _ = memorization.audit(moved, train, val, test, noise)
    plain = np.array([np.corrcoef(memorization.smooth(moved[i:i + 1]).ravel(), memorization.smooth(train[i:i + 1]).ravel())[0, 1] for i in range(len(train))])
    assert (plain < result["threshold"]).mean() > 0.8, "unshifted, most moved copies looked unseen"
    assert result["synthetic"]["fraction_above"] == 1.0
    assert result["synthetic"]["quantiles"]["q05"] > 0.995
    assert result["real_held_out"]["fraction_above"] <= 0.25 and result["noise"]["fraction_above"] == 0.0
    assert max(m["correlation"] for m in result["closest_pairs"]) <= 1.0 + 1e-9


def test_coarse_to_fine_shift_search_finds_what_trying_every_shift_finds():
    """The audit searches shifts of 2+ voxels on 2x-pooled images first (17x less work on 64^3 volumes): on the
    demo's slices its similarity equals trying all 81 shifts against all 32 training slices, to round-off for
    unseen slices and within 1e-3 for copies moved by sub-pixel amounts."""
    import itertools

    from scipy import ndimage

    sp = _mni152_splits()
    train, val, test = sp["train"], sp["val"], sp["test"]
    rng = np.random.default_rng(1)
    moved = np.stack([ndimage.shift(x, (0, *rng.uniform(-4, 4, 2)), order=1, mode="nearest") for x in train[::4]]).astype(np.float32)
    ts = torch.as_tensor(memorization.smooth(train))

    def every_shift(images):
        out = []
        for q in torch.as_tensor(memorization.smooth(images)):
            pairs = (memorization._overlap(q, ts, off) for off in itertools.product(range(-4, 5), repeat=2))
            out.append(max(float((memorization._unit(c) @ memorization._unit(qq.unsqueeze(0))[0]).max()) for qq, c in pairs))
        return np.array(out)

    assert memorization.max_shift((64, 64)) == [4, 4]
    for images, tol in ((val, 1e-12), (test, 1e-12), (moved, 1e-3)):
        found, exhaustive = memorization.nearest(images, train)[0], every_shift(images)
        assert np.all(found <= exhaustive + 1e-12) and np.abs(found - exhaustive).max() <= tol


def test_shift_search_on_textures_up_to_the_border_and_its_limits():
    """Images with content up to their border (tiles, crops): a copy moved by up to 4 pixels scores 1 (the frame
    is trimmed where the low-pass saw different surroundings; 0.9990-0.9998 before), a copy with noise does not;
    each axis allows 1/16 of its own size (a thin axis of 16 slices: one voxel); too few training images are one
    clear error."""
    from scipy import ndimage

    from synth.errors import SynthError

    rng = np.random.default_rng(0)
    tiles = np.stack([ndimage.gaussian_filter(rng.standard_normal((1, 80, 80)), (0, 3, 3))[:, 8:72, 8:72] for _ in range(24)]).astype(np.float32)
    moved = np.stack([ndimage.shift(x, (0, *rng.integers(-4, 5, 2)), order=0, mode="nearest") for x in tiles[:8]]).astype(np.float32)
    sim, idx = memorization.nearest(moved, tiles)
    assert (idx == np.arange(8)).all() and sim.min() > 0.99999
    noisy = tiles[:8] + 0.3 * rng.standard_normal(tiles[:8].shape).astype(np.float32)
    assert memorization.nearest(noisy, tiles)[0].max() < 0.95
    assert memorization.max_shift((16, 64, 64)) == [1, 4, 4] and memorization.max_shift((8, 40, 24)) == [1, 3, 2]
    with pytest.raises(SynthError, match="needs 2 or more training images"):
        memorization.nearest(tiles[:2], tiles[:1], exclude=np.array([0, 0]))


def test_authenticity_counts_samples_closer_than_the_training_slices_own_neighbours():
    """Alaa et al.'s authenticity on the demo's slices, where training slices lie 1 mm apart (r ~0.9993): exact
    training copies are all closer to their slice than its neighbour is, unseen test slices (8 mm away) none, and
    the mean of two neighbouring training slices is closer to each than they are to each other: with slices 1 mm
    apart, drawing between training slices is not new either."""
    sp = _mni152_splits()
    train, val, test = sp["train"], sp["val"], sp["test"]
    noise = np.random.default_rng(0).uniform(-1, 1, test.shape).astype(np.float32)
    copies, _ = memorization.audit(train[:16], train, val, test, noise)
    auth = copies["closer_than_training_neighbours"]
    assert auth["synthetic"]["n_closer"] == 16 and auth["real_held_out"]["n_closer"] == 0
    sim, idx = memorization.nearest(train, train, exclude=np.arange(len(train)))
    assert (idx != np.arange(len(train))).all() and 0.99 < np.median(sim) < 1.0
    between = (train[:-1] + train[1:]) / 2
    pair = np.array([np.corrcoef(memorization.smooth(train[i:i + 1]).ravel(), memorization.smooth(train[i + 1:i + 2]).ravel())[0, 1] for i in range(len(train) - 1)])
    adjacent = pair > 0.99  # consecutive items from the same slab
    mid = memorization.authenticity({"synthetic": memorization.nearest(between[adjacent], train), "real_held_out": memorization.nearest(test, train)}, train)
    assert adjacent.sum() >= 16 and mid["synthetic"]["fraction"] == 1.0
    assert mid["real_held_out"]["n_closer"] == 0


def test_bootstrap_helpers_on_known_cases():
    """The interval of a mean matches the normal one; Wilson at 0/n; kernel MMD = MONAI's formula; W1 and KS =
    scipy's."""
    from monai.metrics import MMDMetric

    rng = np.random.default_rng(0)
    v = rng.normal(size=400)
    idx = bootstrap.draws(len(v), 2000, rng)
    lo, hi = bootstrap.interval(v[idx].mean(1), v.mean())
    assert (hi - lo) / 2 == pytest.approx(1.96 * v.std() / 20, rel=0.1) and lo < v.mean() < hi
    assert bootstrap.wilson(0, 20)[0] == 0 and bootstrap.wilson(0, 20)[1] == pytest.approx(0.1611, abs=1e-3)
    x, y = rng.normal(size=(6, 1, 4, 4)), rng.normal(0.3, 1, size=(6, 1, 4, 4))
    ours = bootstrap.mmd(distances.gram(x, x), distances.gram(y, y), distances.gram(x, y))
    monai = MMDMetric()(torch.as_tensor(x).flatten(1), torch.as_tensor(y).flatten(1)).item() / 16
    assert ours == pytest.approx(monai, rel=1e-6)
    a, b = rng.normal(size=30), rng.normal(0.5, 2, size=17)
    w1, ks = distances.w1_ks(a, b)
    assert w1 == pytest.approx(stats.wasserstein_distance(a, b)) and ks == pytest.approx(stats.ks_2samp(a, b).statistic)
    ties_a, ties_b = np.array([1.0, 1, 2, 3, 3]), np.array([1.0, 2, 2, 3])
    assert distances.w1_ks(ties_a, ties_b) == pytest.approx((stats.wasserstein_distance(ties_a, ties_b), stats.ks_2samp(ties_a, ties_b).statistic))
    assert distances.w1_ks(np.full(5, 255.0), np.full(3, 255.0)) == (0.0, 0.0)
    # a bootstrap draw with repeats: the within-set mean skips pairs of one image with itself
    k = rng.normal(size=(5, 5))
    idx = np.array([0, 0, 2, 3, 3])
    brute = np.mean([k[i, j] for a_, i in enumerate(idx) for b_, j in enumerate(idx) if a_ != b_ and i != j])
    assert bootstrap.within_mean(k, bootstrap.counts(idx, 5)) == pytest.approx(brute)


def test_collapse_raises_rbf_mmd_not_linear_mmd():
    """Item 7: a set of one image repeated, whose mean image matches R's mean, has linear MMD ~0 but a large
    Gaussian-kernel MMD."""
    ref = _phantoms(range(300, 316))
    collapsed = np.repeat(ref.mean(0, keepdims=True), 16, axis=0)
    other = _phantoms(range(400, 416))
    g_rr = distances.gram(ref, ref)
    bw = distances.rbf_bandwidth(g_rr)

    def both(x):
        gxx, gxr = distances.gram(x, x), distances.gram(x, ref)
        d2 = lambda g, a, b: distances.squared_distances(g, np.diag(a), np.diag(b))  # noqa: E731
        rbf = bootstrap.mmd(distances.rbf(d2(gxx, gxx, gxx), bw), distances.rbf(d2(g_rr, g_rr, g_rr), bw), distances.rbf(d2(gxr, gxx, g_rr), bw))
        return bootstrap.mmd(gxx, g_rr, gxr), rbf

    lin_c, rbf_c = both(collapsed)
    lin_o, rbf_o = both(other)
    assert lin_c <= lin_o, "on the linear kernel the collapsed set looks at least as good as real images"
    assert rbf_c > 5 * abs(rbf_o) and rbf_c > 0.1, (rbf_c, rbf_o)


def test_compare_groups_reference_sets_and_ranks_only_separated_runs(off, tmp_path):
    """Item 14: rows scored against other real sets are marked; ranks only where FRD intervals separate."""
    m, _, tmp = off
    base = json.loads((tmp / "eval" / "metrics.json").read_text())
    f, (lo, hi) = base["rows"]["synthetic"]["frd"], base["rows"]["synthetic"]["ci"]["frd"]

    def variant(name, shift=0.0, fingerprint=None, legacy=False):
        v = json.loads(json.dumps(base))
        v["run_dir"] = None
        v["rows"]["synthetic"]["frd"] = f + shift
        v["rows"]["synthetic"]["ci"]["frd"] = [lo + shift, hi + shift]
        if fingerprint:
            v["reference"]["fingerprint"] = fingerprint
        if legacy:
            del v["reference"]["fingerprint"], v["frd"]
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(v))
        return tmp_path / name

    runs = [variant("a"), variant("b_overlaps", shift=(hi - lo) / 4), variant("c_worse", shift=3 * (hi - lo)),
            variant("d_other_ref", fingerprint="0123456789ab"), variant("e_old", legacy=True)]
    df = compare_runs(runs, tmp_path / "cmp")
    assert list(df["ref_set"]) == ["A", "A", "A", "B", "?"]
    assert list(df["frd_rank"])[:4] == [1, 1, 3, 1] and df["frd_rank"].isna().iloc[4]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "2 different real reference sets" in md and "ref_set ?" in md
    assert f"| {f:.4g} [{lo:.4g}, {hi:.4g}] | 1 |" in md
    shutil.rmtree(tmp_path / "cmp")


def test_reference_class_mix_drives_conditions_and_the_synthetic_row():
    """Item 12: a conditional model samples R's labels; the real-vs-real row and a set of samples with another
    class mix are drawn in R's proportions."""
    rng = np.random.default_rng(0)
    img = lambda n: rng.uniform(-1, 1, (n, 1, 8, 8)).astype(np.float32)  # noqa: E731
    train_labels, test_labels = np.array([0] * 20 + [1] * 20), np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    splits = {"train": (img(40), train_labels), "val": (img(6), np.zeros(6, np.int64)), "test": (img(10), test_labels)}
    sets = reference.real_sets(splits, None, 256, seed=0)
    assert sorted(sets.reference_labels) == sorted(test_labels) and sorted(sets.real_vs_real_labels) == sorted(test_labels)
    assert reference.sample_conditions(sets, 13) == [*map(int, sets.reference_labels), *map(int, sets.reference_labels[:3])]
    skewed = np.array([1] * 30 + [0] * 5)
    x, labels, notes = reference.select_synthetic(img(35), skewed, sets)
    assert len(x) == 10 and sorted(labels) == sorted(test_labels) and not notes
    _, _, notes = reference.select_synthetic(img(35), np.array([1] * 33 + [0] * 2), sets)
    assert notes and "class mix" in notes[0]


@pytest.mark.slow  # trains a tiny conditional DCGAN for 2 steps, then a full evaluation (~1 min on 2 busy cores)
def test_conditional_run_is_evaluated_per_class(tmp_path):
    from synth.evaluation import evaluate_run
    from synth.tasks import train
    from tests.conftest import TINY, compose_train, quick

    cfg = compose_train(tmp_path, ["model=dcgan", *TINY["dcgan"], "model.num_classes=2", *DATA, *quick(2)])
    _, objs = train(cfg)
    m = evaluate_run(objs["run_dir"], seed=0, n_boot=100)
    counts = m["reference"]["class_counts"]
    sample_info = json.loads((objs["run_dir"] / "eval").glob("*/samples/samples.json").__next__().read_text())
    assert sorted(sample_info["condition"]) == sorted(int(c) for c, k in counts.items() for _ in range(k))
    assert set(m["per_class"]) == set(counts) and all(e["synthetic"]["n"] == counts[c] for c, e in m["per_class"].items())
