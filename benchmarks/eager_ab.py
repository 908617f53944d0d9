"""Interleaved A/B of the Graph LSTM's eager CPU path between checkouts of the repository.

Run ``python benchmarks/eager_ab.py LABEL=PATH [LABEL=PATH ...]`` (``--help`` for the
options), e.g. ``old=/tmp/old now=.`` with ``git worktree add /tmp/old <commit>``. Every
checkout runs in a process of its own (its ``graphlstm`` first on the path, one thread),
on the same SLIC graph and inputs, made here. Each round asks every process, in a
rotating order, for the median of ``--repeats`` calls of each case, in thread CPU time
(which a busy machine inflates less than the wall clock); the table gives the median
over the rounds and, per checkout, the median over the rounds of its ratio to the
first one. The cases:

- ``schedule``: ``build_schedule(edge_index, n, score=score)``;
- ``no state``: ``GraphLSTM(H, H)(x, edge_index, order=order)``, schedule built in the
  call, without autograd;
- ``fwd+bwd``: the layer with a previous state and the schedule given, forward and
  backward (the ``fwd+bwd`` case of ``benchmark.py graph-lstm``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

WORKER = r'''
import statistics, sys, time
import torch
torch.set_num_threads(1)
from graphlstm import GraphLSTM, build_schedule

data = torch.load(sys.argv[1])
x, edge_index, score, state = data["x"], data["edge_index"], data["score"], data["state"]
n = x.size(0)
torch.manual_seed(0)
layer = GraphLSTM(x.size(1), x.size(1))
schedule = build_schedule(edge_index, n, score=score)
order = schedule.order


def schedule_only():
    with torch.no_grad():
        build_schedule(edge_index, n, score=score)


def no_state():
    with torch.no_grad():
        layer(x, edge_index, order=order)


def forward_backward():
    out, (_, m) = layer(x.clone().requires_grad_(), edge_index, schedule=schedule, state=state)
    (out.sum() + m.sum()).backward()


cases = {"schedule": schedule_only, "no state": no_state, "fwd+bwd": forward_backward}
for fn in cases.values():  # warm-up: numba's compilation or cache, torch's first calls
    for _ in range(3):
        fn()
print("ready", flush=True)
for line in sys.stdin:
    repeats = int(line)
    medians = []
    for fn in cases.values():
        times = []
        for _ in range(repeats):
            start = time.thread_time()
            fn()
            times.append(time.thread_time() - start)
        medians.append(statistics.median(times))
    print(" ".join(f"{t:.9f}" for t in medians), flush=True)
'''

CASES = ("schedule", "no state", "fwd+bwd")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", metavar="LABEL=PATH",
                        help="checkouts of the repository to compare; the first is the base")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=20, help="calls per case and round")
    parser.add_argument("--segments", type=int, default=1000, help="SLIC n_segments")
    parser.add_argument("--image", default="astronaut")
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args(argv)
    checkouts = []
    for item in args.checkouts:
        label, sep, path = item.partition("=")
        if not sep or not os.path.isdir(os.path.join(path, "graphlstm")):
            parser.error(f"checkouts: expected LABEL=PATH of a checkout, got {item!r}")
        checkouts.append((label, os.path.abspath(path)))

    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.layers.graph_lstm import sample_graph

    g = sample_graph(args.segments, image=args.image)
    n, hidden = g.num_nodes, args.hidden
    gen = torch.Generator().manual_seed(0)
    data = dict(x=torch.randn(n, hidden, generator=gen), edge_index=g.edge_index,
                score=g.score, state=(0.5 * torch.randn(n, hidden, generator=gen),
                                      0.5 * torch.randn(n, hidden, generator=gen)))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "graph.pt")
        torch.save(data, path)
        workers = []
        for _, root in checkouts:
            env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            workers.append(subprocess.Popen([sys.executable, "-c", WORKER, path], cwd=root,
                                            env=env, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True))
        try:
            for worker in workers:
                if worker.stdout.readline().strip() != "ready":
                    raise RuntimeError("a worker failed to start")
            results = [[] for _ in workers]
            for r in range(args.rounds):
                for k in range(len(workers)):
                    i = (r + k) % len(workers)
                    workers[i].stdin.write(f"{args.repeats}\n")
                    workers[i].stdin.flush()
                    results[i].append([float(t) for t in workers[i].stdout.readline().split()])
        finally:
            for worker in workers:
                worker.stdin.close()
                worker.wait()

    print(f"SLIC graph of {args.image}, n_segments={args.segments}: {n} nodes, "
          f"{g.edge_index.size(1)} edges; H={hidden}; 1 thread; {args.rounds} rounds of "
          f"{args.repeats} calls; median ms (thread CPU time), ratio to {checkouts[0][0]}")
    print("| checkout | " + " | ".join(CASES) + " |")
    print("|---|" + "---|" * len(CASES))
    base = results[0]
    for (label, _), rounds in zip(checkouts, results, strict=True):
        cells = []
        for c in range(len(CASES)):
            ms = 1e3 * statistics.median(row[c] for row in rounds)
            ratio = statistics.median(row[c] / b[c] for row, b in zip(rounds, base, strict=True))
            cells.append(f"{ms:.3f} (×{ratio:.3f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
