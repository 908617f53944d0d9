"""Write the API reference pages (``docs/api/*.rst``) from the packages' public names.

One page per public module, listed in :data:`API_MODULES`. A module's public
names are its ``__all__`` (or, without one, the functions and classes defined
in it whose names do not start with an underscore). Every object is described
once, on the page of the first module in :data:`API_MODULES` that exports it;
later modules that re-export it (``graphlstm.nn.GraphLSTM`` is
``graphlstm.GraphLSTM``) list it in their summary table with a link there.

Modules that do not exist (yet) are skipped, so the list may name a layout in
progress. Files are only rewritten when their text changes, which keeps
incremental builds incremental.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

# The order decides where an object re-exported in several places is described:
# the first module that exports it.
API_MODULES = [
    "graphlstm",
    "graphlstm.nn",
    "graphlstm.functional",
    "graphlstm.schedule",
    "graphlstm.lattice",
    "graphlstm.reach",
    "graphlstm.backend",
    "graphlstm.reference",
    "segmentation.data",
    "segmentation.data.datasets",
    "segmentation.datasets",
    "segmentation.models",
    "segmentation.engine",
    "segmentation.inference",
    "segmentation.analysis",
    "segmentation.visualize",
    "segmentation",
]


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return sorted(
        name for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module.__name__
    )


def _directive(obj) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or callable(obj):
        return "autofunction"
    return "data"


def _title(text: str, underline: str = "=") -> str:
    return f"{text}\n{underline * len(text)}\n"


def module_page(name: str, names: list[str], described: dict[int, str]) -> str:
    module = importlib.import_module(name)
    lines = [_title(name), f".. automodule:: {name}", "   :no-members:", ""]
    own, elsewhere = [], []
    for attr in names:
        obj = getattr(module, attr)
        key = id(obj)
        if key in described:
            elsewhere.append(described[key])
        else:
            described[key] = f"{name}.{attr}"
            own.append((attr, obj))
    # Full names in the table: "segmentation" lists "segmentation.data.pool",
    # which autosummary refuses to resolve relative to the current module.
    lines += [".. currentmodule:: None", ""]
    if own or elsewhere:
        lines += [".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   ~{name}.{attr}" for attr, obj in own if _directive(obj) != "data"]
        lines += [f"   ~{target}" for target in elsewhere]
        lines.append("")
    for attr, obj in own:
        directive = _directive(obj)
        if directive == "data":
            # Constants have no docstring of their own (autodata would show their
            # type's); the value says what they are.
            lines.append(f".. py:data:: {name}.{attr}")
            text = repr(obj)
            if len(text) <= 100 and "\n" not in text:
                lines.append(f"   :value: {text}")
        else:
            lines.append(f".. {directive}:: {name}.{attr}")
            if directive == "autoclass":
                lines += ["   :members:", "   :show-inheritance:"]
        lines.append("")
    return "\n".join(lines)


def write_api_pages(out_dir: Path) -> list[str]:
    """Write one page per importable module of :data:`API_MODULES`; return their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    described: dict[int, str] = {}
    written = []
    for name in API_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        page = module_page(name, public_names(module), described)
        path = out_dir / f"{name}.rst"
        if not path.exists() or path.read_text() != page:
            path.write_text(page)
        written.append(name)
    for stale in out_dir.glob("*.rst"):
        if stale.stem not in written:
            stale.unlink()
    index = "\n".join(
        [_title("API reference"),
         "Generated from the public names of each module (``__all__``). An object",
         "re-exported by several modules is described once, under the first of them",
         "below, and linked from the others.", "",
         ".. toctree::", "   :maxdepth: 1", ""]
        + [f"   {name}" for name in written]) + "\n"
    path = out_dir / "index.rst"
    if not path.exists() or path.read_text() != index:
        path.write_text(index)
    return written
