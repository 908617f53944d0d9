r"""Calling the operators ``torch.ops.graphlstm.*`` (:mod:`graphlstm._ops`).

A Python custom operator costs a round trip through the dispatcher on every call:
the schema's argument handling, the generated autograd wrapper, the check that no
output aliases an input, about 40-60 µs in all, which is 5-10 % of a Graph LSTM
layer on a graph of a thousand nodes on the CPU. :func:`call` saves it in eager
mode: on plain CPU tensors it runs the operator's CPU implementation directly,
and, when an input requires a gradient, the operator's own ``setup_context`` and
backward formula through a :class:`torch.autograd.Function` (``setup_context``
called inside its forward, as the operator's autograd wrapper does). The functions
are those registered on the operator (read from it at each call), so there is one
source for each formula and the values and gradients are the operator's.

Everything that must see the operator gets the operator: ``torch.compile`` and
``torch.export`` (:func:`torch.compiler.is_compiling` is true from dynamo through
AOTAutograd, which traces the backward formulas), fake and functional tensors,
tensor subclasses, dispatch and function modes (``make_fx``, a FLOP counter,
``with torch.device(...)``), functorch transforms, ``torch.jit.trace``, and tensors of
other devices, whose implementation (another engine's, say Triton on CUDA) the
dispatcher picks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["call", "register_eager"]

_EAGER: dict[object, Callable] = {}
_MISSING = object()
_C = torch._C
_any_requires_grad = getattr(
    _C, "_any_requires_grad",
    lambda *args: any(isinstance(a, Tensor) and a.requires_grad for a in args))


def call(op, *args):
    """``op(*args)`` for an operator ``torch.ops.graphlstm.*`` (an ``OpOverloadPacket``),
    with the dispatcher skipped in eager mode on plain CPU tensors (the module's
    docstring says when). ``args[0]`` is a tensor of the device the operator runs on."""
    first = args[0]
    if (type(first) is not Tensor or not first.is_cpu or torch.compiler.is_compiling()
            or _C._len_torch_dispatch_stack() or _C._is_torch_function_mode_enabled()
            or _C._are_functorch_transforms_active() or _C._get_tracing_state()):
        return op(*args)
    eager = _EAGER.get(op)
    return op(*args) if eager is None else eager(op, args)


def register_eager(*opdefs) -> None:
    """Let :func:`call` run these operators (``CustomOpDef`` objects of
    :func:`torch.library.custom_op`) without the dispatcher on CPU tensors."""
    for opdef in opdefs:
        eager = _eager_call(opdef)
        if eager is not None:
            _EAGER[getattr(getattr(torch.ops, opdef._namespace), opdef._name)] = eager


def _eager_call(opdef) -> Callable | None:
    """``(op, args) -> outputs``: ``opdef``'s CPU implementation, as the dispatcher picks
    it for CPU tensors (the ``"cpu"`` kernel, else the default one), within its
    autograd formula when a gradient is needed; ``None`` if this version of torch
    keeps them elsewhere (then :func:`call` always calls the operator)."""
    if not all(hasattr(opdef, name) for name in
               ("_backend_fns", "_setup_context_fn", "_backward_fn", "_opoverload", "_namespace",
                "_name")):
        return None
    kernels = opdef._backend_fns
    # The dispatcher fills in omitted trailing arguments from their defaults before
    # setup_context sees the inputs, and backward returns one gradient per argument.
    arguments = opdef._opoverload._schema.arguments
    if any(a.kwarg_only for a in arguments):
        return None
    defaults = tuple(a.default_value if a.has_default_value() else _MISSING for a in arguments)

    def implementation(*args):
        kernel = kernels.get("cpu") or kernels[None]
        return kernel(*args)

    def forward(ctx, *args):
        # setup_context inside forward, as the operator's own autograd wrapper does:
        # a separate setup_context staticmethod makes every apply bind the arguments
        # through inspect.signature (~30 µs).
        output = implementation(*args)
        opdef._setup_context_fn(ctx=ctx, inputs=args, output=output)
        return output

    def backward(ctx, *grads):
        return opdef._backward_fn(ctx, *grads)

    function = type(f"{opdef._name}_eager", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})

    def run(op, args):
        if len(args) < len(defaults):
            omitted = defaults[len(args):]
            if any(default is _MISSING for default in omitted):
                return op(*args)  # which raises its own error
            args += omitted
        if _C.is_grad_enabled() and _any_requires_grad(*args):
            if opdef._backward_fn is None:  # the operator raises its own error
                return op(*args)
            return function.apply(*args)
        return implementation(*args)

    return run
