"""Mean pooling to superpixel nodes and unpooling back to pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segmentation.data.superpixels import relabel_contiguous
from segmentation.models.pooling import PAD_LABEL, pool, unpool

# Device-agnostic code is checked on every device this machine has.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_label_maps(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    maps = [
        relabel_contiguous(rng.integers(0, 3 + 2 * b, size=(height, width))) for b in range(batch)
    ]
    return torch.from_numpy(np.stack(maps))


def pool_reference(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image loops: node means in batch order and the mean image."""
    nodes, mean_image = [], np.zeros_like(features)
    for b in range(features.shape[0]):
        for k in range(labels[b].max() + 1):
            inside = labels[b] == k
            mean = features[b][:, inside].mean(axis=1)
            nodes.append(mean)
            mean_image[b][:, inside] = mean[:, None]
    return np.array(nodes), mean_image


def test_pool_and_unpool_match_loop_reference():
    features = torch.randn(3, 4, 6, 7, dtype=torch.float64)
    labels = random_label_maps(3, 6, 7)
    nodes = pool(features, labels)
    expected_nodes, expected_image = pool_reference(features.numpy(), labels.numpy())
    assert nodes.shape == (sum(int(m.max()) + 1 for m in labels), 4)
    np.testing.assert_allclose(nodes.numpy(), expected_nodes, rtol=1e-12, atol=1e-12)
    image = unpool(nodes, labels)
    assert image.shape == features.shape and image.is_contiguous()
    np.testing.assert_allclose(image.numpy(), expected_image, rtol=1e-12, atol=1e-12)


def padded_label_maps(seed: int = 3) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Three images of different sizes, padded bottom/right with PAD_LABEL to one size."""
    sizes = [(6, 7), (4, 7), (5, 3)]
    rng = np.random.default_rng(seed)
    maps = torch.full((3, 6, 7), PAD_LABEL, dtype=torch.long)
    for b, (h, w) in enumerate(sizes):
        maps[b, :h, :w] = torch.from_numpy(relabel_contiguous(rng.integers(0, 4 + b, (h, w))))
    return maps, sizes


def test_padding_label_is_skipped_by_pool_and_zero_after_unpool():
    features = torch.randn(3, 4, 6, 7, dtype=torch.float64)
    labels, sizes = padded_label_maps()
    nodes = pool(features, labels)
    # Reference: every image on its own, cropped to its real size (no padding at all).
    expected = []
    for b, (h, w) in enumerate(sizes):
        crop_nodes, _ = pool_reference(features[b : b + 1, :, :h, :w].numpy(),
                                       labels[b : b + 1, :h, :w].numpy())
        expected.append(crop_nodes)
    np.testing.assert_allclose(nodes.numpy(), np.concatenate(expected), rtol=0, atol=1e-12)
    image = unpool(nodes, labels)
    offsets = np.cumsum([0] + [int(m.max()) + 1 for m in labels])
    for b in range(3):
        for y in range(6):
            for x in range(7):
                label = int(labels[b, y, x])
                want = 0.0 if label == PAD_LABEL else nodes[offsets[b] + label]
                torch.testing.assert_close(image[b, :, y, x], torch.as_tensor(want).expand(4)
                                           .to(image.dtype), rtol=0, atol=0)
    # Padding receives no gradient; nodes get the gradient of their real pixels only.
    features.requires_grad_(True)
    pool(features, labels).sum().backward()
    assert torch.all(features.grad.permute(1, 0, 2, 3)[:, labels == PAD_LABEL] == 0)
    assert torch.autograd.gradcheck(lambda f: pool(f, labels), (features,))
    values = torch.randn(nodes.shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: unpool(v, labels), (values,))


def test_padding_with_explicit_num_nodes_and_shared_map():
    labels, _ = padded_label_maps(seed=4)
    features = torch.randn(3, 2, 6, 7)
    counts = [int(m.max()) + 2 for m in labels]  # one empty node per image too
    nodes = pool(features, labels, num_nodes=counts)
    torch.testing.assert_close(
        unpool(nodes, labels, num_nodes=counts), unpool(pool(features, labels), labels)
    )
    shared = labels[2]
    torch.testing.assert_close(pool(features, shared), pool(features, shared.expand(3, -1, -1)))
    torch.testing.assert_close(unpool(pool(features, shared), shared),
                               unpool(pool(features, shared), shared.expand(3, -1, -1)))
    with pytest.raises(ValueError, match="all padding"):
        unpool(torch.zeros(0, 2), torch.full((3, 3), PAD_LABEL))


def test_batch_offsets_follow_pyg_batch():
    from torch_geometric.data import Batch, Data

    labels = random_label_maps(3, 5, 5, seed=1)
    features = torch.randn(3, 2, 5, 5)
    counts = [int(m.max()) + 1 for m in labels]
    graphs = [
        Data(x=pool(features[b : b + 1], labels[b]), num_nodes=n) for b, n in enumerate(counts)
    ]
    batch = Batch.from_data_list(graphs)
    torch.testing.assert_close(pool(features, labels), batch.x)
    torch.testing.assert_close(pool(features, labels, num_nodes=batch.ptr.diff()), batch.x)


def test_float32_and_single_map():
    features = torch.randn(2, 3, 4, 5)
    labels = random_label_maps(1, 4, 5)[0]
    nodes = pool(features, labels)
    assert nodes.dtype == torch.float32
    per_image = int(labels.max()) + 1
    assert nodes.shape == (2 * per_image, 3)
    torch.testing.assert_close(nodes[:per_image], pool(features[:1], labels[None]))
    torch.testing.assert_close(nodes[per_image:], pool(features[1:], labels[None]))
    torch.testing.assert_close(unpool(nodes, labels), unpool(nodes, labels.expand(2, -1, -1)))
    torch.testing.assert_close(
        unpool(nodes, labels, num_nodes=[per_image] * 2), unpool(nodes, labels)
    )


def test_num_nodes_larger_than_labels_gives_zero_rows():
    features = torch.randn(2, 2, 3, 3)
    labels = random_label_maps(2, 3, 3)
    counts = [int(m.max()) + 3 for m in labels]
    nodes = pool(features, labels, num_nodes=counts)
    assert nodes.shape == (sum(counts), 2)
    first = counts[0]
    assert torch.all(nodes[first - 2 : first] == 0) and torch.all(nodes[-2:] == 0)
    # Unpooling with the same counts picks the right rows back out.
    torch.testing.assert_close(
        unpool(nodes, labels, num_nodes=counts), unpool(pool(features, labels), labels)
    )


def test_gradcheck_float64():
    features = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    labels = random_label_maps(2, 3, 4, seed=2)
    assert torch.autograd.gradcheck(lambda f: pool(f, labels), (features,))
    nodes = torch.randn(
        int(labels[0].max()) + int(labels[1].max()) + 2, 3, dtype=torch.float64, requires_grad=True
    )
    assert torch.autograd.gradcheck(lambda v: unpool(v, labels), (nodes,))


def test_pool_gradient_is_inverse_segment_size():
    features = torch.randn(1, 1, 4, 4, requires_grad=True)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 1], [3, 3, 3, 3], [3, 3, 3, 3]]])
    pool(features, labels).sum().backward()
    sizes = torch.bincount(labels.reshape(-1)).float()
    torch.testing.assert_close(features.grad[0, 0], 1.0 / sizes[labels[0]])


@pytest.mark.parametrize("device", DEVICES)
def test_every_available_device_matches_the_loop_reference(device):
    features = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    labels = random_label_maps(2, 8, 9)
    nodes = pool(features.to(device), labels.to(device))
    assert nodes.device.type == torch.device(device).type
    image = unpool(nodes, labels.to(device))
    expected_nodes, expected_image = pool_reference(features.numpy(), labels.numpy())
    np.testing.assert_allclose(nodes.cpu().numpy(), expected_nodes, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(image.cpu().numpy(), expected_image, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda f, s: pool(f[0], s), ValueError, r"features must have shape \[B, C, H, W\]"),
        (lambda f, s: pool(f.long(), s), TypeError, "features must have a floating dtype"),
        (lambda f, s: pool(f.numpy(), s), TypeError, "features must be a torch.Tensor"),
        (lambda f, s: pool(f, s.float()), TypeError, "superpixels must have an integer dtype"),
        (lambda f, s: pool(f, s[:, :-1]), ValueError, "superpixels has shape"),
        (lambda f, s: pool(f, s[:1]), ValueError, "superpixels has shape"),
        (lambda f, s: pool(f, s[None]), ValueError, r"superpixels must have shape \[B, H, W\]"),
        (lambda f, s: pool(f, s - 2), ValueError, "non-negative"),
        (lambda f, s: pool(f, s - 1 - s.max()), ValueError, "got the minimum"),
        (lambda f, s: unpool(pool(f, s), s - 2), ValueError, "non-negative"),
        (lambda f, s: pool(f, s, num_nodes=[5]), ValueError, "one count per image"),
        (lambda f, s: pool(f, s, num_nodes=[1, 1]), ValueError, "num_nodes"),
        (lambda f, s: pool(f, s, num_nodes=[1.5, 2.0]), TypeError, "num_nodes"),
        (lambda f, s: unpool(pool(f, s)[:-1], s), ValueError, "node_values has"),
        (lambda f, s: unpool(pool(f, s)[0], s), ValueError, "node_values must have shape"),
        (lambda f, s: unpool(pool(f, s)[:-1], s[0]), ValueError, "not a positive multiple"),
        (lambda f, s: unpool(pool(f, s), s.float()), TypeError, "superpixels"),
    ],
)
def test_rejects_bad_input(call, error, match):
    features = torch.randn(2, 3, 4, 5)
    labels = random_label_maps(2, 4, 5)
    with pytest.raises(error, match=match):
        call(features, labels)
