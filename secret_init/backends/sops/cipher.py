"""The ``ENC[AES256_GCM,...]`` value encoding and its AES-256-GCM decryption.

Each encrypted scalar is ``ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<type>]``,
encrypted with the file's 32-byte data key. The additional authenticated data (AAD) is the
value's key path joined with ``:`` plus a trailing ``:``, so a value moved to another key no
longer decrypts. Go sops writes 32-byte IVs and decrypts whatever IV length is stored.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from . import gotext

# Anchored at the start only, as in sops: text after the closing bracket is ignored.
ENCRYPTED_VALUE = re.compile(r"ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")
TAG_BYTES = 16
# AES-GCM in the cryptography package accepts nonces of 8 to 128 bytes.
MIN_IV_BYTES = 8
MAX_IV_BYTES = 128
DATA_KEY_SIZES = (16, 24, 32)


class Comment(str):
    """A decrypted comment: left out of the MAC and of the decrypted document."""


class CipherError(Exception):
    """A value failed to parse or to authenticate; the message names no plaintext."""


def is_encrypted_form(text: Any) -> bool:
    """Return whether ``text`` has the ``ENC[AES256_GCM,...]`` shape."""
    return type(text) is str and text.startswith("ENC[AES256_GCM,") and bool(ENCRYPTED_VALUE.match(text))


def _b64(text: str, what: str) -> bytes:
    # Go's StdEncoding skips CR and LF and requires padding; everything else is invalid.
    try:
        return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise CipherError(f"the {what} is not valid base64") from None


class ValueCipher:
    """AES-256-GCM decryption of ``ENC[...]`` values with one file's data key."""

    def __init__(self, data_key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(data_key) not in DATA_KEY_SIZES:
            raise CipherError(f"the data key is {len(data_key)} bytes; sops data keys are 32 bytes")
        self._aead = AESGCM(data_key)

    def decrypt_raw(self, text: str, aad: str) -> tuple[bytes, str]:
        """Decrypt one ``ENC[...]`` string; return the plaintext bytes and the stored type."""
        match = ENCRYPTED_VALUE.match(text)
        if match is None:
            raise CipherError("the value is not in the ENC[AES256_GCM,...] form")
        data_text, iv_text, tag_text, value_type = match.groups()
        data = _b64(data_text, "data")
        iv = _b64(iv_text, "IV")
        tag = _b64(tag_text, "tag")
        if len(tag) != TAG_BYTES:
            raise CipherError(f"the tag is {len(tag)} bytes, not {TAG_BYTES}")
        if not MIN_IV_BYTES <= len(iv) <= MAX_IV_BYTES:
            raise CipherError(f"the IV is {len(iv)} bytes")

        from cryptography.exceptions import InvalidTag

        try:
            plaintext = self._aead.decrypt(iv, data + tag, aad.encode("utf-8"))
        except InvalidTag:
            raise CipherError("authentication failed (wrong data key, changed ciphertext, "
                              "or a value moved to another key)") from None
        return plaintext, value_type

    def decrypt(self, text: str, aad: str, *, keep_bytes: bool = False) -> Any:
        """Decrypt one ``ENC[...]`` string into its typed value.

        Returns str, int, float, bool, bytes, ``gotext.GoTime`` or ``Comment``. An empty
        string is returned unchanged because sops never encrypts empty values. With
        ``keep_bytes`` a ``str`` value stays bytes (the binary format may contain any bytes).
        """
        if text == "":
            return ""
        plaintext, value_type = self.decrypt_raw(text, aad)
        return convert_plaintext(plaintext, value_type, keep_bytes=keep_bytes)


def convert_plaintext(plaintext: bytes, value_type: str, *, keep_bytes: bool = False) -> Any:
    """Turn decrypted bytes into the value of the stored ``type``, as Go sops does."""
    if value_type == "str":
        if keep_bytes:
            return plaintext
        return _utf8(plaintext)
    if value_type == "bytes":
        return plaintext
    if value_type == "comment":
        return Comment(_utf8(plaintext))
    text = _utf8(plaintext)
    try:
        if value_type == "int":
            return gotext.parse_int(text)
        if value_type == "float":
            return gotext.parse_float(text)
        if value_type == "bool":
            return gotext.parse_bool(text)
        if value_type == "time":
            return gotext.parse_time(text)
    except ValueError as error:
        raise CipherError(f"the decrypted value of type {value_type} is invalid: {error}") from None
    raise CipherError(f"unknown value type '{value_type}'")


def _utf8(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise CipherError("the decrypted value is not valid UTF-8") from None
