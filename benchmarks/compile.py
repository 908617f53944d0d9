"""Eager against ``torch.compile``: the Graph LSTM layer, a training step of the
segmentation model, and the recompiles over batches of changing size.

Run ``python benchmarks/compile.py`` (``--help`` for the options). Prints one
table; the figures of docs/compile.md come from it. Each timing is the median
CPU time of the process over ``--repeats`` calls after the warm-up (which,
compiled, includes the compilation); compile times (wall clock) are printed on
their own.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from graphlstm import GraphLSTM  # noqa: E402
from segmentation import (  # noqa: E402
    GraphLSTMSegmenter,
    ModelConfig,
    SuperpixelGraph,
    SyntheticScenes,
    pad_collate,
)
from segmentation.data.datasets import SYNTHETIC_CLASSES  # noqa: E402
from segmentation.models.segmenter import segmentation_loss  # noqa: E402


def _graphs(count: int, size: int, n_segments: int, seed: int) -> list:
    scenes = SyntheticScenes(count, size=(size, size), seed=seed)
    transform = SuperpixelGraph(n_segments=n_segments, add_features=False)
    return [transform(scenes[i]) for i in range(count)]


def _median_ms(fn, repeats: int) -> float:
    # CPU time of the process, which other processes on a busy machine do not
    # inflate (the wall clock does); on CUDA, the wall clock after a synchronisation.
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    clock = time.perf_counter if cuda else time.process_time
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(clock() - start)
    return 1e3 * statistics.median(times)


def _timed_first(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class TwoLayers(torch.nn.Module):
    """Two Graph LSTM layers as in the segmentation model: the second starts from the
    first's state (the gated loop), both in one confidence order."""

    def __init__(self, hidden: int):
        super().__init__()
        self.first = GraphLSTM(hidden, hidden)
        self.second = GraphLSTM(hidden, hidden)

    def forward(self, x, edge_index, score):
        out, state = self.first(x, edge_index, score=score)
        return self.second(out, edge_index, score=score, state=state)[0] + out


def bench_layer(graph, hidden: int, repeats: int) -> dict:
    n = graph.num_nodes
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, hidden, generator=gen, requires_grad=True)
    score = torch.rand(n, generator=gen)
    torch.manual_seed(0)
    model = TwoLayers(hidden)
    compiled = torch.compile(model)
    result = {"nodes": n, "edges": graph.edge_index.size(1)}
    for name, run in (("eager", model), ("compiled", compiled)):
        def step(run=run):
            run(x, graph.edge_index, score).square().mean().backward()

        result[f"{name}_first_s"] = _timed_first(step)
        step()
        result[f"{name}_ms"] = _median_ms(step, repeats)
    return result


def _train_step(model, optimizer, batch):
    out = model(batch.image, batch.superpixels, batch.edge_index, batch.ptr.diff(), batch.pos)
    loss = segmentation_loss(out, batch.mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def bench_train_step(graphs, batch_size: int, repeats: int, num_batches: int) -> dict:
    torch.manual_seed(0)
    config = ModelConfig(num_classes=len(SYNTHETIC_CLASSES), n_segments=graphs[0].num_nodes)
    batches = [pad_collate(graphs[i:i + batch_size])
               for i in range(0, batch_size * num_batches, batch_size)]
    result = {"batch_nodes": [int(b.num_nodes) for b in batches]}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = GraphLSTMSegmenter(config)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        torch._dynamo.reset()
        run = torch.compile(model) if name == "compiled" else model
        graphs_after, seconds = [], []
        for batch in batches:  # every batch has another number of superpixels
            seconds.append(_timed_first(functools.partial(_train_step, run, optimizer, batch)))
            graphs_after.append(_unique_graphs())
        result[f"{name}_ms"] = _median_ms(
            functools.partial(_train_step, run, optimizer, batches[-1]), repeats)
        result[f"{name}_batch_s"] = seconds
        if name == "compiled":
            # Graphs compiled by the first batch, and by all of them: each graph of
            # the first batch compiled again (with dynamic sizes) is one recompile.
            result["graphs_first_batch"] = graphs_after[0]
            result["graphs_all_batches"] = graphs_after[-1]
            result["recompiled_at_second"] = graphs_after[min(1, len(graphs_after) - 1)] - (
                graphs_after[0])
            result["compiled_after_second"] = graphs_after[-1] - graphs_after[
                min(1, len(graphs_after) - 1)]
            result["graphs_per_batch"] = graphs_after
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (median)")
    parser.add_argument("--size", type=int, default=321, help="image side in pixels")
    parser.add_argument("--n-segments", type=int, default=1000, help="SLIC superpixels")
    parser.add_argument("--hidden", type=int, default=64, help="Graph LSTM hidden size")
    parser.add_argument("--batch-size", type=int, default=2, help="images per training batch")
    parser.add_argument("--batches", type=int, default=10,
                        help="batches of changing size for the recompile count")
    args = parser.parse_args(argv)
    for name in ("threads", "repeats", "size", "n_segments", "hidden", "batch_size", "batches"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    graphs = _graphs(args.batch_size * args.batches, args.size, args.n_segments, seed=0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"median ms of forward+backward (compile time apart)")
    layer = bench_layer(graphs[0], args.hidden, args.repeats)
    print(f"layer: two GraphLSTM({args.hidden}, {args.hidden}) (the second with a state), "
          f"{layer['nodes']} nodes, {layer['edges']} edges")
    print(f"  eager {layer['eager_ms']:.2f} ms, compiled {layer['compiled_ms']:.2f} ms "
          f"(x{layer['eager_ms'] / layer['compiled_ms']:.2f}); first compiled call "
          f"{layer['compiled_first_s']:.1f} s")

    train = bench_train_step(graphs, args.batch_size, args.repeats, args.batches)
    print(f"training step: GraphLSTMSegmenter (small backbone), {args.batch_size} images of "
          f"{args.size}^2, superpixels per batch {train['batch_nodes']}")
    print(f"  eager {train['eager_ms']:.1f} ms, compiled {train['compiled_ms']:.1f} ms "
          f"(x{train['eager_ms'] / train['compiled_ms']:.2f})")
    print(f"  compiled, seconds per batch: "
          f"{', '.join(f'{s:.1f}' for s in train['compiled_batch_s'])}")
    print(f"  graphs compiled after each batch: {train['graphs_per_batch']}: the first batch "
          f"compiles {train['graphs_first_batch']}, the second recompiles "
          f"{train['recompiled_at_second']} of them once with dynamic sizes, the other "
          f"{args.batches - 2} batches compile {train['compiled_after_second']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
