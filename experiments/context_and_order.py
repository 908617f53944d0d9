"""Does context help, and does the update order matter? Graph LSTM models against the baseline.

``python -m experiments.run`` trains each configuration with the same
budget and seeds, picks the best epoch on validation scenes, and reports the
test mean IoU and the mean IoU of the *ambiguous* classes (those that only
context can tell apart) on held-out scenes: per seed, mean ± standard
deviation, and paired differences (per seed, one configuration minus
another, then mean ± standard deviation over seeds).

Configurations (:data:`CONFIGURATIONS`): ``no-graph-lstm`` (the same
pipeline without the Graph LSTM), and ``graph-lstm-ORDER`` (two layers, the
model's default) and ``graph-lstm-ORDER-1-layer`` for the orders
``confidence``, ``reverse-confidence`` (least confident first), ``random``
and ``raster``; ``evolving`` and ``evolving-clique``: two layers of the
structure-evolving Graph LSTM (:mod:`segmentation.models.evolving`; one
Metropolis-Hastings test per image, or per merged region).

Scene families (:data:`SCENE_KINDS`): ``street``
(:class:`segmentation.data.datasets.SyntheticScenes`: the context of a window or
a disc is next to it) and ``long-range``
(:class:`segmentation.data.datasets.LongRangeScenes`: a gate's class is told by
a beacon at least ``min_hops`` superpixels away).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from segmentation.data.datasets import (
    LONG_RANGE_CLASSES,
    SYNTHETIC_CLASSES,
    LongRangeScenes,
    SyntheticScenes,
)
from segmentation.data.images import atomic_write
from segmentation.engine.checkpoint import load_checkpoint, model_from_checkpoint
from segmentation.engine.evaluate import evaluate
from segmentation.engine.train import TrainConfig, build_graphs, train
from segmentation.models.segmenter import ModelConfig

__all__ = [
    "CONFIGURATIONS",
    "EXPERIMENT_ORDERS",
    "SCENE_KINDS",
    "SceneKind",
    "context_experiment",
    "format_differences",
    "format_table",
    "model_cue_in_reach",
    "oracle_cue_in_reach",
    "standard_comparisons",
]

#: Orders compared by the experiment.
EXPERIMENT_ORDERS = ("confidence", "reverse-confidence", "random", "raster")


def _configurations() -> dict[str, dict]:
    configs = {}
    for order in EXPERIMENT_ORDERS:
        configs[f"graph-lstm-{order}"] = dict(graph_layers=2, order=order)
    for order in EXPERIMENT_ORDERS:
        configs[f"graph-lstm-{order}-1-layer"] = dict(graph_layers=1, order=order)
    configs["no-graph-lstm"] = dict(graph_layers=0, order="confidence")
    configs["evolving"] = dict(graph_layers=2, order="confidence", graph_model="evolving",
                               acceptance="graph")
    configs["evolving-clique"] = dict(graph_layers=2, order="confidence",
                                      graph_model="evolving", acceptance="clique")
    return configs


#: Model settings of every configuration (the rest is :class:`ModelConfig`'s default).
CONFIGURATIONS: dict[str, dict] = _configurations()


@dataclass(frozen=True)
class SceneKind:
    """A family of procedural scenes: how to draw them and which classes are ambiguous."""

    scenes: Callable[..., Sequence]  # (count, seed=, **options) -> scenes
    class_names: tuple[str, ...]
    ambiguous: tuple[str, ...]  # classes told apart by context only


SCENE_KINDS: dict[str, SceneKind] = {
    "street": SceneKind(SyntheticScenes, SYNTHETIC_CLASSES, ("window", "sign", "disc", "bar")),
    "long-range": SceneKind(LongRangeScenes, LONG_RANGE_CLASSES, ("warm gate", "cold gate")),
}

# Validation and test scenes come from seed streams used for nothing else. The
# street scenes' validation offset is the one of scripts/train.py --synthetic.
_VAL_OFFSET = 1_000_003
_TEST_SEED = 7_000_001


def _scenes(kind: str, count: int, seed: int, min_hops: int, n_segments: int):
    # Long-range scenes count their hops on the SLIC graphs the training builds.
    options = {"min_hops": min_hops, "n_segments": n_segments} if kind == "long-range" else {}
    return SCENE_KINDS[kind].scenes(count, seed=seed, **options)


def context_experiment(
    names: Sequence[str] = tuple(CONFIGURATIONS),
    seeds: Sequence[int] = (0, 1, 2),
    scenes: int = 200,
    test_scenes: int = 64,
    epochs: int = 10,
    n_segments: int = 150,
    scene_kind: str = "street",
    min_hops: int = 4,
    results_path: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[dict]]:
    """Test scores of every configuration for every seed.

    Parameters
    ----------
    names : sequence of str
        Keys of :data:`CONFIGURATIONS`.
    seeds : sequence of int
        One training per configuration and seed; the seed draws the training
        and validation scenes and initialises the model.
    scenes, test_scenes, epochs, n_segments
        Training scenes (validation: a quarter as many, at least 8), test
        scenes (the same for every seed), epochs, SLIC superpixels.
    scene_kind : {"street", "long-range"}
    min_hops : int
        Beacon-gate distance of the long-range scenes.
    results_path : path, optional
        A JSON file that keeps every finished training (written atomically
        after each); a run started again with the same file skips them.
    log : callable

    Returns
    -------
    dict
        ``{name: [{"seed", "miou", "ambiguous_iou", "per_class_iou",
        "best_epoch"}, ...]}``, one entry per seed, in seed order.
    """
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        raise ValueError(f"unknown configuration {unknown[0]!r}; "
                         f"choose from {', '.join(CONFIGURATIONS)}")
    if scene_kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {scene_kind!r}; "
                         f"choose from {', '.join(SCENE_KINDS)}")
    kind = SCENE_KINDS[scene_kind]
    settings = dict(scene_kind=scene_kind, scenes=scenes, test_scenes=test_scenes,
                    epochs=epochs, n_segments=n_segments,
                    min_hops=min_hops if scene_kind == "long-range" else None)
    done = _load_results(results_path, settings)
    test_graphs = None
    results: dict[str, list[dict]] = {n: [] for n in names}
    for seed in seeds:
        todo = [n for n in names if (n, seed) not in done]
        train_graphs = val_graphs = None
        if todo:
            if test_graphs is None:
                test_graphs = build_graphs(
                    _scenes(scene_kind, test_scenes, _TEST_SEED, min_hops, n_segments), n_segments)
            train_graphs = build_graphs(_scenes(scene_kind, scenes, seed, min_hops, n_segments),
                                        n_segments)
            val_graphs = build_graphs(
                _scenes(scene_kind, max(8, scenes // 4), seed + _VAL_OFFSET, min_hops, n_segments),
                n_segments)
        for name in names:
            if (name, seed) in done:
                entry = done[(name, seed)]
            else:
                config = ModelConfig(num_classes=len(kind.class_names), n_segments=n_segments,
                                     **CONFIGURATIONS[name])
                with tempfile.TemporaryDirectory() as out:
                    history = train(config, TrainConfig(epochs=epochs, seed=seed), train_graphs,
                                    val_graphs, out, kind.class_names, progress=False,
                                    log=lambda line: None)
                    model = model_from_checkpoint(load_checkpoint(Path(out) / "best.pt"))
                scores = evaluate(model, test_graphs, class_names=kind.class_names)
                per_class = scores["per_class_iou"]
                ambiguous = [per_class[c] for c in kind.ambiguous if per_class[c] is not None]
                entry = {"seed": seed, "miou": scores["miou"],
                         "ambiguous_iou": statistics.mean(ambiguous) if ambiguous else math.nan,
                         "per_class_iou": per_class, "best_epoch": history["best_epoch"]}
                if scene_kind == "long-range":
                    entry["cue_in_reach"] = model_cue_in_reach(model, test_graphs)
                done[(name, seed)] = entry
                _save_results(results_path, settings, done)
            results[name].append(entry)
            log(f"{scene_kind:<10s} seed {seed}  {name:<36s} test mIoU "
                f"{100 * entry['miou']:6.2f}  ambiguous {100 * entry['ambiguous_iou']:6.2f}")
    return results


def model_cue_in_reach(model, graphs) -> float:
    """The share of gate superpixels of long-range ``graphs`` whose reach, through the
    model's layers in the order the model itself chooses, holds a beacon superpixel
    (0 without Graph LSTM layers: a gate then sees only itself)."""
    import torch
    from torch_geometric.data import Batch

    from segmentation.analysis.reach import cue_in_reach
    from segmentation.data.datasets.long_range import BEACON, COLD_GATE, WARM_GATE

    layers = model.config.graph_layers
    if layers == 0:
        return 0.0
    if model.config.graph_model == "evolving":
        from segmentation.models.evolving import evolving_cue_in_reach

        return evolving_cue_in_reach(model, graphs, (BEACON,), (WARM_GATE, COLD_GATE))
    generator = torch.Generator().manual_seed(0)  # as in evaluate(): order="random" repeats

    @torch.no_grad()
    def score(graph):
        return model.forward_batch(Batch.from_data_list([graph]), generator).node_score

    return cue_in_reach(graphs, score, layers, (BEACON,), (WARM_GATE, COLD_GATE))


def oracle_cue_in_reach(test_scenes: int = 64, n_segments: int = 150, min_hops: int = 4,
                        seed: int = 0) -> dict[str, list[float]]:
    """How often each order *could* bring the beacon to a gate, without a model.

    On the long-range test scenes: the share of gate superpixels whose reach
    (1 and 2 layers) holds a beacon superpixel, for ``gates last`` (every gate
    superpixel after all others, which are in random order: what a perfect
    confidence gives when all the rest is equally confident), ``gates first``
    (its reverse), ``random`` and ``raster``.

    Returns
    -------
    dict
        ``{order: [rate with 1 layer, rate with 2 layers]}``.
    """
    import torch

    from segmentation.analysis.reach import cue_in_reach
    from segmentation.data.datasets.long_range import BEACON, COLD_GATE, WARM_GATE
    from segmentation.models.orders import random_score, raster_score

    graphs = build_graphs(_scenes("long-range", test_scenes, _TEST_SEED, min_hops, n_segments),
                          n_segments)

    def gates_last(graph, sign=1.0):
        labels = graph.superpixels.reshape(graph.mask.shape[-2:])
        gate = torch.zeros(int(graph.num_nodes), dtype=torch.bool)
        gate[torch.unique(labels[graph.mask.reshape(labels.shape) >= WARM_GATE])] = True
        noise = torch.rand(gate.numel(), generator=torch.Generator().manual_seed(seed))
        return sign * ((~gate).double() + 0.5 * noise.double())

    orders = {
        "gates last": gates_last,
        "gates first": lambda g: gates_last(g, -1.0),
        "random": lambda g: random_score(int(g.num_nodes), torch.Generator().manual_seed(seed)),
        "raster": lambda g: raster_score(g.pos, g.superpixels.shape[-1]),
    }
    return {name: [cue_in_reach(graphs, fn, layers, (BEACON,), (WARM_GATE, COLD_GATE))
                   for layers in (1, 2)] for name, fn in orders.items()}


def _load_results(path, settings: dict) -> dict:
    if path is None or not Path(path).is_file():
        return {}
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"results file {str(path)!r} cannot be read: {err}") from err
    if not isinstance(payload, dict) or payload.get("settings") != settings:
        raise ValueError(
            f"results file {str(path)!r} holds another experiment "
            f"({payload.get('settings') if isinstance(payload, dict) else payload!r}); "
            f"use another file for {settings}"
        )
    return {(e["name"], e["seed"]): e["scores"] for e in payload["runs"]}


def _save_results(path, settings: dict, done: dict) -> None:
    if path is None:
        return
    runs = [{"name": name, "seed": seed, "scores": scores}
            for (name, seed), scores in done.items()]
    text = json.dumps({"settings": settings, "runs": runs}, indent=1)
    atomic_write(path, lambda handle: handle.write(text.encode()))


def _points(results: dict[str, list[dict]], name: str, metric: str) -> list[float]:
    return [100 * entry[metric] for entry in results[name]]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_table(results: dict[str, list[dict]], metric: str = "miou") -> str:
    """A markdown table of one metric (``"miou"`` or ``"ambiguous_iou"``), in points:
    per seed, mean and standard deviation."""
    seeds = [entry["seed"] for entry in next(iter(results.values()))]
    lines = ["| configuration | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |",
             "|---" * (len(seeds) + 3) + "|"]
    for name in results:
        pts = _points(results, name, metric)
        mean, std = _mean_std(pts)
        lines.append(f"| {name} | " + " | ".join(f"{p:.2f}" for p in pts)
                     + f" | **{mean:.2f}** | {std:.2f} |")
    return "\n".join(lines)


def standard_comparisons(names: Sequence[str]) -> list[tuple[str, str]]:
    """The paired comparisons among ``names``: every Graph LSTM configuration against
    the baseline, the confidence order against every other order (same depth), and
    two layers against one (same order)."""
    pairs = []
    names = list(names)
    for name in names:
        if name != "no-graph-lstm" and "no-graph-lstm" in names:
            pairs.append((name, "no-graph-lstm"))
    for suffix in ("", "-1-layer"):
        first = f"graph-lstm-confidence{suffix}"
        for order in EXPERIMENT_ORDERS[1:]:
            other = f"graph-lstm-{order}{suffix}"
            if first in names and other in names:
                pairs.append((first, other))
    for order in EXPERIMENT_ORDERS:
        two, one = f"graph-lstm-{order}", f"graph-lstm-{order}-1-layer"
        if two in names and one in names:
            pairs.append((two, one))
    for evolving in ("evolving", "evolving-clique"):
        if evolving in names and "graph-lstm-confidence" in names:
            pairs.append((evolving, "graph-lstm-confidence"))
    return pairs


def format_differences(results: dict[str, list[dict]], pairs: Sequence[tuple[str, str]],
                       metric: str = "miou") -> str:
    """Paired differences ``a − b`` of one metric, per seed, with mean and standard
    deviation over seeds, and how many seeds ``a`` wins (a markdown table)."""
    if not pairs:
        return ""
    seeds = [entry["seed"] for entry in results[pairs[0][0]]]
    lines = ["| a − b | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | std | a ahead |", "|---" * (len(seeds) + 4) + "|"]
    for a, b in pairs:
        diffs = [x - y for x, y in zip(_points(results, a, metric), _points(results, b, metric),
                                       strict=True)]
        mean, std = _mean_std(diffs)
        wins = sum(d > 0 for d in diffs)
        lines.append(f"| {a} − {b} | " + " | ".join(f"{d:+.2f}" for d in diffs)
                     + f" | **{mean:+.2f}** | {std:.2f} | {wins}/{len(diffs)} |")
    return "\n".join(lines)
