"""The reach benchmark: its table, its timing against the per-target search, its plot."""

import pytest

from benchmarks.reach.statistics import bench_reach
from segmentation.data.datasets import SyntheticScenes


@pytest.fixture(scope="module")
def image():
    return SyntheticScenes(1, size=(64, 80), seed=1)[0][0]


def test_bench_prints_agreement_with_the_search(monkeypatch, image, tmp_path):
    import skimage.data

    monkeypatch.setattr(skimage.data, "astronaut", lambda: image)
    lines = []
    rows = bench_reach((30,), repeats=1, plot_path=tmp_path / "r.png", print_fn=lines.append)
    assert len(rows) == 4 and (tmp_path / "r.png").exists()
    assert any("equal: True" in line for line in lines)
