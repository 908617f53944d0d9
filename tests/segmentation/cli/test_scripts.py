"""End to end: train -> checkpoint -> evaluate -> segment on a tiny generated VOC folder."""

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmentation.data.datasets import write_synthetic_voc
from tests.helpers import SCRIPTS, help_of_scripts, run

TINY = ["--n-segments", "12", "--width", "4", "--hidden", "4", "--batch-size", "4",
        "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_synthetic_voc(root, 8, 4, size=(32, 32), seed=0)
    return root


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert run("train", ["--data", str(data), "--epochs", "2", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_loadable_checkpoints(trained):
    assert sorted(p.name for p in trained.iterdir()) == ["best.pt", "graph_cache", "last.pt"]
    # The default cache holds one complete graph per image (8 training and 4 validation).
    assert len(list((trained / "graph_cache").glob("*.pt"))) == 12
    assert not list((trained / "graph_cache").glob("*.tmp"))
    payload = torch.load(trained / "last.pt", weights_only=True)
    assert payload["epoch"] == 1 and len(payload["history"]) == 2
    assert payload["model_config"]["n_segments"] == 12
    assert payload["class_names"][0] == "background"


@pytest.mark.parametrize("source", ["data", "synthetic"])
def test_train_default_superpixels_depend_on_the_data(source, data, tmp_path):
    from segmentation.cli.train import DATA_N_SEGMENTS, SYNTHETIC_N_SEGMENTS
    from segmentation.data.loading import load_training_data

    assert DATA_N_SEGMENTS != SYNTHETIC_N_SEGMENTS
    argv = ["--data", str(data)] if source == "data" else ["--synthetic", "8"]
    options = [a for a in TINY if a not in ("--n-segments", "12")]
    assert run("train", [*argv, "--epochs", "1", "--out", str(tmp_path), *options]) == 0
    expected = DATA_N_SEGMENTS if source == "data" else SYNTHETIC_N_SEGMENTS
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    assert payload["model_config"]["n_segments"] == expected
    # The graphs were built with that many superpixels (and the count matters here).
    cached = sorted(int(torch.load(path, weights_only=True)["num_nodes"])
                    for path in (tmp_path / "graph_cache").glob("*.pt"))
    other = SYNTHETIC_N_SEGMENTS if source == "data" else DATA_N_SEGMENTS
    node_counts = {}
    for n_segments in (expected, other):
        train_graphs, val_graphs, _ = load_training_data(
            data=str(data) if source == "data" else None,
            synthetic=8 if source == "synthetic" else None, n_segments=n_segments)
        node_counts[n_segments] = sorted(g.num_nodes for g in [*train_graphs, *val_graphs])
    assert cached == node_counts[expected] != node_counts[other]


def test_evaluate_json_matches_the_table(data, trained, capsys):
    ckpt = str(trained / "best.pt")
    assert run("evaluate", ["--data", str(data), "--checkpoint", ckpt, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"miou", "per_class_iou", "pixel_accuracy"}
    assert 0.0 <= scores["pixel_accuracy"] <= 1.0
    ious = [v for v in scores["per_class_iou"].values() if v is not None]
    assert scores["miou"] == pytest.approx(np.mean(ious))
    assert run("evaluate", ["--data", str(data), "--checkpoint", ckpt]) == 0
    table = capsys.readouterr().out
    assert f"{100 * scores['miou']:.2f}" in table and "pixel accuracy" in table


def test_segment_folder_writes_labels_and_overlays(data, trained, tmp_path):
    out = tmp_path / "seg"
    ckpt = str(trained / "best.pt")
    assert run("segment", ["--checkpoint", ckpt, str(data / "JPEGImages"), "--out", str(out)]) == 0
    names = sorted(p.name for p in (data / "JPEGImages").iterdir())
    assert len(list(out.iterdir())) == 2 * len(names) + 2  # + summary.json, summary.csv
    assert (out / "summary.json").is_file() and (out / "summary.csv").is_file()
    label = Image.open(out / f"{Path(names[0]).stem}_labels.png")
    assert label.mode == "P" and label.size == (32, 32)
    assert np.asarray(label).max() < 6
    overlay = Image.open(out / f"{Path(names[0]).stem}_overlay.png")
    assert overlay.mode == "RGB" and overlay.size == (32, 32)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(data, trained, tmp_path,
                                                              monkeypatch):
    """Stop a 2-epoch run right after its first checkpoint (as Ctrl-C would), resume it, and
    get the weights and history of the run that was never stopped (``trained``)."""
    import segmentation.engine.train as training

    out = tmp_path / "resumed"
    save = training.save_checkpoint

    def save_then_stop(path, payload):
        written = save(path, payload)
        if Path(path).name == "last.pt":
            raise KeyboardInterrupt
        return written

    argv = ["--data", str(data), "--epochs", "2", "--out", str(out), *TINY]
    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    assert run("train", argv) == 130
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 0
    monkeypatch.setattr(training, "save_checkpoint", save)
    assert run("train", [*argv, "--resume"]) == 0
    a = torch.load(trained / "last.pt", weights_only=True)
    b = torch.load(out / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    assert a["history"] == b["history"]


def test_poly_schedule_decays_the_learning_rate_to_zero():
    from segmentation.engine.train import TrainConfig

    config = TrainConfig(lr=0.01, lr_schedule="poly")
    rates = [config.learning_rate(t, 10) for t in range(11)]
    assert rates[0] == 0.01 and rates[10] == 0.0
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[5] == pytest.approx(0.01 * 0.5 ** 0.9)
    assert TrainConfig(lr=0.01, lr_schedule="constant").learning_rate(7, 10) == 0.01
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine")


def corrupt_copy(data, tmp_path):
    root = tmp_path / "bad"
    import shutil

    shutil.copytree(data, root)
    return root


@pytest.mark.parametrize("case", ["missing folder", "corrupt image", "mask size",
                                  "unknown order", "bad epochs"])
def test_train_bad_input_is_one_line(case, data, tmp_path, capsys):
    root, extra = corrupt_copy(data, tmp_path), []
    first = sorted((root / "JPEGImages").iterdir())[0]
    if case == "missing folder":
        root = tmp_path / "nowhere"
    elif case == "corrupt image":
        first.write_bytes(b"not an image at all")
    elif case == "mask size":
        mask = root / "SegmentationClass" / (first.stem + ".png")
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(mask)
    elif case == "unknown order":
        extra = ["--order", "bfs"]
    elif case == "bad epochs":
        extra = ["--epochs", "0"]
    out = tmp_path / "run"
    argv = ["--data", str(root), "--out", str(out), "--epochs", "1", *TINY, *extra]
    code = run("train", argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "error" in err and "Traceback" not in err
    expected = {"missing folder": "nowhere", "corrupt image": first.name,
                "mask size": "must match", "unknown order": "--order",
                "bad epochs": "--epochs"}[case]
    assert expected in err
    # No checkpoint, half-written or not; at most complete cached graphs of the images
    # read before the bad one.
    assert not out.exists() or {p.name for p in out.iterdir()} <= {"graph_cache"}
    assert not out.exists() or not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("case", ["missing", "not a checkpoint", "truncated"])
def test_wrong_checkpoint_is_one_line(case, data, trained, tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    if case == "not a checkpoint":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif case == "truncated":
        ckpt.write_bytes((trained / "best.pt").read_bytes()[:200])
    for script, argv in [("evaluate", ["--data", str(data)]),
                         ("segment", [str(data / "JPEGImages"), "--out", str(tmp_path / "o")])]:
        assert run(script, [*argv, "--checkpoint", str(ckpt)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "model.pt" in err
    assert not (tmp_path / "o").exists()


def test_segment_corrupt_image_writes_nothing(data, trained, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    good = sorted((data / "JPEGImages").iterdir())[0]
    (images / good.name).write_bytes(good.read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "seg"
    assert run("segment", ["--checkpoint", str(trained / "best.pt"), str(images),
                           "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_cli_subprocess_help_and_error():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    scripts = [str(SCRIPTS / f"{name}.py")
               for name in ("train", "evaluate", "segment", "demo", "benchmark")]
    results = help_of_scripts(scripts, env=env)
    for script in scripts:
        code, text = results[script]
        assert code in (0, None) and text.startswith("usage: "), (script, code, text[:200])
    done = subprocess.run([sys.executable, str(SCRIPTS / "evaluate.py"), "--data", "/nonexistent",
                           "--checkpoint", "/nonexistent.pt"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "nonexistent.pt" in done.stderr


def test_checkpoint_write_failure_leaves_nothing(tmp_path):
    from segmentation.engine.checkpoint import save_checkpoint

    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        save_checkpoint(tmp_path / "best.pt", {"model": lambda: None})
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    from segmentation.data.images import atomic_write

    path = atomic_write(tmp_path / "out.bin", lambda f: f.write(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    "script, argv, needle",
    [
        ("evaluate", ["--batch-size", "0"], "--batch-size"),
        ("evaluate", ["--device", "quantum"], "--device"),
        ("segment", ["--device", "cuda:7"], "--device"),
        ("train", ["--synthetic", "4", "--lr", "-1"], "--lr"),
        ("train", ["--synthetic", "4", "--lr-schedule", "cosine"], "--lr-schedule"),
        ("train", ["--synthetic", "4", "--data", "x"], "--data"),
    ],
)
def test_bad_option_values_are_one_line(script, argv, needle, data, trained, tmp_path, capsys):
    base = {
        "evaluate": ["--data", str(data), "--checkpoint", str(trained / "best.pt")],
        "segment": ["--checkpoint", str(trained / "best.pt"), str(data / "JPEGImages"),
                    "--out", str(tmp_path / "o")],
        "train": ["--out", str(tmp_path / "o")],
    }[script]
    assert run(script, [*base, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory):
    """A VOC folder whose images all have different sizes."""
    from segmentation.data.datasets import SYNTHETIC_CLASSES, SyntheticScenes, write_voc

    root = tmp_path_factory.mktemp("mixed")
    sizes = [(32 + 3 * i, 48 - 2 * i) for i in range(8)]
    samples = [SyntheticScenes(i + 1, size=size, seed=2)[i] for i, size in enumerate(sizes)]
    write_voc(root, samples, {"train": range(6), "val": range(6, 8)}, SYNTHETIC_CLASSES,
              image_format="png")
    return root


def test_train_on_images_of_different_sizes_with_augmentation_and_workers(
    mixed_sizes, tmp_path, capsys
):
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--data", str(mixed_sizes), "--epochs", "2", "--out", str(out), "--augment",
            "--crop-size", "24", "--workers", "2", "--cache", str(cache), *TINY]
    assert run("train", argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt"]
    assert len(list(cache.iterdir())) == 8  # one graph per image, train and val
    assert run("evaluate", ["--data", str(mixed_sizes), "--checkpoint", str(out / "best.pt"),
                            "--json"]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert 0.0 <= scores["pixel_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--crop-size", "0", "--augment"], "--crop-size"),
        (["--crop-size", "24"], "--crop-size needs --augment"),
        (["--workers", "-1"], "--workers"),
        (["--workers", "two"], "--workers"),
    ],
)
def test_bad_data_flags_are_one_line(argv, needle, tmp_path, capsys):
    assert run("train", ["--synthetic", "4", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "o").exists()


def test_error_in_a_worker_is_one_line(data, tmp_path, capsys):
    root = corrupt_copy(data, tmp_path)
    first = sorted((root / "JPEGImages").iterdir())[0]
    first.write_bytes(b"not an image at all")
    out = tmp_path / "run"
    code = run("train", ["--data", str(root), "--out", str(out), "--epochs", "1", "--workers",
                         "2", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and first.name in err
    assert "Traceback" not in err and "Caught" not in err
    assert not out.exists() or {p.name for p in out.iterdir()} <= {"graph_cache"}
    assert not out.exists() or not list(out.rglob("*.tmp"))
    # The loader's workers ended with the run: they ignore SIGTERM, so one left
    # behind would hold up the interpreter's exit, which joins its children.
    assert multiprocessing.active_children() == []


def test_evaluate_mask_size_mismatch_is_one_line(data, trained, tmp_path, capsys):
    root = corrupt_copy(data, tmp_path)
    name = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "SegmentationClass" / f"{name}.png")
    assert run("evaluate", ["--data", str(root), "--checkpoint", str(trained / "best.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "must match" in err


@pytest.mark.parametrize("error", [ValueError("bad --x"), FileNotFoundError("no such file"),
                                   "diverged"])
def test_run_main_reports_bad_input_in_one_line(error, capsys):
    from segmentation.cli._common import run_main
    from segmentation.engine.train import TrainingDiverged

    if error == "diverged":
        error = TrainingDiverged(float("nan"), epoch=2, step=7, lr=0.01)

    def main():
        raise error

    assert run_main(main) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(error).splitlines()[0] in err


@pytest.mark.parametrize("error", [KeyError("key"), RuntimeError("bug"), TypeError("bug"),
                                   AttributeError("bug")])
def test_run_main_lets_a_bug_keep_its_traceback(error):
    from segmentation.cli._common import run_main

    def main():
        raise error

    with pytest.raises(type(error)):
        run_main(main)
