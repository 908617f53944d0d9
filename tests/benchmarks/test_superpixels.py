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


@pytest.mark.parametrize("flag", ["--size", "--n-segments", "--repeats"])
def test_bench_script_rejects_a_count_below_one_in_one_line(flag, capsys):
    from benchmarks.data import superpixels as module

    with pytest.raises(SystemExit) as exit_info:
        module.main([flag, "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err
