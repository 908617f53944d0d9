"""The main job (``make demo``) end to end, on small settings.

Runs ``scripts/demo.py`` as a user does and checks what it promises: a
trained checkpoint, held-out scenes scored with the printed mean IoU, label
maps that are the model's predictions, and the picture of the update order.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, png_pixels


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out),
                           "--scenes", "8", "--epochs", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    return out, done.returncode, done.stdout, done.stderr


def test_demo_runs_and_prints_its_steps(demo):
    out, code, stdout, stderr = demo
    assert code == 0, stderr
    for step in ("1/4", "2/4", "3/4", "4/4"):
        assert step in stdout
    assert re.search(r"done: held-out mean IoU \d+\.\d\d; outputs in ", stdout)


def test_demo_score_is_that_of_its_checkpoint_on_its_held_out_scenes(demo):
    from segmentation.engine.evaluate import evaluate_checkpoint

    out, code, stdout, _ = demo
    assert code == 0
    printed = float(re.search(r"held-out mean IoU (\d+\.\d\d)", stdout).group(1))
    scores = evaluate_checkpoint(str(out / "scenes"), str(out / "run" / "best.pt"), split="val")
    assert printed == pytest.approx(100 * scores["miou"], abs=0.006)


def test_demo_label_maps_are_the_model_predictions(demo):
    from segmentation.data.images import read_image
    from segmentation.inference.predictor import load_segmenter

    out, code, _, _ = demo
    assert code == 0
    labels = sorted((out / "segmented").glob("*_labels.png"))
    assert len(labels) == 4
    assert len(list((out / "segmented").glob("*_overlay.png"))) == 4
    summary = json.loads((out / "segmented" / "summary.json").read_text())
    assert summary["images"] == 4
    segmenter = load_segmenter(out / "run" / "best.pt")
    first = labels[0]
    stem = first.name[: -len("_labels.png")]
    (source,) = (out / "scenes" / "JPEGImages").glob(stem + ".*")
    image = read_image(source)
    expected = segmenter.predict(image).labels
    np.testing.assert_array_equal(np.asarray(Image.open(first)), np.asarray(expected))


def test_demo_draws_the_update_order(demo, tmp_path):
    # The picture is that of the first held-out scene's prediction by the trained
    # checkpoint (order, levels and confidence), drawn here again from them.
    from segmentation.data.images import read_image
    from segmentation.inference.predictor import load_segmenter
    from segmentation.visualize import plot_update_order

    out, code, _, _ = demo
    assert code == 0
    first = sorted((out / "scenes" / "JPEGImages").iterdir())[0]
    image = read_image(first)
    pred = load_segmenter(out / "run" / "best.pt").predict(image)
    expected = tmp_path / "expected.png"
    plot_update_order(image, pred.superpixels, pred.schedule, confidence=pred.confidence,
                      path=expected)
    drawn, redrawn = png_pixels(out / "update_order.png"), png_pixels(expected)
    assert drawn.shape == redrawn.shape
    # The confidence is recomputed here, so a colour can move by rounding (a few
    # pixels by a few levels); the picture of another scene or order differs widely.
    differing = np.any(drawn.astype(int) != redrawn, axis=-1).mean()
    assert differing < 0.002, differing
