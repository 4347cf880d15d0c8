"""A test-only sops writer: encrypted files for cases the real sops fixtures do not cover.

It follows sops 3.x's encryption rules independently of ``secret_init.backends.sops`` (its
own Go text forms, MAC walk and GF(2^8) arithmetic), so a test that decrypts its output
checks the product against a second implementation. ``test_sops_writer.py`` proves the
writer against real files: re-encrypting a fixture's plaintext with the fixture's data key
and IVs reproduces its ENC values and MAC byte for byte.

Input trees are dicts, lists and scalars, plus:

- ``Comment("text")``: a comment. In a YAML list it is written ``- ENC[...,type:comment]``,
  in a mapping (as the value of a ``CommentKey``) ``#ENC[...]``. Neither counts in the MAC.
- ``Verbatim(text, value)``: an unencrypted YAML scalar written as ``text`` (an anchor, an
  alias, ``0x10``) whose typed value for the MAC is ``value``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAC_ONLY_ENCRYPTED_PREFIX = hashlib.sha256(b"sops").digest()


class Comment(str):
    """A comment in an input tree."""


class CommentKey(str):
    """The key of a comment entry in a mapping (``{CommentKey("c1"): Comment("text")}``).

    Only the writer reads it: the comment is written as a YAML comment line, encrypted with
    the path of the mapping that contains it.
    """


@dataclass(frozen=True)
class Verbatim:
    """An unencrypted YAML scalar written as ``text``; ``value`` is what the MAC hashes."""

    text: str
    value: Any


# -- Go text forms --------------------------------------------------------------------------

def go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64)."""
    digits = Decimal(repr(value))
    text = f"{digits:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def go_time(value: datetime.datetime) -> str:
    """time.MarshalText: RFC 3339 with nanoseconds, trailing zeros dropped, Z for UTC."""
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += "." + f"{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset() or datetime.timedelta(0)
    if offset == datetime.timedelta(0):
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes > 0 else "-"
    return text + f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def typed_plaintext(value: Any, json_floats: bool = False) -> tuple[bytes, str]:
    """Return sops' plaintext bytes and ``type`` for a value."""
    if isinstance(value, Comment):
        return str(value).encode(), "comment"
    if isinstance(value, bool):
        return (b"True" if value else b"False"), "bool"
    if isinstance(value, int):
        if json_floats:
            return go_float(float(value)).encode(), "float"
        return str(value).encode(), "int"
    if isinstance(value, float):
        return go_float(value).encode(), "float"
    if isinstance(value, datetime.datetime):
        return go_time(value).encode(), "time"
    if isinstance(value, bytes):
        return value, "str"
    return str(value).encode(), "str"


def mac_bytes(value: Any, json_floats: bool = False) -> bytes:
    if isinstance(value, Verbatim):
        value = value.value
    return typed_plaintext(value, json_floats)[0]


# -- Shamir (log/exp tables, unlike the product's bitwise multiply) -------------------------

def _tables() -> tuple[list[int], list[int]]:
    exp = [0] * 512
    log = [0] * 256
    x = 1
    for power in range(255):
        exp[power] = x
        log[x] = power
        # multiply by the generator 3 = x + 1 in GF(2^8) mod 0x11B
        x ^= (x << 1) ^ (0x11B if x & 0x80 else 0)
        x &= 0xFF
    for power in range(255, 512):
        exp[power] = exp[power - 255]
    return exp, log


_EXP, _LOG = _tables()


def gf_mult(a: int, b: int) -> int:
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def shamir_split(secret: bytes, parts: int, threshold: int) -> list[bytes]:
    """Split like HashiCorp's shamir.Split: len(secret)+1 bytes, x coordinate last."""
    x_coordinates = list(range(1, parts + 1))
    shares = [bytearray() for _ in range(parts)]
    for byte in secret:
        coefficients = [byte] + [secrets.randbelow(256) for _ in range(threshold - 1)]
        for share, x in zip(shares, x_coordinates):
            y = 0
            for coefficient in reversed(coefficients):  # Horner's rule
                y = gf_mult(y, x) ^ coefficient
            share.append(y)
    for share, x in zip(shares, x_coordinates):
        share.append(x)
    return [bytes(share) for share in shares]


# -- master keys ----------------------------------------------------------------------------

KeyMaker = Callable[[bytes], tuple[str, dict[str, Any]]]


def age_key(recipient: str) -> KeyMaker:
    def make(payload: bytes) -> tuple[str, dict[str, Any]]:
        import pyrage

        armored = pyrage.encrypt(payload, [pyrage.x25519.Recipient.from_str(recipient)], armored=True)
        return "age", {"recipient": recipient, "enc": armored.decode()}
    return make


def pgp_key(fingerprint: str, gnupghome: str) -> KeyMaker:
    def make(payload: bytes) -> tuple[str, dict[str, Any]]:
        completed = subprocess.run(
            ["gpg", "--batch", "--no-tty", "--quiet", "--armor", "--trust-model", "always",
             "--encrypt", "--recipient", fingerprint],
            input=payload, capture_output=True, check=True,
            env=dict(os.environ, GNUPGHOME=gnupghome))
        return "pgp", {"created_at": "2026-01-02T03:04:05Z", "enc": completed.stdout.decode().rstrip("\n"),
                       "fp": fingerprint}
    return make


def kms_key(client: Any, arn: str, context: dict[str, str] | None = None,
            role: str | None = None) -> KeyMaker:
    def make(payload: bytes) -> tuple[str, dict[str, Any]]:
        response = client.encrypt(KeyId=arn, Plaintext=payload, EncryptionContext=context or {})
        entry: dict[str, Any] = {"arn": arn, "created_at": "2026-01-02T03:04:05Z",
                                 "enc": base64.b64encode(response["CiphertextBlob"]).decode(),
                                 "aws_profile": ""}
        if context:
            entry["context"] = dict(context)
        if role:
            entry["role"] = role
        return "kms", entry
    return make


def vault_key(emulator: Any, address: str, engine_path: str, key_name: str) -> KeyMaker:
    def make(payload: bytes) -> tuple[str, dict[str, Any]]:
        ciphertext = emulator.transit_encrypt(key_name, payload, mount=engine_path)
        return "hc_vault", {"vault_address": address, "engine_path": engine_path,
                            "key_name": key_name, "created_at": "2026-01-02T03:04:05Z",
                            "enc": ciphertext}
    return make


def raw_key(key_type: str, entry: dict[str, Any]) -> KeyMaker:
    """A key entry that no test can decrypt (a GCP or Azure key, or a foreign age recipient)."""
    return lambda payload: (key_type, dict(entry))


# -- the writer -----------------------------------------------------------------------------

@dataclass
class SopsWriter:
    """Encrypt plaintext trees into sops files with one data key."""

    data_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    selection: tuple[str, str] = ("unencrypted_suffix", "_unencrypted")
    mac_only_encrypted: bool = False
    lastmodified: str = "2026-01-02T03:04:05Z"
    version: str = "3.13.1"
    key_groups: list[list[KeyMaker]] = field(default_factory=list)
    shamir_threshold: int | None = None
    # IVs to use in order (to reproduce a real file); random 32-byte IVs when exhausted.
    ivs: Iterator[bytes] | None = None
    mac_iv: bytes | None = None

    # -- values -------------------------------------------------------------------------

    def encrypt_value(self, value: Any, aad: str, json_floats: bool = False) -> str:
        plaintext, value_type = typed_plaintext(value, json_floats)
        if plaintext == b"":
            return ""
        iv = next(self.ivs, None) if self.ivs is not None else None
        iv = iv or secrets.token_bytes(32)
        sealed = AESGCM(self.data_key).encrypt(iv, plaintext, aad.encode())
        data, tag = sealed[:-16], sealed[-16:]
        return (f"ENC[AES256_GCM,data:{base64.b64encode(data).decode()},"
                f"iv:{base64.b64encode(iv).decode()},tag:{base64.b64encode(tag).decode()},"
                f"type:{value_type}]")

    def _should_encrypt(self, path: list[str]) -> bool:
        option, pattern = self.selection
        if option == "unencrypted_suffix":
            return not any(part.endswith(pattern) for part in path)
        if option == "encrypted_suffix":
            return any(part.endswith(pattern) for part in path)
        if option == "unencrypted_regex":
            return not any(re.search(pattern, part) for part in path)
        if option == "encrypted_regex":
            return any(re.search(pattern, part) for part in path)
        raise ValueError(f"the writer does not model {option}")

    def encrypt_tree(self, tree: Any, json_floats: bool = False) -> tuple[Any, str]:
        """Return the tree with encrypted leaves, and the uppercase hex MAC."""
        mac = hashlib.sha512()
        if self.mac_only_encrypted:
            mac.update(MAC_ONLY_ENCRYPTED_PREFIX)

        def walk(node: Any, path: list[str]) -> Any:
            if isinstance(node, dict):
                result = {}
                for key, value in node.items():
                    if isinstance(key, CommentKey):
                        # A mapping comment is encrypted with the mapping's own path.
                        encrypted = walk(value, path)
                        result[key] = encrypted if isinstance(encrypted, Comment) else Comment(encrypted)
                    else:
                        result[key] = walk(value, path + [key])
                return result
            if isinstance(node, list):
                return [walk(item, path) for item in node]
            if node is None:
                return None
            encrypted = self._should_encrypt(path)
            if not isinstance(node, Comment) and (encrypted or not self.mac_only_encrypted):
                mac.update(mac_bytes(node, json_floats))
            if not encrypted:
                return node
            return self.encrypt_value(node, ":".join(path) + ":", json_floats)

        encrypted_tree = walk(tree, [])
        return encrypted_tree, mac.hexdigest().upper()

    # -- metadata -----------------------------------------------------------------------

    def metadata(self, mac_hex: str) -> dict[str, Any]:
        """Build the ``sops`` block: key entries (Shamir shares for several groups) and MAC.

        Several groups without ``shamir_threshold`` write no threshold, so every group is
        needed, as in a file whose threshold equals its group count.
        """
        meta: dict[str, Any] = {}
        groups = self.key_groups
        if len(groups) == 1:
            for maker in groups[0]:
                key_type, entry = maker(self.data_key)
                meta.setdefault(key_type, []).append(entry)
        elif groups:
            threshold = self.shamir_threshold or len(groups)
            shares = shamir_split(self.data_key, len(groups), threshold)
            meta["key_groups"] = []
            for maker_list, share in zip(groups, shares):
                group: dict[str, Any] = {}
                for maker in maker_list:
                    key_type, entry = maker(share)
                    group.setdefault(key_type, []).append(entry)
                meta["key_groups"].append(group)
            if self.shamir_threshold is not None:
                meta["shamir_threshold"] = self.shamir_threshold

        # The MAC's AAD is lastmodified in time.RFC3339 form (whole seconds).
        meta["lastmodified"] = self.lastmodified
        stamp = datetime.datetime.fromisoformat(self.lastmodified.replace("Z", "+00:00"))
        mac_aad = go_time(stamp.replace(microsecond=0))
        data_ivs = self.ivs
        self.ivs = iter([self.mac_iv]) if self.mac_iv else None
        meta["mac"] = self.encrypt_value(mac_hex, mac_aad)
        self.ivs = data_ivs

        option, pattern = self.selection
        meta[option] = pattern
        if self.mac_only_encrypted:
            meta["mac_only_encrypted"] = True
        meta["version"] = self.version
        return meta

    # -- formats ------------------------------------------------------------------------

    def yaml(self, tree: dict[str, Any]) -> bytes:
        encrypted, mac_hex = self.encrypt_tree(tree)
        lines = _yaml_lines(encrypted, 0, [], self)
        import yaml as pyyaml

        meta = pyyaml.safe_dump({"sops": self.metadata(mac_hex)}, sort_keys=False,
                                default_flow_style=False)
        return ("\n".join(lines) + "\n" + meta).encode()

    def json(self, tree: dict[str, Any], json_floats: bool | None = None) -> bytes:
        if json_floats is None:
            json_floats = _version(self.version) < (3, 13, 2)
        encrypted, mac_hex = self.encrypt_tree(tree, json_floats)
        encrypted["sops"] = self.metadata(mac_hex)
        return (json.dumps(encrypted, indent="\t") + "\n").encode()

    def binary(self, data: bytes) -> bytes:
        encrypted, mac_hex = self.encrypt_tree({"data": data})
        encrypted["sops"] = self.metadata(mac_hex)
        return (json.dumps(encrypted, indent="\t") + "\n").encode()

    def dotenv(self, tree: dict[str, str]) -> bytes:
        encrypted, mac_hex = self.encrypt_tree(tree)
        lines = [f"{key}={str(value).replace(chr(10), chr(92) + 'n')}"
                 for key, value in encrypted.items()]
        for key, value in flatten(self.metadata(mac_hex)).items():
            lines.append(f"sops_{key}={value.replace(chr(10), chr(92) + 'n')}")
        return ("\n".join(lines) + "\n").encode()

    def ini(self, tree: dict[str, dict[str, str]], raw_values: dict[tuple[str, str], str] | None = None) -> bytes:
        """Write INI; ``raw_values`` gives the file text of chosen unencrypted values."""
        encrypted, mac_hex = self.encrypt_tree(tree)
        blocks = []
        for section, items in encrypted.items():
            lines = [f"[{section}]"]
            for key, value in items.items():
                text = (raw_values or {}).get((section, key), value)
                lines.append(f"{key} = {text}")
            blocks.append("\n".join(lines))
        meta_lines = ["[sops]"] + [f"{key} = {value.replace(chr(10), chr(92) + 'n')}"
                                   for key, value in flatten(self.metadata(mac_hex)).items()]
        blocks.append("\n".join(meta_lines))
        return ("\n\n".join(blocks) + "\n").encode()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def flatten(meta: dict[str, Any]) -> dict[str, str]:
    """Flatten metadata the way the dotenv and INI stores do (``__list_0__map_``)."""
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}__map_{key}" if prefix else key)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{prefix}__list_{index}")
        elif isinstance(node, bool):
            flat[prefix] = "true" if node else "false"
        else:
            flat[prefix] = str(node)

    walk(meta, "")
    return flat


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, Verbatim):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime.datetime):
        return go_time(value)
    if value.startswith("ENC[AES256_GCM,"):
        return value  # sops writes encrypted values unquoted
    return json.dumps(value)


def _yaml_lines(node: Any, indent: int, path: list[str], writer: SopsWriter) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, CommentKey):
                lines.append(f"{pad}#{value}")
            elif isinstance(value, dict) and value:
                lines.append(f"{pad}{key}:")
                lines += _yaml_lines(value, indent + 4, path + [key], writer)
            elif isinstance(value, list) and value:
                lines.append(f"{pad}{key}:")
                lines += _yaml_lines(value, indent + 4, path + [key], writer)
            elif value == {} or value == []:
                lines.append(f"{pad}{key}: {json.dumps(value)}")
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(value)}")
    else:
        for item in node:
            if isinstance(item, (dict, list)) and item:
                inner = _yaml_lines(item, indent + 2, path, writer)
                inner[0] = f"{pad}- " + inner[0].lstrip()
                lines += inner
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    return lines


# -- helpers shared by the sops test modules ------------------------------------------------

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES_VARIABLE = "SECRET_INIT_SOPS_FIXTURES"
PGP_FINGERPRINT = "FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4"


def fixtures_dir() -> str:
    """Return the folder of real sops files: $SECRET_INIT_SOPS_FIXTURES or the shared default."""
    return os.environ.get(FIXTURES_VARIABLE) or os.path.join(REPOSITORY, "..", "shared",
                                                             "fixtures", "sops")


def base_environ(home: str, **extra: str) -> dict[str, str]:
    """A minimal environment for a backend: PATH, a scratch HOME, nothing from the developer."""
    environ = {"PATH": os.environ.get("PATH", os.defpath), "HOME": home,
               "AWS_EC2_METADATA_DISABLED": "true"}
    environ.update(extra)
    return environ


def make_backend(config: dict[str, Any] | None = None, environ: dict[str, str] | None = None,
                 backends: dict[str, Any] | None = None, manifest_dir: str = ".",
                 name: str = "sops") -> Any:
    from pathlib import Path

    from secret_init.backends.base import BackendContext
    from secret_init.backends.sops import SopsBackend
    from secret_init.fields import Fields

    context = BackendContext(Path(manifest_dir), environ=dict(environ or {}),
                             backends=dict(backends or {}))
    backend = SopsBackend(name, Fields(dict(config or {}), file="manifest.yaml",
                                       where=f"backends.{name}"), context)
    if backends is not None:
        context.backends = dict(backends, **{name: backend})
    return backend


def fetch(backend: Any, entry: dict[str, Any], seconds: float = 30.0) -> Any:
    """Build the reference of ``entry`` and fetch it; return a Fetched or a SecretInitError."""
    from secret_init.deadline import Deadline
    from secret_init.fields import Fields

    fields = Fields(dict(entry), file="manifest.yaml", where="secrets.example")
    reference, _ = backend.reference(fields)
    fields.finish(("from", "key", "format"))
    return backend.fetch([reference], Deadline.after(seconds))[reference]
