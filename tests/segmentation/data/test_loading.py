"""Lazy datasets, padded batches of any size, augmentation on cached graphs, the disk cache."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torch_geometric.data import Batch

import segmentation.data.transforms as transforms_module
from segmentation.data.adjacency import region_adjacency
from segmentation.data.datasets import SyntheticScenes
from segmentation.data.features import (
    EDGE_FEATURE_NAMES,
    edge_features,
    superpixel_centroids,
    superpixel_features,
)
from segmentation.data.loading import (
    RandomFlipScaleCrop,
    SuperpixelDataset,
    group_by_size,
    pad_collate,
)
from segmentation.data.superpixels import relabel_contiguous
from segmentation.data.transforms import SuperpixelData, SuperpixelGraph
from segmentation.engine.evaluate import evaluate
from segmentation.engine.metrics import confusion_matrix, scores_from_confusion
from segmentation.engine.train import TrainConfig, train
from segmentation.models.pooling import PAD_LABEL, pool
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

SEGMENTS = 20


class MixedScenes(torch.utils.data.Dataset):
    """Procedural scenes of several sizes (module level, so workers can pickle it)."""

    SIZES = [(40, 48), (32, 32), (48, 36), (36, 44)]

    def __init__(self, count: int, seed: int = 0):
        self.count, self.seed = count, seed

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        size = self.SIZES[index % len(self.SIZES)]
        return SyntheticScenes(index + 1, size=size, seed=self.seed)[index]


def graph_transform(**kwargs) -> SuperpixelGraph:
    return SuperpixelGraph(n_segments=SEGMENTS, **kwargs)


def assert_same_graph(a, b) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# ---------------------------------------------------------------- pad_collate


def test_pad_collate_of_one_size_is_the_plain_batch():
    graphs = [graph_transform(add_features=False)(SyntheticScenes(3, size=(32, 40))[i])
              for i in range(3)]
    batch = pad_collate(graphs)
    assert torch.equal(batch.image_size, torch.tensor([[32, 40]] * 3))
    del batch.image_size
    assert_same_graph(batch, Batch.from_data_list(graphs))


def test_pad_collate_pads_every_pixel_map_and_keeps_the_graphs():
    dataset = SuperpixelDataset(MixedScenes(4), graph_transform(add_features=False))
    graphs = [dataset[i] for i in range(4)]
    before = [g.clone() for g in graphs]
    batch = pad_collate(graphs)
    assert batch.superpixels.shape == (4, 48, 48) and batch.image.shape == (4, 3, 48, 48)
    assert torch.equal(batch.image_size, torch.tensor(MixedScenes.SIZES))
    for b, (graph, (h, w)) in enumerate(zip(graphs, MixedScenes.SIZES, strict=True)):
        for key, fill in (("image", 0.0), ("mask", 255), ("superpixels", PAD_LABEL)):
            padded, original = batch[key][b], graph[key][0]
            assert torch.equal(padded[..., :h, :w], original), key
            outside = torch.ones(padded.shape[-2:], dtype=torch.bool)
            outside[:h, :w] = False
            assert torch.all(padded[..., outside] == fill), key
        assert_same_graph(graph, before[b])  # inputs untouched
    # Graph attributes batch as PyG does; padding reaches no node: the mean
    # colour of every superpixel pooled from the padded batch is its x.
    plain = Batch.from_data_list([g.clone() for g in graphs], exclude_keys=list(
        SuperpixelData.PIXEL_KEYS))
    for key in ("x", "pos", "edge_index", "edge_attr", "batch", "ptr"):
        assert torch.equal(batch[key], plain[key]), key
    torch.testing.assert_close(pool(batch.image, batch.superpixels, batch.ptr.diff()), batch.x)


def test_pad_collate_size_divisor():
    dataset = SuperpixelDataset(MixedScenes(2), graph_transform())
    batch = pad_collate([dataset[1], dataset[1]], size_divisor=24)
    assert batch.superpixels.shape == (2, 48, 48)
    assert torch.all(batch.superpixels[:, 32:] == PAD_LABEL)
    assert torch.equal(batch.image_size, torch.tensor([[32, 32], [32, 32]]))
    batch = pad_collate([dataset[0], dataset[1]], size_divisor=7)
    assert batch.superpixels.shape == (2, 42, 49)


def test_model_runs_on_a_padded_batch_and_ignores_padding_in_the_loss():
    dataset = SuperpixelDataset(MixedScenes(3), graph_transform(add_features=False))
    batch = pad_collate([dataset[i] for i in range(3)])
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(ModelConfig(num_classes=6, width=4, hidden=4))
    out = model.forward_batch(batch)
    assert out.logits.shape == (3, 6, 48, 48)
    # The loss is blind to the padded pixels: changing their logits changes nothing.
    from segmentation.models.segmenter import segmentation_loss

    loss = segmentation_loss(out, batch.mask)
    noisy = out._replace(logits=torch.where(batch.mask[:, None] == 255,
                                            torch.randn_like(out.logits), out.logits))
    torch.testing.assert_close(segmentation_loss(noisy, batch.mask), loss)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda g: pad_collate([]), ValueError, "empty"),
        (lambda g: pad_collate(g[0]), TypeError, "sequence of SuperpixelData"),
        (lambda g: pad_collate([g[0], "graph"]), TypeError, r"data_list\[1\]"),
        (lambda g: pad_collate(g, size_divisor=0), ValueError, "size_divisor"),
        (lambda g: pad_collate([g[0].update({"mask": g[0].mask[:, :-1]})]), ValueError,
         r"data_list\[0\].mask"),
        (lambda g: pad_collate([g[0].update({"superpixels": g[0].superpixels[0]})]),
         ValueError, r"\[1, H, W\]"),
    ],
)
def test_pad_collate_rejects_bad_input(call, error, match):
    dataset = SuperpixelDataset(MixedScenes(2), graph_transform())
    with pytest.raises(error, match=match):
        call([dataset[0], dataset[1]])


# --------------------------------------------------------- the augmentation


def ramp_image(height: int, width: int) -> np.ndarray:
    """A float image linear in x and y: bilinear resampling of it is exact."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([yy / (2 * height), xx / (2 * width), 0.25 + 0 * xx], axis=-1)


def random_labels(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return relabel_contiguous(rng.integers(0, 30, (height // 4 + 1, width // 4 + 1)))[
        np.arange(height)[:, None] // 4, np.arange(width) // 4]


def test_flip_twice_is_the_identity_and_flip_mirrors_all_three():
    image, labels = ramp_image(12, 17), random_labels(12, 17)
    mask = (labels % 5).astype(np.uint8)
    flip = RandomFlipScaleCrop(scale_range=(1.0, 1.0), flip_prob=1.0)
    once = flip(image, mask, labels, np.random.default_rng(0))
    for got, original in zip(once[:3], (image, mask, labels), strict=True):
        np.testing.assert_array_equal(got, original[:, ::-1])
    twice = flip(*once[:3], np.random.default_rng(1))
    for got, original in zip(twice[:3], (image, mask, labels), strict=True):
        np.testing.assert_array_equal(got, original)
    assert once[3] == twice[3] == (12, 17)


def test_scale_one_and_full_crop_is_the_identity_and_a_larger_crop_pads():
    image = np.random.default_rng(0).integers(0, 256, (12, 17, 3)).astype(np.uint8)
    labels = random_labels(12, 17)
    mask = (labels % 5).astype(np.uint8)
    same = RandomFlipScaleCrop((12, 17), scale_range=(1.0, 1.0), flip_prob=0.0)
    out = same(image, mask, labels, np.random.default_rng(0))
    for got, original in zip(out[:3], (image, mask, labels), strict=True):
        assert got.dtype == original.dtype
        np.testing.assert_array_equal(got, original)
    larger = RandomFlipScaleCrop(20, scale_range=(1.0, 1.0), flip_prob=0.0)
    img, msk, lab, valid = larger(image, mask, labels, np.random.default_rng(0))
    assert valid == (12, 17) and img.shape == (20, 20, 3)
    np.testing.assert_array_equal(img[:12, :17], image)
    np.testing.assert_array_equal(lab[:12, :17], labels)
    assert np.all(img[12:] == 0) and np.all(msk[12:] == 255) and np.all(lab[12:] == PAD_LABEL)
    assert np.all(img[:, 17:] == 0) and np.all(msk[:, 17:] == 255)
    assert np.all(lab[:, 17:] == PAD_LABEL)


@pytest.mark.parametrize("seed", range(4))
def test_scaled_crop_keeps_image_mask_and_superpixels_aligned(seed):
    height, width = 20, 26
    image, labels = ramp_image(height, width), random_labels(height, width, seed)
    mask = (labels * 7 % 11).astype(np.uint8)
    augment = RandomFlipScaleCrop(24, scale_range=(1.2, 2.0), flip_prob=0.5)
    img, msk, lab, (vh, vw) = augment(image, mask, labels, np.random.default_rng(seed))
    # Re-derive the random choices: flip, scale, offsets, in this order.
    rng = np.random.default_rng(seed)
    flip, scale, draws = rng.random() < 0.5, rng.uniform(1.2, 2.0), rng.random(2)
    new_h, new_w = round(height * scale), round(width * scale)
    top, left = int(draws[0] * (new_h - 24 + 1)), int(draws[1] * (new_w - 24 + 1))
    source = torch.from_numpy(np.ascontiguousarray(labels[:, ::-1] if flip else labels))
    # Reference: torch's nearest-exact (pixel-centre) resampling of the label map.
    nearest = F.interpolate(source[None, None].double(), size=(new_h, new_w),
                            mode="nearest-exact")[0, 0].long().numpy()
    np.testing.assert_array_equal(lab[:vh, :vw], nearest[top:top + vh, left:left + vw])
    np.testing.assert_array_equal(msk[:vh, :vw], (lab[:vh, :vw] * 7 % 11).astype(np.uint8))
    # The image is a linear ramp: bilinear upsampling gives it exactly at every
    # output pixel centre (y + 0.5) / s - 0.5 away from the borders.
    ys = (np.arange(top, top + vh) + 0.5) * height / new_h - 0.5
    xs = (np.arange(left, left + vw) + 0.5) * width / new_w - 0.5
    xs = (width - 1 - xs) if flip else xs
    inner = (ys[:, None] >= 0) & (ys[:, None] <= height - 1) & (xs >= 0) & (xs <= width - 1)
    expected = np.stack(np.broadcast_arrays(ys[:, None] / (2 * height), xs / (2 * width)), -1)
    np.testing.assert_allclose(img[:vh, :vw, :2][inner], expected[inner], atol=1e-5)


def test_scale_range_and_output_size():
    image = np.zeros((30, 40, 3), np.uint8)
    labels = random_labels(30, 40)
    sizes = set()
    for seed in range(30):
        img, msk, lab, valid = RandomFlipScaleCrop(None)(image, None, labels,
                                                         np.random.default_rng(seed))
        assert msk is None and img.shape[:2] == lab.shape == valid
        assert 15 <= valid[0] <= 60 and 20 <= valid[1] <= 80
        sizes.add(valid)
    assert len(sizes) > 20  # a continuous scale, not a few fixed ones


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"crop_size": 0}, ValueError, "crop_size"),
        ({"crop_size": (4, 5, 6)}, ValueError, "crop_size"),
        ({"crop_size": 2.5}, TypeError, "crop_size"),
        ({"scale_range": (2.0, 1.0)}, ValueError, "scale_range"),
        ({"scale_range": (0.0, 1.0)}, ValueError, "scale_range"),
        ({"scale_range": "big"}, ValueError, "scale_range"),
        ({"flip_prob": 1.5}, ValueError, "flip_prob"),
    ],
)
def test_augmentation_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        RandomFlipScaleCrop(**kwargs)


# ----------------------------------------------- the dataset and its graphs


def check_graph(graph: SuperpixelData, add_features: bool = True) -> None:
    """The guarantees of SuperpixelGraph, on the part of the map that is not padding."""
    labels = graph.superpixels[0]
    valid = labels != PAD_LABEL
    rows, cols = valid.any(1).nonzero()[:, 0], valid.any(0).nonzero()[:, 0]
    vh, vw = int(rows.max()) + 1, int(cols.max()) + 1
    assert bool(valid[:vh, :vw].all()) and not bool(valid[vh:].any()) and not bool(
        valid[:, vw:].any())  # padding only at the bottom and right
    inside = labels[:vh, :vw].numpy()
    assert inside.max() + 1 == graph.num_nodes
    assert np.array_equal(np.unique(inside), np.arange(graph.num_nodes))  # contiguous
    edge_index, boundary = region_adjacency(inside)
    assert torch.equal(graph.edge_index, edge_index)
    assert torch.equal(graph.edge_attr[:, 0], boundary)  # the first column in both layouts
    src, dst = graph.edge_index
    assert not bool((src == dst).any())
    assert {(int(a), int(b)) for a, b in zip(src, dst, strict=True)} == {
        (int(b), int(a)) for a, b in zip(src, dst, strict=True)}
    image = graph.image[0, :, :vh, :vw].permute(1, 2, 0).numpy()
    if add_features:
        uint8 = np.rint(image * 255).astype(np.uint8)
        assert torch.equal(graph.x, superpixel_features(uint8, inside))
    else:
        expected = np.array([image[inside == k].mean(axis=0) for k in range(graph.num_nodes)])
        np.testing.assert_allclose(graph.x.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(graph.pos, superpixel_centroids(inside))
    graph.validate(raise_on_error=True)


def test_dataset_without_augmentation_is_the_transform():
    scenes = MixedScenes(3)
    transform = graph_transform()
    dataset = SuperpixelDataset(scenes, transform)
    assert len(dataset) == 3
    for i in range(3):
        assert_same_graph(dataset[i], transform(scenes[i]))
    assert_same_graph(dataset[-1], dataset[2])


@pytest.mark.parametrize("add_features", [True, False])
def test_augmented_graphs_keep_every_superpixel_graph_guarantee(add_features):
    scenes = MixedScenes(4)
    transform = graph_transform(add_features=add_features)
    augment = RandomFlipScaleCrop(40)
    dataset = SuperpixelDataset(scenes, transform, augment, seed=3)
    for epoch in range(2):
        dataset.set_epoch(epoch)
        for i in range(4):
            graph = dataset[i]
            assert graph.superpixels.shape == (1, 40, 40) and graph.image.shape == (1, 3, 40, 40)
            check_graph(graph, add_features)
            # Independently: the augmentation of the cached graph's map, relabelled.
            image, mask = scenes[i]
            original = transform(scenes[i]).superpixels[0].numpy()
            img, msk, lab, (vh, vw) = augment(image, mask, original,
                                              np.random.default_rng([3, epoch, i]))
            assert torch.equal(graph.mask[0], torch.from_numpy(msk.astype(np.int64)))
            assert torch.equal(graph.image[0], torch.from_numpy(img).permute(2, 0, 1) / 255)
            expected = np.full(lab.shape, PAD_LABEL)
            expected[:vh, :vw] = relabel_contiguous(lab[:vh, :vw])
            assert torch.equal(graph.superpixels[0], torch.from_numpy(expected))
            # Every node is one superpixel of the original, in the original order.
            pairs = np.unique(np.stack([expected[:vh, :vw].ravel(), lab[:vh, :vw].ravel()]),
                              axis=1)
            assert pairs.shape[1] == graph.num_nodes and np.all(np.diff(pairs[1]) > 0)


def test_augmented_graphs_recompute_edge_features():
    scenes = MixedScenes(2)
    transform = graph_transform(edge_features=True)
    dataset = SuperpixelDataset(scenes, transform, RandomFlipScaleCrop(40), seed=1)
    for i in range(2):
        graph = dataset[i]
        check_graph(graph)
        labels = graph.superpixels[0]
        valid = labels != PAD_LABEL
        vh, vw = int(valid.any(1).sum()), int(valid.any(0).sum())
        image = np.rint(graph.image[0, :, :vh, :vw].permute(1, 2, 0).numpy() * 255)
        expected = edge_features(image.astype(np.uint8), labels[:vh, :vw].numpy(),
                                 graph.edge_index)
        assert graph.edge_attr.shape == (graph.edge_index.shape[1], len(EDGE_FEATURE_NAMES))
        assert torch.equal(graph.edge_attr, expected)


def test_a_flip_mirrors_the_graph():
    scenes = MixedScenes(1)
    transform = graph_transform(add_features=False)
    plain = SuperpixelDataset(scenes, transform)[0]
    flip = RandomFlipScaleCrop(scale_range=(1.0, 1.0), flip_prob=1.0)
    flipped = SuperpixelDataset(scenes, transform, flip)[0]
    width = plain.superpixels.shape[-1]
    for key in ("superpixels", "image", "mask"):
        assert torch.equal(flipped[key], plain[key].flip(-1)), key
    # Same superpixels, same numbering: the same graph, mirrored centroids.
    for key in ("edge_index", "edge_attr", "num_nodes"):
        assert torch.equal(torch.as_tensor(flipped[key]), torch.as_tensor(plain[key])), key
    torch.testing.assert_close(flipped.x, plain.x)
    torch.testing.assert_close(flipped.pos[:, 0], width - 1 - plain.pos[:, 0])
    torch.testing.assert_close(flipped.pos[:, 1], plain.pos[:, 1])
    identity = RandomFlipScaleCrop(scale_range=(1.0, 1.0), flip_prob=0.0)
    assert_same_graph(SuperpixelDataset(scenes, transform, identity)[0], plain)


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    dataset = SuperpixelDataset(MixedScenes(3), graph_transform(), RandomFlipScaleCrop(24),
                                seed=5)
    first = [dataset[i] for i in range(3)]
    again = SuperpixelDataset(MixedScenes(3), graph_transform(), RandomFlipScaleCrop(24),
                              seed=5)
    for i in (2, 0, 1):  # any order, a fresh object: the same items
        assert_same_graph(again[i], first[i])
    dataset.set_epoch(1)
    assert any(not torch.equal(dataset[i].superpixels, first[i].superpixels) for i in range(3))
    dataset.set_epoch(0)
    assert_same_graph(dataset[1], first[1])
    other_seed = SuperpixelDataset(MixedScenes(3), graph_transform(), RandomFlipScaleCrop(24),
                                   seed=6)
    assert any(not torch.equal(other_seed[i].superpixels, first[i].superpixels)
               for i in range(3))


def batches(dataset, workers: int, epoch: int, shuffle: bool = True):
    dataset.set_epoch(epoch)
    order = torch.Generator().manual_seed(epoch)
    loader = DataLoader(dataset, batch_size=3, shuffle=shuffle, generator=order,
                        collate_fn=pad_collate, num_workers=workers)
    return list(loader)


def test_workers_give_the_same_batches_and_see_set_epoch(tmp_path):
    dataset = SuperpixelDataset(MixedScenes(6), graph_transform(cache_dir=tmp_path),
                                RandomFlipScaleCrop(36), seed=1)
    for epoch in (0, 1):
        alone, workers = batches(dataset, 0, epoch), batches(dataset, 2, epoch)
        assert len(alone) == len(workers) == 2
        for a, b in zip(alone, workers, strict=True):
            assert_same_graph(a, b)
    # The same items in the same order: only the epoch, seen by the workers, differs.
    epoch0, epoch1 = batches(dataset, 2, 0, shuffle=False), batches(dataset, 2, 1, shuffle=False)
    assert not all(torch.equal(a.superpixels, b.superpixels)
                   for a, b in zip(epoch0, epoch1, strict=True))


def test_the_dataset_holds_no_graphs():
    dataset = SuperpixelDataset(MixedScenes(4), graph_transform(), RandomFlipScaleCrop(24))
    size = len(pickle.dumps(dataset))
    for _ in batches(dataset, 0, 0):
        pass
    assert len(pickle.dumps(dataset)) == size


def test_dataset_rejects_bad_arguments():
    scenes = MixedScenes(2)
    with pytest.raises(TypeError, match="samples"):
        SuperpixelDataset(42)
    with pytest.raises(TypeError, match="transform"):
        SuperpixelDataset(scenes, transform=lambda pair: pair)
    with pytest.raises(TypeError, match="augment"):
        SuperpixelDataset(scenes, graph_transform(), augment=True)
    with pytest.raises(ValueError, match="seed"):
        SuperpixelDataset(scenes, seed=-1)
    with pytest.raises(ValueError, match="image_size"):
        SuperpixelDataset(scenes, image_size=0)
    dataset = SuperpixelDataset(scenes, graph_transform())
    with pytest.raises(ValueError, match="epoch"):
        dataset.set_epoch(-1)
    with pytest.raises(IndexError, match="out of range"):
        dataset[2]
    with pytest.raises(TypeError, match="index"):
        dataset[0.5]
    with pytest.raises(ValueError, match=r"\(image, mask\) pair"):
        SuperpixelDataset([np.zeros((8, 8, 3), np.uint8)], graph_transform())[0]


def test_image_size_resizes_before_the_graph():
    # The graph of each item is the one SLIC builds on the resized pair: the image
    # resized bilinearly, the mask by nearest neighbour (PIL's filters, here).
    scenes = MixedScenes(2)
    dataset = SuperpixelDataset(scenes, graph_transform(), image_size=30)
    for i in range(2):
        image, mask = scenes[i]
        assert image.shape[:2] != (30, 30)
        image = np.asarray(Image.fromarray(image).resize((30, 30), Image.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize((30, 30), Image.NEAREST))
        item = dataset[i]
        assert tuple(item.superpixels.shape) == (1, 30, 30)
        assert_same_graph(item, graph_transform()((image, mask)))


# --------------------------------------------------------------- the cache


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_second_epoch_reads_only_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    dataset = SuperpixelDataset(MixedScenes(6), graph_transform(cache_dir=cache),
                                RandomFlipScaleCrop(36), seed=2)
    first = batches(dataset, 2, 0)
    states = file_states(cache)
    assert len(states) == 6 and all(name.endswith(".pt") for name in states)
    # Epoch 1 in two workers: no file written or replaced (a build would rename a new one in).
    second = batches(dataset, 2, 1)
    assert file_states(cache) == states
    assert len(second) == len(first)

    # And in this process, SLIC is never entered.
    def no_slic(*args, **kwargs):
        raise AssertionError("SLIC ran although every graph was cached")

    monkeypatch.setattr(transforms_module, "_slic", no_slic)
    for a, b in zip(batches(dataset, 0, 1), second, strict=True):
        assert_same_graph(a, b)


def _build_at_once(cache_dir, barrier, queue):
    from segmentation.data.loading import SuperpixelDataset

    warnings.simplefilter("error")  # an unreadable cache file would warn
    dataset = SuperpixelDataset(MixedScenes(3), graph_transform(cache_dir=cache_dir))
    barrier.wait()
    queue.put([pickle.dumps(dataset[i]) for i in range(3)])


def test_cache_is_safe_when_processes_build_the_same_items_at_once(tmp_path):
    reference = SuperpixelDataset(MixedScenes(3), graph_transform())
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_build_at_once, args=(tmp_path, barrier, queue))
                 for _ in range(4)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for result in results:
        for i, blob in enumerate(result):
            assert_same_graph(pickle.loads(blob), reference[i])
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".pt"] * 3  # no temporary left
    # What the race left on disk is complete: a fresh reader loads it without SLIC.
    cached = SuperpixelDataset(MixedScenes(3), graph_transform(cache_dir=tmp_path))
    states = file_states(tmp_path)
    for i in range(3):
        assert_same_graph(cached[i], reference[i])
    assert file_states(tmp_path) == states


# ----------------------------------------------------- training and evaluation


def test_evaluate_runs_every_image_at_its_own_size():
    dataset = SuperpixelDataset(MixedScenes(6), graph_transform(add_features=False))
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(ModelConfig(num_classes=6, width=4, hidden=4)).eval()
    confusion = torch.zeros(6, 6, dtype=torch.long)
    with torch.no_grad():
        for i in range(len(dataset)):  # reference: one image at a time
            batch = pad_collate([dataset[i]])
            confusion += confusion_matrix(model.forward_batch(batch).logits.argmax(1),
                                          batch.mask, 6)
    expected = scores_from_confusion(confusion)
    assert evaluate(model, dataset, batch_size=4) == expected
    assert [len(g) for g in group_by_size([dataset[i] for i in range(6)])] == [2, 2, 1, 1]


def test_train_on_a_lazy_dataset_equals_train_on_prebuilt_graphs(tmp_path):
    transform = graph_transform(add_features=False)
    scenes = SyntheticScenes(6, size=(32, 32), seed=4)
    lazy = SuperpixelDataset(scenes, transform)
    config = ModelConfig(num_classes=6, width=4, hidden=4, n_segments=SEGMENTS)
    settings = TrainConfig(epochs=2, batch_size=3, seed=1)
    quiet = dict(progress=False, log=lambda line: None)
    a = train(config, settings, lazy, lazy, tmp_path / "a", **quiet)
    b = train(config, settings, [transform(s) for s in scenes],
              [transform(s) for s in scenes], tmp_path / "b", **quiet)
    assert a == b
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model_state"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_with_augmentation_of_mixed_sizes_is_the_same_with_workers(tmp_path):
    dataset = SuperpixelDataset(MixedScenes(6), graph_transform(add_features=False,
                                                                cache_dir=tmp_path / "cache"),
                                RandomFlipScaleCrop(28), seed=0)
    val = SuperpixelDataset(MixedScenes(4, seed=9), graph_transform(add_features=False))
    config = ModelConfig(num_classes=6, width=4, hidden=4, n_segments=SEGMENTS)
    settings = TrainConfig(epochs=2, batch_size=3, seed=0)
    quiet = dict(progress=False, log=lambda line: None)
    a = train(config, settings, dataset, val, tmp_path / "a", num_workers=0, **quiet)
    b = train(config, settings, dataset, val, tmp_path / "b", num_workers=2, **quiet)
    assert a == b and all(np.isfinite(r["loss"]) for r in a["history"])
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model_state"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert os.listdir(tmp_path / "cache")  # the workers filled the shared cache
