import pytest
import torch

import graphlstm


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
