"""One warning, naming NUMBA_CACHE_DIR, when numba can cache the kernels nowhere.

Numba checks that a cache folder is writable by creating a temporary file in
it (``_CacheLocator.ensure_cache_path``); on a read-only package folder and
home that raises ``OSError``. The tests make that check fail everywhere, as a
read-only file system does (permissions alone would not: tests may run as root).
"""

import os
import subprocess
import sys
import textwrap
import warnings

import numba.core.caching
import pytest

from graphlstm._kernels import _jit
from tests.helpers import ROOT


def _read_only(self):
    raise OSError(30, "Read-only file system", self.get_cache_path())


def test_one_warning_for_many_uncacheable_kernels(monkeypatch):
    monkeypatch.setattr(numba.core.caching._CacheLocator, "ensure_cache_path", _read_only)
    monkeypatch.setattr(_jit, "_warned_uncached", False)

    def add(a, b):
        return a + b

    def twice(a):
        return 2 * a

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernels = [_jit.jit()(add), _jit.jit()(twice), _jit.jit(parallel=False)(add)]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "NUMBA_CACHE_DIR" in messages[0] and "not writable" in messages[0]
    # Still compiled, only not cached.
    assert kernels[0](2, 3) == 5 and kernels[1](4) == 8 and kernels[2](1.5, 1) == 2.5


def test_no_warning_where_the_cache_is_writable(monkeypatch):
    monkeypatch.setattr(_jit, "_warned_uncached", False)

    def add(a, b):
        return a + b

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _jit.jit()(add)
    assert not [w for w in caught if "NUMBA_CACHE_DIR" in str(w.message)]


@pytest.mark.parametrize("cache_dir", [None, "a-file/cache"])
def test_importing_the_kernels_warns_once_in_a_fresh_process(tmp_path, cache_dir):
    """All the package's kernels are defined at import; with no writable cache
    (also not the NUMBA_CACHE_DIR given: here a folder under a plain file) the
    import warns exactly once."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if cache_dir is not None:
        (tmp_path / "a-file").write_text("not a folder")
        env["NUMBA_CACHE_DIR"] = str(tmp_path / cache_dir)
    code = textwrap.dedent(
        """
        import warnings
        import numba.core.caching as caching
        import torch_geometric  # noqa: F401  (its own deprecation warnings are not ours)

        def read_only(self):
            raise OSError(30, "Read-only file system", self.get_cache_path())

        if "NUMBA_CACHE_DIR" not in __import__("os").environ:
            caching._CacheLocator.ensure_cache_path = read_only
        else:  # the folder given fails for real; the others as on a read-only disk
            for name in ("InTreeCacheLocator", "UserWideCacheLocator"):
                getattr(caching, name).ensure_cache_path = read_only
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import graphlstm._kernels  # noqa: F401
        for w in caught:
            print("WARNING:", w.message)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("WARNING:")]
    assert len(lines) == 1, result.stdout
    assert "NUMBA_CACHE_DIR" in lines[0]
    if cache_dir is not None:
        assert str(tmp_path / cache_dir) in lines[0]
