"""The texture-mosaic experiment: its table, paired differences, a real tiny run, resuming."""

import json
import statistics

import experiments.mosaics as mosaics
from experiments.mosaics import BASELINE, CONFIGS, _table


def test_configs_are_the_scripts_options():
    assert CONFIGS[BASELINE] == ["--graph-layers", "0"]
    assert "evolving" in CONFIGS["evolving"] and "graph" in CONFIGS["evolving-graph"]


def test_table_means_spreads_and_paired_differences():
    values = {BASELINE: [90.0, 92.0, 91.0], "evolving": [94.0, 93.0, 95.0]}
    results = [{"config": c, "seed": s, "miou": v}
               for c, vals in values.items() for s, v in enumerate(vals)]
    table = _table(results, [BASELINE, "evolving"], [0, 1, 2])
    row = next(line for line in table.splitlines() if line.startswith("| evolving"))
    deltas = [e - b for e, b in zip(values["evolving"], values[BASELINE], strict=True)]
    assert f"{statistics.mean(values['evolving']):.1f} ± " \
           f"{statistics.stdev(values['evolving']):.1f}" in row
    assert f"+{statistics.mean(deltas):.1f} (min +{min(deltas):.1f})" in row


def test_soft_configurations_are_compared_with_the_soft_baseline():
    values = {BASELINE: [90.0, 90.0], "no-graph-lstm-soft": [93.0, 94.0],
              "graph-lstm-soft": [94.0, 94.5]}
    results = [{"config": c, "seed": s, "miou": v}
               for c, vals in values.items() for s, v in enumerate(vals)]
    table = _table(results, list(values), [0, 1])
    row = next(line for line in table.splitlines() if line.startswith("| graph-lstm-soft"))
    assert "+0.8 (min +0.5)" in row  # against no-graph-lstm-soft, not against no-graph-lstm
    assert CONFIGS["graph-lstm-soft"] == [*CONFIGS["graph-lstm"], "--unpool", "soft"]


def test_tiny_run_writes_results_and_a_rerun_skips_them(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--configs", BASELINE, "--seeds", "0", "--train", "2",
            "--val", "1", "--test", "2", "--size", "32", "--epochs", "1", "--n-segments", "20"]
    assert mosaics.main(argv) == 0
    stored = json.loads((tmp_path / "results.json").read_text())
    (result,) = stored["results"]
    assert result["config"] == BASELINE and 0 <= result["miou"] <= 100
    checkpoint = tmp_path / f"{BASELINE}-seed0" / "best.pt"
    written = checkpoint.stat().st_mtime_ns
    assert mosaics.main(argv) == 0
    assert checkpoint.stat().st_mtime_ns == written
    assert f"| {BASELINE} | {result['miou']:.1f} ± 0.0" in capsys.readouterr().out
