"""The installed command line: after a plain, non-editable ``pip install`` the
console scripts exist, answer ``--help`` from any folder, and the distribution
carries its licence."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, help_of_scripts

COMMANDS = ["graphlstm-demo", "graphlstm-evaluate", "graphlstm-segment",
            "graphlstm-show-order", "graphlstm-train"]
# What a build needs from the checkout (copied, so that the build writes nothing there).
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "graphlstm", "segmentation"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install --no-deps --target DIR`` of a copy of the checkout, built with the
    setuptools at hand (no network: no build isolation)."""
    pytest.importorskip("setuptools", minversion="77")
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    target = work / "target"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return target


def test_pyproject_declares_the_five_programs():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert sorted(scripts) == COMMANDS
    for command, target in scripts.items():
        module = command.removeprefix("graphlstm-").replace("-", "_")
        assert target == f"segmentation.cli.{module}:console_main"


def installed_env(installed):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(installed)  # where --target put the packages
    return env


def test_help_of_every_installed_command_from_another_folder(installed, tmp_path):
    scripts = [installed / "bin" / command for command in COMMANDS]
    for script in scripts:
        assert script.is_file() and os.access(script, os.X_OK), script
    results = help_of_scripts(scripts, cwd=tmp_path, env=installed_env(installed))
    # The installed copy answered, not the checkout.
    assert results.pop("module").startswith(str(installed))
    for script, command in zip(scripts, COMMANDS, strict=True):
        code, text = results[str(script)]
        assert code in (0, None), (command, code)
        assert text.startswith(f"usage: {command} "), (command, text[:200])


def test_an_installed_command_runs_as_a_program(installed, tmp_path):
    """The script itself (its interpreter line, its permissions), once."""
    result = subprocess.run([str(installed / "bin" / "graphlstm-show-order"), "--help"],
                            cwd=tmp_path, env=installed_env(installed), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: graphlstm-show-order ")
    assert "graphlstm-show-order photo.jpg --order raster" in result.stdout  # its examples


def test_the_installed_distribution_carries_the_licence(installed):
    (info,) = installed.glob("graphlstm-*.dist-info")
    licence = info / "licenses" / "LICENSE"
    assert licence.read_text() == (ROOT / "LICENSE").read_text()
    assert "MIT License" in licence.read_text()
    metadata = (info / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata
