"""The SuperpixelGraph transform: contents, batching, DataLoader workers, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, transform
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

import segmentation.data.transforms as transforms_module
from segmentation.data.adjacency import region_adjacency
from segmentation.data.features import superpixel_centroids, superpixel_features
from segmentation.data.superpixels import slic_superpixels
from segmentation.data.transforms import SuperpixelData, SuperpixelGraph
from segmentation.models.pooling import pool

SEGMENTS = 30


def small_image(seed: int = 0, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    """A crop of the astronaut, different per seed, as uint8 H×W×3."""
    image = transform.resize(data.astronaut(), (160, 160), anti_aliasing=True)
    y, x = 20 * (seed % 5), 17 * (seed % 6)
    crop = image[y : y + size[0], x : x + size[1]]
    return np.rint(crop * 255).astype(np.uint8)


def random_mask(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([0, 1, 2, 255], size=shape).astype(np.uint8)


def assert_same_graph(a: Data, b: Data) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


class ImageList(torch.utils.data.Dataset):
    """Module-level (picklable) dataset so DataLoader workers can use it."""

    def __init__(self, images, transform):
        self.images = images
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        graph = self.transform(Data(image=torch.from_numpy(self.images[index]).permute(2, 0, 1)))
        info = torch.utils.data.get_worker_info()
        graph.worker = -1 if info is None else info.id
        return graph


def test_graph_contents_match_the_building_blocks():
    image = small_image()
    graph = SuperpixelGraph(n_segments=SEGMENTS)(image)
    assert isinstance(graph, SuperpixelData)
    labels = slic_superpixels(image, n_segments=SEGMENTS)
    num_nodes = int(labels.max()) + 1
    edge_index, boundary = region_adjacency(labels)
    assert graph.num_nodes == num_nodes
    assert graph.superpixels.shape == (1, *image.shape[:2])
    assert graph.superpixels.dtype == torch.int64
    assert torch.equal(graph.superpixels[0], torch.from_numpy(labels))
    assert torch.equal(graph.edge_index, edge_index)
    assert graph.edge_attr.shape == (edge_index.shape[1], 1)
    assert torch.equal(graph.edge_attr[:, 0], boundary)
    assert graph.x.dtype == torch.float32
    assert torch.equal(graph.x, superpixel_features(image, labels))
    assert torch.equal(graph.pos, superpixel_centroids(labels))
    expected_image = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    torch.testing.assert_close(graph.image, expected_image)
    assert "mask" not in graph
    graph.validate(raise_on_error=True)


def test_tensor_and_array_inputs_agree():
    image = small_image(1).astype(np.float32) / 255
    as_array = SuperpixelGraph(n_segments=SEGMENTS)(image)
    as_tensor = SuperpixelGraph(n_segments=SEGMENTS)(torch.from_numpy(image).permute(2, 0, 1))
    assert_same_graph(as_array, as_tensor)


def test_grayscale_tensor_input():
    gray = torch.from_numpy(small_image(2)[..., 0].astype(np.float32) / 255)
    graph = SuperpixelGraph(n_segments=SEGMENTS)(gray)
    assert graph.image.shape == (1, 1, *gray.shape)
    assert graph.x.shape[1] == 12


def test_mean_colour_features_without_add_features():
    image = small_image(3)
    graph = SuperpixelGraph(n_segments=SEGMENTS, add_features=False)(image)
    labels = graph.superpixels[0].numpy()
    expected = np.array([image[labels == k].mean(axis=0) / 255 for k in range(graph.num_nodes)])
    assert graph.x.shape == (graph.num_nodes, 3)
    np.testing.assert_allclose(graph.x.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_data_input_with_mask_and_extras():
    image = small_image(4)
    mask = random_mask(image.shape[:2])
    source = Data(
        image=torch.from_numpy(image).permute(2, 0, 1), mask=torch.from_numpy(mask), name="scene-4"
    )
    graph = SuperpixelGraph(n_segments=SEGMENTS)(source)
    assert graph.name == "scene-4"
    assert graph.mask.dtype == torch.int64 and graph.mask.shape == (1, *mask.shape)
    assert torch.equal(graph.mask[0], torch.from_numpy(mask).long())
    # The input is not modified.
    assert "superpixels" not in source and source.mask.dtype == torch.uint8

    # A pixel map in y is taken as the mask; a pair (image, mask) works too.
    from_y = SuperpixelGraph(n_segments=SEGMENTS)(
        Data(image=torch.from_numpy(image).permute(2, 0, 1), y=torch.from_numpy(mask))
    )
    assert "y" not in from_y and torch.equal(from_y.mask, graph.mask)
    from_pair = SuperpixelGraph(n_segments=SEGMENTS)((image, mask))
    assert torch.equal(from_pair.mask, graph.mask)
    assert torch.equal(from_pair.x, graph.x)


def test_batching_keeps_pixel_maps_per_image():
    transform_ = SuperpixelGraph(n_segments=SEGMENTS, add_features=False)
    graphs = [transform_((small_image(i), random_mask((40, 48), i))) for i in range(3)]
    batch = Batch.from_data_list(graphs)
    assert batch.superpixels.shape == (3, 40, 48)
    assert batch.image.shape == (3, 3, 40, 48)
    assert batch.mask.shape == (3, 40, 48)
    for b, graph in enumerate(graphs):
        # Not shifted by the node offsets, unlike edge_index.
        assert torch.equal(batch.superpixels[b], graph.superpixels[0])
        assert torch.equal(batch.get_example(b).edge_index, graph.edge_index)
    offsets = batch.ptr[:-1]
    assert torch.equal(
        batch.edge_index,
        torch.cat(
            [g.edge_index + o for g, o in zip(graphs, offsets.tolist(), strict=True)], dim=1
        ),
    )
    # Mean colour features are exactly the pooled image.
    pooled = pool(batch.image, batch.superpixels, num_nodes=batch.ptr.diff())
    torch.testing.assert_close(pooled, batch.x)


def test_dataloader_with_workers_and_shared_cache(tmp_path):
    images = [small_image(i, size=(24, 24)) for i in range(4)]
    transform_ = SuperpixelGraph(n_segments=12, cache_dir=tmp_path / "cache")
    expected = [
        SuperpixelGraph(n_segments=12)(Data(image=torch.from_numpy(im).permute(2, 0, 1)))
        for im in images
    ]
    loader = DataLoader(ImageList(images, transform_), batch_size=2, num_workers=2)
    for _ in range(2):  # the second epoch reads the graphs the workers cached
        batches = list(loader)
        assert len(batches) == 2
        assert sorted(int(w) for batch in batches for w in batch.worker) == [0, 0, 1, 1]
        got = [g for batch in batches for g in batch.to_data_list()]
        for graph, reference in zip(got, expected, strict=True):
            for key in ("x", "pos", "edge_index", "edge_attr", "superpixels", "image"):
                assert torch.equal(graph[key], reference[key]), key
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 4
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_cached_graph_is_identical_and_skips_slic(tmp_path, monkeypatch):
    image = small_image(5)
    fresh = SuperpixelGraph(n_segments=SEGMENTS)(image)
    cached_transform = SuperpixelGraph(n_segments=SEGMENTS, cache_dir=tmp_path)
    first = cached_transform(image)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"

    def no_slic(*args, **kwargs):
        raise AssertionError("SLIC ran although the graph was cached")

    monkeypatch.setattr(transforms_module, "slic_superpixels", no_slic)
    second = cached_transform(image)
    assert_same_graph(first, fresh)
    assert_same_graph(second, fresh)
    # The label map is stored narrow (int16) and comes back as the int64 of a fresh graph.
    assert torch.load(files[0], weights_only=True)["superpixels"].dtype == torch.int16
    assert second.superpixels.dtype == fresh.superpixels.dtype == torch.int64
    # Any parameter change, or another image, is a different cache entry.
    with pytest.raises(AssertionError, match="SLIC ran"):
        SuperpixelGraph(n_segments=SEGMENTS, connectivity=8, cache_dir=tmp_path)(image)
    with pytest.raises(AssertionError, match="SLIC ran"):
        cached_transform(image[::-1].copy())


def test_corrupt_cache_file_is_recomputed(tmp_path):
    image = small_image(6)
    transform_ = SuperpixelGraph(n_segments=SEGMENTS, cache_dir=tmp_path)
    reference = transform_(image)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="cached graph"):
        again = transform_(image)
    assert_same_graph(again, reference)
    # The entry was rewritten and now loads silently.
    assert_same_graph(transform_(image), reference)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_segments": 0}, ValueError, "n_segments"),
        ({"compactness": -1.0}, ValueError, "compactness"),
        ({"sigma": float("nan")}, ValueError, "sigma"),
        ({"connectivity": 6}, ValueError, "connectivity"),
        ({"add_features": "yes"}, TypeError, "add_features"),
        ({"max_num_iter": 0}, ValueError, "max_num_iter"),
    ],
)
def test_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        SuperpixelGraph(**kwargs)


def test_rejects_cache_dir_that_is_a_file(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ValueError, match="cache_dir"):
        SuperpixelGraph(cache_dir=file)


@pytest.mark.parametrize(
    ("make_input", "error", "match"),
    [
        (lambda im: torch.zeros(5, 8, 8), ValueError, r"expected \[C, H, W\]"),
        (lambda im: Data(x=torch.zeros(3, 2)), ValueError, "data.image"),
        (lambda im: im[:4, :4], ValueError, "n_segments=30"),
        (lambda im: (im, np.zeros((3, 3), np.uint8)), ValueError, "mask has shape"),
        (
            lambda im: Data(
                image=torch.from_numpy(im).permute(2, 0, 1),
                mask=torch.zeros(3, 3, dtype=torch.long),
            ),
            ValueError,
            "data.mask",
        ),
        (lambda im: (im, im[..., 0], im), ValueError, r"\(image, mask\) pair"),
        (lambda im: im.astype(np.float64), ValueError, r"\[0, 1\]"),
        (lambda im: "image.png", TypeError, "image must be a numpy array"),
    ],
)
def test_rejects_bad_input(make_input, error, match):
    with pytest.raises(error, match=match):
        SuperpixelGraph(n_segments=SEGMENTS)(make_input(small_image()))
