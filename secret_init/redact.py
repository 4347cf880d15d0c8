"""A second line of defence: mask every fetched value in every log record.

Code paths are written never to put a value in a message. This registry exists for the case
where one does anyway (a library's exception text, a future bug): every value the fetch step
returns is registered, with its base64 forms, and the log handler replaces any occurrence.
"""

from __future__ import annotations

import base64
import threading
from typing import Any, Iterable, Mapping

MASK = "[REDACTED]"
# Shorter values are not masked: masking "1" or "yes" would garble every line and protect
# nothing. NOTE: a secret of fewer than this many characters can still appear if a bug logs it.
MIN_MASKED_LENGTH = 4

_lock = threading.Lock()
_values: set[str] = set()


def _forms(text: str) -> Iterable[str]:
    yield text
    raw = text.encode("utf-8", errors="surrogateescape")
    yield base64.b64encode(raw).decode("ascii")
    yield base64.urlsafe_b64encode(raw).decode("ascii")
    yield base64.b64encode(raw).decode("ascii").rstrip("=")
    # A value inside a JSON string or a repr shows its escapes.
    escaped = text.encode("unicode_escape").decode("ascii")
    if escaped != text:
        yield escaped


def register(value: Any) -> None:
    """Remember ``value`` (and every string inside a structure) so logs can mask it."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="surrogateescape")
    if isinstance(value, str):
        if len(value) >= MIN_MASKED_LENGTH:
            with _lock:
                _values.update(form for form in _forms(value) if len(form) >= MIN_MASKED_LENGTH)
            # Each line of a multi-line value (a PEM key) is masked on its own, too.
            for line in value.splitlines():
                if line != value and len(line.strip()) >= 8:
                    register(line.strip())
        return
    if isinstance(value, Mapping):
        for item in value.values():
            register(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            register(item)
    elif value is not None and not isinstance(value, bool):
        register(str(value))


def redact(text: str) -> str:
    """Return ``text`` with every registered value replaced by the mask, longest first."""
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def clear() -> None:
    """Forget every registered value (tests)."""
    with _lock:
        _values.clear()
