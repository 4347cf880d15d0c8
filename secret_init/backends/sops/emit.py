"""Writing a decrypted sops document back in its own format, without the ``sops`` metadata.

This is the file ``sops decrypt`` (and ``sops exec-file``) gives: dotenv lines with ``\\n``
escapes, INI sections quoted the way gopkg.in/ini.v1 writes them, YAML, JSON indented with
a tab, or the raw bytes of a binary file.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Mapping

from ...errors import DataError
from . import gotext

INI_DEFAULT_SECTION = "DEFAULT"


class YamlDocuments(list):
    """The documents of a multi-document YAML file, in order."""


def emit(document: Any, document_format: str) -> bytes:
    """Return ``document`` written in ``document_format`` (yaml, json, dotenv, ini, binary).

    Raises DataError when the document does not fit the format, such as nested values in
    dotenv or values below a section in INI. The message names keys, never values.
    """
    if document_format == "dotenv":
        return _emit_dotenv(document)
    if document_format == "ini":
        return _emit_ini(document)
    if document_format == "yaml":
        return _emit_yaml(document)
    if document_format == "json":
        return (json.dumps(document, indent="\t", ensure_ascii=False, default=_json_default)
                + "\n").encode("utf-8")
    if document_format == "binary":
        if isinstance(document, bytes):
            return document
        if isinstance(document, str):
            return document.encode("utf-8")
        raise DataError("a binary sops document must be bytes or text, not a structure")
    raise DataError(f"cannot write a sops document as '{document_format}'; known formats: "
                    "yaml, json, dotenv, ini, binary")


def scalar_text(value: Any) -> str:
    """Return a scalar as sops' exec-env writes it (true, 5432, 2031-01-01T00:00:00Z)."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, float):
        return gotext.format_float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _emit_dotenv(document: Any) -> bytes:
    if not isinstance(document, Mapping):
        raise DataError("a dotenv document must be a mapping of names to values")
    lines = []
    for name, value in document.items():
        if isinstance(value, (Mapping, list)):
            raise DataError(f"the dotenv entry '{name}' is a nested structure, which dotenv "
                            "cannot hold")
        if "=" in name or "\n" in name or not name:
            raise DataError(f"the dotenv name '{name}' is empty or contains '=' or a newline")
        # sops writes a newline in a value as the two characters \n and reads it back.
        lines.append(f"{name}={scalar_text(value).replace(chr(10), chr(92) + 'n')}\n")
    return "".join(lines).encode("utf-8")


def _ini_value(text: str) -> str:
    # gopkg.in/ini.v1 quotes values this way when writing, so its reader gets them back.
    if "\n" in text or "`" in text:
        return f'"""{text}"""'
    if "#" in text or ";" in text:
        return f"`{text}`"
    if text != text.strip():
        return f'"{text}"'
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        # go-ini's reader would strip one pair of surrounding quotes; backticks keep them.
        return f"`{text}`"
    return text


def _emit_ini(document: Any) -> bytes:
    if not isinstance(document, Mapping):
        raise DataError("an INI document must be a mapping of sections")
    blocks = []
    ordered = sorted(document.items(), key=lambda item: item[0] != INI_DEFAULT_SECTION)
    for section, items in ordered:
        if isinstance(items, list) and not items:
            items = {}
        if not isinstance(items, Mapping):
            raise DataError(f"the INI entry '{section}' is not a section (a mapping of keys)")
        if section == INI_DEFAULT_SECTION and not items:
            continue
        lines = [] if section == INI_DEFAULT_SECTION else [f"[{section}]"]
        for key, value in items.items():
            if isinstance(value, (Mapping, list)):
                raise DataError(f"the INI key '{section}.{key}' contains a nested structure, "
                                "which INI cannot hold")
            lines.append(f"{key} = {_ini_value(scalar_text(value))}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks).encode("utf-8")


def _emit_yaml(document: Any) -> bytes:
    import yaml

    options = {"default_flow_style": False, "allow_unicode": True, "sort_keys": False}
    if isinstance(document, YamlDocuments):
        return yaml.safe_dump_all(list(document), **options).encode("utf-8")
    return yaml.safe_dump(document, **options).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, bytes)):
        return scalar_text(value)
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")
