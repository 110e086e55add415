"""Keys never reach a log line, optillm's and uvicorn's included: a filter on every handler."""

from __future__ import annotations

import logging

from .runtime import redact


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logs(secrets: tuple[str, ...]) -> None:
    """Every handler of the root logger (where optillm's, uvicorn's and ours end up) redacts."""
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(RedactingFilter(secrets))
