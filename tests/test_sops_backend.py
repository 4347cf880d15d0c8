"""The sops backend adapter: manifest fields, one decryption per file, files from backends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from secret_init.backends import backend_class
from secret_init.backends.base import BackendContext, Fetched
from secret_init.backends.file import FileBackend
from secret_init.backends.sops import SopsBackend
from secret_init.deadline import Deadline
from secret_init.errors import ManifestError, NotFoundError
from secret_init.fields import Fields
from tests.sops_writer import SopsWriter, age_key, base_environ, fetch, make_backend

pyrage = pytest.importorskip("pyrage")

TREE = {"db": {"password": "hunter2"}, "token": "abc"}


@pytest.fixture
def identity():
    return pyrage.x25519.Identity.generate()


@pytest.fixture
def encrypted(identity, tmp_path) -> Path:
    path = tmp_path / "secrets.enc.yaml"
    path.write_bytes(SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).yaml(TREE))
    return path


@pytest.fixture
def environ(identity, tmp_path) -> dict[str, str]:
    return base_environ(str(tmp_path), SOPS_AGE_KEY=str(identity))


def test_type_name_registered():
    assert backend_class("sops") is SopsBackend


def test_backend_path_used_by_default(encrypted, environ):
    backend = make_backend({"path": str(encrypted)}, environ=environ)

    result = fetch(backend, {"key": "db.password"})

    assert isinstance(result, Fetched), result
    assert result.value == TREE
    assert result.document_format == "yaml"


def test_relative_file_resolves_against_manifest(encrypted, environ):
    backend = make_backend(environ=environ, manifest_dir=str(encrypted.parent))

    result = fetch(backend, {"file": encrypted.name})

    assert isinstance(result, Fetched), result


def test_one_decryption_for_many_secrets(encrypted, environ):
    backend = make_backend({"path": str(encrypted)}, environ=environ)
    references = []
    for key in ("db.password", "token", None):
        entry = Fields({"key": key} if key else {}, file="m.yaml", where="secrets.x")
        references.append(backend.reference(entry)[0])

    first = backend.fetch(list(dict.fromkeys(references)), Deadline.after(30))
    second = backend.fetch(references[:1], Deadline.after(30))

    assert len(set(references)) == 1
    assert first[references[0]].value == second[references[0]].value
    assert backend.decryptions == 1


def test_concurrent_fetches_decrypt_once(encrypted, environ):
    backend = make_backend({"path": str(encrypted)}, environ=environ)
    reference = backend.reference(Fields({}, file="m.yaml", where="secrets.x"))[0]
    results = []

    def worker():
        results.append(backend.fetch([reference], Deadline.after(30))[reference])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert all(isinstance(result, Fetched) for result in results)
    assert backend.decryptions == 1


def test_secret_file_overrides_backend_path(encrypted, environ, identity, tmp_path):
    other = tmp_path / "other.enc.json"
    other.write_bytes(SopsWriter(key_groups=[[age_key(str(identity.to_public()))]]).json({"k": "v"}))
    backend = make_backend({"path": str(encrypted)}, environ=environ)

    result = fetch(backend, {"file": str(other)})

    assert isinstance(result, Fetched), result
    assert result.value == {"k": "v"}
    assert result.document_format == "json"


def test_file_format_field_per_secret(encrypted, environ, tmp_path):
    renamed = tmp_path / "secrets.data"
    renamed.write_bytes(encrypted.read_bytes())
    backend = make_backend(environ=environ)

    result = fetch(backend, {"file": str(renamed), "file_format": "yaml"})

    assert isinstance(result, Fetched), result
    assert result.value == TREE


def test_missing_file_is_not_found(environ, tmp_path):
    result = fetch(make_backend(environ=environ), {"file": str(tmp_path / "absent.yaml")})

    assert isinstance(result, NotFoundError)
    assert "absent.yaml" in str(result)


def test_no_path_or_source_is_manifest_error(environ):
    with pytest.raises(ManifestError, match="has no 'path' or 'source'"):
        fetch(make_backend(environ=environ), {})


def test_unknown_format_is_manifest_error():
    with pytest.raises(ManifestError, match="'toml' is not one of"):
        make_backend({"path": "x", "format": "toml"})


def test_unknown_decryption_order_type_rejected():
    with pytest.raises(ManifestError, match="unknown key type 'gpg'"):
        make_backend({"path": "x", "decryption_order": ["gpg"]})


def test_path_and_source_exclusive():
    with pytest.raises(ManifestError, match="cannot be used together"):
        make_backend({"path": "x", "source": {"from": "files"}})


def _file_backend(folder: Path) -> FileBackend:
    context = BackendContext(folder)
    return FileBackend("files", Fields({"dir": str(folder)}, file="m.yaml", where="backends.files"),
                       context)


def test_source_reads_file_through_other_backend(encrypted, environ):
    files = _file_backend(encrypted.parent)
    backend = make_backend(environ=environ, backends={"files": files})

    result = fetch(backend, {"source": {"from": "files", "file": encrypted.name}})

    assert isinstance(result, Fetched), result
    assert result.value == TREE
    assert result.document_format == "yaml"


def test_backend_source_default(encrypted, environ):
    files = _file_backend(encrypted.parent)
    backend = make_backend({"source": {"from": "files", "file": encrypted.name}}, environ=environ,
                           backends={"files": files})

    result = fetch(backend, {"key": "token"})

    assert isinstance(result, Fetched), result


def test_source_unknown_backend_rejected(environ):
    backend = make_backend(environ=environ, backends={})

    with pytest.raises(ManifestError, match="no backend named 'vault'"):
        fetch(backend, {"source": {"from": "vault", "path": "x"}})


def test_source_without_extension_needs_format(encrypted, environ, tmp_path):
    (tmp_path / "blob").write_bytes(encrypted.read_bytes())
    backend = make_backend(environ=environ, backends={"files": _file_backend(tmp_path)})

    with pytest.raises(ManifestError, match="set 'file_format'"):
        fetch(backend, {"source": {"from": "files", "file": "blob"}})
    result = fetch(backend, {"source": {"from": "files", "file": "blob"}, "file_format": "yaml"})
    assert isinstance(result, Fetched), result


def test_source_field_typo_rejected(encrypted, environ):
    backend = make_backend(environ=environ, backends={"files": _file_backend(encrypted.parent)})

    with pytest.raises(ManifestError, match="unknown field 'fiel'"):
        fetch(backend, {"source": {"from": "files", "file": "x.yaml", "fiel": "y"}})


def test_verify_mac_false_warns_each_run(encrypted, environ, caplog):
    for _ in range(2):
        backend = make_backend({"path": str(encrypted), "verify_mac": False}, environ=environ)
        assert isinstance(fetch(backend, {}), Fetched)

    warnings = [r for r in caplog.records if "MAC verification is OFF" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelname == "WARNING" for r in warnings)


def test_logs_never_contain_values(encrypted, environ, caplog):
    caplog.set_level("DEBUG")
    backend = make_backend({"path": str(encrypted)}, environ=environ)

    assert isinstance(fetch(backend, {}), Fetched)
    text = "\n".join(record.getMessage() for record in caplog.records)

    assert "decrypted sops file" in text
    assert "hunter2" not in text
    assert environ["SOPS_AGE_KEY"] not in text
