"""Static checks as part of `make test`: ruff over the tree, mypy --strict over the package."""

from __future__ import annotations

import subprocess
from pathlib import Path

from selfmoa.testing.live import BIN

ROOT = Path(__file__).resolve().parents[1]


def test_ruff() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_mypy_strict(tmp_path: Path) -> None:
    """mypy cannot follow setuptools' editable mapping, so it reads the `selfmoa` tree through links."""
    package = tmp_path / "selfmoa"
    package.mkdir()
    for entry in (ROOT / "plugin").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "approaches").symlink_to(ROOT / "approaches")
    result = subprocess.run(
        [str(BIN / "mypy"), "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"),
         "-p", "selfmoa"],
        capture_output=True, text=True, cwd=tmp_path, env={"MYPYPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout
