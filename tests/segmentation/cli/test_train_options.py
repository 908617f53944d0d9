"""scripts/train.py: --backbone, --backbone-weights, --freeze-bn, --amp."""

import json

import pytest
import torch

from tests.helpers import run
from tests.segmentation.cli.test_scripts import TINY, data  # noqa: F401  (data is a fixture)
from tests.segmentation.models.test_backbones import torchvision_like_state


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(torchvision_like_state("resnet18", seed=1), path)
    return path


@pytest.mark.parametrize("case", ["small", "missing", "garbage", "other net", "bad backbone"])
def test_bad_backbone_options_are_one_line(case, data, weights, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    extra = {
        "small": ["--backbone-weights", str(weights)],
        "missing": ["--backbone", "resnet18", "--backbone-weights", str(tmp_path / "no.pth")],
        "garbage": ["--backbone", "resnet18", "--backbone-weights", str(tmp_path / "bad.pth")],
        "other net": ["--backbone", "resnet50", "--backbone-weights", str(weights)],
        "bad backbone": ["--backbone", "vgg16"],
    }[case]
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    code = run("train", ["--data", str(data), "--out", str(out), "--epochs", "1", *TINY,
                         *extra])
    err = capsys.readouterr().err.strip()
    assert code == (2 if case == "bad backbone" else 1)
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    needle = {"small": "not small", "missing": "no.pth", "garbage": "cannot be read",
              "other net": "do not match resnet50", "bad backbone": "--backbone"}[case]
    assert needle in err
    assert not out.exists()


def test_pretrained_resnet_trains_and_evaluates(data, weights, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    # A learning rate of 1e-12 leaves the weights where they started: the file's.
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", *TINY,
            "--backbone", "resnet18", "--backbone-weights", str(weights), "--freeze-bn",
            "--lr", "1e-12"]
    assert run("train", argv) == 0
    captured = capsys.readouterr()
    assert "random weights" not in captured.err
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["model_config"]["backbone"] == "resnet18"
    assert payload["train_config"]["freeze_bn"] is True
    state = torch.load(weights, weights_only=True)
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(payload["model_state"][f"backbone.body.{key}"], value,
                                       atol=1e-9, rtol=0, msg=key)
    assert run("evaluate", ["--data", str(data), "--checkpoint", str(out / "best.pt"),
                            "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["miou"] == pytest.approx(payload["history"][0]["val_miou"], abs=1e-9)


def test_resnet_without_weights_says_so_in_one_line(data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    assert run("train", ["--data", str(data), "--out", str(out), "--epochs", "1", *TINY,
                         "--backbone", "resnet18"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "random weights" in err[0]


def test_amp_trains(data, tmp_path, monkeypatch):  # noqa: F811
    # Every training forward runs under CPU autocast in bfloat16, and it shows in
    # the model's outputs; seen from inside the model, not from the config.
    from segmentation.models.segmenter import GraphLSTMSegmenter

    seen = []
    forward = GraphLSTMSegmenter.forward

    def spy(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        dtypes = {t.dtype for t in out
                  if isinstance(t, torch.Tensor) and t.is_floating_point()}
        seen.append((self.training, torch.is_autocast_enabled("cpu"),
                     torch.get_autocast_dtype("cpu"), dtypes))
        return out

    monkeypatch.setattr(GraphLSTMSegmenter, "forward", spy)
    out = tmp_path / "run"
    assert run("train", ["--data", str(data), "--out", str(out), "--epochs", "2", *TINY,
                         "--amp"]) == 0
    training = [call for call in seen if call[0]]
    assert len(training) == 4  # 8 images, batch 4, 2 epochs
    for _, autocast, dtype, dtypes in training:
        assert autocast and dtype == torch.bfloat16
        assert torch.bfloat16 in dtypes
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["train_config"]["amp"] is True
    losses = [r["loss"] for r in payload["history"]]
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("argv, code, needle", [
    (["train", "--processes", "0"], 2, "--processes"),
    (["train", "--processes", "1,x"], 2, "--processes"),
    (["train", "--processes", "3"], 1, "does not split into 3 processes"),
    (["train", "--backbone", "vgg16"], 2, "--backbone"),
])
def test_benchmark_train_bad_values_are_one_line(argv, code, needle, capsys):
    assert run("benchmark", argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_soft_unpool_trains_evaluates_and_is_recorded(data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--epochs", "1", *TINY, "--unpool", "soft",
            "--amp"]
    assert run("train", argv) == 0
    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["model_config"]["unpool"] == "soft"
    assert any(key.startswith("unpool_query.") for key in payload["model_state"])
    capsys.readouterr()
    assert run("evaluate", ["--data", str(data), "--checkpoint", str(out / "best.pt"),
                            "--threads", "1", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["miou"] == pytest.approx(payload["history"][0]["val_miou"], abs=1e-9)
    # Resuming it as a model with hard unpooling is refused in one line.
    hard = [a for a in argv if a not in ("--unpool", "soft")]
    assert run("train", [*hard, "--epochs", "2", "--resume", str(out / "last.pt")]) == 1
    assert "unpool 'soft' there, 'hard' here" in capsys.readouterr().err
