"""Data key sources: age identities, key groups with Shamir, KMS on moto, Vault transit."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from secret_init.backends.base import Fetched
from secret_init.backends.sops import shamir
from secret_init.errors import (ConfigError, CredentialsError, MissingExtraError,
                                PermissionDeniedError)
from tests.sops_writer import (SopsWriter, age_key, base_environ, fetch, kms_key, make_backend,
                               raw_key, shamir_split, vault_key)

pyrage = pytest.importorskip("pyrage")

TREE = {"password": "hunter2", "port": 5432}


def new_identity():
    return pyrage.x25519.Identity.generate()


def write(tmp_path: Path, content: bytes, name: str = "secrets.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# -- Shamir ------------------------------------------------------------------------------------

def test_gf256_matches_vault_vectors():
    assert shamir.mult(3, 7) == 9
    assert shamir.mult(3, 0) == 0
    assert shamir.div(6, 3) == 2
    assert shamir.div(0, 7) == 0
    assert shamir.mult(0x53, 0xCA) == 1


def test_shamir_combines_any_threshold_subset():
    secret = os.urandom(32)
    shares = shamir_split(secret, 3, 2)

    assert shamir.combine(shares[:2]) == secret
    assert shamir.combine([shares[2], shares[0]]) == secret
    assert shamir.combine(shares) == secret


@pytest.mark.parametrize("shares, message", [
    ([b"\x01\x01"], "less than two"),
    ([b"\x01\x01", b"\x01\x02\x03"], "same length"),
    ([b"\x01\x01", b"\x02\x01"], "same x coordinate"),
])
def test_shamir_rejects_invalid_shares(shares, message):
    with pytest.raises(ValueError, match=message):
        shamir.combine(shares)


def test_two_groups_need_both(tmp_path):
    first, second = new_identity(), new_identity()
    writer = SopsWriter(key_groups=[[age_key(str(first.to_public()))],
                                    [age_key(str(second.to_public()))]])
    path = write(tmp_path, writer.yaml(TREE))
    both = base_environ(str(tmp_path), SOPS_AGE_KEY=f"{first}\n{second}")

    result = fetch(make_backend(environ=both), {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert result.value == TREE


def test_two_groups_one_key_names_missing_group(tmp_path):
    first, second = new_identity(), new_identity()
    writer = SopsWriter(key_groups=[[age_key(str(first.to_public()))],
                                    [age_key(str(second.to_public()))]])
    path = write(tmp_path, writer.yaml(TREE))
    only_first = base_environ(str(tmp_path), SOPS_AGE_KEY=str(first))

    result = fetch(make_backend(environ=only_first), {"file": str(path)})

    assert isinstance(result, CredentialsError), result
    message = str(result)
    assert "2 key groups and needs 2, but only 1" in message
    assert "key group(s) 2 failed" in message
    assert str(second.to_public()) in message
    assert "SOPS_AGE_KEY_FILE" in message


def test_threshold_two_of_three_groups(tmp_path):
    identities = [new_identity() for _ in range(3)]
    writer = SopsWriter(key_groups=[[age_key(str(identity.to_public()))] for identity in identities],
                        shamir_threshold=2)
    content = writer.yaml(TREE)
    assert b"shamir_threshold: 2" in content
    path = write(tmp_path, content)
    environ = base_environ(str(tmp_path), SOPS_AGE_KEY=f"{identities[0]} {identities[2]}")

    result = fetch(make_backend(environ=environ), {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert result.value == TREE


# -- age identities ------------------------------------------------------------------------------

def test_no_age_identity_error_names_file_and_fix(tmp_path):
    identity = new_identity()
    path = write(tmp_path, SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(TREE))

    result = fetch(make_backend(environ=base_environ(str(tmp_path))), {"file": str(path)})

    assert isinstance(result, CredentialsError), result
    message = str(result)
    assert str(path) in message
    assert "key types in the file: age" in message
    assert "SOPS_AGE_KEY_FILE" in message
    assert "hunter2" not in message


def test_age_key_file_variable(tmp_path):
    identity = new_identity()
    path = write(tmp_path, SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(TREE))
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# created: now\n# public key: {identity.to_public()}\n{identity}\n")
    environ = base_environ(str(tmp_path), SOPS_AGE_KEY_FILE=str(key_file))
    backend = make_backend(environ=environ)

    result = fetch(backend, {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert "SOPS_AGE_KEY_FILE" in backend.consumed_environment()


def test_age_default_keys_txt(tmp_path):
    identity = new_identity()
    path = write(tmp_path, SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(TREE))
    config = tmp_path / "xdg" / "sops" / "age"
    config.mkdir(parents=True)
    (config / "keys.txt").write_text(f"{identity}\n")
    environ = base_environ(str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))

    assert isinstance(fetch(make_backend(environ=environ), {"file": str(path)}), Fetched)


def test_age_home_config_keys_txt(tmp_path):
    identity = new_identity()
    path = write(tmp_path, SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(TREE))
    config = tmp_path / ".config" / "sops" / "age"
    config.mkdir(parents=True)
    (config / "keys.txt").write_text(f"{identity}\n")

    assert isinstance(fetch(make_backend(environ=base_environ(str(tmp_path))), {"file": str(path)}),
                      Fetched)


def test_age_key_command(tmp_path):
    identity = new_identity()
    recipient = str(identity.to_public())
    path = write(tmp_path, SopsWriter(key_groups=[[age_key(recipient)]]).yaml(TREE))
    script = tmp_path / "print-key"
    script.write_text(f"#!/bin/sh\n[ \"$SOPS_AGE_RECIPIENT\" = \"{recipient}\" ] || exit 3\n"
                      f"echo '{identity}'\n")
    script.chmod(stat.S_IRWXU)
    environ = base_environ(str(tmp_path), SOPS_AGE_KEY_CMD=f"'{script}'")

    result = fetch(make_backend(environ=environ), {"file": str(path)})

    assert isinstance(result, Fetched), result


def test_age_key_variable_consumed(tmp_path):
    identity = new_identity()
    path = write(tmp_path, SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(TREE))
    backend = make_backend(environ=base_environ(str(tmp_path), SOPS_AGE_KEY=str(identity)))

    assert isinstance(fetch(backend, {"file": str(path)}), Fetched)
    assert backend.consumed_environment() == {"SOPS_AGE_KEY"}


def test_missing_pyrage_names_extra(tmp_path, monkeypatch):
    identity = new_identity()
    path = write(tmp_path, SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(TREE))
    monkeypatch.setitem(sys.modules, "pyrage", None)

    result = fetch(make_backend(environ=base_environ(str(tmp_path), SOPS_AGE_KEY=str(identity))),
                   {"file": str(path)})

    assert isinstance(result, MissingExtraError), result
    assert "pip install 'secret-init[sops]'" in str(result)


# -- PGP and the sops binary fallback ------------------------------------------------------------

FAKE_PGP = {"fp": "0000111122223333444455556666777788889999", "created_at": "2026-01-02T03:04:05Z",
            "enc": "-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----"}


def test_missing_gpg_is_config_error(tmp_path):
    path = write(tmp_path, SopsWriter(key_groups=[[raw_key("pgp", FAKE_PGP)]]).yaml(TREE))
    environ = base_environ(str(tmp_path), PATH=str(tmp_path / "empty-bin"))

    result = fetch(make_backend(environ=environ), {"file": str(path)})

    assert isinstance(result, ConfigError), result
    assert "gpg" in str(result)
    assert "was not found on PATH" in str(result)


def test_decryption_order_field_tries_pgp_first(tmp_path, caplog):
    identity = new_identity()
    writer = SopsWriter(key_groups=[[raw_key("pgp", FAKE_PGP), age_key(str(identity.to_public()))]])
    path = write(tmp_path, writer.yaml(TREE))
    environ = base_environ(str(tmp_path), SOPS_AGE_KEY=str(identity), PATH=str(tmp_path / "none"))
    caplog.set_level(logging.DEBUG, logger="secret_init.backends.sops")

    default = fetch(make_backend(environ=environ), {"file": str(path)})
    tried_by_default = [r for r in caplog.records if "key pgp" in r.getMessage()]
    caplog.clear()
    pgp_first = fetch(make_backend({"decryption_order": ["pgp", "age"]}, environ=environ),
                      {"file": str(path)})
    tried_first = [r for r in caplog.records if "key pgp" in r.getMessage()]

    assert isinstance(default, Fetched) and isinstance(pgp_first, Fetched)
    assert tried_by_default == []
    assert len(tried_first) == 1


GCP_KEY = {"resource_id": "projects/p/locations/global/keyRings/r/cryptoKeys/k",
           "created_at": "2026-01-02T03:04:05Z", "enc": "AAAA"}


def test_gcp_only_without_sops_binary_names_fallback(tmp_path):
    path = write(tmp_path, SopsWriter(key_groups=[[raw_key("gcp_kms", GCP_KEY)]]).yaml(TREE))
    environ = base_environ(str(tmp_path), PATH=str(tmp_path / "empty-bin"))

    result = fetch(make_backend(environ=environ), {"file": str(path)})

    assert isinstance(result, ConfigError), result
    assert "gcp_kms" in str(result)
    assert "sops binary" in str(result)


def test_gcp_only_uses_sops_binary(tmp_path):
    path = write(tmp_path, SopsWriter(key_groups=[[raw_key("gcp_kms", GCP_KEY)]]).yaml(TREE))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log_file = tmp_path / "argv"
    fake = bin_dir / "sops"
    # A stand-in for sops: records its arguments and prints a decrypted document.
    fake.write_text(f"#!/bin/sh\necho \"$@\" > '{log_file}'\necho '{{\"password\": \"from-sops\"}}'\n")
    fake.chmod(stat.S_IRWXU)
    environ = base_environ(str(tmp_path), PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")

    result = fetch(make_backend(environ=environ), {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert result.value == {"password": "from-sops"}
    argv = log_file.read_text().split()
    assert argv[:5] == ["decrypt", "--input-type", "yaml", "--output-type", "json"]


# -- AWS KMS on moto ------------------------------------------------------------------------------

from tests.moto_server import aws_env, moto, moto_session_server  # noqa: E402,F401


def kms_environ(moto, home: Path) -> dict[str, str]:
    return base_environ(str(home), AWS_ENDPOINT_URL_KMS=moto.endpoint,
                        AWS_ACCESS_KEY_ID=os.environ["AWS_ACCESS_KEY_ID"],
                        AWS_SECRET_ACCESS_KEY=os.environ["AWS_SECRET_ACCESS_KEY"])


def test_kms_key_with_context(moto, tmp_path):
    client = moto.client("kms", "eu-central-1")
    arn = client.create_key()["KeyMetadata"]["Arn"]
    writer = SopsWriter(key_groups=[[kms_key(client, arn, {"app": "web", "env": "prod"})]])
    path = write(tmp_path, writer.yaml(TREE))
    moto.requests.clear()

    backend = make_backend(environ=kms_environ(moto, tmp_path))
    result = fetch(backend, {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert result.value == TREE
    assert moto.requests.count("Decrypt") == 1
    # The keys botocore used are removed from the application's environment.
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= backend.consumed_environment()


def test_kms_changed_context_is_denied(moto, tmp_path):
    client = moto.client("kms", "eu-central-1")
    arn = client.create_key()["KeyMetadata"]["Arn"]
    content = SopsWriter(key_groups=[[kms_key(client, arn, {"app": "web"})]]).yaml(TREE)
    changed = content.replace(b"app: web", b"app: api")
    assert changed != content
    path = write(tmp_path, changed)

    result = fetch(make_backend(environ=kms_environ(moto, tmp_path)), {"file": str(path)})

    assert isinstance(result, PermissionDeniedError), result
    assert arn in str(result)
    assert "kms:Decrypt" in str(result)


def test_kms_and_age_groups_combine(moto, tmp_path):
    client = moto.client("kms", "eu-central-1")
    arn = client.create_key()["KeyMetadata"]["Arn"]
    identity = new_identity()
    writer = SopsWriter(key_groups=[[kms_key(client, arn)], [age_key(str(identity.to_public()))]])
    path = write(tmp_path, writer.yaml(TREE))
    environ = dict(kms_environ(moto, tmp_path), SOPS_AGE_KEY=str(identity))

    result = fetch(make_backend(environ=environ), {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert result.value == TREE


# -- Vault transit on the emulator --------------------------------------------------------------

def _vault_emulator():
    try:
        from tests.vault_emulator import VaultEmulator
    except ImportError:
        pytest.skip("tests/vault_emulator.py is not available")
    return VaultEmulator


@pytest.fixture
def vault():
    emulator = _vault_emulator()().start()
    try:
        emulator.enable_transit("sops")
        emulator.create_transit_key("app", mount="sops")
        yield emulator
    finally:
        emulator.stop()


def test_vault_transit_key(vault, tmp_path):
    writer = SopsWriter(key_groups=[[vault_key(vault, vault.url, "sops", "app")]])
    path = write(tmp_path, writer.yaml(TREE))
    environ = base_environ(str(tmp_path), VAULT_TOKEN=vault.root_token)
    backend = make_backend(environ=environ)

    result = fetch(backend, {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert result.value == TREE
    assert "VAULT_TOKEN" in backend.consumed_environment()


def test_vault_token_file(vault, tmp_path):
    writer = SopsWriter(key_groups=[[vault_key(vault, vault.url, "sops", "app")]])
    path = write(tmp_path, writer.yaml(TREE))
    (tmp_path / ".vault-token").write_text(vault.root_token + "\n")

    result = fetch(make_backend(environ=base_environ(str(tmp_path))), {"file": str(path)})

    assert isinstance(result, Fetched), result


def test_vault_address_comes_from_file(vault, tmp_path):
    # Port 1 on loopback is closed: the file's address is used even though VAULT_ADDR
    # points at a working Vault.
    writer = SopsWriter(key_groups=[[vault_key(vault, "http://127.0.0.1:1", "sops", "app")]])
    path = write(tmp_path, writer.yaml(TREE))
    environ = base_environ(str(tmp_path), VAULT_ADDR=vault.url, VAULT_TOKEN=vault.root_token)

    result = fetch(make_backend(environ=environ), {"file": str(path)})

    assert not isinstance(result, Fetched)
    assert "127.0.0.1:1" in str(result)


def test_vault_without_token_names_variable(vault, tmp_path):
    writer = SopsWriter(key_groups=[[vault_key(vault, vault.url, "sops", "app")]])
    path = write(tmp_path, writer.yaml(TREE))

    result = fetch(make_backend(environ=base_environ(str(tmp_path))), {"file": str(path)})

    assert isinstance(result, CredentialsError), result
    assert "VAULT_TOKEN" in str(result)
    assert "hc_vault" in str(result)
