"""Two processes (torchrun, gloo) train exactly as one process with the same global batch."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from segmentation.data.datasets import write_synthetic_voc
from tests.helpers import ROOT, SCRIPTS, run

# Frozen BatchNorm: no batch statistics, so 1 and 2 processes compute the same function.
ARGS = ["--n-segments", "12", "--width", "4", "--hidden", "4", "--batch-size", "4",
        "--no-progress", "--threads", "1", "--freeze-bn", "--lr", "1e-2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_ddp")
    write_synthetic_voc(root, 8, 5, size=(32, 32), seed=3)
    # Ignored pixels in different amounts per image: a loss averaged per process
    # and then over processes would weigh the pixels differently from one process.
    for i, name in enumerate(sorted((root / "SegmentationClass").iterdir())):
        mask = np.array(Image.open(name))
        mask[: 3 * (i % 5)] = 255
        Image.fromarray(mask).save(name)
    return root


def torchrun(argv, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", str(SCRIPTS / "train.py"), *argv],
        capture_output=True, text=True, env=env, timeout=600,
    )


def max_weight_difference(a, b):
    sa = torch.load(a, weights_only=True)["model_state"]
    sb = torch.load(b, weights_only=True)["model_state"]
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def test_two_processes_equal_one_and_resume(data, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    # One process: epoch 1, then resumed to epoch 2.
    assert run("train", ["--data", str(data), "--out", str(one), "--epochs", "1", *ARGS]) == 0
    (one / "last.pt").rename(tmp_path / "one_epoch1.pt")
    (one / "best.pt").unlink()
    assert run("train", ["--data", str(data), "--out", str(one), "--epochs", "2", "--resume",
                         str(tmp_path / "one_epoch1.pt"), *ARGS]) == 0
    capsys.readouterr()

    done = torchrun(["--data", str(data), "--out", str(two), "--epochs", "1", *ARGS])
    assert done.returncode == 0, done.stderr[-2000:]
    # Only rank 0 prints: one line per message, not one per process.
    assert done.stdout.count("training and") == 1 and done.stdout.count("epoch 1/1") == 1
    diff = max_weight_difference(tmp_path / "one_epoch1.pt", two / "last.pt")
    assert diff < 1e-5, diff
    a = torch.load(tmp_path / "one_epoch1.pt", weights_only=True)
    b = torch.load(two / "last.pt", weights_only=True)
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert b["history"][0]["loss"] == pytest.approx(a["history"][0]["loss"], rel=1e-5)

    # Resumed under two processes: every process loads last.pt, and epoch 2 again
    # equals the one-process run.
    done = torchrun(["--data", str(data), "--out", str(two), "--epochs", "2", "--resume", *ARGS])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout and done.stdout.count("epoch 2/2") == 1
    # One set of checkpoints (rank 0 writes), and the graph cache both processes share.
    assert sorted(p.name for p in two.iterdir()) == ["best.pt", "graph_cache", "last.pt"]
    assert not list((two / "graph_cache").glob("*.tmp"))
    diff = max_weight_difference(one / "last.pt", two / "last.pt")
    assert diff < 1e-5, diff
    a = torch.load(one / "last.pt", weights_only=True)["history"]
    b = torch.load(two / "last.pt", weights_only=True)["history"]
    assert [r["epoch"] for r in b] == [0, 1]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        # validation sharded over 2 processes (5 images: 3 + 2, none twice)
        assert rb["val_pixel_accuracy"] == pytest.approx(ra["val_pixel_accuracy"], abs=1e-9)
        assert rb["val_miou"] == pytest.approx(ra["val_miou"], abs=1e-9)

    # evaluate.py reads the checkpoint written by rank 0 and agrees with the sharded
    # validation recorded during training
    assert run("evaluate", ["--data", str(data), "--checkpoint", str(two / "best.pt"),
                            "--json"]) == 0
    import json

    scores = json.loads(capsys.readouterr().out)
    best = torch.load(two / "best.pt", weights_only=True)
    record = best["history"][best["best_epoch"]]
    assert scores["pixel_accuracy"] == pytest.approx(record["val_pixel_accuracy"], abs=1e-9)


def test_batch_not_divisible_by_processes_is_one_line(data, tmp_path, capsys, monkeypatch):
    # Checked from torchrun's environment before the processes wait for each other.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "o"
    code = run("train", ["--data", str(data), "--out", str(out), "--epochs", "1",
                         *ARGS[:6], "--batch-size", "3", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "--batch-size 3" in err and "2" in err
    assert not out.exists()


def _broadcast_worker(rank, world_size, init_file, results):
    from datetime import timedelta

    import torch.distributed as dist

    from segmentation.engine.distributed import broadcast_buffers

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
        # Each process's own batch statistics, as after a DDP training step.
        model.train()(torch.randn(2, 3, 5, 5) * (rank + 1) + rank)
        before = [b.clone() for b in model.buffers()]
        broadcast_buffers(model)
        results[rank] = ([b.clone() for b in before], [b.clone() for b in model.buffers()])
    finally:
        dist.destroy_process_group()


def test_broadcast_buffers_gives_every_process_the_statistics_of_rank_0(tmp_path):
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_broadcast_worker, args=(2, str(tmp_path / "init"), results), nprocs=2)
    (before0, after0), (before1, after1) = results[0], results[1]
    assert not torch.equal(before0[0], before1[0])  # the processes did differ
    for a0, b0, a1 in zip(after0, before0, after1, strict=True):
        assert torch.equal(a0, b0) and torch.equal(a1, b0)


def test_cleanup_lets_collectives_settle_before_destroying_the_group(monkeypatch):
    """gloo's threads release a finished collective only after its caller goes on,
    and the group's destructor joins them holding the GIL: destroying the group
    at once after a last collective hung one process in several at exit."""
    import segmentation.engine.distributed as distributed

    calls = []
    monkeypatch.setattr(distributed, "is_dist_avail_and_initialized", lambda: True)
    monkeypatch.setattr(distributed.time, "sleep", lambda s: calls.append(("sleep", s)))
    monkeypatch.setattr(distributed.dist, "destroy_process_group",
                        lambda: calls.append(("destroy", None)))
    distributed.cleanup()
    assert calls == [("sleep", distributed.COLLECTIVES_SETTLE_S), ("destroy", None)]
    assert distributed.COLLECTIVES_SETTLE_S > 0
    calls.clear()
    monkeypatch.setattr(distributed, "is_dist_avail_and_initialized", lambda: False)
    distributed.cleanup()
    assert calls == []
