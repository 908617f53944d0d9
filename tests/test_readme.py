"""Every ```python block of the README runs as written, in a fresh directory.

Each block runs alone in its own interpreter (no state shared between blocks),
with a temporary folder as the working directory, so a block may write files
("order.png") without touching the checkout, and may not rely on files in it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every fenced block whose info string is ``python``."""
    blocks, start, lines, fence = [], None, [], None
    for number, line in enumerate(text.splitlines(), start=1):
        if start is None:
            match = re.match(r"^(```+|~~~+)\s*python\s*$", line)
            if match:
                start, lines, fence = number, [], match.group(1)
        elif line.strip() == fence:
            blocks.append((start, "\n".join(lines) + "\n"))
            start = None
        else:
            lines.append(line)
    assert start is None, f"README.md: the python block at line {start} is not closed"
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python block"


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks(text) == [(2, "x = 1\n"), (8, "y = 2\nz = 3\n")]


@pytest.mark.parametrize("line, source", BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_readme_python_block_runs(line, source, tmp_path):
    env = dict(os.environ)
    # This checkout's packages, as an editable install of it would give.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    script = tmp_path / "block.py"
    script.write_text(source, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"README.md line {line}: the python block failed\n{result.stderr[-3000:]}")
