"""Segmenter.predict: its image checked once, and the same result as the public transform."""

import numpy as np
import pytest
import torch

import segmentation.data.transforms as transforms_module
import segmentation.inference.predictor as predictor_module
from segmentation.data.datasets import SyntheticScenes
from segmentation.data.loading import pad_collate
from segmentation.inference.predictor import Segmenter
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(ModelConfig(num_classes=3, width=8, hidden=8, n_segments=20))
    return Segmenter(model)


@pytest.fixture(scope="module")
def image():
    return SyntheticScenes(1, size=(40, 48), seed=3)[0][0]


def test_predict_checks_the_image_once(segmenter, image, monkeypatch):
    calls = []

    def counting(original):
        def check(*args, **kwargs):
            calls.append(kwargs.get("name"))
            return original(*args, **kwargs)
        return check

    monkeypatch.setattr(predictor_module, "check_image", counting(predictor_module.check_image))
    monkeypatch.setattr(transforms_module, "check_image", counting(transforms_module.check_image))
    segmenter.predict(image)
    assert calls == ["image"]


def test_predict_matches_the_transform_and_the_model(segmenter, image):
    graph = segmenter.transform(image)  # the public transform, with its own checks
    with torch.no_grad():
        out = segmenter.model.forward_batch(pad_collate([graph]), torch.Generator().manual_seed(0))
    expected = out.logits.softmax(1)[0].numpy()
    pred = segmenter.predict(image)
    np.testing.assert_array_equal(pred.probabilities, expected)
    np.testing.assert_array_equal(pred.superpixels, graph.superpixels[0].numpy())


def test_predict_grayscale_and_rgba_as_rgb(segmenter, image):
    gray = image[..., 1]
    as_rgb = segmenter.predict(np.repeat(gray[..., None], 3, axis=2))
    for variant in (gray, gray[..., None]):
        np.testing.assert_array_equal(segmenter.predict(variant).probabilities,
                                      as_rgb.probabilities)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(segmenter.predict(rgba).probabilities,
                                  segmenter.predict(image).probabilities)


def test_predict_names_a_bad_image(segmenter):
    with pytest.raises(ValueError, match="image"):
        segmenter.predict(np.zeros((8, 8, 5), np.uint8))
