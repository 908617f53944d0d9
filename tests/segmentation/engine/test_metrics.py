import math

import numpy as np
import pytest
import torch

from segmentation.engine.metrics import confusion_matrix, scores_from_confusion


def test_confusion_and_scores_match_a_plain_count():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(3, 17, 11))
    target[0, :2] = 255
    pred = rng.integers(0, 4, size=target.shape)
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel(), strict=True):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(cm.numpy(), expected)
    scores = scores_from_confusion(cm, ["a", "b", "c", "d"])
    for k, name in enumerate("abcd"):
        t, p = target != 255, target == k
        inter = np.sum((pred == k) & p & t)
        union = np.sum(((pred == k) & t) | p)
        assert scores["per_class_iou"][name] == pytest.approx(inter / union)
    assert scores["miou"] == pytest.approx(np.mean(list(scores["per_class_iou"].values())))
    assert scores["pixel_accuracy"] == pytest.approx(np.mean(pred[target != 255]
                                                             == target[target != 255]))


def test_absent_class_is_left_out_of_the_mean():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    scores = scores_from_confusion(confusion_matrix(pred, target, 3))
    assert scores["per_class_iou"]["2"] is None
    assert scores["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert not math.isnan(scores["miou"])


def test_bad_labels_and_shapes():
    with pytest.raises(ValueError, match="target"):
        confusion_matrix(torch.zeros(3), torch.tensor([0, 7, 1]), 3)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(torch.zeros(3), torch.zeros(4), 3)
