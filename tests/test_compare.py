"""compare.py: one table across evaluated runs (markdown + CSV + realism-vs-speed plot), missing evaluations
listed with their command, runs given as a multirun dir, a list or a glob."""
import pandas as pd
import pytest

from synth.errors import SynthError
from synth.evaluation import compare_runs, evaluate_run
from synth.evaluation.compare import expand_runs
from synth.tasks import train
from tests.conftest import TINY, compose_train, phantom, quick, run_script

FAMILIES = {"ae": "autoencoder", "dcgan": "gan", "ddpm": "diffusion"}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Three tiny runs (one per family) in one 'multirun' dir, each evaluated on 6 images per set."""
    sweep = tmp_path_factory.mktemp("multirun")
    runs = []
    for k, model in enumerate(FAMILIES):
        cfg = compose_train(tmp_path_factory.mktemp(model), [f"model={model}", *TINY[model], *phantom(2, size=16, n=16), *quick(2)])
        _, objs = train(cfg)
        run = sweep / f"{k}_{model}_phantom"
        objs["run_dir"].rename(run)
        evaluate_run(run, n=6, max_images=6, seed=0)
        runs.append(run)
    return sweep, runs


def test_three_runs_one_row_each(three_runs, tmp_path):
    sweep, runs = three_runs
    df = compare_runs(expand_runs(str(sweep)), tmp_path / "cmp")
    assert len(df) == 3 and list(df["model"]) == list(FAMILIES) and list(df["family"]) == list(FAMILIES.values())
    assert (df["status"] == "evaluated").all() and df["frd"].notna().all() and (df["seconds_per_sample"] > 0).all()
    assert (df["frd_real_vs_real"] < df["frd_noise_vs_real"]).all()
    assert (df["parameters"] > 0).all() and (df["train_seconds"] > 0).all() and (df["data"] == "phantom").all()
    csv = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert len(csv) == 3 and {"run", "family", "model", "data", "frd", "mmd", "seconds_per_sample", "parameters", "train_seconds"} <= set(csv.columns)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.count("\n| 0_ae_phantom |") + md.count("\n| 1_dcgan_phantom |") + md.count("\n| 2_ddpm_phantom |") == 3
    assert (tmp_path / "cmp" / "realism_vs_speed.png").stat().st_size > 5000
    with pytest.raises(SynthError, match="already holds a comparison"):
        compare_runs(runs, tmp_path / "cmp")


def test_unevaluated_run_is_listed_with_its_command(three_runs, tmp_path):
    _, runs = three_runs
    cfg = compose_train(tmp_path, ["model=dcgan", *TINY["dcgan"], *phantom(2, size=16, n=16), *quick(2)])
    _, objs = train(cfg)
    df = compare_runs([*runs[:1], objs["run_dir"]], tmp_path / "cmp")
    assert list(df["status"])[0] == "evaluated" and f"python evaluate.py run_dir={objs['run_dir']}" in list(df["status"])[1]
    assert df.loc[1, "model"] == "dcgan" and pd.isna(df.loc[1, "frd"])
    assert f"python evaluate.py run_dir={objs['run_dir']}" in (tmp_path / "cmp" / "compare.md").read_text()


def test_runs_as_list_glob_or_eval_dir(three_runs):
    sweep, runs = three_runs
    assert expand_runs([str(runs[0]), str(runs[2])]) == [runs[0].resolve(), runs[2].resolve()]
    assert expand_runs(str(sweep / "*_d*")) == [runs[1].resolve(), runs[2].resolve()]
    eval_dir = next((runs[0] / "eval").iterdir())
    assert expand_runs(str(eval_dir)) == [eval_dir.resolve()]
    with pytest.raises(SynthError, match="holds no run dirs"):
        expand_runs(str(runs[0] / "checkpoints"))


def test_compare_cli(three_runs, tmp_path):
    sweep, _ = three_runs
    res = run_script("compare.py", [f"runs={sweep}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (out,) = list((tmp_path / "outputs" / "compare").iterdir())
    assert len(pd.read_csv(out / "compare.csv")) == 3 and (out / "compare.md").is_file()
    bad = run_script("compare.py", [f"runs={tmp_path / 'nothing'}"], cwd=tmp_path)
    assert bad.returncode == 2 and "is not a folder" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_run_is_compared_by_its_newest_evaluation(tmp_path):
    """The newest eval by the time it was written, not by name: train.py evaluate=true writes eval/after_training/,
    which sorts after every dated eval dir, so a re-evaluation was ignored."""
    import json
    import os

    from synth.evaluation.compare import find_metrics

    run = tmp_path / "run"
    for name, age in (("after_training", 200), ("2026-11-29_10-00-00", 100), ("2026-11-29_12-00-00", 0)):
        (run / "eval" / name).mkdir(parents=True)
        path = run / "eval" / name / "metrics.json"
        path.write_text(json.dumps({"name": name}))
        t = 1_800_000_000 - age
        os.utime(path, (t, t))
    assert find_metrics(run).parent.name == "2026-11-29_12-00-00"
    os.utime(run / "eval" / "after_training" / "metrics.json", (1_900_000_000, 1_900_000_000))  # re-written last
    assert find_metrics(run).parent.name == "after_training"
    assert find_metrics(run / "eval" / "2026-11-29_10-00-00").parent.name == "2026-11-29_10-00-00"  # an eval dir: itself
