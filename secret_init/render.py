"""Turn fetched values into file content: pick a key, decode, format, fill templates.

Rendering is pure: it takes the values the fetch step returned and produces bytes per
secret. A value that cannot be rendered is a DataError naming the secret and what is
wrong, and never quoting the value.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from typing import Any, Mapping

from .backends.base import Fetched, KeyPath
from .errors import ConfigError, DataError, KeyNotFoundError
from .manifest import SecretSpec, key_path_text

# ${name} refers to another secret; $$ is a literal dollar sign.
TEMPLATE_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$")
MAX_KEYS_LISTED = 20


def template_references(text: str) -> list[str]:
    """Return the secret names ``text`` refers to, or raise ValueError on a malformed token."""
    names = []
    for match in TEMPLATE_TOKEN.finditer(text):
        token = match.group(0)
        if token == "$$":
            continue
        if token == "$":
            raise ValueError(f"a lone '$' at offset {match.start()}; write '$$' for a dollar sign "
                             "or '${name}' for a secret")
        name = match.group(1).strip()
        if not name:
            raise ValueError(f"an empty reference '${{}}' at offset {match.start()}")
        names.append(name)
    return names


def fill_template(text: str, values: Mapping[str, bytes]) -> bytes:
    """Replace each ${name} in ``text`` with that secret's rendered content."""
    pieces: list[bytes] = []
    position = 0
    for match in TEMPLATE_TOKEN.finditer(text):
        pieces.append(text[position:match.start()].encode("utf-8"))
        token = match.group(0)
        pieces.append(b"$" if token == "$$" else values[match.group(1).strip()])
        position = match.end()
    pieces.append(text[position:].encode("utf-8"))
    return b"".join(pieces)


def template_order(secrets: list[SecretSpec]) -> list[SecretSpec]:
    """Order templates so each comes after the templates it uses; reject unknown names and cycles."""
    by_name = {spec.name: spec for spec in secrets}
    templates = {spec.name: spec for spec in secrets if spec.template is not None}
    ordered: list[SecretSpec] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(chain[chain.index(name):] + [name])
            raise ConfigError(f"templates refer to each other in a cycle: {cycle}", secret=name)
        state[name] = "visiting"
        try:
            references = template_references(templates[name].template or "")
        except ValueError as error:
            raise ConfigError(f"invalid template: {error}", secret=name) from None
        for reference in references:
            if reference not in by_name:
                known = ", ".join(sorted(by_name))
                raise ConfigError(f"template refers to unknown secret '${{{reference}}}'; "
                                  f"known secrets: {known}", secret=name)
            if reference == name:
                raise ConfigError("template refers to itself", secret=name)
            if by_name[reference].optional and not templates[name].optional:
                raise ConfigError(f"template uses optional secret '{reference}', so it may have "
                                  "nothing to fill in; add 'optional: true' to the template or "
                                  f"make '{reference}' required", secret=name)
            if reference in templates:
                visit(reference, chain + [name])
        state[name] = "done"
        ordered.append(templates[name])

    for name in templates:
        visit(name, [])
    return ordered


def select_key(value: Any, key: KeyPath, spec: SecretSpec, source: str) -> Any:
    """Walk ``key`` into a structured value; a str or bytes value is parsed as JSON first."""
    if isinstance(value, (bytes, str)):
        value = _parse_json(value, spec, source, reason=f"key '{key_path_text(key)}'")
    current = value
    for depth, part in enumerate(key):
        walked = key_path_text(key[:depth]) if depth else "the top level"
        if isinstance(current, Mapping):
            if part in current:
                current = current[part]
                continue
            names = sorted(str(k) for k in current)
            shown = ", ".join(names[:MAX_KEYS_LISTED]) + (", ..." if len(names) > MAX_KEYS_LISTED else "")
            raise KeyNotFoundError(f"key '{key_path_text(key)}' not found in {source}: no '{part}' at "
                            f"{walked}; keys there: {shown or 'none'}", secret=spec.name)
        if isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
            continue
        raise KeyNotFoundError(f"key '{key_path_text(key)}' not found in {source}: {walked} is "
                        f"{_kind(current)}, not a mapping", secret=spec.name)
    return current


def _parse_json(value: bytes | str, spec: SecretSpec, source: str, reason: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{reason} needs a JSON object, but the value from {source} is not "
                        "valid JSON; remove the setting to write the value as it is",
                        secret=spec.name) from None


def scalar_text(value: Any) -> str:
    """Render a scalar the way YAML and JSON users expect (true, 5432, 2031-01-01T00:00:00Z)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return scalar_text(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(type(value).__name__)


def _yaml_dumper() -> type:
    """Return a safe dumper that writes timestamps as RFC 3339 (2031-01-01T00:00:00Z), as sops does."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def timestamp(dumper: yaml.SafeDumper, value: datetime.datetime) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:timestamp", scalar_text(value))

    Dumper.add_representer(datetime.datetime, timestamp)
    return Dumper


def dotenv_line_value(text: str) -> str:
    """Quote a dotenv value so dotenv loaders read it back unchanged.

    Single quotes, because loaders such as python-dotenv and Docker Compose expand ${VAR}
    inside double quotes. A value with a single quote or a newline needs double quotes, where
    backslash, double quote, newline (as \\n) and dollar are escaped.
    NOTE: loaders differ on escapes inside double quotes, so a value with ' or a newline
    and also $ may read back differently in some of them.
    """
    if text and re.fullmatch(r"[A-Za-z0-9_./:@%+,=-]*", text):
        return text
    if "'" not in text and "\n" not in text:
        return f"'{text}'"
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("$", "\\$"))
    return f'"{escaped}"'


DOTENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def format_structure(value: Any, fmt: str, spec: SecretSpec, source: str) -> bytes:
    """Write a mapping, list or scalar as json, yaml, dotenv or raw text."""
    import yaml

    if fmt == "json":
        return (json.dumps(value, indent=2, ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")
    if fmt == "yaml":
        return yaml.dump(value, Dumper=_yaml_dumper(), default_flow_style=False,
                         allow_unicode=True, sort_keys=False).encode("utf-8")
    if fmt == "dotenv":
        if not isinstance(value, Mapping):
            raise DataError(f"format dotenv needs a mapping, but the value from {source} is "
                            f"{_kind(value)}", secret=spec.name)
        lines = []
        for name, item in value.items():
            if isinstance(item, (Mapping, list)):
                raise DataError(f"format dotenv needs flat values, but '{name}' from {source} is "
                                f"{_kind(item)}; pick it with 'key' or use format json",
                                secret=spec.name)
            if not DOTENV_NAME.fullmatch(str(name)):
                raise DataError(f"format dotenv needs variable names, but {source} has the key "
                                f"'{name}'; pick values with 'key' or use format json",
                                secret=spec.name)
            lines.append(f"{name}={dotenv_line_value(scalar_text(item))}\n")
        return "".join(lines).encode("utf-8")
    # raw
    if isinstance(value, (Mapping, list)):
        raise DataError(f"format raw needs a single value, but the value from {source} is "
                        f"{_kind(value)}; use format json, yaml or dotenv, or pick a field with 'key'",
                        secret=spec.name)
    return scalar_text(value).encode("utf-8")


def render_value(fetched: Fetched, spec: SecretSpec, source: str) -> bytes:
    """Produce the file content of one secret from its fetched value."""
    value = fetched.value
    if spec.key is not None:
        value = select_key(value, spec.key, spec, source)
    elif spec.format not in (None, "raw") and isinstance(value, (str, bytes)):
        # A string that happens to be JSON stays verbatim unless a format requests parsing.
        value = _parse_json(value, spec, source, reason=f"format {spec.format}")

    if spec.encoding == "base64":
        return _decode_base64(value, spec, source)

    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (Mapping, list)):
        fmt = spec.format or ("json" if spec.key is not None else None) or fetched.document_format or "json"
        if fmt in ("ini", "dotenv") and spec.format is None and spec.key is None:
            return _emit_document(value, fmt)
        if fmt not in ("json", "yaml", "dotenv", "raw"):
            fmt = "json"
        return format_structure(value, fmt, spec, source)
    if spec.format in ("json", "yaml", "dotenv"):
        return format_structure(value, spec.format, spec, source)
    return scalar_text(value).encode("utf-8")


def _emit_document(value: Any, fmt: str) -> bytes:
    """Write a whole decrypted document back in its own format (dotenv, ini)."""
    from .backends.sops.emit import emit

    return emit(value, fmt)


def _decode_base64(value: Any, spec: SecretSpec, source: str) -> bytes:
    if isinstance(value, bytes):
        text = value
    elif isinstance(value, str):
        text = value.encode("ascii", errors="replace")
    else:
        raise DataError(f"encoding base64 needs a string, but the value from {source} is "
                        f"{_kind(value)}", secret=spec.name)
    compact = b"".join(text.split())
    # Standard (+/) or URL-safe (-_) alphabet, padding optional; never both alphabets at once.
    alphabet = _BASE64_STANDARD if not re.search(rb"[-_]", compact) else _BASE64_URLSAFE
    unpadded = compact.rstrip(b"=")
    valid = (alphabet.fullmatch(unpadded) is not None and len(compact) - len(unpadded) <= 2
             and len(unpadded) % 4 != 1)
    if valid:
        padded = unpadded + b"=" * (-len(unpadded) % 4)
        try:
            if alphabet is _BASE64_URLSAFE:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise DataError(f"encoding base64 is set, but the value from {source} is not valid "
                    "base64; remove 'encoding' to write it as it is", secret=spec.name)


_BASE64_STANDARD = re.compile(rb"[A-Za-z0-9+/]*")
_BASE64_URLSAFE = re.compile(rb"[A-Za-z0-9_-]*")


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (bytes, str)):
        return "a string"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
