#!/usr/bin/env python
"""Size of the explorer page and its speed in headless Chromium, on scikit-image's photographs.

For each photograph (astronaut, coffee: bundled with scikit-image) this builds the page
that ``show_order.py IMAGE --html`` writes (SLIC superpixels, the smooth score and its
reverse, random, raster), then opens it from disk in headless Chromium several times and
prints the file size, the time from navigation to ready (the page drawn, data decoded),
and the time a click takes (reach computed and the picture redrawn, as the page measures
it with ``performance.now``), median over the clicks, one layer and three layers, and
the time from the click event to the next animation frame.

    python benchmarks/explorer/bench_explorer.py [--n-segments 1200] \
        [--screenshot docs/images/explorer.png]

Needs chromium, chromium-driver and selenium (see docs/explorer.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from segmentation.cli._common import CLIError, run_main


def chromium(profile: str):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1100,800",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(
        executable_path=shutil.which("chromedriver")))


def wait_ready(driver) -> float:
    deadline = time.monotonic() + 60
    while not driver.execute_script("return !!(window.explorer && window.explorer.ready)"):
        if time.monotonic() > deadline:
            raise RuntimeError("the page never became ready")
        time.sleep(0.01)
    return driver.execute_script("return window.explorer.timing.ready")


def build_page(name: str, n_segments: int):
    import torch
    from skimage import data as skdata

    from segmentation import region_adjacency, slic_superpixels, superpixel_centroids
    from segmentation.models.orders import (
        random_score,
        raster_score,
        score_from_image,
        smooth_random_field,
    )
    from segmentation.visualize.explorer import order_explorer

    image = getattr(skdata, name)()
    labels = slic_superpixels(image, n_segments=n_segments)
    edge_index, _ = region_adjacency(labels)
    num = int(labels.max()) + 1
    score = score_from_image(smooth_random_field(labels.shape, 0.1, 0), labels, num)
    orders = {"smooth score": score, "reverse smooth score": -score,
              "random": random_score(num, torch.Generator().manual_seed(0)),
              "raster": raster_score(superpixel_centroids(labels), labels.shape[1])}
    return order_explorer(image, labels, edge_index, orders,
                          title=f"Update orders of scikit-image's {name}: {num} superpixels")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-segments", type=int, default=1200)
    parser.add_argument("--loads", type=int, default=3, help="page loads per photograph")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per load and layers")
    parser.add_argument("--screenshot", metavar="PNG",
                        help="save a screenshot of the astronaut page, one superpixel clicked")
    args = parser.parse_args(argv)
    if args.n_segments < 1 or args.loads < 1 or args.clicks < 1:
        raise CLIError("--n-segments, --loads and --clicks must be positive")
    if not (shutil.which("chromedriver") and (shutil.which("chromium")
                                              or shutil.which("chromium-browser"))):
        raise CLIError("needs headless Chromium: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as folder:
        driver = chromium(os.path.join(folder, "profile"))
        try:
            for name in ("astronaut", "coffee"):
                start = time.perf_counter()
                page = build_page(name, args.n_segments)
                built = time.perf_counter() - start
                path = page.save(Path(folder) / f"{name}.html")
                ready, clicks, frames = [], {1: [], 3: []}, []
                for _ in range(args.loads):
                    driver.get(path.as_uri())
                    ready.append(wait_ready(driver))
                    overlay = driver.find_element(By.ID, "overlay")
                    width, height = overlay.rect["width"], overlay.rect["height"]
                    for layers, times in clicks.items():
                        driver.execute_script(
                            "window.explorer.select(0, {layers: arguments[0]})", layers)
                        for k in range(args.clicks):
                            x = (0.5 + (k * 37) % 97) / 97 - 0.5
                            y = (0.5 + (k * 53) % 89) / 89 - 0.5
                            ActionChains(driver).move_to_element_with_offset(
                                overlay, int(x * width), int(y * height)).click().perform()
                            select, frame = driver.execute_script(
                                "const t = window.explorer.timing; return [t.select, t.frame]")
                            times.append(select)
                            if frame is not None:
                                frames.append(frame)
                    errors = [e for e in driver.get_log("browser") if e["level"] != "INFO"]
                    if errors:
                        raise RuntimeError(f"console messages: {errors}")
                print(f"{name}: {page.data['num_nodes']} superpixels, "
                      f"{page.data['width']}×{page.data['height']}, "
                      f"file {page.num_bytes / 1e6:.2f} MB (built in {built:.1f} s); "
                      f"open to ready {statistics.median(ready):.0f} ms "
                      f"(median of {len(ready)}, max {max(ready):.0f}); click "
                      f"{statistics.median(clicks[1]):.1f} ms at 1 layer "
                      f"(max {max(clicks[1]):.1f}), "
                      f"{statistics.median(clicks[3]):.1f} ms at 3 layers "
                      f"(max {max(clicks[3]):.1f}); click event to next frame "
                      f"{statistics.median(frames):.1f} ms (max {max(frames):.1f})")
                if args.screenshot and name == "astronaut":
                    driver.get(path.as_uri())
                    wait_ready(driver)
                    driver.execute_script(
                        "window.explorer.select(arguments[0], {order: 'smooth score', "
                        "layers: 1})", int(page.data["num_nodes"]) * 2 // 3)
                    ActionChains(driver).move_to_element(
                        driver.find_element(By.ID, "title")).perform()
                    Path(args.screenshot).write_bytes(
                        driver.find_element(By.ID, "app").screenshot_as_png)
                    print(f"wrote {args.screenshot}")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
