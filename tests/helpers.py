"""Small helpers shared by the tests."""

import torch


def flat_tensors(out) -> tuple:
    """Flatten nested ``(tensor, (tensor, ...))`` results, e.g. for gradcheck."""
    if isinstance(out, torch.Tensor):
        return (out,)
    return tuple(t for o in out if o is not None for t in flat_tensors(o))
