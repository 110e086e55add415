"""Plugins of the user's own, placed directly in `--plugins-dir DIR` (optillm itself only looks in
`DIR/optillm/plugins`, and 0.4.0 only after it has loaded its plugins)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("selfmoa")


def load_plugin_files(registry: dict[str, Any], directory: str) -> None:
    for path in sorted(Path(directory).glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"selfmoa_user_plugin_{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # a broken user plugin must not stop the server
            log.error("selfmoa: cannot load plugin %s: %s", path, error)
            continue
        if hasattr(module, "SLUG") and hasattr(module, "run"):
            registry[module.SLUG] = module.run
            log.info("selfmoa: loaded plugin %s from %s", module.SLUG, directory)
