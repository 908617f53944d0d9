"""Where the modules of the flat ``segmentation`` package went.

The package is organised by subject (``data``, ``models``, ``engine``,
``inference``, ``analysis``, ``visualize``, ``cli``). An import of a former
module name (``segmentation.model``, ``segmentation.training``, ...) still
works, with a ``DeprecationWarning`` that names the new place: a module that
moved whole is the new module itself; one that was split is a read-only view
of its parts whose missing names raise an ``AttributeError`` naming the parts.
Modules that left the installed package (benchmarks, experiments) raise a
``ModuleNotFoundError`` that says where they are in the repository.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

#: Former module -> its new module(s); a name is looked up in them in this order.
MOVED: dict[str, tuple[str, ...]] = {
    "segmentation.images": ("segmentation.data.images",),
    "segmentation.superpixels": ("segmentation.data.superpixels",),
    "segmentation.rag": ("segmentation.data.adjacency",),
    "segmentation.features": ("segmentation.data.features",),
    "segmentation.transforms": ("segmentation.data.transforms",),
    "segmentation.datasets": ("segmentation.data.datasets",),
    "segmentation.datasets.voc": ("segmentation.data.datasets.voc",),
    "segmentation.datasets.synthetic": ("segmentation.data.datasets.synthetic",),
    "segmentation.datasets.long_range": ("segmentation.data.datasets.long_range",),
    "segmentation.backbones": ("segmentation.models.backbones",),
    "segmentation.model": ("segmentation.models.segmenter",),
    "segmentation.pooling": ("segmentation.models.pooling",),
    "segmentation.orders": ("segmentation.models.orders",),
    "segmentation.metrics": ("segmentation.engine.metrics",),
    "segmentation.distributed": ("segmentation.engine.distributed",),
    "segmentation.training": ("segmentation.engine.train", "segmentation.engine.checkpoint",
                              "segmentation.engine.evaluate"),
    "segmentation.pipeline": ("segmentation.inference.predictor",),
    "segmentation.reach_stats": ("segmentation.analysis.reach",),
    "segmentation.influence": ("segmentation.analysis.influence",),
    "segmentation.workflows": ("segmentation.data.loading", "segmentation.engine.evaluate",
                               "segmentation.inference.files", "segmentation.cli.demo"),
}

#: Former modules that are no longer installed -> where they are in the repository.
REMOVED: dict[str, str] = {
    "segmentation.benchmarks": "benchmarks/layers/graph_lstm.py",
    "segmentation.bench_train": "benchmarks/training/throughput.py",
    "segmentation.bench_segment": "benchmarks/segment/throughput.py",
    "segmentation.data_benchmark": "benchmarks/data/loading.py",
    "segmentation.experiments": "experiments/context_and_order.py",
}


class _SplitModule(types.ModuleType):
    """A former module whose names now live in several modules."""

    def __init__(self, name: str, parts: tuple[str, ...]) -> None:
        super().__init__(name, f"{name} was split into {', '.join(parts)}.")
        self.__parts = parts

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        for part in self.__parts:
            module = importlib.import_module(part)
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(
            f"module {self.__name__!r} has no attribute {attribute!r}: the module was split "
            f"into {', '.join(self.__parts)}"
        )

    def __dir__(self) -> list[str]:
        names = set()
        for part in self.__parts:
            names.update(getattr(importlib.import_module(part), "__all__", ()))
        return sorted(names)


class _MovedLoader(importlib.abc.Loader):
    def __init__(self) -> None:
        self._spec = None

    def create_module(self, spec):
        parts = MOVED[spec.name]
        warnings.warn(f"{spec.name} has moved to {' and '.join(parts)}; import it from there",
                      DeprecationWarning, stacklevel=3)
        if len(parts) == 1:
            module = importlib.import_module(parts[0])
            self._spec = module.__spec__
            return module
        return _SplitModule(spec.name, parts)

    def exec_module(self, module) -> None:
        if self._spec is not None:
            # The import system has set the module's __spec__ to the former name's:
            # the module keeps its own (reload, pickling and -m rely on it).
            module.__spec__ = self._spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the former module names of :data:`MOVED` and :data:`REMOVED`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, _MovedLoader())
        if fullname in REMOVED:
            raise ModuleNotFoundError(
                f"{fullname} is no longer part of the installed package: it is "
                f"{REMOVED[fullname]} in the graphlstm repository (run it from a checkout)",
                name=fullname,
            )
        return None


def install() -> None:
    """Put :class:`MovedModuleFinder` on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        # First: a former submodule path (segmentation.datasets.voc) must not be found
        # again by the path finder in the new folder, as a second copy of the module.
        sys.meta_path.insert(0, MovedModuleFinder())


def module_attribute(name: str):
    """``segmentation.<name>`` for a former module name, imported on first access."""
    fullname = f"segmentation.{name}"
    if fullname in MOVED or fullname in REMOVED:
        return importlib.import_module(fullname)
    raise AttributeError(f"module 'segmentation' has no attribute {name!r}")
