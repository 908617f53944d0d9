"""The update-order explorer page: its embedded data, its command line, and the page in a
real browser (headless Chromium through Selenium; skipped where it is not installed).

The Python tests decode the page with their own reader (JSON, base64, numpy) and compare
with :func:`graphlstm.build_schedule`; the browser tests click through
``window.explorer`` and compare the highlighted reach with :func:`graphlstm.reachable`.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graphlstm import build_schedule, reachable
from graphlstm.lattice import lattice_graph
from segmentation import region_adjacency, slic_superpixels
from segmentation.models.orders import smooth_random_field
from segmentation.visualize import OrderExplorer, lattice_explorer, order_explorer
from tests.helpers import (
    levels_of_order,
    order_by_score,
    program,
    run_captured,
    segment_means,
    touching_pairs,
)

HEIGHT, WIDTH = 48, 64
ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "show_order.py"
INSTALL = ("apt-get install -y chromium chromium-driver && pip install selenium "
           "(headless Chromium drives the explorer page tests)")
DTYPES = {"u8": "<u1", "u16": "<u2", "u32": "<u4", "i32": "<i4", "f32": "<f4"}


# --------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def scene():
    """A SLIC graph of a small image, three orders, and a directed variant of the graph
    (a random half of the edge directions dropped, self-loops and duplicates added)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([xx * 4 % 256, yy * 5 % 256, (xx * yy) % 256], axis=2).astype(np.uint8)
    image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
    labels = slic_superpixels(image, n_segments=40)
    edge_index, _ = region_adjacency(labels)
    num = int(labels.max()) + 1
    orders = {
        "random": torch.from_numpy(rng.standard_normal(num)),
        "smooth": torch.from_numpy(np.sort(rng.standard_normal(num))),
        "with ties": torch.from_numpy(rng.integers(0, 3, num).astype(np.float64)),
    }
    keep = torch.from_numpy(rng.random(edge_index.shape[1]) < 0.5)
    loops = torch.arange(0, num, 7).repeat(2, 1)
    directed = torch.cat([edge_index[:, keep], loops, edge_index[:, :5]], dim=1)
    return image, labels, edge_index, orders, directed


def page_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>',
                      html, flags=re.S)
    assert match is not None
    return json.loads(match.group(1))


def decode(packed) -> np.ndarray:
    raw = base64.b64decode(packed["b64"])
    return np.frombuffer(raw, dtype=DTYPES[packed["dtype"]]).reshape(packed["shape"])


def decode_labels(data) -> np.ndarray:
    values = decode(data["labels"]["values"])
    lengths = decode(data["labels"]["lengths"])
    return np.repeat(values, lengths).reshape(data["height"], data["width"])


def decode_image(data) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data["image"].startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(data["image"][len(prefix):]))) as png:
        return np.asarray(png.convert("RGB"))


def test_page_embeds_the_image_labels_graph_and_every_schedule(scene):
    image, labels, edge_index, orders, _ = scene
    page = order_explorer(image, labels, edge_index, orders, layers=2)
    data = page_data(page.html)
    assert data == json.loads(json.dumps(page.data))
    assert (data["height"], data["width"]) == labels.shape
    assert np.array_equal(decode_image(data), image)
    assert np.array_equal(decode_labels(data), labels)
    assert np.array_equal(decode(data["edges"]), edge_index.numpy())
    assert data["num_nodes"] == int(labels.max()) + 1 and data["layers"] == 2
    assert [entry["name"] for entry in data["orders"]] == list(orders)
    for entry in data["orders"]:
        schedule = build_schedule(edge_index, data["num_nodes"], score=orders[entry["name"]])
        assert np.array_equal(decode(entry["ranks"]), schedule.rank.numpy())
        assert np.array_equal(decode(entry["levels"]), schedule.level.numpy())
        assert entry["num_levels"] == schedule.num_levels
        np.testing.assert_allclose(decode(entry["scores"]), orders[entry["name"]], rtol=1e-6)
    # One page, no outside resources: the only URLs are data: URLs.
    assert not re.search(r"(src|href)\s*=\s*[\"'](?!data:)", page.html)
    assert "http://" not in page.html and "https://" not in page.html


def test_schedules_are_accepted_as_orders(scene):
    image, labels, edge_index, orders, _ = scene
    num = int(labels.max()) + 1
    schedule = build_schedule(edge_index, num, score=orders["random"])
    data = page_data(order_explorer(image, labels, edge_index, {"s": schedule}).html)
    assert np.array_equal(decode(data["orders"][0]["ranks"]), schedule.rank.numpy())
    assert data["orders"][0]["scores"] is None


def test_model_outputs_and_influence_are_embedded(scene):
    image, labels, edge_index, orders, _ = scene
    num = int(labels.max()) + 1
    rng = np.random.default_rng(0)
    classes, confidence = rng.integers(0, 3, num), rng.random(num)
    norms = rng.random(num)
    page = order_explorer(image, labels, edge_index, orders, classes=classes,
                          class_names=["sky", "road", "car"], confidence=confidence,
                          influence={"random": {5: norms}}, selected=5)
    data = page_data(page.html)
    assert np.array_equal(decode(data["nodes"]["classes"]), classes)
    assert data["nodes"]["class_names"] == ["sky", "road", "car"]
    np.testing.assert_allclose(decode(data["nodes"]["confidence"]), confidence, rtol=1e-6)
    np.testing.assert_allclose(decode(data["influence"]["random"]["5"]), norms, rtol=1e-6)
    assert data["selected"] == 5


def test_a_large_image_is_shrunk_with_nearest_labels():
    labels = np.arange(40 * 60).reshape(40, 60) // 7 % 300
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    image = np.zeros((40, 60, 3), np.uint8)
    edge_index, _ = region_adjacency(labels)
    num = int(labels.max()) + 1
    data = order_explorer(image, labels, edge_index, {"index": torch.arange(num, 0, -1.0)},
                          max_side=30).data
    assert (data["height"], data["width"]) == (20, 30)
    rows, cols = np.arange(20) * 2, np.arange(30) * 2  # centre of each 2×2 block, rounded down
    assert np.array_equal(decode_labels(data), labels[np.ix_(rows + 1, cols + 1)])
    assert decode_image(data).shape == (20, 30, 3)


def test_long_runs_are_split_and_decode_back():
    labels = np.zeros((300, 300), np.int64)
    labels[150:, :] = 1
    image = np.zeros((300, 300, 3), np.uint8)
    edge_index, _ = region_adjacency(labels)
    data = order_explorer(image, labels, edge_index, {"a": torch.tensor([0.0, 1.0])}).data
    assert decode(data["labels"]["lengths"]).max() <= 2**16 - 1
    assert np.array_equal(decode_labels(data), labels)


def test_size_of_a_thousand_superpixel_page():
    """Worst case for the PNG: 512×512 noise, 1,024 superpixels; far below 5 MB."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    labels = (np.arange(512)[:, None] // 16) * 32 + np.arange(512)[None, :] // 16
    edge_index, _ = region_adjacency(labels)
    orders = {name: torch.from_numpy(rng.standard_normal(1024)) for name in "abcde"}
    page = order_explorer(image, labels, edge_index, orders)
    raw_png = len(base64.b64decode(page.data["image"].split(",", 1)[1]))
    assert page.num_bytes < 5_000_000
    # The image is most of it: the rest (labels, graph, five orders) stays small.
    assert page.num_bytes - raw_png * 4 / 3 < 250_000


def test_lattice_page_holds_each_directions_graph_and_schedule():
    page = lattice_explorer((4, 5), (0, 3), layers=2)
    data = page_data(page.html)
    assert data["lattice"] == {"rows": 4, "cols": 5} and data["num_nodes"] == 20
    labels = decode_labels(data)
    cell = data["width"] // 5
    assert np.array_equal(labels[::cell, ::cell], np.arange(20).reshape(4, 5))
    for entry, direction in zip(data["orders"], (0, 3), strict=True):
        edge_index, _, order = lattice_graph((4, 5), direction)
        schedule = build_schedule(edge_index, 20, order=order)
        assert entry["name"] == f"direction {direction}"
        assert np.array_equal(decode(entry["edges"]), edge_index.numpy())
        assert np.array_equal(decode(entry["ranks"]), schedule.rank.numpy())
        assert np.array_equal(decode(entry["levels"]), schedule.level.numpy())
        rows, cols = np.divmod(np.arange(20), 5)
        rows, cols = (3 - rows, 4 - cols) if direction == 3 else (rows, cols)
        assert np.array_equal(decode(entry["levels"]), rows + cols)  # the wavefront


def test_save_is_atomic_and_checks_the_path(scene, tmp_path):
    image, labels, edge_index, orders, _ = scene
    page = order_explorer(image, labels, edge_index, orders)
    path = page.save(tmp_path / "page.html")
    assert path.read_bytes() == page.html.encode("utf-8")
    assert path.stat().st_size == page.num_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]
    with pytest.raises(ValueError, match="'path'.*html"):
        page.save(tmp_path / "page.png")
    with pytest.raises(ValueError, match="does not exist"):
        page.save(tmp_path / "missing" / "page.html")
    assert "<iframe srcdoc=" in page._repr_html_() and "&lt;script" in page._repr_html_()
    assert "orders: random, smooth, with ties" in repr(page)


@pytest.mark.parametrize(("change", "match"), [
    ({"orders": {}}, "'orders'"),
    ({"orders": {"a": torch.zeros(3)}}, r"orders\['a'\]"),
    ({"edge_index": torch.tensor([[0, 1], [1, 999]])}, "'edge_index'"),
    ({"layers": 0}, "'layers'"),
    ({"layers": 1.5}, "'layers'"),
    ({"classes": np.zeros(3, np.int64)}, "'classes'"),
    ({"influence": {"nope": {0: np.zeros(1)}}}, "'influence'"),
    ({"selected": -1}, "'selected'"),
    ({"max_side": 4}, "'max_side'"),
    ({"image": np.zeros((5, 5, 3), np.uint8)}, "'image'"),
])
def test_bad_arguments_name_themselves(scene, change, match):
    image, labels, edge_index, orders, _ = scene
    kwargs = {"image": image, "superpixels": labels, "edge_index": edge_index,
              "orders": orders}
    kwargs.update(change)
    with pytest.raises((TypeError, ValueError), match=match):
        order_explorer(**kwargs)


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def script():
    return program("show_order")


def call(script, capsys, *args) -> tuple[int, str, str]:
    """The script's ``main`` as ``__main__`` runs it (one-line errors, argparse exits)."""
    return run_captured(capsys, "show_order", *args)


def test_script_writes_the_page_with_every_order(script, capsys, scene, tmp_path):
    image = scene[0]
    Image.fromarray(image).save(tmp_path / "photo.png")
    code, out, err = call(script, capsys, tmp_path / "photo.png", "--html",
                          tmp_path / "page.html", "--n-segments", 30, "--layers", 3)
    assert code == 0, err
    data = page_data((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert [entry["name"] for entry in data["orders"]] == [
        "smooth score", "reverse smooth score", "random", "raster"]
    assert data["layers"] == 3
    labels = slic_superpixels(image, n_segments=30)
    assert np.array_equal(decode_labels(data), labels)
    assert np.array_equal(decode_image(data), image)
    # Each order's ranks and levels from its definition (seed 0), levels by a plain loop.
    num = int(labels.max()) + 1
    smooth = segment_means(labels, smooth_random_field(labels.shape, 0.1, 0))
    permutation = torch.randperm(num, generator=torch.Generator().manual_seed(0))
    rows, cols = np.indices(labels.shape)
    y, x = segment_means(labels, rows), segment_means(labels, cols)
    orders = [order_by_score(smooth), order_by_score(-smooth), order_by_score(permutation),
              sorted(range(num), key=lambda v: (round(y[v]), x[v], v))]
    pairs = touching_pairs(labels)
    for entry, order in zip(data["orders"], orders, strict=True):
        rank = np.empty(num, np.int64)
        rank[order] = np.arange(num)
        assert np.array_equal(decode(entry["ranks"]), rank), entry["name"]
        assert decode(entry["levels"]).tolist() == levels_of_order(order, pairs, num)
    assert f"{num} superpixels" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html", "photo.png"]


def test_script_writes_a_lattice_page(script, capsys, tmp_path):
    code, out, err = call(script, capsys, "--lattice", "6x8", "--direction", "0,2",
                          "--html", tmp_path / "lattice.html")
    assert code == 0, err
    data = page_data((tmp_path / "lattice.html").read_text(encoding="utf-8"))
    assert [entry["name"] for entry in data["orders"]] == ["direction 0", "direction 2"]


def test_script_with_a_checkpoint_embeds_classes_and_the_targets_influence(
        script, capsys, scene, tmp_path):
    from segmentation.analysis.influence import node_influence
    from segmentation.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
    from segmentation.inference.predictor import load_segmenter
    from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

    image = scene[0]
    Image.fromarray(image).save(tmp_path / "photo.png")
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(ModelConfig(num_classes=4, width=4, hidden=3, graph_layers=2,
                                           order="confidence", n_segments=30)).eval()
    save_checkpoint(tmp_path / "m.pt", {
        "format": CHECKPOINT_FORMAT, "model_config": model.config.to_dict(),
        "model_state": model.state_dict(), "epoch": 0, "class_names": None})
    code, _, err = call(script, capsys, tmp_path / "photo.png", "--checkpoint",
                        tmp_path / "m.pt", "--influence", "20,30", "--html",
                        tmp_path / "page.html")
    assert code == 0, err
    data = page_data((tmp_path / "page.html").read_text(encoding="utf-8"))
    assert [entry["name"] for entry in data["orders"]][:2] == [
        "confidence", "reverse-confidence"]
    assert data["layers"] == 2
    segmenter = load_segmenter(tmp_path / "m.pt")
    prediction = segmenter.predict(image)
    labels = np.asarray(prediction.superpixels)
    assert np.array_equal(decode_labels(data), labels)
    num = int(labels.max()) + 1
    majority = [np.bincount(prediction.labels[labels == v]).argmax() for v in range(num)]
    assert decode(data["nodes"]["classes"]).tolist() == majority
    target = int(labels[30, 20])
    assert data["selected"] == target
    graph = segmenter.transform(image)
    norms, _ = node_influence(segmenter.model, graph, target,
                              -prediction.node_score.double())
    np.testing.assert_allclose(decode(data["influence"]["reverse-confidence"][str(target)]),
                               norms, rtol=1e-5, atol=1e-12)
    assert sorted(data["influence"]) == sorted(entry["name"] for entry in data["orders"])


@pytest.mark.parametrize(("args", "flag"), [
    (["--html", "{tmp}/page.txt"], "--html"),
    (["--html", "{tmp}/missing/page.html"], "--html"),
    (["--html", "{tmp}/page.html", "--layers", "17"], "--layers"),
    (["--html", "{tmp}/page.html", "--layers", "0"], "--layers"),
])
def test_script_bad_html_options_are_one_line(script, capsys, scene, tmp_path, args, flag):
    Image.fromarray(scene[0]).save(tmp_path / "photo.png")
    args = [a.format(tmp=tmp_path) for a in args]
    code, _, err = call(script, capsys, tmp_path / "photo.png", *args)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_benchmark_script_rejects_bad_counts_in_one_line(capsys):
    path = ROOT / "benchmarks" / "explorer" / "bench_explorer.py"
    spec = importlib.util.spec_from_file_location("bench_explorer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.run_main(lambda: module.main(["--clicks", "0"])) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--clicks" in lines[0]


# --------------------------------------------------------------------------- browser


def _browser_available() -> bool:
    return (importlib.util.find_spec("selenium") is not None
            and shutil.which("chromedriver") is not None
            and (shutil.which("chromium") or shutil.which("chromium-browser")) is not None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not _browser_available():
        pytest.skip(f"headless Chromium or Selenium missing: {INSTALL}")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    # The closed network of test machines: nothing may try to reach out.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1200,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def open_page(driver, page: OrderExplorer, path: Path):
    page.save(path)
    driver.get_log("browser")  # what earlier pages (and tests' canvas readbacks) left
    driver.get(path.as_uri())
    deadline = time.monotonic() + 30
    while not driver.execute_script("return !!(window.explorer && window.explorer.ready)"):
        assert time.monotonic() < deadline, "the page never became ready"
        time.sleep(0.02)
    return driver.get_log("browser")


def reach_of(edge_index, num, target, score, layers=1) -> list[int]:
    row = reachable(edge_index, num, [target], score=score, num_layers=layers)[0]
    return torch.nonzero(row).flatten().tolist()


@pytest.fixture(scope="module")
def opened(browser, scene, tmp_path_factory):
    image, labels, edge_index, orders, _ = scene
    page = order_explorer(image, labels, edge_index, orders)
    logs = open_page(browser, page, tmp_path_factory.mktemp("page") / "explorer.html")
    return browser, logs


def test_page_opens_without_console_messages_or_network(opened):
    driver, logs = opened
    assert logs == []
    entries = driver.execute_script(
        "return performance.getEntries().filter(e => e.entryType === 'navigation' || "
        "e.entryType === 'resource').map(e => e.name)")
    assert entries and all(name.startswith(("file:", "data:")) for name in entries), entries


def test_selected_reach_equals_reachable_for_every_order(opened, scene):
    driver, _ = opened
    _, labels, edge_index, orders, _ = scene
    num = int(labels.max()) + 1
    assert driver.execute_script("return window.explorer.orders") == list(orders)
    for name, score in orders.items():
        assert driver.execute_script("return window.explorer.ranks(arguments[0])", name) == (
            build_schedule(edge_index, num, score=score).rank.tolist())
        for target in (0, num // 2, num - 1):
            for layers in (1, 2, 3):
                shown = driver.execute_script(
                    "return window.explorer.select(arguments[0], {order: arguments[1], "
                    "layers: arguments[2]})", target, name, layers)
                assert shown == reach_of(edge_index, num, target, score, layers), (name, layers)
                assert shown == driver.execute_script("return window.explorer.highlighted()")
    assert driver.execute_script("return window.explorer.edges()") == edge_index.tolist()
    assert driver.get_log("browser") == []


def test_clicking_a_superpixel_highlights_its_reach(opened, scene):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, _ = opened
    _, labels, edge_index, orders, _ = scene
    num = int(labels.max()) + 1
    driver.execute_script("window.explorer.select(0, {order: 'random', layers: 1}); "
                          "window.explorer.clear()")
    overlay = driver.find_element(By.ID, "overlay")
    scale = overlay.rect["width"] / WIDTH
    for y, x in ((10, 10), (24, 40), (40, 60)):
        # Offsets from the element's centre, to the middle of pixel (x, y).
        ActionChains(driver).move_to_element_with_offset(
            overlay, int((x + 0.5) * scale - overlay.rect["width"] / 2),
            int((y + 0.5) * scale - overlay.rect["height"] / 2)).click().perform()
        target = int(labels[y, x])
        assert driver.execute_script("return window.explorer.highlighted()") == reach_of(
            edge_index, num, target, orders["random"])
        rank = build_schedule(edge_index, num, score=orders["random"]).rank[target]
        tip = driver.find_element(By.ID, "tip").text
        assert f"superpixel {target}\n" in tip and f"rank {rank} of {num}" in tip


def overlay_pixels(driver) -> np.ndarray:
    flat = driver.execute_script(
        "const c = document.getElementById('overlay');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);")
    return np.asarray(flat, dtype=np.int64).reshape(HEIGHT, WIDTH, 4)


def interior(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right and lower neighbours are in the same superpixel (no boundary)."""
    inside = np.ones(labels.shape, bool)
    inside[:, :-1] &= labels[:, :-1] == labels[:, 1:]
    inside[:-1, :] &= labels[:-1, :] == labels[1:, :]
    return inside


def test_level_slider_fills_exactly_the_levels_below_k(opened, scene):
    driver, _ = opened
    _, labels, edge_index, orders, _ = scene
    num = int(labels.max()) + 1
    driver.execute_script("window.explorer.clear(); window.explorer.setOrder('smooth')")
    level = build_schedule(edge_index, num, score=orders["smooth"]).level.numpy()
    inside = interior(labels)
    for k in sorted({0, 1, 2, int(level.max()) // 2, int(level.max()) + 1}):
        driver.execute_script("window.explorer.setLevel(arguments[0])", k)
        filled = driver.execute_script("return window.explorer.filled()")
        assert filled == np.flatnonzero(level < k).tolist()
        # What is drawn: the unfilled wash exactly on the superpixels of levels >= k.
        pixels = overlay_pixels(driver)
        washed = (np.abs(pixels[..., :3] - 200).max(axis=2) <= 2) & (
            np.abs(pixels[..., 3] - 205) <= 1)
        shown_unfilled = {int(v) for v in np.unique(labels[inside & washed])}
        assert shown_unfilled == set(np.flatnonzero(level >= k).tolist()) & set(
            np.unique(labels[inside]).tolist())


def test_screenshot_shows_the_highlight_where_the_reach_is(opened, scene):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, _ = opened
    image, labels, edge_index, orders, _ = scene
    num = int(labels.max()) + 1
    target = int(labels[HEIGHT // 2, WIDTH // 2])
    driver.execute_script("window.explorer.clear()")
    driver.execute_script("window.explorer.select(arguments[0], {order: 'smooth', layers: 1})",
                          target)
    # Move the pointer off the picture, so that no tooltip covers it.
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "title")).perform()
    stage = driver.find_element(By.ID, "stage")
    with Image.open(io.BytesIO(stage.screenshot_as_png)) as png:
        shot = np.asarray(png.convert("RGB")).astype(np.float64)
    assert shot.std() > 10  # not blank
    # Sample the middle of every image pixel of the (integer-zoomed) picture.
    zoom = shot.shape[1] / WIDTH
    rows = ((np.arange(HEIGHT) + 0.5) * zoom).astype(int)
    cols = ((np.arange(WIDTH) + 0.5) * zoom).astype(int)
    sampled = shot[np.ix_(rows, cols)]
    reach = np.zeros(num, bool)
    reach[reach_of(edge_index, num, target, orders["smooth"])] = True
    # Orange over the image at the reach's opacity (170 / 255), against the image alone.
    expected = image * (1 - 170 / 255) + np.array([255, 140, 0]) * (170 / 255)
    close = np.abs(sampled - expected).max(axis=2) <= 6
    inside = interior(labels)
    in_reach = reach[labels] & inside & (labels != target)
    assert in_reach.any()
    assert close[in_reach].all()
    assert not close[~reach[labels] & inside].any()


def test_model_page_opens_on_its_target_with_classes_and_influence(browser, scene, tmp_path):
    image, labels, edge_index, orders, _ = scene
    num = int(labels.max()) + 1
    classes = np.arange(num) % 3
    target = 5
    norms = np.zeros(num)
    reach = reach_of(edge_index, num, target, orders["smooth"])
    norms[reach] = np.linspace(1.0, 9.0, len(reach))
    page = order_explorer(image, labels, edge_index, orders, classes=classes,
                          class_names=["sky", "road", "car"], confidence=np.full(num, 0.5),
                          influence={"smooth": {target: norms}}, selected=target)
    assert open_page(browser, page, tmp_path / "model.html") == []
    assert browser.execute_script("return window.explorer.highlighted()") == reach_of(
        edge_index, num, target, orders["random"])
    choices = browser.execute_script(
        "return Array.from(document.getElementById('colour').options).map(o => o.value)")
    assert {"class", "confidence", "score"} <= set(choices)
    browser.execute_script("window.explorer.select(arguments[0], {order: 'smooth'})", target)
    info = browser.execute_script("return document.getElementById('info').textContent")
    assert "Jacobian" in info


def test_lattice_page_reach_in_the_browser(browser, tmp_path):
    page = lattice_explorer((5, 6), (0, 1, 2, 3))
    logs = open_page(browser, page, tmp_path / "lattice.html")
    assert logs == []
    for direction in range(4):
        name = f"direction {direction}"
        edge_index, _, order = lattice_graph((5, 6), direction)
        assert browser.execute_script("return window.explorer.edges(arguments[0])", name) == (
            edge_index.tolist())
        for target in (0, 14, 29):
            for layers in (1, 2):
                shown = browser.execute_script(
                    "return window.explorer.select(arguments[0], {order: arguments[1], "
                    "layers: arguments[2]})", target, name, layers)
                row = reachable(edge_index, 30, [target], order=order, num_layers=layers)[0]
                assert shown == torch.nonzero(row).flatten().tolist()


def test_directed_graph_reach_in_the_browser(browser, scene, tmp_path):
    """Edges one way only, self-loops and duplicates: the page follows reachable."""
    image, labels, _, orders, directed = scene
    num = int(labels.max()) + 1
    page = order_explorer(image, labels, directed, orders)
    assert open_page(browser, page, tmp_path / "directed.html") == []
    for name, score in orders.items():
        for target in range(0, num, 5):
            for layers in (1, 2):
                shown = browser.execute_script(
                    "return window.explorer.select(arguments[0], {order: arguments[1], "
                    "layers: arguments[2]})", target, name, layers)
                assert shown == reach_of(directed, num, target, score, layers)


def test_bad_calls_throw_in_the_page(opened):
    driver, _ = opened
    for call_ in ("window.explorer.select(-1)", "window.explorer.select(0, {order: 'nope'})",
                  "window.explorer.select(0, {layers: 0})", "window.explorer.setLevel(-2)"):
        message = driver.execute_script(
            f"try {{ {call_}; return null; }} catch (e) {{ return String(e.message); }}")
        assert message, call_
    driver.get_log("browser")  # the thrown errors were caught: nothing else to read

