"""Modified sops files fail: changed ciphertext, swapped or moved values, changed MAC."""

from __future__ import annotations

import base64
import re

import pytest

from secret_init.backends.base import Fetched
from secret_init.errors import EX_DATAERR, IntegrityError
from tests.sops_writer import SopsWriter, age_key, base_environ, fetch, make_backend

pyrage = pytest.importorskip("pyrage")

TREE = {"db": {"user": "eve", "password": "hunter2"}, "token": "abc123",
        "note_unencrypted": "public"}


@pytest.fixture
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def original(identity) -> str:
    writer = SopsWriter(key_groups=[[age_key(str(identity.to_public()))]])
    return writer.yaml(TREE).decode()


@pytest.fixture
def decrypt(identity, tmp_path):
    def run(text: str):
        path = tmp_path / "secrets.yaml"
        path.write_text(text)
        environ = base_environ(str(tmp_path), SOPS_AGE_KEY=str(identity))
        return fetch(make_backend(environ=environ), {"file": str(path)})
    return run


def enc_value(text: str, key: str) -> str:
    match = re.search(rf"^\s*{key}: (ENC\[[^\]]+\])$", text, re.MULTILINE)
    assert match, key
    return match.group(1)


def assert_integrity_error(result) -> None:
    assert isinstance(result, IntegrityError), result
    assert result.exit_code == EX_DATAERR
    assert "modified or is damaged" in str(result)
    for secret in ("hunter2", "abc123", "eve"):
        assert secret not in str(result)


def test_untouched_file_decrypts(original, decrypt):
    result = decrypt(original)
    assert isinstance(result, Fetched), result
    assert result.value == TREE


def test_changed_ciphertext_byte_fails(original, decrypt):
    value = enc_value(original, "password")
    data = re.search(r"data:([^,]+)", value).group(1)
    raw = bytearray(base64.b64decode(data))
    raw[0] ^= 0x01
    changed = value.replace(data, base64.b64encode(bytes(raw)).decode())

    result = decrypt(original.replace(value, changed))

    assert_integrity_error(result)
    assert "db:password:" in str(result)


def test_swapped_values_fail(original, decrypt):
    user = enc_value(original, "user")
    password = enc_value(original, "password")
    swapped = original.replace(user, "@@USER@@").replace(password, user).replace("@@USER@@", password)

    assert_integrity_error(decrypt(swapped))


def test_value_moved_under_other_key_fails(original, decrypt):
    token = enc_value(original, "token")
    moved = original.replace(f"token: {token}\n", "").replace("db:\n", f"db:\n    token: {token}\n")
    assert moved != original

    assert_integrity_error(decrypt(moved))


def test_removed_value_fails_mac(original, decrypt):
    token = enc_value(original, "token")
    removed = original.replace(f"token: {token}\n", "")
    assert removed != original

    result = decrypt(removed)

    assert_integrity_error(result)
    assert "MAC mismatch" in str(result)


def test_changed_mac_fails(original, decrypt):
    mac = re.search(r"mac: (ENC\[[^\]]+\])", original).group(1)
    data = re.search(r"data:([^,]+)", mac).group(1)
    raw = bytearray(base64.b64decode(data))
    raw[-1] ^= 0x01
    changed = original.replace(mac, mac.replace(data, base64.b64encode(bytes(raw)).decode()))

    result = decrypt(changed)

    assert_integrity_error(result)
    assert "cannot decrypt the MAC" in str(result)


def test_changed_lastmodified_fails(original, decrypt):
    changed = re.sub(r"lastmodified: '([^']+)'", "lastmodified: '2030-01-01T00:00:00Z'", original)
    assert changed != original

    assert_integrity_error(decrypt(changed))


def test_clear_value_edit_fails_mac(original, decrypt):
    changed = original.replace('note_unencrypted: "public"', 'note_unencrypted: "edited"')
    assert changed != original

    assert_integrity_error(decrypt(changed))


def test_plaintext_in_encrypted_place_fails(original, decrypt):
    token = enc_value(original, "token")

    result = decrypt(original.replace(token, "plain-token"))

    assert_integrity_error(result)
    assert "plain-token" not in str(result)


def test_mac_from_other_file_fails(identity, original, decrypt):
    other = SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(
        dict(TREE, token="different")).decode()
    mac_line = re.search(r"^  mac: .*$", other, re.MULTILINE).group(0)
    grafted = re.sub(r"^  mac: .*$", lambda _: mac_line, original, flags=re.MULTILINE)

    assert_integrity_error(decrypt(grafted))


def test_verify_mac_false_still_checks_values(identity, original, tmp_path):
    value = enc_value(original, "password")
    user = enc_value(original, "user")
    path = tmp_path / "secrets.yaml"
    path.write_text(original.replace(value, user))
    environ = base_environ(str(tmp_path), SOPS_AGE_KEY=str(identity))

    result = fetch(make_backend({"verify_mac": False}, environ=environ), {"file": str(path)})

    # GCM tags and the path AAD are always checked, with or without the MAC.
    assert isinstance(result, IntegrityError)
