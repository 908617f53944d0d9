"""Context experiment: Graph LSTM (1 or 2 layers, four update orders) vs no Graph LSTM.

Same training budget and seeds for every configuration, on procedural street
scenes and on long-range scenes (a gate's class is told by a beacon several
superpixels away); test mIoU and the mIoU of the ambiguous classes on
held-out scenes, per seed, mean ± std, and paired differences, as markdown.

Examples::

    python -m experiments.run                                  # everything (~54 trainings)
    python -m experiments.run --scenes-kind long-range --configs graph-lstm-confidence \\
        graph-lstm-random no-graph-lstm --seeds 0 1
    python -m experiments.run --out runs/experiment            # keep results; rerun resumes

With --out DIR, every finished training is kept in DIR/KIND.json (a rerun
with the same settings skips it) and the tables go to DIR/KIND.md.
"""

from __future__ import annotations

import os
import sys

from segmentation.cli._common import (
    ArgumentParser,
    CLIError,
    non_negative_int,
    positive_int,
    run_main,
)

KINDS = ("street", "long-range")


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=None, metavar="NAME",
                        help="configurations (default: all): no-graph-lstm, "
                             "graph-lstm-ORDER and graph-lstm-ORDER-1-layer for ORDER in "
                             "confidence, reverse-confidence, random, raster; evolving, "
                             "evolving-clique")
    parser.add_argument("--scenes-kind", nargs="+", choices=KINDS, default=list(KINDS),
                        help="scene families (default: both)")
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, default=[0, 1, 2])
    parser.add_argument("--scenes", type=positive_int, default=200, help="training scenes")
    parser.add_argument("--test-scenes", type=positive_int, default=64)
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--n-segments", type=positive_int, default=150)
    parser.add_argument("--min-hops", type=positive_int, default=4,
                        help="beacon-gate distance of the long-range scenes, in superpixels")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--out", metavar="DIR", help="keep results (KIND.json) and tables here")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise CLIError(f"--seeds repeats a seed: {args.seeds}")
    if args.out is not None and not os.path.isdir(args.out):
        raise CLIError(f"--out {args.out!r} is not a folder")

    import torch

    from experiments.context_and_order import (
        CONFIGURATIONS,
        context_experiment,
        format_differences,
        format_table,
        oracle_cue_in_reach,
        standard_comparisons,
    )
    from segmentation.data.images import atomic_write

    names = args.configs if args.configs is not None else list(CONFIGURATIONS)
    unknown = [n for n in names if n not in CONFIGURATIONS]
    if unknown:
        raise CLIError(f"unknown configuration {unknown[0]!r}; "
                       f"choose from {', '.join(CONFIGURATIONS)}")
    torch.set_num_threads(args.threads)
    for kind in args.scenes_kind:
        results_path = None if args.out is None else os.path.join(args.out, f"{kind}.json")
        results = context_experiment(names, args.seeds, args.scenes, args.test_scenes,
                                     args.epochs, args.n_segments, kind, args.min_hops,
                                     results_path=results_path,
                                     log=lambda line: print(line, flush=True))
        pairs = standard_comparisons(names)
        parts = [
            f"### {kind} scenes: test mIoU",
            format_table(results, "miou"),
            f"### {kind} scenes: mean IoU of the ambiguous classes",
            format_table(results, "ambiguous_iou"),
            f"### {kind} scenes: paired differences of test mIoU (points)",
            format_differences(results, pairs, "miou"),
            f"### {kind} scenes: paired differences of the ambiguous classes' IoU (points)",
            format_differences(results, pairs, "ambiguous_iou"),
        ]
        if kind == "long-range":
            if all("cue_in_reach" in e for entries in results.values() for e in entries):
                parts += ["### long-range scenes: gate superpixels with the beacon in their "
                          "reach, in the trained model's own order (%)",
                          format_table(results, "cue_in_reach")]
            oracle = oracle_cue_in_reach(args.test_scenes, args.n_segments, args.min_hops)
            parts += ["### long-range scenes: gate superpixels with the beacon in their "
                      "reach, without a model (%)",
                      "| order | 1 layer | 2 layers |\n|---|---|---|\n" + "\n".join(
                          f"| {name} | {100 * one:.1f} | {100 * two:.1f} |"
                          for name, (one, two) in oracle.items())]
        report = "\n\n".join(part for part in parts if part)
        print(report, flush=True)
        if args.out is not None:
            path = os.path.join(args.out, f"{kind}.md")
            atomic_write(path, lambda handle, text=report: handle.write(text.encode() + b"\n"))
    return 0


def console_main() -> int:
    """:func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
