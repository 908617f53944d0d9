import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Test tensors are tiny and gain nothing from threads, while on a shared
    # machine an intra-op pool waiting for a busy core makes tests 20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
