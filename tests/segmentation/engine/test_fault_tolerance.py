"""Training that survives what clusters do to it.

A worker killed under ``torchrun --max-restarts``, SIGTERM and SIGINT
(preemption), step checkpoints in long epochs, a diverging loss and a
checkpoint that cannot be written. Every run here is the training program on
a few tiny scenes; the faults come at exact steps through
``GRAPHLSTM_INJECT_FAULT`` (see ``segmentation.engine._faults``), and every
resumed run is compared with one that never stopped.
"""

import contextlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch

from segmentation.data.datasets import write_synthetic_voc
from segmentation.engine.checkpoint import load_checkpoint
from segmentation.engine.preemption import PreemptionHandler
from segmentation.engine.resume import (
    ResumeSampler,
    gather_rng_states,
    position_of,
    rng_state,
    set_rng_state,
)
from tests.helpers import ROOT, SCRIPTS, run

# 8 training images in batches of 2: 4 steps per epoch, 8 in the run. order="random"
# draws from the global generator in every step, so an exact resumption needs its state.
ARGS = ["--n-segments", "12", "--width", "4", "--hidden", "4", "--batch-size", "2",
        "--epochs", "2", "--order", "random", "--no-progress", "--threads", "1"]
STEPS_PER_EPOCH = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc_faults")
    write_synthetic_voc(root, 8, 4, size=(32, 32), seed=4)
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """A run that never stopped (no step checkpoints either)."""
    out = tmp_path_factory.mktemp("reference")
    assert run("train", ["--data", str(data), "--out", str(out), *ARGS]) == 0
    return torch.load(out / "last.pt", weights_only=True)


def command(data, out, *extra):
    return [str(SCRIPTS / "train.py"), "--data", str(data), "--out", str(out), *ARGS, *extra]


def environment(fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("GRAPHLSTM_DEBUG", None)
    if fault is not None:
        env["GRAPHLSTM_INJECT_FAULT"] = fault
    return env


def launch(argv, fault=None):
    """Run a program to its end; its output goes through files, not pipes, so that no
    process it leaves behind can hold the test up."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run([sys.executable, *argv], stdout=out, stderr=err, text=True,
                              env=environment(fault), timeout=300)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), err.read())


def train_process(argv, fault=None):
    return launch(argv, fault)


def torchrun(argv, fault=None, max_restarts=0):
    return launch(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   f"--max-restarts={max_restarts}", "--monitor-interval=0.1", *argv], fault)


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert worst <= atol, worst


def error_lines(text):
    return [line for line in text.splitlines() if line.strip()]


def leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------- torchrun restarts


def test_a_killed_worker_is_restarted_and_the_run_ends_as_an_uninterrupted_one(data, tmp_path):
    # The cluster command line: the same for the first start and for every restart.
    flags = ["--checkpoint-every", "2", "--resume", "auto"]
    whole = torchrun(command(data, tmp_path / "whole", *flags))
    assert whole.returncode == 0, [l for l in whole.stderr.splitlines() if "error" in l]
    # Process 1 dies without a trace in step 7 (epoch 2, step 4 of 4), on the first
    # attempt only.
    killed = torchrun(command(data, tmp_path / "killed", *flags), fault="kill@7:rank=1:attempt=0",
                      max_restarts=1)
    assert killed.returncode == 0, [l[:500] for l in killed.stderr.splitlines() if "rror" in l]
    # The restarted group resumed from the step checkpoint after step 6, not from scratch.
    assert "resumed from" in killed.stdout and "epoch 2, after step 2 of 4" in killed.stdout
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert_same_weights(a["model_state"], b["model_state"], atol=1e-6)
    assert [r["loss"] for r in b["history"]] == pytest.approx([r["loss"] for r in a["history"]],
                                                             rel=1e-6)


# ----------------------------------------------------------------------- SIGTERM, SIGINT


def test_sigterm_mid_epoch_finishes_the_step_saves_and_resumes_exactly(data, reference,
                                                                       tmp_path):
    out = tmp_path / "run"
    argv = command(data, out, "--checkpoint-every", "2")
    # SIGTERM arrives during step 5 (epoch 2, step 2 of 4).
    stopped = train_process(argv, fault="sigterm@5")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    lines = error_lines(stopped.stderr)
    assert len(lines) == 1, stopped.stderr
    assert "SIGTERM" in lines[0] and "--resume" in lines[0] and str(out / "last.pt") in lines[0]
    # The step in flight finished (6 steps done), and no other.
    payload = load_checkpoint(out / "last.pt")
    assert position_of(payload) == (1, 6 - STEPS_PER_EPOCH)
    assert payload["epoch"] == 0  # the last complete epoch, for readers of "epoch"
    assert leftovers(out) == []
    assert run("train", [*argv[1:], "--resume", "auto"]) == 0  # the same command line
    final = torch.load(out / "last.pt", weights_only=True)
    assert_same_weights(final["model_state"], reference["model_state"])
    assert final["history"] == reference["history"]


def test_sigterm_to_every_process_with_loader_workers_stops_cleanly(data, reference,
                                                                     tmp_path):
    # As SLURM does: the signal goes to the whole process group, DataLoader workers too.
    out = tmp_path / "run"
    argv = command(data, out, "--checkpoint-every", "2", "--workers", "2")
    process = subprocess.Popen([sys.executable, *argv], env=environment(), text=True,
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        while not (out / "last.pt").exists() and process.poll() is None:
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)  # after the first step checkpoint
        err = process.communicate(timeout=120)[1]
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert len(error_lines(err)) == 1 and "--resume" in err
    assert position_of(load_checkpoint(out / "last.pt"))[1] > 0  # in the middle of an epoch
    assert run("train", [*argv[1:], "--resume", "auto"]) == 0
    final = torch.load(out / "last.pt", weights_only=True)
    assert_same_weights(final["model_state"], reference["model_state"])
    assert final["history"] == reference["history"]


def test_a_second_signal_stops_at_once(data, tmp_path):
    out = tmp_path / "run"
    stopped = train_process(command(data, out, "--checkpoint-every", "2"),
                            fault="sigterm-twice@5")
    # Ended by the signal itself, without writing the checkpoint of step 6.
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr[-3000:]
    assert position_of(load_checkpoint(out / "last.pt")) == (1, 0)
    assert leftovers(out) == []


def test_preemption_handler_records_the_first_signal_and_restores_handlers():
    before = signal.getsignal(signal.SIGINT)
    with PreemptionHandler() as handler:
        assert handler.agreed_stop() == 0
        os.kill(os.getpid(), signal.SIGINT)
        assert handler.received == signal.SIGINT and handler.agreed_stop() == signal.SIGINT
        # A second one would end the process: the default actions are back.
        assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is before


# --------------------------------------------------------------------------- divergence


# Ordered by confidence, NaN stops the model before the loss (its scores order nothing).
@pytest.mark.parametrize("order", ["random", "confidence"])
def test_a_nan_loss_stops_in_one_line_and_last_pt_keeps_finite_weights(order, data, tmp_path,
                                                                       capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("GRAPHLSTM_INJECT_FAULT", "nan@5")
    code = run("train", ["--data", str(data), "--out", str(out), *ARGS, "--lr", "0.004",
                         "--order", order])
    err = error_lines(capsys.readouterr().err)
    assert code == 1 and len(err) == 1, err
    for needle in ("diverged", "epoch 2", "step 5", "loss is nan", "learning rate", "--lr",
                   "--amp", "holds the weights from before this step"):
        assert needle in err[0], (needle, err[0])
    # last.pt: the weights before the diverging step (5 steps done), all finite.
    payload = load_checkpoint(out / "last.pt")
    assert position_of(payload) == (1, 5 - STEPS_PER_EPOCH)
    assert all(torch.isfinite(v).all() for v in payload["model_state"].values()
               if v.is_floating_point())


def test_training_diverged_names_where_and_what_to_try(data, tmp_path, monkeypatch):
    from segmentation.cli.train import main
    from segmentation.engine.train import TrainingDiverged

    monkeypatch.setenv("GRAPHLSTM_INJECT_FAULT", "nan@2")
    with pytest.raises(TrainingDiverged) as caught:
        main(["--data", str(data), "--out", str(tmp_path / "run"), *ARGS, "--lr-schedule",
              "constant", "--lr", "0.004"])
    err = caught.value
    assert (err.epoch, err.step) == (0, 2)
    assert np.isnan(err.loss) and err.lr == pytest.approx(0.004)


# ------------------------------------------------------------------------ write failures


@contextlib.contextmanager
def files_limited_to(size):
    """A full disk, for root too: no file of this process may grow beyond ``size`` bytes
    (Python ignores SIGXFSZ, so a write beyond fails with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_checkpoint_that_cannot_be_written_keeps_the_previous_one(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), *ARGS, "--no-cache"]
    assert run("train", [*argv, "--epochs", "1"]) == 0  # the last --epochs counts
    before = (out / "last.pt").read_bytes()
    assert len(before) > 8192
    capsys.readouterr()
    with files_limited_to(8192):
        code = run("train", [*argv, "--resume", "auto"])
    lines = error_lines(capsys.readouterr().err)
    assert code == 1 and len(lines) == 1, lines
    assert str(out / "last.pt") in lines[0] and "File too large" in lines[0]
    assert (out / "last.pt").read_bytes() == before
    assert leftovers(out) == []


def read_only(folder):
    """A command prefix under which ``folder`` cannot be written, and a function that
    undoes what it set up. Root writes through permission bits, so for root the folder
    becomes a read-only bind mount in a mount namespace of the command's own."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return [], lambda: folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.fail("running as root, the read-only folder needs util-linux's unshare")
    script = f'mount --bind -o ro "{folder}" "{folder}" && exec "$0" "$@"'
    return ["unshare", "--mount", "sh", "-c", script], lambda: None


def test_a_read_only_output_folder_is_one_line(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"previous")
    prefix, undo = read_only(out)
    try:
        with tempfile.TemporaryFile("w+") as err:
            done = subprocess.run([*prefix, sys.executable, *command(data, out, "--no-cache")],
                                  stdout=subprocess.DEVNULL, stderr=err, text=True,
                                  env=environment(), timeout=300)
            err.seek(0)
            stderr = err.read()
    finally:
        undo()
    lines = error_lines(stderr)
    assert done.returncode == 1 and len(lines) == 1, stderr[-3000:]
    assert str(out) in lines[0]
    assert (out / "last.pt").read_bytes() == b"previous"


# ------------------------------------------------------------------------ --resume auto


def test_resume_auto_starts_fresh_then_resumes(data, reference, tmp_path, capsys):
    out = tmp_path / "run"
    # No last.pt yet: a fresh run, the same as one without --resume.
    assert run("train", ["--data", str(data), "--out", str(out), *ARGS, "--resume",
                         "auto"]) == 0
    assert "resumed" not in capsys.readouterr().out
    first = torch.load(out / "last.pt", weights_only=True)
    assert_same_weights(first["model_state"], reference["model_state"])
    # Now last.pt exists: the same command line continues from it (one more epoch), and
    # clears what a process killed in the middle of a write left.
    (out / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    assert run("train", ["--data", str(data), "--out", str(out), *ARGS, "--epochs", "3",
                         "--resume", "auto"]) == 0
    assert "resumed from" in capsys.readouterr().out
    more = torch.load(out / "last.pt", weights_only=True)
    assert more["history"][:2] == reference["history"] and len(more["history"]) == 3
    assert leftovers(out) == []


# -------------------------------------------------------------------------- the pieces


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    # The global generators are the subject here.
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002
    torch.manual_seed(3)
    np.random.standard_normal()  # noqa: NPY002 (a cached Gaussian in the legacy state)
    torch.save({"rng": gather_rng_states()}, tmp_path / "s.pt")
    expected = (random.random(), np.random.standard_normal(3).tolist(),  # noqa: NPY002
                torch.rand(3))
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng"][0])
    assert (random.random(), np.random.standard_normal(3).tolist()) == expected[:2]  # noqa: NPY002
    assert torch.equal(torch.rand(3), expected[2])
    assert rng_state()["cuda"] is None


def test_resume_sampler_skips_the_batches_already_seen():
    order = [7, 3, 5, 1, 0, 2, 6, 4, 8]
    batches = list(torch.utils.data.DataLoader(order, batch_size=2, sampler=order))
    rest = list(torch.utils.data.DataLoader(order, batch_size=2,
                                            sampler=ResumeSampler(order, start=2 * 2)))
    assert [b.tolist() for b in rest] == [b.tolist() for b in batches[2:]]
    assert len(ResumeSampler(order, 9)) == 0
    with pytest.raises(ValueError, match="start"):
        ResumeSampler(order, 10)
