"""The benchmark code: what it reports is consistent (no timing assertions)."""

import pytest
import torch

from benchmarks.layers.graph_lstm import bench_graph_lstm, sample_graph, saved_tensor_bytes
from graphlstm import GraphLSTM, build_schedule


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_graph_lstm_benchmark_reports_the_graph_it_measured(image):
    lines = []
    rows = bench_graph_lstm(sizes=(60,), hidden=4, threads=(1,), repeats=1, loop_repeats=1,
                            print_fn=lines.append, image=image)
    g = sample_graph(60, image=image)
    levels = build_schedule(g.edge_index, g.num_nodes, score=g.score).num_levels
    assert [(r["threads"], r["engine"]) for r in rows] == [(1, "compiled"), (1, "torch")]
    for r in rows:
        assert (r["nodes"], r["edges"], r["levels"]) == (g.num_nodes, g.edge_index.size(1), levels)
        assert r["speedup"] == r["loop_ms"] / r["layer_schedule_ms"]
        assert r["literal_speedup"] == r["literal_loop_ms"] / r["layer_schedule_ms"]
        assert r["gated_ratio"] == r["no_state_ms"] / r["gated_ms"]
    assert any(f"SLIC graph of {image}" in line and f"{levels} levels" in line
               for line in lines)
    assert sum(line.lstrip().startswith("1 ") for line in lines) == 2  # one line per engine


def test_memory_saved_for_backward_grows_with_nodes_times_hidden_not_levels():
    # A path in index order has as many levels as nodes: if the layer kept a copy of
    # the state per level, memory would grow quadratically with the path length.
    def saved(n, hidden):
        torch.manual_seed(0)
        path = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
        layer = GraphLSTM(4, hidden)
        x = torch.randn(n, 4, requires_grad=True)
        assert build_schedule(path, n).num_levels == n
        return saved_tensor_bytes(lambda: layer(x, path)[0])

    base = saved(200, 8)
    assert 1.6 < saved(400, 8) / base < 2.4
    assert 1.6 < saved(200, 16) / base < 2.4


def test_grid_schedule_benchmark_measures_both_engines_on_the_grid():
    from benchmarks.layers.graph_lstm import bench_grid_schedule, grid_graph

    edge_index = grid_graph(4)
    assert edge_index.size(1) == 2 * 2 * 4 * 3  # 24 undirected grid edges, both directions
    lines = []
    seconds = bench_grid_schedule(side=20, repeats=1, print_fn=lines.append)
    assert set(seconds) == {"compiled", "torch"} and all(t > 0 for t in seconds.values())
    assert "400 nodes, 1520 edges" in lines[0]


def test_typed_cells_benchmark_reports_every_cell_on_both_engines():
    from benchmarks.layers.graph_lstm import bench_typed_cells

    lines = []
    rows = bench_typed_cells(sides=(5,), repeats=1, in_channels=3, hidden=4,
                             print_fn=lines.append)
    assert [r["cell"] for r in rows] == ["MDLSTMCell", "MDLSTMCell(stable)", "MDRNNCell",
                                         "GridLSTMCell"]
    for row in rows:
        assert row["side"] == 5
        assert len(row["forward"]) == 2 and all(t > 0 for t in row["forward"])
        assert len(row["forward_backward"]) == 2 and all(t > 0 for t in row["forward_backward"])
    assert "25 nodes, 40 edges, 9 levels" in lines[0]
    assert sum(line.startswith("| MD") or line.startswith("| Grid") for line in lines) == 4


def test_data_benchmark_counts_slic_runs_and_cache_files(tmp_path):
    from benchmarks.data.loading import bench_data, format_reports, write_scenes_voc

    data = write_scenes_voc(tmp_path / "scenes", 6, (40, 40), processes=1)
    reports, peak_main = bench_data(data, tmp_path / "cache", epochs=2, batch_size=3, workers=1,
                                    n_segments=12, max_steps=1, log=lambda line: None)
    first, second = reports
    assert (first.batches, first.steps, second.batches, second.steps) == (2, 1, 2, 1)
    assert (first.slic_calls, first.cache_hits, first.cache_files) == (6, 0, 6)
    assert (second.slic_calls, second.cache_hits, second.cache_files) == (0, 6, 6)
    assert second.cache_files_replaced == 0
    for report in reports:  # the workers are in the tree: it holds more than the main process
        assert 0 < report.peaks["main_rss"] < report.peaks["tree_rss"]
    assert "| 2 | 2 | 1 |" in format_reports(reports, peak_main)


def test_scene_generation_figure_times_each_scene(monkeypatch):
    from benchmarks.data import loading

    seeds = []
    real = loading.generate_scene
    monkeypatch.setattr(loading, "generate_scene",
                        lambda seed, size: seeds.append((seed, size)) or real(seed, size))
    seconds = loading.scene_generation_seconds(count=3, size=(32, 40))
    # One warm-up scene, then the timed ones; no bound on the time itself.
    assert seeds == [(0, (32, 40)), (0, (32, 40)), (1, (32, 40)), (2, (32, 40))]
    assert seconds > 0


def test_peak_memory_sees_an_allocation():
    import mmap

    from benchmarks.data.loading import PeakMemory

    with PeakMemory(interval=0.01) as memory:
        before = memory.reset()["main_rss"]
        # 40 MiB of fresh pages, all touched: an anonymous mapping, so that no
        # memory the allocator freed earlier in the test session is reused.
        block = mmap.mmap(-1, 40 * 2**20)
        block.write(b"\1" * len(block))
        memory.sample()
        block.close()
    assert memory.peaks["main_rss"] - before > 35 * 2**20


def test_training_benchmark_reports_what_it_ran():
    from benchmarks.training.throughput import bench_train
    from segmentation.data.datasets import SyntheticScenes
    from segmentation.data.transforms import SuperpixelGraph

    lines = []
    rows = bench_train(processes=(1, 2), print_fn=lines.append, size=40, n_segments=20,
                       batch_size=2, steps=1, width=4, hidden=4)
    assert [r["processes"] for r in rows] == [1, 2]
    for r in rows:
        assert r["images_per_s"] == 2 / r["step_s"]
    scenes = SyntheticScenes(2, size=(40, 40), seed=0)
    transform = SuperpixelGraph(n_segments=20, add_features=False)
    nodes = sum(transform(scenes[i]).num_nodes for i in range(2)) / 2
    assert rows[0]["nodes_per_image"] == nodes
    # the stages were found and replayed (two Graph LSTM layers, the backbone)
    for key in ("backbone", "graph_lstm", "schedule"):
        assert 0 < rows[0][key] < float("inf"), key
    assert any(f"~{nodes:.0f} superpixels" in line for line in lines)
    assert any("backbone fwd+bwd" in line for line in lines)


def test_training_benchmark_builds_the_unpooling_it_names(monkeypatch):
    from benchmarks.training.throughput import bench_train
    from segmentation.models import segmenter

    built = []
    init = segmenter.GraphLSTMSegmenter.__init__

    def spy(self, config):
        init(self, config)
        built.append(self.unpool_query is not None)

    monkeypatch.setattr(segmenter.GraphLSTMSegmenter, "__init__", spy)
    lines = []
    rows = bench_train(processes=(1,), print_fn=lines.append, size=40, n_segments=20,
                       batch_size=2, steps=1, width=4, hidden=4, unpool="soft")
    assert built == [True] and rows[0]["unpool"] == "soft"
    assert any("soft unpooling" in line for line in lines)


def test_segment_benchmarks_report_what_they_ran(tmp_path):
    from benchmarks.segment.throughput import bench_segment_memory, bench_segment_throughput
    from tests.segmentation.inference.test_files import make_checkpoint

    ckpt = str(make_checkpoint(tmp_path / "model.pt"))
    lines = []
    rows = bench_segment_throughput(images=3, size=40, workers=(0, 1), batch_sizes=(1, 2),
                                    rounds=1, checkpoint=ckpt, work_dir=str(tmp_path),
                                    log=lines.append)
    assert [(r["workers"], r["batch_size"]) for r in rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for row, line in zip(rows, lines, strict=True):
        assert row["speedup"] == row["images_per_second"] / rows[0]["images_per_second"]
        assert set(row["stage_seconds_per_image"]) == {"read", "superpixel", "model", "write"}
        assert min(row["stage_seconds_per_image"].values()) >= 0
        assert 0 <= row["recomputed_alone"] <= 3 and 0 < row["main_busy"] <= 1
        assert f"workers {row['workers']} batch {row['batch_size']}:" in line
    lines = []
    result = bench_segment_memory(images=5, size=(40, 48), checkpoint=ckpt,
                                  work_dir=str(tmp_path), log=lines.append)
    assert result["images"] == 5 and sorted(result["main_rss_at"]) == [1, 2, 5]
    assert 0 < max(result["main_rss_at"].values()) <= result["main_rss"]
    assert result["tree_pss"] > 0 and "5 images of 48x40" in lines[-1]
    assert list(tmp_path.iterdir()) == [tmp_path / "model.pt"]  # generated files removed


@pytest.mark.parametrize("argv, needle", [
    (["segment", "--size", "300x200"], "square"),
    (["segment", "--size", "0"], "--size"),
    (["segment-memory", "--size", "1024x"], "--size"),
    (["segment", "--workers", "0,x"], "--workers"),
    (["segment", "--batch-sizes", "0"], "--batch-sizes"),
    (["graph-lstm", "--image", "no_such_photo"], "--image"),
    (["graph-lstm", "--image", "download_all"], "--image"),
    (["graph-lstm", "--threads", "0"], "--threads"),
    (["graph-lstm", "--repeats", "0"], "--repeats"),
])
def test_segment_benchmark_bad_values_are_one_line(argv, needle, capsys):
    from tests.helpers import run

    assert run("benchmark", argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_paired_median_times_interleaves_and_times_each_function():
    from benchmarks.layers.graph_lstm import paired_median_times

    now, calls = [0.0], []

    def work(name, seconds):
        def fn():
            calls.append(name)
            now[0] += seconds
        return fn

    a, b, c = work("a", 1.0), work("b", 5.0), work("c", 7.0)
    assert paired_median_times(a, [b, c], 4, 2, clock=lambda: now[0]) == (1.0, 5.0, 7.0)
    # a warm-up of each, then b and c after every second a
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "a", "b", "c", "a"]
    assert paired_median_times(a, b, 2, 2, clock=lambda: now[0]) == (1.0, 5.0)
