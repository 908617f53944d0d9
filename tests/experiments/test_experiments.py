"""The context experiment: its tables, its comparisons, resuming, and its script's errors."""

import json
import statistics

import pytest

import experiments.context_and_order as experiments
from experiments.context_and_order import (
    CONFIGURATIONS,
    context_experiment,
    format_differences,
    format_table,
    standard_comparisons,
)
from tests.helpers import run


def fake_results(values):
    return {name: [{"seed": s, "miou": v / 100, "ambiguous_iou": v / 200}
                   for s, v in zip((0, 1, 2), vals, strict=True)]
            for name, vals in values.items()}


def test_configurations_cover_layers_orders_and_the_baseline():
    for order in ("confidence", "reverse-confidence", "random", "raster"):
        assert CONFIGURATIONS[f"graph-lstm-{order}"] == dict(graph_layers=2, order=order)
        assert CONFIGURATIONS[f"graph-lstm-{order}-1-layer"] == dict(graph_layers=1, order=order)
    assert CONFIGURATIONS["no-graph-lstm"]["graph_layers"] == 0
    assert CONFIGURATIONS["evolving"]["graph_model"] == "evolving"
    assert len(CONFIGURATIONS) == 11


def test_standard_comparisons():
    names = ["graph-lstm-confidence", "graph-lstm-random", "graph-lstm-random-1-layer",
             "no-graph-lstm"]
    assert standard_comparisons(names) == [
        ("graph-lstm-confidence", "no-graph-lstm"),
        ("graph-lstm-random", "no-graph-lstm"),
        ("graph-lstm-random-1-layer", "no-graph-lstm"),
        ("graph-lstm-confidence", "graph-lstm-random"),
        ("graph-lstm-random", "graph-lstm-random-1-layer"),
    ]
    assert standard_comparisons(["no-graph-lstm"]) == []


def test_tables_hold_per_seed_values_means_and_paired_differences():
    results = fake_results({"graph-lstm-confidence": [70.0, 75.5, 71.0],
                            "no-graph-lstm": [60.0, 76.0, 65.0]})
    table = format_table(results).splitlines()
    assert table[0] == "| configuration | seed 0 | seed 1 | seed 2 | mean | std |"
    std = statistics.stdev([70.0, 75.5, 71.0])
    assert table[2] == f"| graph-lstm-confidence | 70.00 | 75.50 | 71.00 | **72.17** | {std:.2f} |"
    assert "| no-graph-lstm | 30.00 | 38.00 | 32.50 |" in format_table(results, "ambiguous_iou")
    diff = format_differences(results, [("graph-lstm-confidence", "no-graph-lstm")])
    std = statistics.stdev([10.0, -0.5, 6.0])
    assert diff.splitlines()[2] == (f"| graph-lstm-confidence − no-graph-lstm | +10.00 | -0.50 | "
                                    f"+6.00 | **+5.17** | {std:.2f} | 2/3 |")


def test_tiny_run_and_resume(tmp_path, monkeypatch):
    path = tmp_path / "long-range.json"
    kwargs = dict(names=["graph-lstm-confidence-1-layer", "no-graph-lstm"], seeds=[0],
                  scenes=4, test_scenes=2, epochs=1, n_segments=40, scene_kind="long-range",
                  min_hops=2, results_path=path, log=lambda line: None)
    results = context_experiment(**kwargs)
    for entries in results.values():
        (entry,) = entries
        assert entry["seed"] == 0 and 0.0 <= entry["miou"] <= 1.0
        gates = [entry["per_class_iou"][c] for c in ("warm gate", "cold gate")
                 if entry["per_class_iou"][c] is not None]
        assert entry["ambiguous_iou"] == pytest.approx(statistics.mean(gates))
        assert 0.0 <= entry["cue_in_reach"] <= 1.0
    assert results["no-graph-lstm"][0]["cue_in_reach"] == 0.0
    saved = json.loads(path.read_text())
    assert saved["settings"]["scene_kind"] == "long-range" and len(saved["runs"]) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a finished training ran again")

    monkeypatch.setattr(experiments, "train", no_training)
    assert context_experiment(**kwargs) == results
    with pytest.raises(ValueError, match="another experiment"):
        context_experiment(**{**kwargs, "epochs": 2})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [(dict(names=["graph-lstm-bfs"]), "unknown configuration"),
     (dict(scene_kind="indoor"), "unknown scene kind")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        context_experiment(**kwargs)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--configs", "graph-lstm-bfs"], "unknown configuration"),
     (["--seeds", "1", "1"], "repeats"),
     (["--out", "/nonexistent/folder"], "not a folder"),
     (["--scenes-kind", "indoor"], "invalid choice")],
)
def test_script_errors_are_one_line(argv, message, capsys):
    assert run("experiment", argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_oracle_cue_in_reach_orders(monkeypatch):
    import torch

    from graphlstm.reference import reach_reference
    from segmentation.data.datasets.long_range import BEACON, COLD_GATE, WARM_GATE

    graphs = []
    build_graphs = experiments.build_graphs
    monkeypatch.setattr(experiments, "build_graphs",
                        lambda *args, **kwargs: graphs.extend(build_graphs(*args, **kwargs))
                        or graphs)
    # Beacons 2 hops or more from the gates: every order but one reaches them
    # sometimes, so each rate below is a real count.
    rates = experiments.oracle_cue_in_reach(test_scenes=4, n_segments=100, min_hops=2, seed=5)
    assert list(rates) == ["gates last", "gates first", "random", "raster"]
    assert len(graphs) == 4
    # Every rate again, from each order's definition and the plain depth-first
    # reach of graphlstm.reference: the share of gate superpixels (any pixel of a
    # gate) whose reach holds a beacon superpixel.
    expected = {name: [[0, 0], [0, 0]] for name in rates}  # [hits, gates] per layer count
    for graph in graphs:
        num = int(graph.num_nodes)
        labels = graph.superpixels.reshape(graph.mask.shape[-2:]).flatten().tolist()
        mask = graph.mask.flatten().tolist()
        gates = sorted({s for s, m in zip(labels, mask, strict=True)
                        if m in (WARM_GATE, COLD_GATE)})
        beacons = {s for s, m in zip(labels, mask, strict=True) if m == BEACON}
        assert gates and beacons
        # Gates last: the others, then the gates, each group in the order of a
        # uniform draw seeded by `seed` (largest first); gates first reverses it.
        noise = torch.rand(num, generator=torch.Generator().manual_seed(5)).tolist()
        by_noise = sorted(range(num), key=lambda v: -noise[v])
        last = [v for v in by_noise if v not in gates] + [v for v in by_noise if v in gates]
        permutation = torch.randperm(num, generator=torch.Generator().manual_seed(5)).tolist()
        x, y = graph.pos[:, 0].tolist(), graph.pos[:, 1].tolist()
        orders = {"gates last": last, "gates first": last[::-1],
                  "random": sorted(range(num), key=lambda v: -permutation[v]),
                  "raster": sorted(range(num), key=lambda v: (round(y[v]), x[v], v))}
        for name, order in orders.items():
            for layers in (1, 2):
                reach = reach_reference(graph.edge_index, num, gates, torch.tensor(order),
                                        num_layers=layers)
                hits = sum(any(row[b] for b in beacons) for row in reach.tolist())
                expected[name][layers - 1][0] += hits
                expected[name][layers - 1][1] += len(gates)
    for name, counts in expected.items():
        assert rates[name] == [hits / total for hits, total in counts], name
    # Gates first: in one layer a gate reads only gates updated before it.
    assert rates["gates first"][0] == 0.0
    assert all(0.0 < rates[name][1] < 1.0 for name in rates)
