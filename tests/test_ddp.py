"""DDP without a GPU: trainer=ddp_cpu runs 2 gloo processes through train.py and writes one set of outputs."""
import json

from tests.conftest import TINY, phantom, run_script


def test_ddp_cpu_two_processes(tmp_path):
    args = ["model=ddpm", *TINY["ddpm"], *phantom(2, size=16, n=16), "trainer=ddp_cpu", "trainer.max_steps=4",
            "trainer.val_check_interval=2", "callbacks.sample_grid.n=2", "trainer.enable_progress_bar=false"]
    res = run_script("train.py", args, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1, f"one run dir for both ranks, got {runs}"
    run = runs[0]
    info = json.loads((run / "run.json").read_text())
    assert info["global_step"] == 4
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and len([c for c in ckpts if c.startswith("best-")]) == 1
    assert info["world_size"] == 2
    assert "distributed_backend=gloo" in (run / "train.log").read_text()  # Lightning's lines go to the log, not the terminal
