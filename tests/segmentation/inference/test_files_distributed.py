"""segment.py and evaluate.py under torchrun (2 CPU processes, gloo) equal one process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import segmentation.engine.distributed as distributed
from segmentation.data.datasets import SYNTHETIC_CLASSES, SyntheticScenes, write_voc
from segmentation.engine.distributed import process_batches
from segmentation.inference.files import segment_files
from tests.helpers import ROOT, SCRIPTS
from tests.segmentation.inference.test_files import (
    expected_names,
    file_names,
    images,  # noqa: F401 - fixture
    labels_of,
    make_checkpoint,
    run,
)


def torchrun(script, argv, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", str(SCRIPTS / f"{script}.py"), *argv],
        capture_output=True, text=True, env=env, timeout=600,
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_items, batch_size", [(10, 3), (10, 1), (2, 4), (0, 2)])
def test_process_batches_share_one_process_batches_once(monkeypatch, world_size, num_items,
                                                        batch_size):
    monkeypatch.setattr(distributed, "get_world_size", lambda: world_size)
    shares = []
    for rank in range(world_size):
        monkeypatch.setattr(distributed, "get_rank", lambda rank=rank: rank)
        shares.append(process_batches(num_items, batch_size))
    together = sorted(batch for share in shares for batch in share)
    one_process = [list(range(i, min(i + batch_size, num_items)))
                   for i in range(0, num_items, batch_size)]
    assert together == one_process
    assert [len(share) for share in shares] == [
        len(one_process[rank::world_size]) for rank in range(world_size)]


def test_process_batches_rejects_bad_values():
    with pytest.raises(ValueError, match="batch_size"):
        process_batches(4, 0)
    with pytest.raises(ValueError, match="num_items"):
        process_batches(-1, 2)


def test_torchrun_writes_the_files_of_one_process(ckpt, images, tmp_path):  # noqa: F811
    """Two processes with workers: the probabilities of one process with the same batch
    size, bit for bit (the same batches), and the labels of a plain run."""
    one, plain, two = tmp_path / "one", tmp_path / "plain", tmp_path / "two"
    segment_files(ckpt, [images], one, batch_size=2, save_probabilities=True)
    segment_files(ckpt, [images], plain)
    done = torchrun("segment", ["--checkpoint", str(ckpt), str(images), "--out", str(two),
                                "--workers", "1", "--batch-size", "2", "--save-probabilities",
                                "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("segmented 10 images") == 1  # rank 0 alone prints
    assert file_names(two) == expected_names(images, probabilities=True)
    for name in file_names(two):
        if name.endswith(".npz"):
            with np.load(two / name) as a, np.load(one / name) as b:
                np.testing.assert_array_equal(a["probabilities"], b["probabilities"])
    for name, labels in labels_of(two).items():
        np.testing.assert_array_equal(labels, labels_of(plain)[name], err_msg=name)
    summary = json.loads((two / "summary.json").read_text())
    reference = json.loads((one / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["images"] == 10
    assert [r["file"] for r in summary["files"]] == [r["file"] for r in reference["files"]]
    assert [r["levels"] for r in summary["files"]] == [r["levels"] for r in reference["files"]]


def test_torchrun_bad_image_stops_every_process_before_writing(ckpt, images,  # noqa: F811
                                                               tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted(images.iterdir()):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "img09.png").write_bytes(b"not an image")  # in the share of the second process
    out = tmp_path / "out"
    done = torchrun("segment", ["--checkpoint", str(ckpt), str(folder), "--out", str(out),
                                "--no-progress"])
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "segment.py: error:" in line]
    # Every process checks every header and prints the error; torchrun stops the
    # other process as soon as one fails, so it may not get to print.
    assert 1 <= len(errors) <= 2 and all("img09.png" in line for line in errors), done.stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def mixed_voc(tmp_path_factory):
    """Validation images of several sizes, so batches hold one size and several."""
    root = tmp_path_factory.mktemp("voc")
    sizes = [(32, 40), (32, 40), (36, 32), (32, 40), (40, 34), (36, 32), (32, 40), (40, 34),
             (32, 40)]
    samples = [SyntheticScenes(i + 1, size=s, seed=5)[i] for i, s in enumerate(sizes)]
    write_voc(root, samples, {"train": range(1), "val": range(len(sizes))},
              SYNTHETIC_CLASSES, image_format="png")
    return root


def test_evaluate_with_workers_and_torchrun_gives_the_scores_of_one_process(
    ckpt, mixed_voc, tmp_path, capsys
):
    argv = ["--data", str(mixed_voc), "--checkpoint", str(ckpt), "--json", "--batch-size", "3"]
    assert run("evaluate", argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert run("evaluate", [*argv, "--workers", "2", "--cache", str(tmp_path / "cache")]) == 0
    assert json.loads(capsys.readouterr().out) == plain
    assert len(list((tmp_path / "cache").iterdir())) == 9
    done = torchrun("evaluate", [*argv, "--workers", "1"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == plain  # rank 0 alone prints


def test_evaluate_bad_workers_is_one_line(ckpt, mixed_voc, capsys):
    assert run("evaluate", ["--data", str(mixed_voc), "--checkpoint", str(ckpt),
                            "--workers", "-2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--workers" in err
