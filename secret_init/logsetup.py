"""Logging to stderr, as text or JSON lines, with every record passed through redaction."""

from __future__ import annotations

import json
import logging
import sys
import time

from . import redact

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class RedactingFormatter(logging.Formatter):
    """Format a record, then mask registered values in the whole line, traceback included."""

    def __init__(self, json_lines: bool) -> None:
        super().__init__("secret-init: %(levelname)s %(message)s")
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        if not self.json_lines:
            return redact.redact(super().format(record))
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("secret", "backend", "source", "version", "ms", "event", "count"):
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact.redact(json.dumps(entry, ensure_ascii=False, default=str))


def configure(level: str = "info", log_format: str = "text") -> None:
    """Send secret-init's logs to stderr at ``level`` in ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(json_lines=log_format == "json"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries stay at WARNING even at --log-level debug: botocore's debug lines carry whole
    # request and response bodies (a KMS data key, session tokens), which redaction cannot
    # know in advance.
    root.setLevel(logging.WARNING)
    logging.getLogger("secret_init").setLevel(level.upper())
