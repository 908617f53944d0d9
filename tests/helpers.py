"""Small helpers shared by the tests."""

import importlib
from pathlib import Path

import torch

from graphlstm.functional import graph_lstm_gated_recurrence
from graphlstm.schedule import build_schedule

DT = torch.float64


def flat_tensors(out) -> tuple:
    """Flatten nested ``(tensor, (tensor, ...))`` results, e.g. for gradcheck."""
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(t for o in out if o is not None for t in flat_tensors(o))


def gated_graph(seed, n=30):
    """The graph of :func:`gated_case`: ``(edge_index, order, generator)``, the
    generator positioned where the case draws its tensors."""
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n - 3, (2, 3 * n), generator=gen)
    edge_index = torch.cat([edge_index, edge_index[:, :n]], 1)
    return edge_index, torch.randperm(n, generator=gen), gen


def gated_case(seed, n=30, hidden=3):
    """Random inputs of the gated recurrence on a directed graph with duplicate edges,
    self-loops (dropped by the schedule) and isolated nodes, with random edge scales."""
    edge_index, order, gen = gated_graph(seed, n)
    sched = build_schedule(edge_index, n, order=order)
    e_v, e_u = sched.visited_src_pos.numel(), sched.unvisited_eid.numel()

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=DT) * scale).requires_grad_()

    tensors = dict(
        pre=rand(n, 4 * hidden), from_h=rand(n, 5 * hidden), h=rand(n, hidden),
        m=rand(n, hidden), weight_n=rand(3 * hidden, hidden, scale=0.5),
        visited_scale=(torch.rand(e_v, generator=gen, dtype=DT) + 0.1).requires_grad_(),
        unvisited_scale=(torch.rand(e_u, generator=gen, dtype=DT) + 0.1).requires_grad_(),
    )
    return sched, tensors


def run_gated(sched, t):
    return graph_lstm_gated_recurrence(
        t["pre"], t["from_h"], t["h"], t["m"], t["weight_n"], sched, t["visited_scale"],
        t["unvisited_scale"],
    )


# --------------------------------------------------------------------------- programs

#: The repository's root folder (scripts/, benchmarks/, experiments/ are in it).
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
#: Programs whose main() is not in segmentation.cli.<name>.
_PROGRAMS = {"experiment": "experiments.run", "benchmark": "benchmarks.run",
             "bench_data": "benchmarks.data.loading_cli"}


def program(name: str):
    """The module of a command-line program: ``segmentation.cli.<name>`` or one of
    the repository's benchmark and experiment programs."""
    return importlib.import_module(_PROGRAMS.get(name, f"segmentation.cli.{name}"))


def run(name: str, argv) -> int:
    """A program's ``main(argv)`` in-process, through the scripts' error handling."""
    from segmentation.cli._common import run_main

    module = program(name)
    try:
        return run_main(lambda: module.main(argv))
    except SystemExit as stop:  # argparse
        return stop.code


def run_captured(capsys, name: str, *args) -> tuple[int, str, str]:
    """:func:`run` with the arguments as strings: the exit code, stdout and stderr."""
    code = run(name, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# Runs script files as the interpreter would, with ``--help``, one after the other
# in one process (the imports, seconds each, are shared).
_HELP_OF_SCRIPTS = """
import contextlib, io, json, runpy, sys
import segmentation.cli
results = {"module": segmentation.cli.__file__}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        try:
            runpy.run_path(script, run_name="__main__")
            code = None
        except SystemExit as stop:
            code = stop.code
    results[script] = [code, stdout.getvalue()]
print(json.dumps(results))
"""


def help_of_scripts(scripts, **options) -> dict:
    """``{script: [exit code, stdout]}`` of every script file run with ``--help`` in one
    fresh interpreter, plus ``"module"``: the file ``segmentation.cli`` came from.
    ``options`` go to ``subprocess.run`` (``cwd``, ``env``)."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _HELP_OF_SCRIPTS, *map(str, scripts)],
                            capture_output=True, text=True, timeout=600, **options)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


# --------------------------------------------------------------------------- orders and levels


def touching_pairs(labels) -> set:
    """Pairs ``(a, b)`` of labels whose pixels touch horizontally or vertically, both ways."""
    import numpy as np

    labels = np.asarray(labels)
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        for u, v in zip(a[differ].tolist(), b[differ].tolist(), strict=True):
            pairs.update({(u, v), (v, u)})
    return pairs


def levels_of_order(order, pairs, num) -> list:
    """Level of each node of an update order, by a plain loop over the order: one
    more than the latest level among its neighbours (``pairs``, both ways) updated
    before it, 0 for a node with none."""
    rank = {int(v): k for k, v in enumerate(order)}
    assert sorted(rank) == list(range(num))
    neighbours = {v: [] for v in range(num)}
    for a, b in pairs:
        if a != b:
            neighbours[int(b)].append(int(a))
    level = [0] * num
    for v in (int(v) for v in order):
        level[v] = 1 + max((level[u] for u in neighbours[v] if rank[u] < rank[v]), default=-1)
    return level


def order_by_score(score) -> list:
    """Nodes by descending score, ties to the smaller index, by Python's sort."""
    score = [float(s) for s in score]
    return sorted(range(len(score)), key=lambda v: (-score[v], v))


def segment_means(labels, values):
    """Mean of ``values`` over each label of ``labels`` (numpy, float64)."""
    import numpy as np

    labels, values = np.asarray(labels).ravel(), np.asarray(values, dtype=np.float64).ravel()
    num = int(labels.max()) + 1
    return np.bincount(labels, values, num) / np.bincount(labels, minlength=num)


def record_saved_figures(monkeypatch) -> list:
    """Every matplotlib ``Figure`` saved from now on (``Figure.savefig``), in order, as
    ``(figure, bytes written)`` (the bytes when it was saved to a buffer)."""
    from matplotlib.figure import Figure

    saved = []
    savefig = Figure.savefig

    def recording(self, fname, *args, **kwargs):
        result = savefig(self, fname, *args, **kwargs)
        saved.append((self, fname.getvalue() if hasattr(fname, "getvalue") else None))
        return result

    monkeypatch.setattr(Figure, "savefig", recording)
    return saved


def png_pixels(path):
    """The RGB pixels of a PNG file or bytes (asserting that it is a PNG)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as png:
        assert png.format == "PNG"
        return np.asarray(png.convert("RGB"))


def saved_figure(path, saved, fig=None):
    """The one figure of ``saved`` (:func:`record_saved_figures`), or ``fig``, whose
    rendering the PNG file ``path`` holds: pixel for pixel the bytes of its save,
    and close to the figure as it is now, drawn again (constrained layout may move
    an axis by a pixel, a few percent of the pixels; a file saved before the figure
    was finished differs in far more)."""
    import io

    entries = [(f, data) for f, data in saved if fig is None or f is fig]
    assert len(entries) == 1, f"{len(entries)} figures saved"
    figure, data = entries[0]
    assert data is not None
    expected, got = png_pixels(data), png_pixels(path)
    assert got.shape == expected.shape and (got == expected).all(), f"{path} is not the figure"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    now = png_pixels(buffer.getvalue())
    assert now.shape == got.shape, f"{path} was saved before the figure was finished"
    differing = (now != got).any(axis=2).mean()
    assert differing < 0.1, f"{path} was saved before the figure was finished ({differing:.0%})"
    return figure


def recurrence_op_args(per_node, with_m, with_scale, seed=0) -> tuple:
    """Arguments of ``torch.ops.graphlstm.recurrence`` on a random graph (float64,
    the floating ones requiring gradients)."""
    gen = torch.Generator().manual_seed(seed)
    n, hidden = 25, 3
    edge_index = torch.randint(0, n, (2, 70), generator=gen)
    sched = build_schedule(edge_index, n, order=torch.randperm(n, generator=gen))
    e_v = sched.visited_src_pos.numel()

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=DT).requires_grad_()

    weight = rand(n if per_node else e_v, 2 * hidden)
    return (rand(n, 3 * hidden), rand(n, hidden) if with_m else None, weight,
            rand(3 * hidden, hidden), rand(e_v) if with_scale else None, sched.offsets[0],
            sched.offsets[1], sched.visited_src_pos, sched.visited_dst_local, per_node)


def gated_recurrence_op_args() -> tuple:
    """Arguments of ``torch.ops.graphlstm.gated_recurrence`` for :func:`gated_case`."""
    sched, t = gated_case(0, n=20, hidden=2)
    return (*t.values(), sched.perm, sched.offsets[0], sched.offsets[1],
            sched.visited_src_pos, sched.visited_dst_local, sched.unvisited_edge_index_pos)
