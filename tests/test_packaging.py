"""The public surface and the install: one `selfmoa` namespace, a complete `__all__`, a lean install."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import selfmoa.approaches as approaches
import selfmoa.sim as sim

ROOT = Path(__file__).resolve().parents[1]


def test_all_lists_every_public_name() -> None:
    for module in (approaches, sim):
        public = {n for n, v in vars(module).items() if not n.startswith("_") and not inspect.ismodule(v)}
        public -= {"annotations"}
        assert set(module.__all__) == public, module.__name__


def test_the_algorithms_do_not_import_optillm_or_flask() -> None:
    for path in (ROOT / "approaches").glob("*.py"):
        text = path.read_text()
        assert "import optillm" not in text and "from optillm" not in text, path.name
        assert "import flask" not in text and "from flask" not in text, path.name


def test_importing_does_no_work() -> None:
    code = "import logging, selfmoa.approaches, selfmoa.config, selfmoa.entry, selfmoa.sim, selfmoa.cli; " \
           "assert not logging.getLogger().handlers; import selfmoa.runtime as r; " \
           "assert r.runtime_for.cache_info().currsize == 0"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_bare_top_level_modules_are_installed() -> None:
    for name in ("approaches", "plugin"):
        found = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, cwd="/")
        assert found.returncode != 0, f"a bare top-level `{name}` module is importable"
