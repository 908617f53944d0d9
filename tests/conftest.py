import os
import tempfile

import pytest
import torch

import graphlstm


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_in_pytest_folder(tmp_path_factory):
    # The scripts, torchrun workers and DataLoader workers the tests start each
    # leave files in the temporary folder (PyG writes the propagate module it
    # generates there, torchelastic its run folders): send them to pytest's
    # own folder, which pytest prunes, instead of filling /tmp run after run.
    folder = str(tmp_path_factory.mktemp("tmpdir"))
    previous_env, previous_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    yield
    tempfile.tempdir = previous_dir
    if previous_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = previous_env


@pytest.fixture(autouse=True)
def _one_thread():
    # Test tensors are tiny and gain nothing from threads, while on a shared
    # machine an intra-op pool waiting for a busy core makes tests 20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["compiled", "torch"])
def engine(request):
    """Run a test on both engines of graphlstm.backend: the compiled kernels and the
    PyTorch reference path. A module opts in with
    ``pytestmark = pytest.mark.usefixtures("engine")``."""
    with graphlstm.use_backend(request.param):
        yield request.param
