"""The code is held to its own rules by their tools: ruff (lint and format)
and mypy --strict, with zero findings (pyproject.toml configures both).
Each ignore left in the code says why, where it is."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from .conftest import ROOT


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(ROOT / ".venv" / "bin")) or shutil.which(name)
    assert found is not None, f"{name} is not installed (the lint extra: pip install -e '.[lint]')"
    return found


def test_ruff_finds_nothing_and_the_tree_is_formatted() -> None:
    paths = ["src", "tests", "benchmarks"]
    lint = subprocess.run([_tool("ruff"), "check", *paths], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout[-4000:]
    formatted = subprocess.run(
        [_tool("ruff"), "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert formatted.returncode == 0, formatted.stdout[-4000:]


def test_mypy_strict_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]


def test_every_ignore_says_why() -> None:
    """A ``type: ignore`` or ``noqa`` in the package is followed by its reason."""
    unexplained = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for match in re.finditer(r"#\s*(type: ignore\[[^\]]+\]|noqa(?::\s*[A-Z0-9, ]+)?)(.*)$", line):
                if not re.search(r"[A-Za-z(]", match.group(2)):
                    unexplained.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not unexplained, "\n".join(unexplained)
