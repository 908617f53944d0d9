"""Segmenting many files: checked first, streamed, batched, workers, resumable."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmentation.data.datasets import SyntheticScenes
from segmentation.data.images import VOC_PALETTE, read_image, read_mask, write_image
from segmentation.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from segmentation.inference.files import (
    SUMMARY_COLUMNS,
    list_images,
    overlay_labels,
    segment_files,
)
from segmentation.inference.predictor import Segmenter, load_segmenter
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig
from tests.helpers import ROOT, SCRIPTS, run

CLASS_NAMES = [f"class_{k}" for k in range(6)]
# Three sizes, so that batches hold images of one size and of several.
SIZES = [(40, 56), (40, 56), (33, 47), (40, 56), (33, 47), (64, 48), (40, 56), (33, 47),
         (40, 56), (64, 48)]


def make_checkpoint(path, order="confidence", seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(num_classes=len(CLASS_NAMES), width=8, hidden=8, n_segments=20,
                         order=order)
    model = GraphLSTMSegmenter(config)
    with torch.no_grad():  # spread the logits, as training does
        model.classifier[-1].weight.mul_(20.0)
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "model_config": config.to_dict(),
                           "model_state": model.state_dict(), "epoch": 0,
                           "class_names": CLASS_NAMES})
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, size in enumerate(SIZES):
        image, _ = SyntheticScenes(i + 1, size=size, seed=3)[i]
        if i == 5:
            image = image[..., 0]  # one grayscale image
        write_image(folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}", image)
    return folder


@pytest.fixture(scope="module")
def plain(ckpt, images, tmp_path_factory):
    """The reference: one process, no workers, batch size 1, every output."""
    out = tmp_path_factory.mktemp("plain")
    summary = segment_files(ckpt, [images], out, save_probabilities=True)
    return out, summary


def labels_of(folder):
    return {p.name: read_mask(p) for p in sorted(Path(folder).glob("*_labels.png"))}


def file_names(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def expected_names(images, overlay=True, probabilities=False, summary=True):
    names = []
    for f in sorted(Path(images).iterdir()):
        names.append(f"{f.stem}_labels.png")
        names += [f"{f.stem}_overlay.png"] * overlay
        names += [f"{f.stem}_probabilities.npz"] * probabilities
    return sorted(names + ["summary.csv", "summary.json"] * summary)


# ----------------------------------------------------------------- outputs


def test_plain_run_writes_what_predict_gives_each_image(plain, ckpt, images):
    out, summary = plain
    assert file_names(out) == expected_names(images, probabilities=True)
    segmenter = load_segmenter(ckpt)
    for path in sorted(images.iterdir()):
        image = read_image(path)
        pred = segmenter.predict(image)
        np.testing.assert_array_equal(read_mask(out / f"{path.stem}_labels.png"), pred.labels)
        assert Image.open(out / f"{path.stem}_labels.png").mode == "P"
        drawn = overlay_labels(image, pred.labels, VOC_PALETTE, 0.5, pred.superpixels)
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{path.stem}_overlay.png")),
                                      drawn)
        with np.load(out / f"{path.stem}_probabilities.npz") as saved:
            assert saved["probabilities"].dtype == np.float16
            np.testing.assert_array_equal(saved["probabilities"],
                                          pred.probabilities.astype(np.float16))
            assert saved["class_names"].tolist() == CLASS_NAMES


def test_summary_has_a_row_per_image_in_json_and_csv(plain, ckpt, images):
    out, summary = plain
    assert json.loads((out / "summary.json").read_text()) == summary
    files = sorted(images.iterdir())
    assert summary["images"] == len(files) and summary["skipped"] == 0
    assert [row["file"] for row in summary["files"]] == [str(f) for f in files]
    segmenter = load_segmenter(ckpt)
    for path, row in zip(files, summary["files"], strict=True):
        width, height = Image.open(path).size
        pred = segmenter.predict(read_image(path))
        assert (row["height"], row["width"]) == (height, width)
        assert row["superpixels"] == int(pred.superpixels.max()) + 1
        assert row["levels"] == pred.schedule.num_levels
        stages = [row[f"{s}_seconds"] for s in ("read", "superpixel", "model", "write")]
        assert min(stages) >= 0 and row["seconds"] == pytest.approx(sum(stages), abs=1e-5)
    import csv

    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    assert [{k: str(v) for k, v in row.items()} for row in summary["files"]] == rows


def test_no_overlay_writes_labels_only(ckpt, images, tmp_path):
    out = tmp_path / "out"
    assert run("segment", ["--checkpoint", str(ckpt), str(images), "--out", str(out),
                           "--no-overlay", "--no-progress"]) == 0
    assert file_names(out) == expected_names(images, overlay=False)


def test_progress_bar_with_eta_on_a_terminal_only(ckpt, images, tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    files = sorted(images.iterdir())[:3]
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        segment_files(ckpt, files, tmp_path / f"out{shown}", progress=True)
        text = stream.getvalue()
        if shown:
            assert "3/3" in text and "<00:00" in text  # count and time left
        else:
            assert text == ""


# ------------------------------------------------------- batches and workers


@pytest.mark.parametrize("workers, batch_size", [(2, 4), (1, 3), (0, 10)])
def test_workers_and_batches_give_the_labels_of_a_plain_run(plain, ckpt, images, tmp_path,
                                                           workers, batch_size):
    out = tmp_path / "out"
    summary = segment_files(ckpt, [images], out, batch_size=batch_size, workers=workers,
                            save_probabilities=True)
    reference, reference_summary = plain
    assert file_names(out) == file_names(reference)
    assert labels_of(out).keys() == labels_of(reference).keys()
    for name, labels in labels_of(out).items():
        np.testing.assert_array_equal(labels, labels_of(reference)[name], err_msg=name)
    for path in sorted(images.iterdir()):
        name = f"{path.stem}_probabilities.npz"
        with np.load(out / name) as a, np.load(reference / name) as b:
            np.testing.assert_allclose(a["probabilities"].astype(np.float32),
                                       b["probabilities"].astype(np.float32), atol=1e-3)
    drop = ("seconds", "read_seconds", "superpixel_seconds", "model_seconds", "write_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in summary["files"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in reference_summary["files"]]
    assert (summary["batch_size"], summary["workers"]) == (batch_size, workers)


def graphs_of(segmenter, images, size):
    return [segmenter.transform(read_image(p)) for p, s in
            zip(sorted(images.iterdir()), SIZES, strict=True) if s == size]


def test_batched_probabilities_are_those_of_each_image_alone_to_rounding(ckpt, images):
    """The premise of the tie check: a batch moves probabilities by far less than 1e-5."""
    segmenter = load_segmenter(ckpt)
    graphs = graphs_of(segmenter, images, (40, 56))
    together, _ = segmenter._forward(graphs, 0)
    for b, graph in enumerate(graphs):
        alone, _ = segmenter._forward([graph], 0)
        assert (together[b] - alone[0]).abs().max() < 1e-6


def test_a_near_tie_in_a_batch_is_recomputed_alone(ckpt, images, monkeypatch):
    """A batched result within the tolerance of a tie is not trusted: the image runs again
    alone and gets exactly the result of predict, even if the batch flipped its label."""
    import segmentation.inference.predictor as pipeline

    segmenter = load_segmenter(ckpt)
    graphs = graphs_of(segmenter, images, (40, 56))
    alone = [segmenter._forward([g], 0)[0][0] for g in graphs]
    forward = segmenter._forward

    def flipping_forward(batch, seed):
        probabilities, levels = forward(batch, seed)
        if len(batch) > 1:  # a batch that turns pixel (0, 0) of image 1 into a near tie
            top = probabilities[1, :, 0, 0].topk(2)
            probabilities[1, top.indices[0], 0, 0] = top.values[1] - 1e-7
        return probabilities, levels

    monkeypatch.setattr(segmenter, "_forward", flipping_forward)
    results = segmenter.predict_graphs(graphs)
    assert len(graphs) == 5
    assert [r.recomputed_alone for r in results] == [False, True, False, False, False]
    for b in (0, 2, 3, 4):  # from the batch: equal to rounding
        assert (results[b].probabilities - alone[b]).abs().max() < 1e-6
    assert torch.equal(results[1].probabilities, alone[1])
    np.testing.assert_array_equal(results[1].labels, alone[1].argmax(0).numpy())
    # With no tolerance, the flipped label would have come out.
    monkeypatch.setattr(pipeline, "TIE_TOLERANCE", 0.0)
    flipped = segmenter.predict_graphs(graphs)[1]
    assert not flipped.recomputed_alone
    assert flipped.labels[0, 0] != alone[1][:, 0, 0].argmax()


def test_random_order_runs_every_image_alone_with_the_seed_of_predict(images, tmp_path):
    ckpt = make_checkpoint(tmp_path / "random.pt", order="random")
    out = tmp_path / "out"
    segment_files(ckpt, [images], out, batch_size=4, workers=1, overlay=False)
    segmenter = load_segmenter(ckpt)
    for path in sorted(images.iterdir()):
        np.testing.assert_array_equal(read_mask(out / f"{path.stem}_labels.png"),
                                      segmenter.predict(read_image(path)).labels)


def test_predict_graphs_of_nothing_and_predict_still_work(ckpt, images):
    segmenter = load_segmenter(ckpt)
    assert segmenter.predict_graphs([]) == []
    assert isinstance(segmenter, Segmenter)
    image = read_image(sorted(images.iterdir())[0])
    pred = segmenter.predict(image)
    batched = segmenter.predict_graphs([segmenter.transform(image)])[0]
    np.testing.assert_array_equal(batched.labels, pred.labels)
    np.testing.assert_array_equal(batched.probabilities.numpy(), pred.probabilities)
    assert batched.levels == pred.schedule.num_levels


# -------------------------------------------------------------- bad input


def bad_folder(images, tmp_path, kind):
    folder = tmp_path / "in"
    folder.mkdir()
    for f in sorted(images.iterdir()):
        (folder / f.name).write_bytes(f.read_bytes())
    bad = None
    if kind == "not an image":
        bad = folder / "img04.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif kind == "truncated png":
        bad = folder / "img07.png"
        bad.write_bytes(bad.read_bytes()[:200])
    elif kind == "too small":
        bad = folder / "tiny.png"
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(bad)
    return folder, bad


@pytest.mark.parametrize("kind", ["not an image", "truncated png", "too small"])
def test_a_bad_image_is_one_line_and_nothing_is_written(ckpt, images, tmp_path, capsys, kind):
    folder, bad = bad_folder(images, tmp_path, kind)
    out = tmp_path / "out"
    code = run("segment", ["--checkpoint", str(ckpt), str(folder), "--out", str(out),
                           "--workers", "2", "--batch-size", "4", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and bad.name in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_a_file_that_fails_to_decode_later_stops_the_run_in_one_line(ckpt, images, tmp_path,
                                                                    capsys, plain):
    """A JPEG cut short passes the header check; decoding it fails in a worker. The run
    stops there with one line; what was written is complete, and --skip-existing resumes."""
    folder, _ = bad_folder(images, tmp_path, None)
    bad = folder / "img06.jpg"
    good = bad.read_bytes()
    bad.write_bytes(good[:len(good) // 2])
    out = tmp_path / "out"
    argv = ["--checkpoint", str(ckpt), str(folder), "--out", str(out), "--workers", "2",
            "--no-progress"]
    assert run("segment", argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "img06.jpg" in err and "truncated" in err, err
    written = labels_of(out)
    assert "img06_labels.png" not in written and written  # stopped at the bad file
    for name, labels in written.items():
        np.testing.assert_array_equal(labels, labels_of(plain[0])[name])
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    bad.write_bytes(good)
    assert run("segment", [*argv, "--skip-existing"]) == 0
    assert file_names(out) == expected_names(images)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--workers", "-1"], "--workers"),
        (["--workers", "two"], "--workers"),
        (["--alpha", "1.5"], "--alpha"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_bad_flag_values_are_one_line(ckpt, images, tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert run("segment", ["--checkpoint", str(ckpt), str(images), "--out", str(out),
                           *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


def test_library_rejects_bad_values(ckpt, images, tmp_path):
    # A bad value is a ValueError, a bad type (a bool for an int) a TypeError.
    for kwargs, error, needle in [({"batch_size": 0}, ValueError, "batch_size"),
                                  ({"workers": -1}, ValueError, "workers"),
                                  ({"batch_size": True}, TypeError, "batch_size"),
                                  ({"alpha": 2.0}, ValueError, "alpha")]:
        with pytest.raises(error, match=needle):
            segment_files(ckpt, [images], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_image_names_that_would_clash_are_refused(images, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "img00.png").write_bytes((images / "img01.png").read_bytes())
    with pytest.raises(ValueError, match="img00"):
        list_images([images, other])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        list_images([tmp_path / "empty"])


# ---------------------------------------------------------------- resuming


def test_skip_existing_redoes_only_images_with_an_output_missing(ckpt, images, tmp_path):
    out = tmp_path / "out"
    segment_files(ckpt, [images], out, overlay=False)
    names = sorted(images.iterdir())
    # The overlay is now wanted too: every image lacks one, so nothing is skipped.
    (out / f"{names[0].stem}_labels.png").unlink()
    again = segment_files(ckpt, [images], out, skip_existing=True)
    assert (again["images"], again["skipped"]) == (len(names), 0)
    assert file_names(out) == expected_names(images)
    (out / f"{names[3].stem}_overlay.png").unlink()
    last = segment_files(ckpt, [images], out, skip_existing=True)
    assert (last["images"], last["skipped"]) == (1, len(names) - 1)
    assert [row["file"] for row in last["files"]] == [str(names[3])]
    assert file_names(out) == expected_names(images)


def test_a_run_stopped_mid_write_resumes_with_skip_existing(ckpt, images, tmp_path, plain,
                                                          monkeypatch):
    """Stop the run while it writes the overlay of its 4th image (Ctrl-C): every file
    present is complete, nothing temporary is left, and --skip-existing finishes the job
    with the files of an uninterrupted run."""
    import segmentation.inference.files as inference

    out = tmp_path / "out"
    atomic_write = inference.atomic_write
    calls = {"n": 0}

    def write_half_then_stop(path, write):
        calls["n"] += 1
        if calls["n"] == 7:  # overlay, npz per image (labels: write_mask_png): 7 = overlay 4

            def half(handle):
                buffer = io.BytesIO()
                write(buffer)
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                raise KeyboardInterrupt

            return atomic_write(path, half)
        return atomic_write(path, write)

    monkeypatch.setattr(inference, "atomic_write", write_half_then_stop)
    argv = ["--checkpoint", str(ckpt), str(images), "--out", str(out), "--workers", "1",
            "--save-probabilities", "--no-progress"]
    assert run("segment", argv) == 130
    monkeypatch.setattr(inference, "atomic_write", atomic_write)
    names = file_names(out)
    assert not [n for n in names if n.startswith(".")] and "summary.json" not in names
    assert "img03_labels.png" in names and "img03_overlay.png" not in names
    reference = plain[0]
    for name in names:  # complete files, equal to those of the run never stopped
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(out / name)),
                                  np.asarray(Image.open(reference / name))), name
    done = len([n for n in names if n.endswith("_probabilities.npz")])
    assert done == 3
    assert run("segment", [*argv, "--skip-existing"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["skipped"]) == (len(SIZES) - done, done)
    assert file_names(out) == file_names(reference)
    for name, labels in labels_of(out).items():
        np.testing.assert_array_equal(labels, labels_of(reference)[name])


def test_a_killed_process_is_finished_by_a_rerun_with_skip_existing(ckpt, images, tmp_path,
                                                                     plain):
    """SIGKILL a segment.py process half-way (it cannot clean up), then rerun it with
    --skip-existing: the job completes, and no partial or temporary file remains."""
    folder = tmp_path / "many"
    folder.mkdir()
    for copy in range(4):  # 40 images, so that the kill lands half-way
        for f in sorted(images.iterdir()):
            (folder / f"{f.stem}_{copy}{f.suffix}").write_bytes(f.read_bytes())
    out = tmp_path / "out"
    argv = [str(SCRIPTS / "segment.py"), "--checkpoint", str(ckpt), str(folder),
            "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if out.is_dir() and len(list(out.glob("*_labels.png"))) >= 4:
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    process.stderr.close()
    written = len(list(out.glob("*_labels.png")))
    assert 4 <= written < 40
    # What a kill inside a write leaves: the hidden temporary of an atomic write.
    stale = out / ".img00_3_labels.png.k1ll3d00.tmp"
    stale.write_bytes(b"\x89PNG half")
    assert run("segment", [*argv[1:], "--skip-existing"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] >= written - 1 and summary["images"] + summary["skipped"] == 40
    assert file_names(out) == expected_names(folder)  # no temporary, no partial file
    reference = labels_of(plain[0])
    for name, labels in labels_of(out).items():
        original = name.rsplit("_", 2)[0] + "_labels.png"
        np.testing.assert_array_equal(labels, reference[original], err_msg=name)
