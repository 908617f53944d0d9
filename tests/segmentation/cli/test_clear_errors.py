"""Messages that say what is wrong, with which flag or file, in the terms the user typed."""

import errno
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from segmentation.data.images import atomic_write
from segmentation.data.transforms import SuperpixelGraph
from tests.helpers import run
from tests.segmentation.cli.test_scripts import TINY, data  # noqa: F401  (a fixture)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):  # noqa: F811
    """A run trained for its 1 epoch."""
    out = tmp_path_factory.mktemp("finished")
    assert run("train", ["--data", str(data), "--epochs", "1", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("case", ["folder", "text file", "empty file"])
def test_backbone_weights_that_are_no_weights_file(case, data, tmp_path, capsys):  # noqa: F811
    weights = tmp_path / "weights"
    if case == "folder":
        weights.mkdir()
    elif case == "text file":
        weights.write_text("these are not weights\n")
    else:
        weights.write_bytes(b"")
    out = tmp_path / "run"
    code = run("train", ["--data", str(data), "--out", str(out), "--epochs", "1", *TINY,
                         "--backbone", "resnet18", "--backbone-weights", str(weights)])
    err = one_line_error(capsys)
    assert code == 1
    assert "--backbone-weights" in err and str(weights) in err
    assert {"folder": "is a folder", "text file": "not a file written by torch.save",
            "empty file": "empty"}[case] in err
    assert "does not exist" not in err and "pop from empty list" not in err
    assert not out.exists()


@pytest.mark.parametrize("value, needle", [("-1,5", "X >= 0"), ("5,-2", "Y >= 0"),
                                           ("-1", "expected a pixel X,Y")])
def test_negative_influence_pixel_reaches_its_check(value, needle, tmp_path, capsys):
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (16, 16), "white").save(image)
    code = run("show_order", [str(image), "--influence", value, "--out",
                              str(tmp_path / "influence.png")])
    err = one_line_error(capsys)
    assert code == 2
    assert "--influence" in err and needle in err and value in err
    assert "expected one argument" not in err


def test_negative_numbers_still_parse_as_values():
    """The same parser still takes negative numbers where they are allowed, options
    after them, and '--' before positional values."""
    from segmentation.cli._common import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--shift", type=float)
    parser.add_argument("--flag", action="store_true")
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args(["--shift", "-0.5", "--flag", "--", "-3"])
    assert args.shift == -0.5 and args.flag and args.rest == ["-3"]


def read_only_folder(monkeypatch, folder: Path):
    """Make file creation in ``folder`` fail as on a read-only disk (permissions
    would not do: tests may run as root)."""
    folder = folder.resolve()
    real_mkstemp, real_temporary_file = tempfile.mkstemp, tempfile.TemporaryFile

    def guard(dir):
        if dir is not None and Path(dir).resolve() == folder:
            raise OSError(errno.EROFS, "Read-only file system", str(folder / ".tmpXYZ"))

    def mkstemp(*args, dir=None, **kwargs):
        guard(dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    def temporary_file(*args, dir=None, **kwargs):
        guard(dir)
        return real_temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)


@pytest.mark.parametrize("program, flag", [("train", "--out"), ("train", "--cache"),
                                           ("segment", "--out"), ("show_order", "--out"),
                                           ("demo", "--out"), ("evaluate", "--cache")])
def test_read_only_output_names_the_flag(program, flag, finished, data, tmp_path,  # noqa: F811
                                         monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only_folder(monkeypatch, locked)
    target = locked / ("out.png" if program == "show_order" else "dir")
    image = data / "JPEGImages" / sorted(p.name for p in (data / "JPEGImages").iterdir())[0]
    argv = {
        "train": ["--data", str(data), "--epochs", "1", *TINY, "--out",
                  str(tmp_path / "run")],
        "segment": ["--checkpoint", str(finished / "last.pt"), str(image)],
        "show_order": [str(image)],
        "demo": [],
        "evaluate": ["--data", str(data), "--checkpoint", str(finished / "last.pt")],
    }[program]
    if flag in argv:
        argv[argv.index(flag) + 1] = str(target)
    else:
        argv += [flag, str(target)]
    code = run(program, argv)
    err = one_line_error(capsys)
    assert code == 1
    assert flag in err and str(target) in err and "Read-only file system" in err
    assert ".tmp" not in err
    assert not target.exists()


def test_atomic_write_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    read_only_folder(monkeypatch, tmp_path)
    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "summary.json", lambda handle: handle.write(b"{}"))
    assert "summary.json" in str(info.value) and ".tmp" not in str(info.value)
    assert "Read-only file system" in str(info.value)


def test_empty_cache_file_warns_with_its_reason(tmp_path):
    image = (torch.rand(3, 24, 24) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    graph = SuperpixelGraph(n_segments=8, cache_dir=tmp_path)
    reference = graph(image)
    (cached,) = tmp_path.glob("*.pt")
    cached.write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        again = SuperpixelGraph(n_segments=8, cache_dir=tmp_path)(image)
    (message,) = [str(w.message) for w in caught]
    assert str(cached) in message and "empty" in message and "0 bytes" in message
    assert torch.equal(again.x, reference.x)
    with warnings.catch_warnings():  # rebuilt and rewritten: read back silently
        warnings.simplefilter("error")
        SuperpixelGraph(n_segments=8, cache_dir=tmp_path)(image)


def test_resume_of_a_finished_run_says_so_and_trains_nothing(finished, data, capsys):  # noqa: F811
    before = {p.name: p.stat().st_mtime_ns for p in finished.glob("*.pt")}
    code = run("train", ["--data", str(data), "--epochs", "1", "--out", str(finished), *TINY,
                         "--resume"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"nothing to train: checkpoint '{finished / 'last.pt'}' is already at epoch 1 of 1" \
        in out
    assert "resumed" not in out and "epoch 1/1" not in out
    assert {p.name: p.stat().st_mtime_ns for p in finished.glob("*.pt")} == before


def test_resume_counts_epochs_from_one(finished, data, tmp_path, capsys):  # noqa: F811
    import shutil

    out = tmp_path / "longer"
    shutil.copytree(finished, out)
    code = run("train", ["--data", str(data), "--epochs", "2", "--out", str(out), *TINY,
                         "--resume"])
    text = capsys.readouterr().out
    assert code == 0
    assert "after epoch 1; training epochs 2 to 2" in text and "epoch 2/2" in text
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1  # 0-based inside


def test_resume_with_another_config_names_only_what_differs(finished, data, capsys):  # noqa: F811
    code = run("train", ["--data", str(data), "--epochs", "2", "--out", str(finished), *TINY,
                         "--hidden", "6", "--resume"])
    err = one_line_error(capsys)
    assert code == 1
    assert "hidden 4 there, 6 here" in err
    for same in ("width", "n_segments", "compactness", "backbone", "num_classes"):
        assert same not in err
