"""The superpixel-graph benchmark runs on a small image and rejects a bad size."""

import pytest
import torch


def test_bench_script_runs_on_a_small_image(capsys):
    from benchmarks.data import superpixels as module

    threads = torch.get_num_threads()
    try:
        assert module.main(["--size", "48", "--n-segments", "30", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "ratio graph+features/SLIC" in out and "48x48" in out
    with pytest.raises(SystemExit):
        module.main(["--size", "4", "--n-segments", "17"])
