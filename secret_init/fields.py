"""Typed, located reading of one manifest mapping.

Both the core and every backend read their part of the manifest through ``Fields``. Each
accessor checks the type and reports errors at the value's line and column, and ``finish``
rejects keys that no accessor read, so a typo such as ``verison`` is an error, not a
silent default.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from .errors import ManifestError
from .located import LocatedList, LocatedMap

MISSING: Any = object()

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_mode(value: Any, source: str | None = None) -> int:
    """Parse a file mode given as an octal string ("0400" or "0o400").

    ``source`` is the text as written in the file, when known. Numbers are rejected with a
    hint, because YAML reads an unquoted 0400 as the octal number 256 and an unquoted 400
    as the decimal 400, and neither is what a reader of the manifest expects.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"must be an octal string such as \"0400\", not {value!r}")
    if isinstance(value, int):
        written = source if source is not None else str(value)
        if written.startswith("0") and written != "0":
            raise ValueError(f"YAML reads the unquoted {written} as the number {value}; "
                             f"quote it: \"{written}\"")
        if all(c in "01234567" for c in written):
            raise ValueError(f"{written} is a decimal number; modes are octal strings, "
                             f"so write \"0{written}\"")
        raise ValueError(f"{written} is a decimal number; write the mode as a quoted octal "
                         "string such as \"0400\"")
    text = value.strip().lower()
    digits = text[2:] if text.startswith("0o") else text
    if not digits or any(c not in "01234567" for c in digits):
        raise ValueError(f"\"{value}\" is not an octal number; use digits 0-7, such as \"0400\"")
    if not text.startswith("0"):
        raise ValueError(f"\"{value}\" has no leading 0; write octal modes as \"0{text}\"")
    mode = int(digits, 8)
    if mode & 0o002:
        raise ValueError(f"\"{value}\" lets every user in the container replace the content; "
                         "drop the last digit's write bit, such as \"0440\"")
    if mode > 0o777:
        raise ValueError(f"\"{value}\" sets setuid, setgid or sticky bits, which a secret "
                         "file never needs; use permission bits only, such as \"0440\"")
    return mode


def parse_duration(value: Any) -> float:
    """Parse seconds given as a number or a string with a unit: 10, 2.5, "500ms", "30s", "2m"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; use seconds or a unit: \"500ms\", \"30s\", \"2m\"")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    return seconds


class Fields:
    """Typed reader for one mapping of the manifest, with errors at file, line and column."""

    def __init__(self, mapping: Any, *, file: str, where: str) -> None:
        if not isinstance(mapping, dict):
            position = getattr(mapping, "position", (None, None))
            raise ManifestError(f"{where} must be a mapping, not {_kind(mapping)}",
                                file=file, line=position[0], column=position[1])
        self.mapping = mapping
        self.file = file
        self.where = where
        self._read: set[Any] = set()

    # -- errors ---------------------------------------------------------------------------

    def error(self, key: str | None, message: str) -> ManifestError:
        """Build a ManifestError located at ``key``'s value (or the mapping when key is None)."""
        position: tuple[int | None, int | None] = (None, None)
        if isinstance(self.mapping, LocatedMap):
            if key is not None and key in self.mapping.value_positions:
                position = self.mapping.value_positions[key]
            elif self.mapping.position != (0, 0):
                position = self.mapping.position
        subject = f"{self.where}.{key}" if key is not None else self.where
        return ManifestError(f"{subject}: {message}", file=self.file,
                             line=position[0], column=position[1])

    # -- presence -------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        return key in self.mapping

    def raw(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key`` unchecked, marking it read."""
        self._read.add(key)
        return self.mapping.get(key, default)

    def _get(self, key: str, default: Any, required: bool) -> Any:
        self._read.add(key)
        if key not in self.mapping or self.mapping[key] is None:
            if required:
                raise self.error(None, f"missing required field '{key}'")
            return default
        return self.mapping[key]

    # -- typed accessors --------------------------------------------------------------------

    def string(self, key: str, default: Any = None, *, required: bool = False,
               choices: Iterable[str] | None = None, allow_empty: bool = False) -> Any:
        value = self._get(key, MISSING, required)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(key, f"must be a string, not {_kind(value)}")
        value = str(value)
        if not value and not allow_empty:
            raise self.error(key, "must not be empty")
        if choices is not None:
            allowed = list(choices)
            if value not in allowed:
                raise self.error(key, f"'{value}' is not one of: {', '.join(allowed)}")
        return value

    def integer(self, key: str, default: Any = None, *, minimum: int | None = None,
                maximum: int | None = None, required: bool = False) -> Any:
        value = self._get(key, MISSING, required)
        if value is MISSING:
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise self.error(key, f"must be at most {maximum}, not {value}")
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self._get(key, MISSING, False)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def duration(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        value = self._get(key, MISSING, required)
        if value is MISSING:
            return default
        try:
            return parse_duration(value)
        except ValueError as error:
            raise self.error(key, str(error)) from None

    def mode(self, key: str, default: Any = None) -> Any:
        value = self._get(key, MISSING, False)
        if value is MISSING:
            return default
        source = getattr(self.mapping, "value_sources", {}).get(key)
        try:
            return parse_mode(value, source)
        except ValueError as error:
            raise self.error(key, f"invalid file mode: {error}") from None

    def string_list(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        """Read a list of strings; a single string is accepted as a list of one."""
        value = self._get(key, MISSING, required)
        if value is MISSING:
            return default
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise self.error(key, "must be a string or a list of strings")
        return [str(v) for v in value]

    def string_map(self, key: str, default: Any = None) -> Any:
        """Read a mapping of string keys to scalar values (such as request parameters)."""
        value = self._get(key, MISSING, False)
        if value is MISSING:
            return default
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, not {_kind(value)}")
        return dict(value)

    def fields(self, key: str, *, required: bool = False) -> "Fields | None":
        """Return a nested Fields reader for the mapping at ``key``."""
        value = self._get(key, MISSING, required)
        if value is MISSING:
            return None
        if not isinstance(value, dict):
            raise self.error(key, f"must be a mapping, not {_kind(value)}")
        return Fields(value, file=self.file, where=f"{self.where}.{key}")

    def exclusive(self, *keys: str, required: bool = False) -> str | None:
        """Check that at most one of ``keys`` is set (exactly one when required); return it."""
        present = [k for k in keys if self.mapping.get(k) is not None]
        if len(present) > 1:
            raise self.error(present[1], f"'{present[0]}' and '{present[1]}' cannot be used together")
        if required and not present:
            raise self.error(None, f"one of {', '.join(repr(k) for k in keys)} is required")
        return present[0] if present else None

    def finish(self, also_allowed: Iterable[str] = ()) -> None:
        """Reject every key that no accessor read, naming the allowed keys."""
        self.reject_unknown(set(self._read) | set(also_allowed))

    def reject_unknown(self, allowed: Iterable[str]) -> None:
        """Reject keys outside ``allowed``, suggesting the closest allowed name for a typo."""
        allowed_names = sorted(str(k) for k in allowed)
        for key in self.mapping:
            if key in allowed_names:
                continue
            # Two swapped letters ('form' for 'from') first: difflib alone ranks 'format' closer.
            close = [name for name in allowed_names if sorted(name) == sorted(str(key))]
            if not close:
                # Imported here, not at module level: only a manifest error needs it.
                import difflib

                close = difflib.get_close_matches(str(key), allowed_names, n=1)
            suggestion = f"did you mean '{close[0]}'? " if close else ""
            raise self.key_error(key, f"unknown field '{key}'; {suggestion}"
                                      f"allowed here: {', '.join(allowed_names)}")

    def key_error(self, key: Any, message: str) -> ManifestError:
        """Build a ManifestError located at ``key`` itself rather than its value."""
        position: tuple[int | None, int | None] = (None, None)
        if isinstance(self.mapping, LocatedMap) and key in self.mapping.key_positions:
            position = self.mapping.key_positions[key]
        return ManifestError(f"{self.where}: {message}", file=self.file,
                             line=position[0], column=position[1])


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (dict, LocatedMap)):
        return "a mapping"
    if isinstance(value, (list, LocatedList)):
        return "a list"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return f"a {type(value).__name__}"
