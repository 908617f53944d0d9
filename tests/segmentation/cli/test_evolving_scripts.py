"""train.py --graph-model evolving end to end: checkpoints, evaluate, segment, resume."""

import os
import subprocess
import sys

import pytest

from segmentation.data.datasets import write_synthetic_voc
from segmentation.engine.checkpoint import load_checkpoint, model_from_checkpoint
from segmentation.models.evolving import EvolvingSegmenter
from tests.helpers import ROOT, SCRIPTS, run

TINY = ["--n-segments", "12", "--width", "4", "--hidden", "4", "--batch-size", "4",
        "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_synthetic_voc(root, 8, 4, size=(32, 32), seed=0)
    out = tmp_path_factory.mktemp("run")
    argv = ["--data", str(root), "--epochs", "1", "--out", str(out), "--graph-model", "evolving",
            "--merge-weight", "0.5", "--acceptance", "graph", *TINY]
    assert run("train", argv) == 0
    return root, out


def test_checkpoint_rebuilds_the_evolving_model(trained):
    _, out = trained
    payload = load_checkpoint(out / "best.pt")
    assert payload["model_config"]["graph_model"] == "evolving"
    assert payload["model_config"]["merge_weight"] == 0.5
    model = model_from_checkpoint(payload)
    assert isinstance(model, EvolvingSegmenter)
    assert model.graph_lstm.acceptance == "graph"  # not the default: the flag was recorded


def test_evaluate_segment_and_resume(trained, tmp_path, capsys):
    root, out = trained
    assert run("evaluate", ["--data", str(root), "--checkpoint", str(out / "best.pt"),
                            "--threads", "1"]) == 0
    image = sorted((root / "JPEGImages").iterdir())[0]
    assert run("segment", ["--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "seg"),
                           "--threads", "1", "--no-progress", str(image)]) == 0
    assert (tmp_path / "seg" / f"{image.stem}_labels.png").exists()
    resume = ["--data", str(root), "--epochs", "2", "--out", str(out), "--resume",
              str(out / "last.pt"), "--graph-model", "evolving", "--merge-weight", "0.5",
              "--acceptance", "graph", *TINY]
    assert run("train", resume) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # 0-based: the second epoch
    # Resuming with the other graph model is refused (one line, exit status 1).
    other = [a for a in resume if a not in ("evolving",)]
    other[other.index("--graph-model") + 1] = "stack"
    assert run("train", other) != 0


@pytest.mark.parametrize("argv, flag", [
    (["--graph-model", "tree"], "--graph-model"),
    (["--merge-weight", "-1"], "--merge-weight"),
    (["--merge-weight", "nan"], "--merge-weight"),
    (["--acceptance", "node"], "--acceptance"),
])
def test_bad_flags(argv, flag, tmp_path, capsys):
    assert run("train", ["--synthetic", "4", "--out", str(tmp_path / "o"), *argv]) == 2
    assert flag in capsys.readouterr().err


def test_evolving_needs_graph_layers(tmp_path, capsys):
    code = run("train", ["--synthetic", "4", "--out", str(tmp_path / "o"), "--graph-model",
                         "evolving", "--graph-layers", "0", *TINY])
    assert code != 0
    assert "graph_layers" in capsys.readouterr().err


def test_torchrun_two_processes(trained, tmp_path):
    root, _ = trained
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(SCRIPTS / "train.py"), "--data", str(root), "--out", str(tmp_path / "ddp"),
         "--epochs", "1", "--graph-model", "evolving", *TINY],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    payload = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert payload["world_size"] == 2 and payload["model_config"]["graph_model"] == "evolving"


def test_show_order_hierarchy(trained, tmp_path, capsys):
    root, out = trained
    image = sorted((root / "JPEGImages").iterdir())[0]
    picture = tmp_path / "hierarchy.png"
    assert run("show_order", [str(image), "--checkpoint", str(out / "best.pt"),
                              "--hierarchy", str(picture)]) == 0
    assert picture.stat().st_size > 0 and "regions per level" in capsys.readouterr().out
    assert not (tmp_path / "order.png").exists()
    assert run("show_order", [str(image), "--hierarchy", str(picture)]) == 1
    assert "--hierarchy needs --checkpoint" in capsys.readouterr().err
    assert run("show_order", [str(image), "--checkpoint", str(out / "best.pt"),
                              "--hierarchy", str(tmp_path / "h.txt")]) == 1
