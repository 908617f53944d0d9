"""Texture-mosaic experiment: the command-line scripts on real textures, one budget for all.

Writes mosaics of scikit-image's texture photographs
(:mod:`segmentation.data.datasets.mosaics`) as a VOC-layout folder with
``train``, ``val`` and ``test`` splits, trains every configuration with
``scripts/train.py`` for every seed (the same epochs, batch and learning rate),
evaluates each ``best.pt`` on the held-out ``test`` split with
``scripts/evaluate.py``, and prints a markdown table (mean ± std over seeds,
and each configuration's paired difference from the no-graph baseline).

Examples::

    python -m experiments.mosaics --out runs/mosaics
    python -m experiments.mosaics --out runs/mosaics --configs no-graph-lstm evolving \\
        --seeds 0 1 2 --epochs 20 --jobs 2

A finished training is kept in OUT/results.json and skipped by a rerun with
the same settings; the table also goes to OUT/results.md.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from segmentation.cli._common import (
    ArgumentParser,
    CLIError,
    non_negative_int,
    positive_int,
    run_main,
)

#: Configuration name -> the train.py options that make it.
CONFIGS: dict[str, list[str]] = {
    "no-graph-lstm": ["--graph-layers", "0"],
    "graph-lstm": ["--graph-layers", "2"],
    "evolving": ["--graph-model", "evolving", "--graph-layers", "2",
                 "--acceptance", "clique"],
    "evolving-graph": ["--graph-model", "evolving", "--graph-layers", "2",
                       "--acceptance", "graph"],
}
# The same models with soft unpooling.
CONFIGS.update({f"{name}-soft": [*CONFIGS[name], "--unpool", "soft"]
                for name in ("no-graph-lstm", "graph-lstm", "evolving")})
BASELINE = "no-graph-lstm"
SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def baseline_of(config: str) -> str:
    """The no-graph configuration a configuration is compared with: the one that
    brings the node states back to the pixels the same way."""
    return BASELINE + "-soft" if config.endswith("-soft") else BASELINE


def _train_and_test(data: str, run_dir: str, config: str, seed: int, args) -> dict:
    train = [sys.executable, os.path.join(SCRIPTS, "train.py"), "--data", data,
             "--out", run_dir, "--epochs", str(args.epochs), "--seed", str(seed),
             "--threads", str(args.threads), "--n-segments", str(args.n_segments),
             "--no-progress", *CONFIGS[config]]
    subprocess.run(train, check=True, stdout=subprocess.DEVNULL)
    evaluate = [sys.executable, os.path.join(SCRIPTS, "evaluate.py"), "--data", data,
                "--checkpoint", os.path.join(run_dir, "best.pt"), "--split", "test",
                "--threads", str(args.threads), "--json",
                "--cache", os.path.join(run_dir, "test_cache")]
    result = subprocess.run(evaluate, check=True, capture_output=True, text=True)
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    return {"config": config, "seed": seed, "miou": 100 * metrics["miou"],
            "pixel_accuracy": 100 * metrics["pixel_accuracy"]}


def _table(results: list[dict], configs: list[str], seeds: list[int]) -> str:
    by_key = {(r["config"], r["seed"]): r for r in results}
    lines = ["| configuration | test mIoU (mean ± std) | per seed "
             "| paired Δ vs no graph (same unpooling) |",
             "|---|---|---|---|"]
    for config in configs:
        values = [by_key[(config, s)]["miou"] for s in seeds if (config, s) in by_key]
        if not values:
            continue
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = ", ".join(f"{v:.1f}" for v in values)
        baseline = baseline_of(config)
        deltas = [by_key[(config, s)]["miou"] - by_key[(baseline, s)]["miou"]
                  for s in seeds if (config, s) in by_key and (baseline, s) in by_key]
        delta = (f"{statistics.mean(deltas):+.1f} (min {min(deltas):+.1f})"
                 if deltas and config != baseline else "")
        lines.append(f"| {config} | {statistics.mean(values):.1f} ± {spread:.1f} "
                     f"| {per_seed} | {delta} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the mosaics, the runs and the results go here")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                        default=["no-graph-lstm", "graph-lstm", "evolving"])
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, default=[0, 1, 2])
    parser.add_argument("--train", type=positive_int, default=96, help="training mosaics")
    parser.add_argument("--val", type=positive_int, default=32, help="validation mosaics")
    parser.add_argument("--test", type=positive_int, default=64, help="held-out test mosaics")
    parser.add_argument("--size", type=positive_int, default=128, help="mosaic side in pixels")
    parser.add_argument("--epochs", type=positive_int, default=20)
    parser.add_argument("--n-segments", type=positive_int, default=300,
                        help="SLIC superpixels per image (train.py's default)")
    parser.add_argument("--threads", type=positive_int, default=1, help="per training")
    parser.add_argument("--jobs", type=positive_int, default=1, help="trainings at once")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        raise CLIError(f"--seeds repeats a seed: {args.seeds}")
    for baseline in dict.fromkeys(baseline_of(config) for config in list(args.configs)):
        if baseline not in args.configs:
            args.configs.insert(0, baseline)

    from segmentation.data.datasets.mosaics import write_mosaic_voc

    os.makedirs(args.out, exist_ok=True)
    data = os.path.join(args.out, "data")
    if not os.path.exists(os.path.join(data, "ImageSets", "Segmentation", "test.txt")):
        # Test mosaics come after the training and validation seeds: none is seen in training.
        write_mosaic_voc(data, args.train, args.val, args.test, size=args.size)
    settings = {k: getattr(args, k) for k in ("train", "val", "test", "size", "epochs",
                                               "n_segments")}
    store = os.path.join(args.out, "results.json")
    saved = {}
    if os.path.exists(store):
        with open(store) as handle:
            saved = json.load(handle)
    results = saved.get("results", []) if saved.get("settings") == settings else []
    done = {(r["config"], r["seed"]) for r in results}
    todo = [(c, s) for c in args.configs for s in args.seeds if (c, s) not in done]

    def run(job):
        config, seed = job
        return _train_and_test(data, os.path.join(args.out, f"{config}-seed{seed}"),
                               config, seed, args)

    with ThreadPoolExecutor(args.jobs) as pool:
        for result in pool.map(run, todo):
            results.append(result)
            print(f"{result['config']} seed {result['seed']}: test mIoU {result['miou']:.2f}",
                  flush=True)
            tmp = store + ".tmp"
            with open(tmp, "w") as handle:
                json.dump({"settings": settings, "results": results}, handle, indent=1)
            os.replace(tmp, store)
    table = _table(results, args.configs, args.seeds)
    with open(os.path.join(args.out, "results.md"), "w") as handle:
        handle.write(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
