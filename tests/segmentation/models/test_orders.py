import numpy as np
import pytest
import torch

from graphlstm import build_schedule
from segmentation.models.orders import (
    random_score,
    raster_score,
    score_from_image,
    smooth_random_field,
)


def test_score_from_image_is_the_mean_per_superpixel():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=(12, 9))
    labels[0, :7] = np.arange(7)  # every label present
    values = rng.standard_normal((12, 9))
    score = score_from_image(values, labels)
    expected = [values[labels == k].mean() for k in range(7)]
    np.testing.assert_allclose(score.numpy(), expected, rtol=0, atol=1e-12)


def test_raster_score_orders_rows_then_columns():
    pos = torch.tensor([[5.0, 0.2], [1.0, 3.0], [0.0, 0.0], [9.0, 3.1]])
    order = build_schedule(torch.empty(2, 0, dtype=torch.long), 4,
                           score=raster_score(pos, width=10)).order
    assert order.tolist() == [2, 0, 1, 3]


def test_random_score_is_a_permutation_and_seeded():
    a = random_score(50, torch.Generator().manual_seed(1))
    b = random_score(50, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and sorted(a.long().tolist()) == list(range(50))


def test_smooth_field_is_smooth_and_normalised():
    field = smooth_random_field((64, 80), sigma=0.1, seed=3)
    assert field.min() == 0.0 and field.max() == 1.0
    noise = np.random.default_rng(3).random((64, 80))
    # neighbouring pixels differ far less than in white noise
    assert np.abs(np.diff(field, axis=1)).mean() < 0.1 * np.abs(np.diff(noise, axis=1)).mean()


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: score_from_image(np.zeros((3, 3)), np.zeros((3, 4), int)), ValueError,
         "score_image"),
        (lambda: score_from_image(np.full((2, 2), np.nan), np.zeros((2, 2), int)), ValueError,
         "score_image"),
        (lambda: score_from_image(np.zeros((2, 2)), np.zeros((2, 2))), TypeError, "superpixels"),
        (lambda: raster_score(torch.zeros(3), 4), ValueError, "pos"),
        (lambda: smooth_random_field((0, 3)), ValueError, "shape"),
        (lambda: smooth_random_field((3, 3), sigma=0), ValueError, "sigma"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_reverse_confidence_order_is_least_confident_first():
    from torch_geometric.data import Batch

    from segmentation.data.datasets import SyntheticScenes
    from segmentation.engine.train import build_graphs
    from segmentation.models.orders import ORDER_KINDS
    from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

    assert "reverse-confidence" in ORDER_KINDS
    batch = Batch.from_data_list(build_graphs(SyntheticScenes(2, size=(40, 48), seed=5), 30))
    outs = {}
    for kind in ("confidence", "reverse-confidence"):
        torch.manual_seed(0)
        model = GraphLSTMSegmenter(ModelConfig(num_classes=6, width=6, hidden=5, order=kind))
        outs[kind] = model.forward_batch(batch)
    confidence = outs["confidence"].node_score
    assert torch.equal(outs["reverse-confidence"].node_score, -confidence)
    order = outs["reverse-confidence"].schedule.order
    assert bool((confidence[order].diff() >= 0).all())  # ascending confidence
