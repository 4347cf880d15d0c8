"""The ``sops`` metadata block: master keys, key groups, MAC, and which values are encrypted.

sops decodes this block weakly typed (strings become bools and ints, floats become strings),
so the readers here accept the same spellings. Dotenv and INI files store it flattened
(``pgp__list_0__map_enc``); ``unflatten`` rebuilds the nested form first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ...errors import DataError
from . import gotext

# Master key types in the order sops stores them inside a key group.
KEY_TYPES = ("kms", "gcp_kms", "hckms", "azure_kv", "hc_vault", "age", "pgp")
# sops tries age, then PGP, then the rest in KEY_TYPES order (SOPS_DECRYPTION_ORDER overrides).
DEFAULT_DECRYPTION_ORDER = ("age", "pgp")

SELECTION_OPTIONS = ("unencrypted_suffix", "encrypted_suffix", "unencrypted_regex",
                     "encrypted_regex", "unencrypted_comment_regex", "encrypted_comment_regex")
DEFAULT_UNENCRYPTED_SUFFIX = "_unencrypted"

_FLATTENED_PART = re.compile(r"__(list|map)_")


@dataclass(frozen=True)
class MasterKey:
    """One entry of a key group: its type and its metadata fields (``enc``, ``arn``, ...)."""

    key_type: str
    fields: Mapping[str, Any]

    def text(self, name: str) -> str:
        return meta_string(self.fields.get(name))

    def describe(self) -> str:
        """Name the key without secret material: ``age age1yt3t...``, ``pgp FBC7B9E2...``."""
        identity = {
            "age": "recipient", "pgp": "fp", "kms": "arn", "gcp_kms": "resource_id",
            "hckms": "key_id", "azure_kv": "vault_url",
        }.get(self.key_type)
        if self.key_type == "hc_vault":
            return (f"hc_vault {self.text('vault_address')}/v1/{self.text('engine_path')}"
                    f"/keys/{self.text('key_name')}")
        if self.key_type == "azure_kv":
            return f"azure_kv {self.text('vault_url')}/keys/{self.text('name')}"
        value = self.text(identity) if identity else ""
        return f"{self.key_type} {value}".strip()


@dataclass(frozen=True)
class SelectionRule:
    """The rule that selects the file's encrypted values, from the one selection option it sets."""

    option: str = "unencrypted_suffix"
    value: str = DEFAULT_UNENCRYPTED_SUFFIX

    @property
    def by_comment(self) -> bool:
        return self.option.endswith("_comment_regex")

    @property
    def default_encrypted(self) -> bool:
        """Whether a path with no matching component is encrypted."""
        return self.option.startswith("unencrypted_")

    def key_matches(self, key: str) -> bool:
        """Return whether one key path component matches the suffix or regex."""
        if self.option.endswith("_suffix"):
            return key.endswith(self.value)
        # NOTE: Python's re is used in place of Go's RE2. The syntax common to both behaves
        # the same, but a pattern using a feature of only one of them may not.
        return self._pattern.search(key) is not None

    @property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(self.value)


@dataclass
class Metadata:
    """The parts of the ``sops`` block that decryption uses."""

    key_groups: list[list[MasterKey]]
    shamir_threshold: int
    lastmodified: str
    mac: str
    version: str
    mac_only_encrypted: bool = False
    rule: SelectionRule = field(default_factory=SelectionRule)

    @property
    def version_tuple(self) -> tuple[int, ...] | None:
        return parse_version(self.version)

    def key_types(self) -> list[str]:
        """Return the key types present in the file, in KEY_TYPES order, without repeats."""
        present = {key.key_type for group in self.key_groups for key in group}
        return [key_type for key_type in KEY_TYPES if key_type in present]


def parse_version(text: str) -> tuple[int, ...] | None:
    parts = re.match(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", text or "")
    if not parts:
        return None
    return tuple(int(part) for part in parts.groups() if part is not None)


def meta_string(value: Any) -> str:
    """Read a metadata scalar as text the way sops' weak decoding does."""
    if value is None:
        return ""
    if isinstance(value, gotext.GoTime):
        return value.text
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return gotext.format_float(value)
    return str(value)


def meta_bool(value: Any, name: str, source: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    try:
        return gotext.parse_bool(meta_string(value))
    except ValueError:
        raise DataError(f"{source}: sops metadata '{name}' is not a boolean") from None


def meta_int(value: Any, name: str, source: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(meta_string(value), 0)
    except ValueError:
        raise DataError(f"{source}: sops metadata '{name}' is not an integer") from None


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild nested metadata from dotenv/INI keys such as ``key_groups__list_0__map_age``."""
    result: dict[str, Any] = {}
    for flat_key, value in flat.items():
        pieces = _FLATTENED_PART.split(flat_key)
        # pieces = [name, kind, part, kind, part, ...]
        path: list[str | int] = [pieces[0]]
        for kind, part in zip(pieces[1::2], pieces[2::2]):
            path.append(int(part) if kind == "list" and part.isdigit() else part)
        _set_path(result, path, value)
    return _lists_from_index_maps(result)


def _set_path(root: dict[Any, Any], path: list[str | int], value: Any) -> None:
    current = root
    for part in path[:-1]:
        current = current.setdefault(part, {})
        if not isinstance(current, dict):
            return
    current[path[-1]] = value


def _lists_from_index_maps(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _lists_from_index_maps(value) for key, value in node.items()}
    if converted and all(isinstance(key, int) for key in converted):
        return [converted[index] for index in sorted(converted)]
    return converted


def parse_metadata(raw: Any, source: str) -> Metadata:
    """Validate the ``sops`` block of ``source`` and return what decryption needs."""
    if not isinstance(raw, Mapping):
        raise DataError(f"{source} has no sops metadata; it is not a sops-encrypted file "
                        "(expected a top-level 'sops' entry)")

    rules = [(name, meta_string(raw.get(name))) for name in SELECTION_OPTIONS
             if meta_string(raw.get(name))]
    if len(rules) > 1:
        raise DataError(f"{source}: the sops metadata sets {rules[0][0]} and {rules[1][0]}; "
                        "a file may use only one of them")
    rule = SelectionRule(*rules[0]) if rules else SelectionRule()
    if rule.option.endswith("_regex"):
        try:
            re.compile(rule.value)
        except re.error as error:
            raise DataError(f"{source}: sops metadata {rule.option} is not a valid regular "
                            f"expression: {error}") from None

    key_groups = _key_groups(raw, source)
    threshold = meta_int(raw.get("shamir_threshold"), "shamir_threshold", source)
    return Metadata(
        key_groups=key_groups,
        # A file with several groups and no threshold needs every group, which is what
        # sops writes by default.
        shamir_threshold=threshold or len(key_groups),
        lastmodified=meta_string(raw.get("lastmodified")),
        mac=meta_string(raw.get("mac")),
        version=meta_string(raw.get("version")),
        mac_only_encrypted=meta_bool(raw.get("mac_only_encrypted"), "mac_only_encrypted", source),
        rule=rule,
    )


def _key_groups(raw: Mapping[str, Any], source: str) -> list[list[MasterKey]]:
    flat_group = _group_from(raw, source)
    if flat_group:
        return [flat_group]
    groups_raw = raw.get("key_groups") or []
    if not isinstance(groups_raw, list):
        raise DataError(f"{source}: sops metadata 'key_groups' is not a list")
    groups = [_group_from(group, source) for group in groups_raw]
    groups = [group for group in groups if group]
    if not groups:
        raise DataError(f"{source}: the sops metadata lists no keys, so the file cannot be "
                        "decrypted")
    return groups


def _group_from(raw: Any, source: str) -> list[MasterKey]:
    if not isinstance(raw, Mapping):
        raise DataError(f"{source}: a sops key group is not a mapping")
    group: list[MasterKey] = []
    for key_type in KEY_TYPES:
        entries = raw.get(key_type) or []
        if not isinstance(entries, list):
            raise DataError(f"{source}: sops metadata '{key_type}' is not a list")
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise DataError(f"{source}: an entry of sops metadata '{key_type}' is not a mapping")
            group.append(MasterKey(key_type, dict(entry)))
    return group
