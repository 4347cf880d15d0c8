"""Decrypting a loaded sops tree and verifying its MAC in one walk.

The walk follows sops' rules. The AAD of a value is its path of mapping keys, and list
indices are never part of it. The file's selection option decides which values are
encrypted. Nulls are skipped and comments never count in the MAC, which is the uppercase
hex SHA-512 over the Go text of every counted value in document order. With
``mac_only_encrypted`` only encrypted values count, after a fixed SHA-256("sops") prefix.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ...errors import DataError, IntegrityError
from . import gotext
from .cipher import CipherError, Comment, ValueCipher, is_encrypted_form
from .formats import Pairs
from .metadata import Metadata

# Fed into the MAC first when mac_only_encrypted is set: SHA-256 of the ASCII text "sops".
MAC_ONLY_ENCRYPTED_PREFIX = hashlib.sha256(b"sops").digest()
# JSON numbers became typed (int vs float) in sops 3.13.2; older writers hashed every
# number in its float form.
JSON_TYPED_NUMBERS_VERSION = (3, 13, 2)

_DROP = object()  # a decrypted comment: no output, no MAC


class TreeDecryptor:
    """Decrypt every value of one file's documents and compute its MAC."""

    def __init__(self, cipher: ValueCipher, metadata: Metadata, file_format: str,
                 source: str) -> None:
        self.cipher = cipher
        self.metadata = metadata
        self.file_format = file_format
        self.source = source
        self.rule = metadata.rule
        self.mac = hashlib.sha512()
        if metadata.mac_only_encrypted:
            self.mac.update(MAC_ONLY_ENCRYPTED_PREFIX)
        version = metadata.version_tuple
        self.json_numbers_as_floats = file_format == "json" and (
            version is None or version < JSON_TYPED_NUMBERS_VERSION)
        self.keep_bytes = file_format == "binary"

    def decrypt_documents(self, documents: list[Pairs]) -> list[dict[str, Any]]:
        """Return the decrypted documents as plain dicts, feeding the MAC on the way."""
        try:
            return [self._mapping(document, "", False) for document in documents]
        except RecursionError:
            raise DataError(f"{self.source}: the document is nested too deeply") from None

    def computed_mac(self) -> str:
        return self.mac.hexdigest().upper()

    def _mapping(self, pairs: Pairs, prefix: str, matched: bool) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if type(key) is not str:
                raise DataError(f"{self.source}: the key {key!r} is not a string")
            child_matched = matched or self.rule.key_matches(key)
            child = self._value(value, prefix + key + ":", child_matched)
            if child is _DROP:
                continue
            if key in result:
                raise DataError(f"{self.source}: the key '{prefix}{key}' appears twice")
            result[key] = child
        return result

    def _value(self, value: Any, aad: str, matched: bool) -> Any:
        kind = type(value)
        if kind is Pairs:
            return self._mapping(value, aad, matched)
        if kind is list:
            items = []
            for item in value:
                child = self._value(item, aad, matched)
                if child is not _DROP:
                    items.append(child)
            return items
        return self._leaf(value, aad, matched)

    def _leaf(self, value: Any, aad: str, matched: bool) -> Any:
        if value is None:
            return None
        if self.rule.by_comment:
            # NOTE: comment-regex files are read by the shape of each value, because PyYAML
            # drops the comments that decide it. A clear-text value that looks exactly like
            # ENC[...] there is decrypted where sops would keep it.
            encrypted = is_encrypted_form(value)
        else:
            encrypted = matched != self.rule.default_encrypted

        if encrypted:
            if type(value) is not str:
                raise IntegrityError(
                    f"{self.source}: the value at '{aad}' should be encrypted but is a plain "
                    f"{type(value).__name__}; the file was modified or is damaged")
            try:
                value = self.cipher.decrypt(value, aad or ":", keep_bytes=self.keep_bytes)
            except CipherError as error:
                raise IntegrityError(f"{self.source}: cannot decrypt the value at '{aad}': "
                                     f"{error}; the file was modified or is damaged") from None
            if type(value) is Comment:
                return _DROP
        elif type(value) is Comment:
            return _DROP

        if encrypted or not self.metadata.mac_only_encrypted:
            self.mac.update(self._mac_bytes(value))
        if type(value) is gotext.GoTime:
            return value.value
        return value

    def _mac_bytes(self, value: Any) -> bytes:
        if type(value) is int and (self.json_numbers_as_floats
                                   or not gotext.INT64_MIN <= value <= gotext.INT64_MAX):
            return gotext.format_float(float(value)).encode("ascii")
        return gotext.mac_text(value)


def verify_mac(decryptor: TreeDecryptor, cipher: ValueCipher, metadata: Metadata,
               source: str) -> None:
    """Compare the stored MAC with the computed one in constant time; raise IntegrityError."""
    if not metadata.mac:
        raise IntegrityError(f"{source} has no MAC in its sops metadata, so its integrity "
                             "cannot be checked; the file was modified or is damaged")
    try:
        aad = gotext.format_rfc3339_seconds(metadata.lastmodified)
    except ValueError:
        raise IntegrityError(f"{source}: sops metadata 'lastmodified' is not an RFC 3339 "
                             "timestamp; the file was modified or is damaged") from None
    try:
        stored = cipher.decrypt(metadata.mac, aad)
    except CipherError as error:
        raise IntegrityError(f"{source}: cannot decrypt the MAC ({error}); the file was "
                             "modified or is damaged") from None
    computed = decryptor.computed_mac()
    if not isinstance(stored, str) or not hmac.compare_digest(stored.encode("utf-8"),
                                                              computed.encode("ascii")):
        raise IntegrityError(f"{source}: MAC mismatch: the file was modified or is damaged "
                             "after sops encrypted it")
