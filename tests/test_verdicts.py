"""verdict(metrics) on constructed image sets scored against one real reference (phantom slices): a collapsed
set (one image repeated), a blurred set, exact training copies and unseen real images each get the right
verdict; and the rules themselves on hand-made metrics (the issue's VAE and DCGAN cases)."""
import numpy as np
import pytest
from scipy import ndimage

from synth.data.phantom import make_phantom
from synth.evaluation import verdict
from synth.evaluation.measure import score_sets
from synth.evaluation.reference import real_sets


def phantoms(seeds, size=32) -> np.ndarray:
    out = []
    for s in seeds:
        img = make_phantom((size, size), seed=int(s))["image"].astype(np.float32)
        lo, hi = np.percentile(img, [0.5, 99.5])
        out.append(np.clip((img - lo) / (hi - lo) * 2 - 1, -1, 1))
    return np.stack(out)


@pytest.fixture(scope="module")
def scored():
    """8 test images as R, 24 val images (calibration and candidates), 40 training images; every candidate
    scored against the same R (features of R and the reference rows computed once)."""
    train, val, test = phantoms(range(0, 40)), phantoms(range(100, 124)), phantoms(range(200, 208))
    unseen = phantoms(range(300, 308))  # outside the calibration set: val's own images set its threshold (their maximum)
    labels = lambda x: -np.ones(len(x), dtype=np.int64)  # noqa: E731
    sets = real_sets({"train": (train, labels(train)), "val": (val, labels(val)), "test": (test, labels(test))}, 8, 256, seed=0)
    blurred = np.stack([[ndimage.gaussian_filter(ch, 1.5) for ch in img] for img in unseen])
    # the collapsed set repeats the val image least like any training image (so it is not also a copy)
    from synth.evaluation.memorization import nearest

    lonely = int(np.argmin(nearest(val, train)[0]))
    failing = val[16:24].copy()
    failing[:3] = 0.0  # constant images: their radiomic features fail
    candidates = {"held_out": val[:8], "copies": train[:8], "collapsed": np.repeat(val[lonely:lonely + 1], 8, axis=0), "blurred": blurred,
                  "failing": failing}
    cache = {}
    return {name: score_sets(x, None, sets, n_boot=200, cache=cache)[0] for name, x in candidates.items()}


def test_unseen_real_images_are_close_to_real(scored):
    label, reasons = verdict(scored["held_out"])
    assert label == "close to real", reasons


def test_training_copies_are_flagged(scored):
    label, reasons = verdict(scored["copies"])
    assert label.startswith("copies training images"), reasons
    assert scored["copies"]["memorization"]["synthetic"]["fraction_above"] == 1.0


def test_summary_line_gives_frd_beside_both_rows_and_the_memorization_verdict(scored):
    """#17 item 2: the one line the demo ends with names FRD with its interval, the real-vs-real row with its
    interval, the noise row, and says plainly whether the samples copy training images, with the count above the
    calibrated threshold (the old line gave the verdict label only, so 'no copying' was never said)."""
    from synth.evaluation import summary_line

    for name, said in (("held_out", "memorization: no copies (0 of 8 samples"), ("copies", "memorization: COPIES training images (8 of 8 samples")):
        m = scored[name]
        line = summary_line(m)
        syn, rr, nz = m["rows"]["synthetic"], m["rows"]["real_vs_real"], m["rows"]["noise_vs_real"]
        assert "\n" not in line and said in line, line
        assert f"FRD {syn['frd']:.3f} [{syn['ci']['frd'][0]:.3f}, {syn['ci']['frd'][1]:.3f}]" in line
        assert f"real-vs-real {rr['frd']:.3f} [{rr['ci']['frd'][0]:.3f}, {rr['ci']['frd'][1]:.3f}], noise {nz['frd']:.3f}" in line
        assert f"r = {m['memorization']['threshold']:.4f}" in line and line.startswith(f"verdict: {m['verdict']['label']}; ")


def test_one_image_repeated_is_collapsed(scored):
    label, reasons = verdict(scored["collapsed"])
    assert label.startswith("collapsed") and "copies" not in label, reasons
    assert scored["collapsed"]["rows"]["synthetic"]["ms_ssim_diversity"] == pytest.approx(1.0, abs=1e-4)


def test_blurred_images_are_blurry(scored):
    label, reasons = verdict(scored["blurred"])
    assert label.startswith("blurry / low diversity") and "copies" not in label and "collapsed" not in label, reasons
    assert label.endswith("far from real")


def test_failed_features_are_counted_in_report_and_compare(scored, tmp_path):
    """Item 11: images whose radiomic features fail are left out of FRD and counted wherever FRD is shown."""
    import json

    from synth.evaluation import compare_runs
    from synth.evaluation.report import markdown

    m = {**scored["failing"], "model": "m", "family": "f", "data": "phantom", "run_dir": None, "samples_dir": "s",
         "cost": {"seconds_per_sample": None, "batch_size": None, "device": None, "train_seconds": None, "peak_memory_mb": None}}
    syn = m["rows"]["synthetic"]
    assert syn["frd_dropped_images"] == 3 and syn["frd_images"] == 5 and m["rows"]["real_vs_real"]["frd_dropped_images"] == 0
    assert "| images left out of FRD (features failed) | 3 of 8 | 0 of 8 | 0 of 8 |" in markdown(m)
    assert any("radiomic features failed for 3 of 8 samples" in r for r in m["verdict"]["reasons"])
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(m))
    df = compare_runs([tmp_path / "eval"], tmp_path / "cmp")
    md = (tmp_path / "cmp" / "compare.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    assert df.loc[0, "frd_dropped"] == 3 and "| frd_dropped |" in header and "left out of that run's FRD" in md


def _metrics(frd, frd_ci, diversity, diversity_ci, real_diversity=0.29, real_ci=(0.26, 0.32)):
    """Hand-made metrics: real vs real FRD 7.75 [7.5, 8.0], noise 20; sharpness like real; no copies."""
    rr = {"frd": 7.75, "mmd_rbf": 0.0, "sharpness_ratio": 1.0, "ci": {"frd": [7.5, 8.0], "mmd_rbf": [-0.01, 0.01], "sharpness_ratio": [0.9, 1.1]}}
    syn = {"frd": frd, "mmd_rbf": 0.0, "ms_ssim_diversity": diversity, "sharpness_ratio": 1.0, "n": 64, "frd_dropped_images": 0,
           "ci": {"frd": frd_ci, "mmd_rbf": [-0.01, 0.01], "ms_ssim_diversity": diversity_ci, "sharpness_ratio": [0.9, 1.1]}}
    return {"rows": {"synthetic": syn, "real_vs_real": rr, "noise_vs_real": {"frd": 20.0}},
            "reference": {"ms_ssim_diversity_real": real_diversity, "ms_ssim_diversity_real_ci": list(real_ci)}, "memorization": None}


def test_rules_on_the_issues_cases():
    # the VAE without a head outline: FRD below real-vs-real, but diversity 0.13 against 0.29
    label, _ = verdict(_metrics(7.67, [7.4, 7.9], 0.13, [0.11, 0.15]))
    assert label == "more varied than real", label
    # the collapsed DCGAN: MS-SSIM 0.72 against 0.087 real
    label, _ = verdict(_metrics(9.5, [9.2, 9.8], 0.72, [0.68, 0.76], 0.087, (0.07, 0.10)))
    assert label.startswith("collapsed"), label
    # far from real: FRD more than half-way to noise; between: less
    assert verdict(_metrics(16.0, [15.5, 16.5], 0.29, [0.26, 0.32]))[0] == "far from real"
    assert verdict(_metrics(10.0, [9.6, 10.4], 0.29, [0.26, 0.32]))[0] == "between real and noise"
    # overlapping intervals are not a difference
    assert verdict(_metrics(8.1, [7.9, 8.3], 0.31, [0.28, 0.34]))[0] == "close to real"
    assert verdict({"rows": {"synthetic": None}})[0] == "no samples"
    # without intervals (too few images) no difference is claimed, and "close to real" is not either
    assert verdict(_metrics(7.67, None, 0.95, None))[0] == "between real and noise"
