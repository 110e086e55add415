"""The log lines of `selfmoa serve`: one per request, as `key=value` text (`selfmoa approach=self_moa
proposers=... wall=1.20s`) or, with `--log-format json`, one JSON object per line, every other log
line included. Keys are redacted from both (`redaction.py` filters every handler)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from .runtime import redact

log = logging.getLogger("selfmoa")
FORMATS = ("text", "json")
_FIELDS = "selfmoa_fields"  # the record attribute a request line's fields travel in


def request_line(fields: Mapping[str, Any]) -> None:
    """Log one request's line (its fields in the order given)."""
    log.info(text_of(fields), extra={_FIELDS: dict(fields)})


def text_of(fields: Mapping[str, Any]) -> str:
    return "selfmoa " + " ".join(f"{key}={_shown(value)}" for key, value in fields.items() if value is not None)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}s"
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and a request line's fields."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) +
                                f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                                "logger": record.name}
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str), self.secrets)


TEXT = "%(asctime)s - %(levelname)s - %(message)s"  # optillm's own


def use_format(name: str, secrets: tuple[str, ...]) -> None:
    """Every handler of the root logger (optillm's, uvicorn's and ours end up there) in `name`;
    a handler made first if there is none yet (optillm then adds none of its own at import)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter(secrets) if name == "json" else logging.Formatter(TEXT))
