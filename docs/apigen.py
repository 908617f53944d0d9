"""Write the API reference pages (``docs/api/*.rst``) from the packages' public names.

One page per public module of :data:`PACKAGES` (found by walking them; names
with a component that starts with an underscore are private and left out, and
so are the subpackages in :data:`SKIP`). A module's public names are its
``__all__`` (or, without one, the functions and classes defined in it whose
names do not start with an underscore). Every object is described once, on the
page of the module that defines it (see :func:`homes`); the modules that
re-export it (``graphlstm.GraphLSTM`` is ``graphlstm.nn.graph_lstm.GraphLSTM``)
list it in their summary table with a link there.

Files are only rewritten when their text changes, which keeps incremental
builds incremental.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

#: The packages documented, and the subpackages left out (the command-line
#: programs have pages of their own).
PACKAGES = ("graphlstm", "segmentation")
SKIP = ("segmentation.cli",)


def api_modules() -> list[str]:
    """Every public module of :data:`PACKAGES`, packages before their modules."""
    names = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        for info in pkgutil.walk_packages(package.__path__, package_name + "."):
            parts = info.name.split(".")
            if any(part.startswith("_") for part in parts):
                continue
            if info.name.startswith(SKIP):
                continue
            names.append(info.name)
    return names


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


def homes(modules: dict[str, list[str]]) -> dict[int, str]:
    """Where each public object is described: the module that defines it when that
    module lists it; otherwise the most specific module that exports it."""
    home: dict[int, str] = {}
    for name, names in modules.items():
        module = importlib.import_module(name)
        for attr in names:
            obj = getattr(module, attr)
            current = home.get(id(obj))
            if current is None or name.count(".") > current.rsplit(".", 1)[0].count("."):
                home[id(obj)] = f"{name}.{attr}"
    for name, names in modules.items():
        module = importlib.import_module(name)
        for attr in names:
            obj = getattr(module, attr)
            defining = getattr(obj, "__module__", None)
            own_name = getattr(obj, "__name__", None)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and own_name in modules.get(
                    defining, ()):
                home[id(obj)] = f"{defining}.{own_name}"
    return home


def module_page(name: str, names: list[str], home: dict[int, str]) -> str:
    module = importlib.import_module(name)
    lines = [_title(name), f".. automodule:: {name}", "   :no-members:", ""]
    own, elsewhere = [], []
    for attr in names:
        obj = getattr(module, attr)
        if home[id(obj)] == f"{name}.{attr}":
            own.append((attr, obj))
        else:
            elsewhere.append(home[id(obj)])
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
    """Write one page per public module and an index; return the modules' names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    modules = {}
    for name in api_modules():
        modules[name] = public_names(importlib.import_module(name))
    home = homes(modules)
    for name, names in modules.items():
        _write(out_dir / f"{name}.rst", module_page(name, names, home))
    for stale in out_dir.glob("*.rst"):
        if stale.stem not in modules and stale.stem != "index":
            stale.unlink()
    index = [_title("API reference"),
             "Generated from the public names of every module (its ``__all__``). An",
             "object is described on the page of the module that defines it and linked",
             "from the modules that re-export it (``graphlstm.GraphLSTM`` is",
             "``graphlstm.nn.graph_lstm.GraphLSTM``).", ""]
    for package in PACKAGES:
        index += [".. toctree::", f"   :caption: {package}", "   :maxdepth: 1", ""]
        index += [f"   {name}" for name in modules if name.split(".")[0] == package]
        index.append("")
    _write(out_dir / "index.rst", "\n".join(index))
    return list(modules)


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
