"""Real sops files (sops 1.0 to 3.13, published with public test keys) decrypt exactly.

The folder comes from $SECRET_INIT_SOPS_FIXTURES, else the shared fixtures folder beside the
repository (see ``fixtures_dir``). The tests skip when it is absent. The files are read in
place, never copied.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from secret_init.backends.base import Fetched
from secret_init.errors import EX_DATAERR, IntegrityError
from tests.sops_writer import (PGP_FINGERPRINT, SopsWriter, base_environ, fetch, fixtures_dir,
                               make_backend)

FIXTURES = Path(fixtures_dir())
AGE_KEYS = FIXTURES / "getsops-sops" / "commit-00141149b" / "age" / "keys.txt"
PGP_KEY = FIXTURES / "getsops-sops" / "HEAD" / "pgp" / "sops_functional_tests_key.asc"

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"real sops fixtures not found at {FIXTURES}; set SECRET_INIT_SOPS_FIXTURES")
needs_gpg = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")


def expected_files() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.rglob("*.expected.json"))


@pytest.fixture(scope="session")
def gnupghome(tmp_path_factory: pytest.TempPathFactory):
    """A scratch GnuPG home holding the sops project's public test key pair."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    if not PGP_KEY.is_file():
        pytest.skip(f"the sops PGP test key is missing at {PGP_KEY}")
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    subprocess.run(["gpg", "--batch", "--import", str(PGP_KEY)], check=True, capture_output=True,
                   env=dict(os.environ, GNUPGHOME=str(home)))
    yield str(home)
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, check=False)


@pytest.fixture
def fixture_environ(gnupghome: str, tmp_path: Path) -> dict[str, str]:
    return base_environ(str(tmp_path), GNUPGHOME=gnupghome, SOPS_AGE_KEY_FILE=str(AGE_KEYS))


def comparable(value):
    """Normalise a decrypted document for comparison with an ``.expected.json`` file.

    The expected files come from a JSON dump in which an empty INI section is ``[]``; here it
    is an empty mapping. Timestamps compare as Go's RFC 3339 text.
    """
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()} or []
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


@needs_fixtures
@needs_gpg
@pytest.mark.parametrize("expected_path", expected_files(),
                         ids=lambda path: str(path.relative_to(FIXTURES)).removesuffix(".expected.json"))
def test_fixture_decrypts_to_expected(expected_path: Path, fixture_environ):
    encrypted = Path(str(expected_path).removesuffix(".expected.json"))
    expected = json.loads(expected_path.read_text())
    backend = make_backend(environ=fixture_environ)

    result = fetch(backend, {"file": str(encrypted)})

    if "error" in expected:
        assert expected["error"] == "mac_mismatch"
        assert isinstance(result, IntegrityError), result
        assert result.exit_code == EX_DATAERR
        assert "modified or is damaged" in str(result)
        return
    assert isinstance(result, Fetched), result
    assert result.document_format == expected["format"]
    if expected["format"] == "binary":
        assert result.value == base64.b64decode(expected["data_base64"])
    else:
        assert comparable(result.value) == comparable(expected["data"])


@needs_fixtures
@needs_gpg
def test_no_mac_fixture_decrypts_with_verify_off(fixture_environ, caplog):
    no_mac = FIXTURES / "getsops-sops/HEAD/functional-tests/res/no_mac.yaml"
    backend = make_backend({"verify_mac": False}, environ=fixture_environ)

    result = fetch(backend, {"file": str(no_mac)})

    assert isinstance(result, Fetched), result
    assert result.value["myapp1"] == "t00m4nys3cr3tzupdated"
    warnings = [record for record in caplog.records if record.levelname == "WARNING"]
    assert any("MAC verification is OFF" in record.getMessage() for record in warnings)


@needs_fixtures
@needs_gpg
def test_fixture_with_edited_value_fails_mac(fixture_environ, tmp_path):
    # An unencrypted value is covered only by the MAC: editing it must fail the check.
    original = (FIXTURES / "getsops-sops/HEAD/example.yaml").read_text()
    edited = original.replace("remain in clear text", "remain in clear text!")
    assert edited != original
    path = tmp_path / "edited.yaml"
    path.write_text(edited)

    result = fetch(make_backend(environ=fixture_environ), {"file": str(path)})

    assert isinstance(result, IntegrityError)
    assert "MAC mismatch" in str(result)


# -- the writer against real files ------------------------------------------------------------

_ENC = re.compile(r"ENC\[AES256_GCM,data:[^,]*,iv:([^,]+),tag:[^,]+,type:[a-z]+\]")


def _age_data_key(path: Path) -> bytes:
    import pyrage

    identities = [pyrage.x25519.Identity.from_str(line) for line in AGE_KEYS.read_text().splitlines()
                  if line.startswith("AGE-SECRET-KEY-1")]
    if path.suffix == ".json":
        metadata = json.loads(path.read_text())["sops"]
    else:
        metadata = yaml.safe_load(path.read_text())["sops"]
    return pyrage.decrypt(metadata["age"][0]["enc"].encode(), identities)


def _data_ivs(text: str) -> tuple[list[bytes], bytes, list[str]]:
    """IVs of the data values in document order (comments left out), the MAC's IV, and the values."""
    values = []
    ivs = []
    mac_iv = b""
    for match in _ENC.finditer(text):
        whole = match.group(0)
        line_start = text.rfind("\n", 0, match.start()) + 1
        line = text[line_start:match.start()]
        iv = base64.b64decode(match.group(1))
        if whole.endswith("type:comment]"):
            continue
        if re.search(r"\bmac\W*$", line):
            mac_iv = iv
            continue
        ivs.append(iv)
        values.append(whole)
    return ivs, mac_iv, values


@needs_fixtures
@pytest.mark.parametrize("name", ["example.yaml", "example.json"])
def test_writer_reproduces_fixture_bytes(name):
    path = FIXTURES / "getsops-sops/commit-0b07dfbc5" / name
    text = path.read_text()
    expected = json.loads((path.parent / (name + ".expected.json")).read_text())["data"]
    metadata = json.loads(text)["sops"] if name.endswith(".json") else yaml.safe_load(text)["sops"]
    ivs, mac_iv, stored_values = _data_ivs(text)
    writer = SopsWriter(data_key=_age_data_key(path), ivs=iter(ivs), mac_iv=mac_iv,
                        lastmodified=metadata["lastmodified"], version=metadata["version"])

    encrypted, mac_hex = writer.encrypt_tree(expected, json_floats=name.endswith(".json"))
    written = [match.group(0) for match in _ENC.finditer(json.dumps(encrypted))]
    meta = writer.metadata(mac_hex)

    assert len(written) == len(stored_values)
    assert written == stored_values
    assert meta["mac"] == metadata["mac"]


@needs_fixtures
@needs_gpg
def test_writer_pgp_file_decrypts(gnupghome, fixture_environ, tmp_path):
    from tests.sops_writer import pgp_key

    writer = SopsWriter(key_groups=[[pgp_key(PGP_FINGERPRINT, gnupghome)]])
    path = tmp_path / "pgp.yaml"
    path.write_bytes(writer.yaml({"password": "hunter2"}))

    result = fetch(make_backend(environ=fixture_environ), {"file": str(path)})

    assert isinstance(result, Fetched), result
    assert result.value == {"password": "hunter2"}
