"""Go's text forms of scalar values, which sops encrypts and feeds into its MAC.

sops is written in Go, so the plaintext of an encrypted value and the bytes hashed into the
MAC are Go's string forms (``strconv.FormatFloat(v, 'f', -1, 64)``, ``time.MarshalText``,
``True``/``False``), not Python's ``str()``. Reproducing them byte for byte is what lets a
Python decryptor verify the MAC of a file written by sops.
"""

from __future__ import annotations

import datetime
import math
import re
from decimal import Decimal
from typing import NamedTuple

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1
UINT64_MAX = 2 ** 64 - 1

# strconv.ParseBool accepts exactly these spellings.
_GO_TRUE = frozenset(("1", "t", "T", "TRUE", "true", "True"))
_GO_FALSE = frozenset(("0", "f", "F", "FALSE", "false", "False"))

_DECIMAL_INT = re.compile(r"[+-]?[0-9]+\Z")
_GO_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_GO_SPECIAL_FLOAT = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
                     "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
                     "nan": math.nan}

# RFC 3339 as Go's time.Time.UnmarshalText reads it (seconds required, fraction optional).
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z")


class GoTime(NamedTuple):
    """A timestamp with both forms sops needs: a datetime for callers, Go text for the MAC.

    ``text`` keeps nanoseconds, which a datetime cannot hold.
    """

    value: datetime.datetime
    text: str


def format_float(value: float) -> str:
    """Format like Go ``strconv.FormatFloat(v, 'f', -1, 64)``: shortest digits, no exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    # repr() gives the shortest round-trip digits; Decimal re-renders them without exponent.
    return format(Decimal(repr(value)).normalize(), "f")


def parse_bool(text: str) -> bool:
    """Parse like Go ``strconv.ParseBool``."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError("not a Go boolean")


def parse_int(text: str) -> int:
    """Parse like Go ``strconv.Atoi`` on a 64-bit platform."""
    if not _DECIMAL_INT.match(text):
        raise ValueError("not a decimal integer")
    number = int(text)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ValueError("integer out of the int64 range")
    return number


def parse_float(text: str) -> float:
    """Parse like Go ``strconv.ParseFloat(s, 64)`` for decimal, special and hex forms."""
    special = _GO_SPECIAL_FLOAT.get(text.lower())
    if special is not None:
        return special
    if _GO_FLOAT.match(text):
        return float(text)
    lowered = text.lower()
    if lowered.lstrip("+-").startswith("0x") and "p" in lowered:
        return float.fromhex(text)
    raise ValueError("not a Go float")


def parse_time(text: str) -> GoTime:
    """Parse an RFC 3339 timestamp like Go ``time.Time.UnmarshalText``."""
    return make_time(*_rfc3339_fields(text))


def format_rfc3339_seconds(text: str) -> str:
    """Re-format an RFC 3339 timestamp as Go ``time.RFC3339`` (whole seconds), the MAC's AAD."""
    fields = list(_rfc3339_fields(text))
    fields[6] = 0  # time.RFC3339 prints no fraction
    return make_time(*fields).text


def _rfc3339_fields(text: str) -> tuple[int, int, int, int, int, int, int, int]:
    match = _RFC3339.match(text)
    if not match:
        raise ValueError("not an RFC 3339 timestamp")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    offset_minutes = 0
    if not zulu:
        offset_minutes = int(off_h) * 60 + int(off_m)
        if sign == "-":
            offset_minutes = -offset_minutes
    nanoseconds = int(fraction.ljust(9, "0")) if fraction else 0
    return (int(year), int(month), int(day), int(hour), int(minute), int(second),
            nanoseconds, offset_minutes)


def make_time(year: int, month: int, day: int, hour: int, minute: int, second: int,
              nanoseconds: int, offset_minutes: int) -> GoTime:
    """Build a GoTime whose text is Go's ``MarshalText`` (RFC 3339 with nanoseconds)."""
    zone = datetime.timezone(datetime.timedelta(minutes=offset_minutes))
    value = datetime.datetime(year, month, day, hour, minute, second, nanoseconds // 1000,
                              tzinfo=zone)
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if nanoseconds:
        text += "." + f"{nanoseconds:09d}".rstrip("0")
    if offset_minutes == 0:
        text += "Z"
    else:
        sign = "+" if offset_minutes > 0 else "-"
        hours, minutes = divmod(abs(offset_minutes), 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
    return GoTime(value, text)


def mac_text(value: object) -> bytes:
    """Return the bytes sops feeds into the MAC for a non-comment value (Go ``ToBytes``)."""
    kind = type(value)
    if kind is str:
        return value.encode("utf-8")  # type: ignore[union-attr]
    if kind is bytes:
        return value  # type: ignore[return-value]
    if kind is bool:
        return b"True" if value else b"False"
    if kind is int:
        return str(value).encode("ascii")
    if kind is float:
        return format_float(value).encode("ascii")  # type: ignore[arg-type]
    if kind is GoTime:
        return value.text.encode("ascii")  # type: ignore[union-attr]
    raise TypeError(f"no MAC form for {kind.__name__}")
