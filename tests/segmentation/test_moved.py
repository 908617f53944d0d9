"""Former module names of the flat package: they still import (with a warning naming
the new place), or fail with an error that says where the module went."""

import importlib
import sys

import pytest

import segmentation
from segmentation import _moved
from tests.helpers import ROOT


def _forget_former_names():
    for name in _moved.MOVED:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent == "segmentation":
            vars(segmentation).pop(child, None)


@pytest.fixture(autouse=True)
def _fresh_imports():
    # Each test imports the former names afresh, so that each sees the warning.
    _forget_former_names()
    yield
    _forget_former_names()


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_former_module_names_resolve_to_the_new_modules(old):
    new = _moved.MOVED[old]
    with pytest.warns(DeprecationWarning, match=new[0].replace(".", r"\.")):
        module = importlib.import_module(old)
    for part in new:
        target = importlib.import_module(part)
        for name in getattr(target, "__all__", ()):
            assert getattr(module, name) is getattr(target, name), (old, name)
    if len(new) == 1:
        assert module is importlib.import_module(new[0])
        # The new module keeps its own identity: name and spec of the new place.
        assert module.__name__ == new[0] and module.__spec__.name == new[0]


def test_the_names_users_import_keep_working():
    with pytest.warns(DeprecationWarning):
        from segmentation.datasets.voc import VOCSegmentation
        from segmentation.model import GraphLSTMSegmenter
        from segmentation.pipeline import load_segmenter
        from segmentation.training import evaluate, load_checkpoint, train
    from segmentation.engine.checkpoint import load_checkpoint as new_load_checkpoint
    from segmentation.engine.evaluate import evaluate as new_evaluate
    from segmentation.engine.train import train as new_train

    assert GraphLSTMSegmenter is segmentation.GraphLSTMSegmenter
    assert load_segmenter is segmentation.load_segmenter
    assert (train, evaluate, load_checkpoint) == (new_train, new_evaluate, new_load_checkpoint)
    assert VOCSegmentation is segmentation.VOCSegmentation
    # The former modules segmentation.data and segmentation.inference are packages now
    # that export the same names.
    from segmentation.data import RandomFlipScaleCrop, SuperpixelDataset, pad_collate  # noqa: F401
    from segmentation.inference import IMAGE_SUFFIXES, list_images, segment_files  # noqa: F401


def test_an_attribute_of_the_package_imports_the_former_module():
    with pytest.warns(DeprecationWarning):
        assert segmentation.rag.region_adjacency is segmentation.region_adjacency
    with pytest.raises(AttributeError, match="no_such_module"):
        segmentation.no_such_module  # noqa: B018


def test_a_name_missing_from_a_split_module_names_its_parts():
    with pytest.warns(DeprecationWarning):
        training = importlib.import_module("segmentation.training")
    with pytest.raises(AttributeError, match="segmentation.engine.train.*segmentation.engine"):
        training.no_such_name  # noqa: B018


@pytest.mark.parametrize("old", sorted(_moved.REMOVED))
def test_modules_that_left_the_package_say_where_they_are(old):
    with pytest.raises(ModuleNotFoundError, match=_moved.REMOVED[old].replace(".", r"\.")):
        importlib.import_module(old)
    assert (ROOT / _moved.REMOVED[old]).is_file()


def test_the_installed_packages_hold_no_benchmark_or_experiment():
    # What pyproject's package list selects: every package under graphlstm/ and
    # segmentation/, nothing of benchmarks/ or experiments/ (a wheel build is slow:
    # the same selection, computed as setuptools computes it).
    from setuptools import find_packages

    packages = find_packages(str(ROOT), include=["graphlstm*", "segmentation*"])
    assert "segmentation.cli" in packages and "segmentation.data.datasets" in packages
    assert not [p for p in packages if p.split(".")[0] in ("benchmarks", "experiments", "tests")]
