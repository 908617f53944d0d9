"""Image files, the PASCAL VOC reader/writer and the synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from segmentation.data.datasets import (
    SYNTHETIC_CLASSES,
    VOC_CLASSES,
    SyntheticScenes,
    VOCSegmentation,
    generate_scene,
    write_synthetic_voc,
    write_voc,
)
from segmentation.data.datasets.synthetic import BAR, DISC, HOUSE, SIGN, WINDOW
from segmentation.data.images import (
    VOC_PALETTE,
    atomic_write,
    check_mask,
    read_image,
    read_mask,
    write_image,
    write_mask_png,
)
from segmentation.data.transforms import SuperpixelGraph

# ----------------------------------------------------------------------- images


def test_voc_palette_matches_the_devkit_colours():
    assert VOC_PALETTE.shape == (256, 3) and VOC_PALETTE.dtype == np.uint8
    # Colours as listed in the VOC devkit documentation.
    assert VOC_PALETTE[0].tolist() == [0, 0, 0]
    assert VOC_PALETTE[1].tolist() == [128, 0, 0]  # aeroplane
    assert VOC_PALETTE[2].tolist() == [0, 128, 0]  # bicycle
    assert VOC_PALETTE[15].tolist() == [192, 128, 128]  # person
    assert VOC_PALETTE[20].tolist() == [0, 64, 128]  # tvmonitor
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]  # void
    assert len({tuple(c) for c in VOC_PALETTE.tolist()}) == 256
    with pytest.raises(ValueError):
        VOC_PALETTE[0, 0] = 1


@pytest.mark.parametrize("palette", [VOC_PALETTE, None])
def test_mask_png_round_trip(tmp_path, palette):
    mask = np.random.default_rng(0).choice([0, 1, 5, 20, 255], size=(13, 17)).astype(np.uint8)
    path = write_mask_png(tmp_path / "m.png", mask, palette=palette)
    np.testing.assert_array_equal(read_mask(path), mask)
    with Image.open(path) as img:
        assert img.mode == ("L" if palette is None else "P")
        if palette is not None:
            colours = np.array(img.getpalette()[: 256 * 3]).reshape(-1, 3)
            np.testing.assert_array_equal(colours, VOC_PALETTE)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_write_mask_png_accepts_wider_ints_in_range(tmp_path):
    mask = np.array([[0, 3], [255, 7]], dtype=np.int64)
    np.testing.assert_array_equal(read_mask(write_mask_png(tmp_path / "m.png", mask)), mask)
    with pytest.raises(ValueError, match="0..255"):
        write_mask_png(tmp_path / "bad.png", mask + 1)
    with pytest.raises(ValueError, match="palette"):
        write_mask_png(tmp_path / "bad.png", mask, palette=np.zeros((4, 4), np.uint8))
    assert not (tmp_path / "bad.png").exists()


def test_read_image_converts_to_rgb(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])
    gray = rgba[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png"), np.dstack([gray] * 3))


def test_write_image_round_trip(tmp_path):
    image, _ = generate_scene(0, (40, 48))
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.png", image)), image)
    jpeg = read_image(write_image(tmp_path / "a.jpg", image, quality=95))
    assert jpeg.shape == image.shape
    assert np.abs(jpeg.astype(int) - image).mean() < 4
    float_image = image / 255.0
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "f.png", float_image)), image)
    with pytest.raises(ValueError, match="must end in"):
        write_image(tmp_path / "a.bmp", image)
    with pytest.raises(ValueError, match="quality"):
        write_image(tmp_path / "b.jpg", image, quality=0)
    with pytest.raises(ValueError, match="folder"):
        write_image(tmp_path / "missing" / "c.png", image)


def _write_truncated_png(path):
    buffer = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(buffer).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_readers_name_the_path_of_bad_files(tmp_path, reader):
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match=r"missing\.png.*does not exist"):
        reader(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=r"cannot read .*garbage\.png"):
        reader(garbage)
    truncated = tmp_path / "truncated.png"
    _write_truncated_png(truncated)
    with pytest.raises(ValueError, match=r"truncated\.png"):
        reader(truncated)
    with pytest.raises(ValueError, match="not a file"):
        reader(tmp_path)


def test_read_mask_rejects_colour_and_lossy_files(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"rgb\.png.*mode RGB"):
        read_mask(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "m.jpg")
    with pytest.raises(ValueError, match=r"m\.jpg.*must be a PNG"):
        read_mask(tmp_path / "m.jpg")
    wide = np.full((3, 3), 300, np.uint16)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match=r"wide\.png.*0..255"):
        read_mask(tmp_path / "wide.png")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def failing(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_check_mask_errors():
    with pytest.raises(TypeError, match="mask must have an integer dtype"):
        check_mask(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="mask must be 2-D"):
        check_mask(np.zeros((2, 2, 1), np.uint8))


# -------------------------------------------------------------------------- VOC


@pytest.fixture()
def scenes():
    return SyntheticScenes(5, size=(40, 48), seed=3)


def test_voc_round_trip_png(tmp_path, scenes):
    ids = write_voc(
        tmp_path,
        scenes,
        {"train": [0, 1, 2], "val": [3, 4], "trainval": range(5)},
        SYNTHETIC_CLASSES,
        image_format="png",
    )
    assert ids == [f"{i:06d}" for i in range(5)]
    train = VOCSegmentation(tmp_path, "train")
    val = VOCSegmentation(tmp_path, split="val")
    assert len(train) == 3 and len(val) == 2 and len(VOCSegmentation(tmp_path, "trainval")) == 5
    assert train.ids == ids[:3] and val.ids == ids[3:]
    assert train.class_names == list(SYNTHETIC_CLASSES)
    assert train.num_classes == len(SYNTHETIC_CLASSES)
    for dataset, offset in ((train, 0), (val, 3)):
        for i in range(len(dataset)):
            image, mask = dataset[i]
            expected_image, expected_mask = scenes[offset + i]
            assert image.dtype == np.uint8 and mask.dtype == np.uint8
            np.testing.assert_array_equal(image, expected_image)
            np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(train[-1][1], train[2][1])
    with pytest.raises(IndexError):
        train[3]
    assert not list(tmp_path.rglob("*.tmp"))


def test_voc_round_trip_jpeg_with_split_per_sample(tmp_path, scenes):
    masks = [mask.copy() for _, mask in scenes]
    masks[0][:2] = 255
    samples = [(image, mask) for (image, _), mask in zip(scenes, masks, strict=True)]
    write_voc(
        tmp_path,
        samples,
        ["train", "val", "train", "train", "val"],
        SYNTHETIC_CLASSES,
        ids=["a", "b", "c", "d", "e"],
    )
    assert sorted(p.name for p in (tmp_path / "JPEGImages").iterdir())[0] == "a.jpg"
    train = VOCSegmentation(tmp_path, "train")
    assert train.ids == ["a", "c", "d"]
    image, mask = train[0]
    np.testing.assert_array_equal(mask, masks[0])
    assert np.abs(image.astype(int) - samples[0][0]).mean() < 4


def test_voc_transform_gives_graphs(tmp_path, scenes):
    write_voc(tmp_path, scenes, "train", SYNTHETIC_CLASSES, image_format="png")
    dataset = VOCSegmentation(tmp_path, transform=SuperpixelGraph(n_segments=40))
    graph = dataset[1]
    assert torch.equal(graph.mask[0], torch.from_numpy(scenes[1][1]).long())
    assert graph.superpixels.shape == (1, 40, 48)


def test_voc_class_names_without_classes_file(tmp_path, scenes):
    write_voc(tmp_path, scenes, "train", SYNTHETIC_CLASSES)
    (tmp_path / "classes.txt").unlink()
    assert VOCSegmentation(tmp_path).class_names == list(VOC_CLASSES)
    assert VOCSegmentation(tmp_path, num_classes=21).num_classes == 21
    six = VOCSegmentation(tmp_path, num_classes=6)
    assert six.class_names == [f"class_{k}" for k in range(6)]
    with pytest.raises(ValueError, match="num_classes"):
        VOCSegmentation(tmp_path, num_classes=0)
    with pytest.raises(ValueError, match="num_classes"):
        VOCSegmentation(tmp_path, num_classes=256)


@pytest.fixture()
def voc_root(tmp_path, scenes):
    write_voc(tmp_path, scenes, "train", SYNTHETIC_CLASSES, image_format="png")
    return tmp_path


def test_voc_missing_root_and_folders(tmp_path, voc_root):
    with pytest.raises(ValueError, match=r"root .*nowhere.* does not exist"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split 'val' has no split file"):
        VOCSegmentation(voc_root, "val")
    with pytest.raises(ValueError, match="split must be"):
        VOCSegmentation(voc_root, "../train")
    (voc_root / "SegmentationClass").rename(voc_root / "elsewhere")
    with pytest.raises(ValueError, match="has no SegmentationClass/ folder"):
        VOCSegmentation(voc_root)


def test_voc_missing_mask_and_image(voc_root):
    (voc_root / "SegmentationClass" / "000002.png").unlink()
    with pytest.raises(ValueError, match=r"missing mask for id '000002'.*000002\.png"):
        VOCSegmentation(voc_root)
    (voc_root / "JPEGImages" / "000001.png").unlink()
    with pytest.raises(ValueError, match=r"missing image for id '000001'"):
        VOCSegmentation(voc_root)


def test_voc_size_mismatch_names_both_files(voc_root):
    write_mask_png(voc_root / "SegmentationClass" / "000003.png", np.zeros((40, 47), np.uint8))
    dataset = VOCSegmentation(voc_root)
    dataset[2]  # the others are fine
    with pytest.raises(ValueError, match=r"mask .*000003\.png.* image .*000003\.png"):
        dataset[3]


def test_voc_out_of_range_labels(voc_root):
    mask = np.zeros((40, 48), np.uint8)
    mask[5, 5] = 6
    mask[6, 6] = 255  # ignore is always allowed
    write_mask_png(voc_root / "SegmentationClass" / "000000.png", mask)
    dataset = VOCSegmentation(voc_root)
    with pytest.raises(ValueError, match=r"000000\.png.*\[6\] >= num_classes=6"):
        dataset[0]


def test_voc_corrupt_image_names_the_file(voc_root):
    (voc_root / "JPEGImages" / "000004.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"000004\.png"):
        VOCSegmentation(voc_root)[4]


def test_voc_classes_file_must_agree(voc_root):
    with pytest.raises(ValueError, match="num_classes=5 but .*classes.txt"):
        VOCSegmentation(voc_root, num_classes=5)


def test_voc_duplicate_and_empty_split_files(voc_root):
    split = voc_root / "ImageSets" / "Segmentation"
    (split / "dup.txt").write_text("000000\n000001\n000000\n")
    with pytest.raises(ValueError, match="lists id '000000' twice"):
        VOCSegmentation(voc_root, "dup")
    (split / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="lists no ids"):
        VOCSegmentation(voc_root, "empty")


def test_write_voc_rejects_bad_samples(tmp_path, scenes):
    image, mask = scenes[0]
    with pytest.raises(ValueError, match=r"mask of sample 1 has shape \(40, 47\)"):
        write_voc(tmp_path, [(image, mask), (image, mask[:, :-1])], "train", SYNTHETIC_CLASSES)
    assert not (tmp_path / "ImageSets" / "Segmentation" / "train.txt").exists()
    with pytest.raises(ValueError, match=r"mask of sample 0 holds labels \[5\]"):
        write_voc(tmp_path, [(image, np.full_like(mask, 5))], "train", ["a", "b", "c"])
    with pytest.raises(ValueError, match="split_names has 2 entries"):
        write_voc(tmp_path, [(image, mask)], ["train", "val"], SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="out of range"):
        write_voc(tmp_path, [(image, mask)], {"train": [1]}, SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="each id in ids"):
        write_voc(tmp_path, [(image, mask)], "train", SYNTHETIC_CLASSES, ids=["a/b"])
    with pytest.raises(ValueError, match="duplicate"):
        write_voc(tmp_path, [(image, mask)], "train", ["a", "a"])
    with pytest.raises(ValueError, match="image_format"):
        write_voc(tmp_path, [(image, mask)], "train", SYNTHETIC_CLASSES, image_format="gif")


# -------------------------------------------------------------------- synthetic


def test_scenes_are_deterministic_and_distinct():
    image, mask = generate_scene(7)
    again_image, again_mask = generate_scene(7)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(mask, again_mask)
    assert not np.array_equal(generate_scene(8)[0], image)
    scenes = SyntheticScenes(4, seed=2)
    np.testing.assert_array_equal(scenes[1][0], generate_scene((2, 0, 1))[0])
    np.testing.assert_array_equal(scenes[-1][1], scenes[3][1])
    assert len(scenes[1:3]) == 2 and len(list(scenes)) == 4
    other_stream = SyntheticScenes(4, seed=2, stream=1)
    assert not np.array_equal(other_stream[0][0], scenes[0][0])
    with pytest.raises(IndexError):
        scenes[4]


@pytest.mark.parametrize("size", [(96, 96), (64, 80)])
def test_scene_format(size):
    image, mask = generate_scene(0, size)
    assert image.shape == (*size, 3) and image.dtype == np.uint8
    assert mask.shape == size and mask.dtype == np.uint8
    assert mask.max() < len(SYNTHETIC_CLASSES)


def _components(mask: np.ndarray, label: int):
    labelled, count = ndimage.label(mask == label)
    return [labelled == k for k in range(1, count + 1)]


def test_context_rules_hold():
    """Windows sit inside house walls; signs sit on the ground, away from houses."""
    seen = np.zeros(len(SYNTHETIC_CLASSES), bool)
    for seed in range(60):
        _, mask = generate_scene(seed)
        seen |= np.bincount(mask.ravel(), minlength=len(SYNTHETIC_CLASSES)) > 0
        tokens = (mask == DISC) | (mask == BAR)
        for window in _components(mask, WINDOW):
            ring = ndimage.binary_dilation(window) & ~window & ~tokens
            assert set(np.unique(mask[ring])) <= {HOUSE, WINDOW}, seed
            assert (mask[ring] == HOUSE).any(), seed
        for sign in _components(mask, SIGN):
            ring = ndimage.binary_dilation(sign, iterations=2) & ~sign & ~tokens
            assert set(np.unique(mask[ring])) <= {0}, seed
    assert seen.all(), "every class appears in 60 scenes"


def _region_stats(scenes, label):
    areas, colours = [], []
    for image, mask in scenes:
        for region in _components(mask, label):
            areas.append(region.sum())
            colours.append(image[region].mean(axis=0))
    return np.array(areas, float), np.array(colours)


def test_look_alike_classes_share_appearance():
    """What separates window/sign and disc/bar must not be their own pixels."""
    scenes = [generate_scene((11, seed)) for seed in range(150)]
    window_area, window_colour = _region_stats(scenes, WINDOW)
    sign_area, sign_colour = _region_stats(scenes, SIGN)
    assert min(len(window_area), len(sign_area)) > 150
    assert abs(window_area.mean() - sign_area.mean()) < 0.1 * sign_area.mean()
    np.testing.assert_allclose(window_colour.mean(0), sign_colour.mean(0), atol=8)
    _, disc_colour = _region_stats(scenes, DISC)
    _, bar_colour = _region_stats(scenes, BAR)
    assert min(len(disc_colour), len(bar_colour)) > 80
    np.testing.assert_allclose(disc_colour.mean(0), bar_colour.mean(0), atol=8)
    # ...while the panels' colours differ clearly from the tokens' (appearance
    # classes are not all the same).
    assert np.abs(window_colour.mean(0) - disc_colour.mean(0)).max() > 30


def test_write_synthetic_voc_round_trip(tmp_path):
    root = write_synthetic_voc(tmp_path / "synthetic", 3, 2, size=(48, 48), seed=5)
    train = VOCSegmentation(root, "train")
    val = VOCSegmentation(root, "val")
    assert len(train) == 3 and len(val) == 2
    assert train.class_names == list(SYNTHETIC_CLASSES)
    for dataset, stream in ((train, 0), (val, 1)):
        expected = SyntheticScenes(len(dataset), (48, 48), 5, stream=stream)
        for i in range(len(dataset)):
            np.testing.assert_array_equal(dataset[i][0], expected[i][0])
            np.testing.assert_array_equal(dataset[i][1], expected[i][1])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: generate_scene(-1), ValueError, "seed"),
        (lambda: generate_scene(1.5), ValueError, "seed"),
        (lambda: generate_scene(0, (16, 96)), ValueError, "size"),
        (lambda: generate_scene(0, 96), TypeError, "size"),
        (lambda: SyntheticScenes(-1), ValueError, "num_scenes"),
        (lambda: SyntheticScenes(2, seed=-3), ValueError, "seed"),
    ],
)
def test_synthetic_rejects_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
