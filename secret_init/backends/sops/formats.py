"""Reading encrypted sops files in their five formats into one tree shape.

Every loader returns documents made of ``Pairs`` (a mapping as an ordered list of
``(key, value)`` items, so duplicate and ``<<`` keys stay visible), lists and scalars, plus
the raw ``sops`` metadata. Scalars get the types Go sops gives them, because the MAC hashes
unencrypted values in their typed Go form. YAML plain scalars resolve like yaml.v3 (YAML
1.2 booleans, ``0x``/``0o`` integers, timestamps). JSON integers stay exact. Dotenv and INI
values are strings.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ...errors import DataError
from . import gotext
from .metadata import unflatten

FORMATS = ("yaml", "json", "dotenv", "ini", "binary")
EXTENSION_FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".env": "dotenv",
                     ".ini": "ini"}
METADATA_KEY = "sops"
DOTENV_METADATA_PREFIX = "sops_"
INI_DEFAULT_SECTION = "DEFAULT"

# Aliases copy whole subtrees; this bounds the copies so a small file cannot expand into
# billions of nodes ("billion laughs").
MAX_EXPANDED_NODES = 2_000_000


class Pairs(list):
    """A mapping as an ordered list of ``(key, value)`` pairs."""


@dataclass
class LoadedFile:
    """An encrypted file split into its data documents and its raw metadata."""

    format: str
    documents: list[Pairs]
    metadata: Any


def format_for_path(name: str) -> str:
    """Pick the format from a file name as sops does: unknown extensions are binary."""
    lowered = name.lower()
    for extension, file_format in EXTENSION_FORMATS.items():
        if lowered.endswith(extension):
            return file_format
    return "binary"


def load(data: bytes, file_format: str, source: str) -> LoadedFile:
    """Parse ``data`` in ``file_format``; errors name ``source`` but never quote content."""
    if file_format == "yaml":
        return _load_yaml(_text(data, source), source)
    if file_format in ("json", "binary"):
        return _load_json(_text(data, source), source, file_format)
    if file_format == "dotenv":
        return _load_dotenv(_text(data, source), source)
    if file_format == "ini":
        return _load_ini(_text(data, source), source)
    raise DataError(f"{source}: unknown sops file format '{file_format}'")


def _text(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{source} is not UTF-8 text (invalid byte at offset {error.start}); "
                        "an encrypted sops file is always text") from None


def plain(node: Any) -> Any:
    """Convert Pairs into dicts, recursively (for metadata)."""
    if isinstance(node, Pairs):
        return {key: plain(value) for key, value in node}
    if isinstance(node, list):
        return [plain(item) for item in node]
    return node


def _split_metadata(documents: list[Pairs], source: str) -> tuple[list[Pairs], Any]:
    metadata = None
    stripped: list[Pairs] = []
    for index, document in enumerate(documents):
        data_items = Pairs()
        for key, value in document:
            if key == METADATA_KEY:
                # Writers repeat the block in every YAML document; the first one counts.
                if index == 0:
                    metadata = plain(value)
            else:
                data_items.append((key, value))
        stripped.append(data_items)
    if metadata is None:
        raise DataError(f"{source} has no sops metadata; it is not a sops-encrypted file "
                        "(expected a top-level 'sops' entry)")
    return stripped, metadata


# -- YAML -----------------------------------------------------------------------------------

_YAML_CONSTANTS: dict[str, Any] = {
    "true": True, "True": True, "TRUE": True,
    "false": False, "False": False, "FALSE": False,
    "~": None, "null": None, "Null": None, "NULL": None,
    ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
    ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
    "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
    "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
}
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_GO_INT_BASE0 = re.compile(
    r"[+-]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
_YAML_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:(?:[Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2}))"
    r"|(?: (\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,9}))?))?\Z")


def resolve_plain_scalar(text: str) -> Any:
    """Resolve an unquoted YAML scalar to the Go value yaml.v3 gives it."""
    if not text:
        return None
    first = text[0]
    if first not in "0123456789+-.~tTfFnN":
        return text
    if text in _YAML_CONSTANTS:
        return _YAML_CONSTANTS[text]
    if first not in "0123456789+-.":
        return text
    if first.isdigit() and len(text) >= 8 and text[4] == "-":
        timestamp = _yaml_timestamp(text)
        if timestamp is not None:
            return timestamp
    digits = text.replace("_", "")
    if _GO_INT_BASE0.match(digits):
        number = _go_int_base0(digits)
        if gotext.INT64_MIN <= number <= gotext.UINT64_MAX:
            return number
    if _YAML_FLOAT.match(digits):
        return float(digits)
    return text


def _go_int_base0(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-").lower()
    if body.startswith("0x"):
        return sign * int(body[2:], 16)
    if body.startswith("0o"):
        return sign * int(body[2:], 8)
    if body.startswith("0b"):
        return sign * int(body[2:], 2)
    if body.startswith("0") and len(body) > 1:
        return sign * int(body[1:], 8)
    return sign * int(body)


def _yaml_timestamp(text: str) -> gotext.GoTime | None:
    match = _YAML_TIMESTAMP.match(text)
    if not match:
        return None
    year, month, day = (int(part) for part in match.group(1, 2, 3))
    if match.group(4) is not None:
        hour, minute, second, fraction, zone = match.group(4, 5, 6, 7, 8)
    elif match.group(9) is not None:
        hour, minute, second, fraction = match.group(9, 10, 11, 12)
        zone = "Z"
    else:
        hour, minute, second, fraction, zone = "0", "0", "0", None, "Z"
    offset = 0
    if zone != "Z":
        offset = int(zone[1:3]) * 60 + int(zone[4:6])
        offset = -offset if zone[0] == "-" else offset
    nanoseconds = int(fraction.ljust(9, "0")) if fraction else 0
    try:
        return gotext.make_time(year, month, day, int(hour), int(minute), int(second),
                                nanoseconds, offset)
    except ValueError:
        return None


class _YamlConverter:
    """Turn composed PyYAML nodes into Pairs, expanding aliases into copies."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.expanded = 0
        self.active: set[int] = set()

    def convert(self, node: Any) -> Any:
        import yaml

        self.expanded += 1
        if self.expanded > MAX_EXPANDED_NODES:
            raise DataError(f"{self.source}: YAML aliases expand to more than "
                            f"{MAX_EXPANDED_NODES} values")
        if isinstance(node, yaml.ScalarNode):
            # Quoted and block scalars are strings; explicit tags are dropped, as in sops.
            # The plain style is None from PyYAML's parser and "" from libyaml's.
            return node.value if node.style else resolve_plain_scalar(node.value)
        if id(node) in self.active:
            raise DataError(f"{self.source}: a YAML alias refers to a node that contains it")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node)
            return [self.convert(item) for item in node.value]
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: Any) -> Pairs:
        import yaml

        pairs = Pairs()
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._error(key_node, "a mapping key is not a string")
            key = key_node.value
            if not key_node.style and key != "<<" and not isinstance(resolve_plain_scalar(key), str):
                raise self._error(key_node, f"the mapping key '{key}' is not a string; "
                                            "sops accepts only string keys")
            if key in seen:
                raise self._error(key_node, f"duplicate mapping key '{key}'")
            seen.add(key)
            pairs.append((key, self.convert(value_node)))
        return pairs

    def _error(self, node: Any, message: str) -> DataError:
        mark = node.start_mark
        return DataError(f"{self.source}:{mark.line + 1}:{mark.column + 1}: {message}")


def yaml_loader_class() -> type:
    """Return the fastest PyYAML loader available (libyaml's when installed); both compose alike."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml(text: str, source: str) -> LoadedFile:
    import yaml

    converter = _YamlConverter(source)
    documents: list[Pairs] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml_loader_class()):
            if node is None:
                documents.append(Pairs())
                continue
            if not isinstance(node, yaml.MappingNode):
                raise DataError(f"{source}: a YAML document of a sops file must be a mapping")
            documents.append(converter.convert(node))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise DataError(f"{source} is not valid YAML: {error.problem}{where}") from None
    except yaml.YAMLError:
        raise DataError(f"{source} is not valid YAML") from None
    except RecursionError:
        raise DataError(f"{source}: the YAML is nested too deeply") from None
    if not documents:
        raise DataError(f"{source} is empty; it is not a sops-encrypted file")
    stripped, metadata = _split_metadata(documents, source)
    return LoadedFile("yaml", stripped, metadata)


# -- JSON and binary ------------------------------------------------------------------------

def _load_json(text: str, source: str, file_format: str) -> LoadedFile:
    try:
        document = json.loads(text, object_pairs_hook=Pairs)
    except json.JSONDecodeError as error:
        raise DataError(f"{source} is not valid JSON: {error.msg} at line {error.lineno} "
                        f"column {error.colno}") from None
    except RecursionError:
        raise DataError(f"{source}: the JSON is nested too deeply") from None
    if not isinstance(document, Pairs):
        raise DataError(f"{source}: the top level of a sops JSON file must be an object")
    stripped, metadata = _split_metadata([document], source)
    if file_format == "binary":
        data = [value for key, value in stripped[0] if key == "data"]
        if len(stripped[0]) != 1 or len(data) != 1 or not isinstance(data[0], str):
            raise DataError(f"{source}: a sops binary file must hold exactly one string 'data' "
                            "entry besides 'sops'; set the backend's format if this file is "
                            "not binary")
    return LoadedFile(file_format, stripped, metadata)


# -- dotenv ---------------------------------------------------------------------------------

def _load_dotenv(text: str, source: str) -> LoadedFile:
    data = Pairs()
    flat_metadata: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if line == "" or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise DataError(f"{source}:{number}: a dotenv line has no '='")
        value = value.replace("\\n", "\n")
        if key.startswith(DOTENV_METADATA_PREFIX):
            flat_metadata[key[len(DOTENV_METADATA_PREFIX):]] = value
        else:
            data.append((key, value))
    if not flat_metadata:
        raise DataError(f"{source} has no sops metadata (no sops_* lines); it is not a "
                        "sops-encrypted dotenv file")
    return LoadedFile("dotenv", [data], unflatten(flat_metadata))


# -- INI ------------------------------------------------------------------------------------

def _load_ini(text: str, source: str) -> LoadedFile:
    sections = _parse_ini(text, source)
    data = Pairs()
    flat_metadata: dict[str, str] | None = None
    for name, items in sections:
        if name == METADATA_KEY:
            # Metadata values escape newlines as the two characters \n.
            flat_metadata = {key: value.replace("\\n", "\n") for key, value in items}
        else:
            data.append((name, items))
    if flat_metadata is None:
        raise DataError(f"{source} has no [sops] section; it is not a sops-encrypted INI file")
    return LoadedFile("ini", [data], unflatten(flat_metadata))


def _parse_ini(text: str, source: str) -> list[tuple[str, Pairs]]:
    """Parse INI text with gopkg.in/ini.v1's default value rules (sops' INI reader).

    Keys before the first section belong to DEFAULT. Comment lines are skipped: comments
    never count in the MAC.
    """
    default = Pairs()
    sections: list[tuple[str, Pairs]] = [(INI_DEFAULT_SECTION, default)]
    current = default
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index].lstrip()
        index += 1
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            close = line.rfind("]")
            if close == -1:
                raise DataError(f"{source}:{number}: a section header has no closing ']'")
            name = line[1:close].strip()
            if name == INI_DEFAULT_SECTION:
                current = default
            else:
                current = Pairs()
                sections.append((name, current))
            continue
        key, rest = _ini_key(line, source, number)
        value, index = _ini_value(rest, lines, index, source, number)
        current.append((key, value))
    return sections


def _ini_key(line: str, source: str, number: int) -> tuple[str, str]:
    if line[0] in "\"`":
        quote = '"""' if line.startswith('"""') else line[0]
        end = line.find(quote, len(quote))
        if end == -1:
            raise DataError(f"{source}:{number}: a quoted key has no closing quote")
        key = line[len(quote):end]
        rest = line[end + len(quote):].lstrip()
        if not rest or rest[0] not in "=:":
            raise DataError(f"{source}:{number}: a key has no '=' after it")
        return key, rest[1:]
    positions = [position for position in (line.find("="), line.find(":")) if position >= 0]
    if not positions:
        raise DataError(f"{source}:{number}: a line is neither a section, a comment nor key = value")
    split = min(positions)
    return line[:split].strip(), line[split + 1:]


def _ini_value(raw: str, lines: list[str], index: int, source: str,
               number: int) -> tuple[str, int]:
    line = raw.lstrip()
    if not line.strip():
        return "", index
    quote = ""
    if len(line) > 3 and line.startswith('"""'):
        quote = '"""'
    elif line[0] == "`":
        quote = "`"
    if quote:
        body = line[len(quote):]
        end = body.rfind(quote)
        if end != -1:
            return body[:end], index
        # A value in """ or ` continues until the line holding the closing quote.
        value = body + "\n"
        while index < len(lines):
            following = lines[index]
            index += 1
            end = following.rfind(quote)
            if end != -1:
                return value + following[:end], index
            value += following + "\n"
        raise DataError(f"{source}:{number}: a {quote}-quoted value has no closing {quote}")
    line = line.strip()
    if line.endswith("\\"):
        # A trailing backslash joins the next lines, stopping at a blank line.
        value = line[:-1]
        while index < len(lines):
            following = lines[index].strip()
            index += 1
            if not following:
                break
            value += following
            if not value.endswith("\\"):
                break
            value = value[:-1]
        return value, index
    comment = min((position for position in (line.find("#"), line.find(";")) if position >= 0),
                  default=-1)
    if comment >= 0:
        line = line[:comment].strip()
    for quote_char in "'\"":
        if len(line) >= 2 and line[0] == quote_char == line[-1] and line.count(quote_char) == 2:
            return line[1:-1], index
    return line, index

