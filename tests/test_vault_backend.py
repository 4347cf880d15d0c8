"""The vault backend against the Vault emulator: KV reads, auth methods, retries, errors."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from secret_init.backends.base import BackendContext, Fetched
from secret_init.backends.vault import VaultBackend
from secret_init.deadline import Deadline
from secret_init.errors import (EX_NOINPUT, EX_NOPERM, BackendUnavailableError, ConfigError,
                                CredentialsError, DeadlineExceededError, NotFoundError,
                                PermissionDeniedError, SecretDeletedError, SecretInitError)
from secret_init.fields import Fields

from vault_emulator import VaultEmulator

CANARY = "CANARY-7f3a9c-never-print-me"


@pytest.fixture
def vault():
    emulator = VaultEmulator()
    emulator.start()
    emulator.enable_kv("secret", version=2)
    yield emulator
    emulator.stop()


def make_backend(vault: VaultEmulator, config: dict | None = None, environ: dict | None = None,
                 manifest_dir: Path = Path("/nonexistent")) -> VaultBackend:
    config = {"address": vault.url, **(config or {})}
    if environ is None:
        environ = {"VAULT_TOKEN": vault.root_token}
    fields = Fields(config, file="manifest.yaml", where="backends.vault")
    backend = VaultBackend("vault", fields, BackendContext(manifest_dir=manifest_dir, environ=environ))
    fields.finish()
    return backend


def run(backend: VaultBackend, entries: list[dict], seconds: float = 10.0, *,
        close: bool = True) -> list[Fetched | SecretInitError]:
    """Fetch ``entries`` in one batch and return each entry's result, in order."""
    references = []
    for entry in entries:
        fields = Fields(entry, file="manifest.yaml", where="secrets.s")
        references.append(backend.reference(fields)[0])
        fields.finish()
    results = backend.fetch(list(dict.fromkeys(references)), Deadline.after(seconds))
    if close:
        backend.close()
    return [results[reference] for reference in references]


def fetch_one(backend: VaultBackend, entry: dict, seconds: float = 10.0) -> Any:
    return run(backend, [entry], seconds)[0]


def reads_of(vault: VaultEmulator, logical_path: str) -> list:
    return [request for request in vault.requests if request.logical_path == logical_path]


# -- KV version 2 ----------------------------------------------------------------------------

def test_kv2_reads_latest_version(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_put("secret", "web/db", {"password": "two", "user": "app"})
    result = fetch_one(make_backend(vault), {"path": "secret/web/db"})
    assert isinstance(result, Fetched)
    assert result.value == {"password": "two", "user": "app"}
    assert result.version == "2"
    assert result.lease is None


def test_kv2_reads_pinned_version(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_put("secret", "web/db", {"password": "two"})
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "version": 1})
    assert result.value == {"password": "one"}
    assert result.version == "1"
    assert [r.query for r in reads_of(vault, "secret/data/web/db")] == [{"version": ["1"]}]


def test_deleted_latest_version_fails_without_fallback(vault):
    vault.kv_put("secret", "web/db", {"password": "old"})
    vault.kv_put("secret", "web/db", {"password": "new"})
    vault.kv_delete_versions("secret", "web/db", [2])
    result = fetch_one(make_backend(vault), {"path": "secret/web/db"})
    assert isinstance(result, SecretDeletedError)
    assert result.exit_code == EX_NOINPUT
    assert "secret/web/db" in str(result)
    assert "deleted" in str(result)
    assert "version 2" in str(result)
    assert "destroyed" not in str(result)
    # Exactly one read, of the latest version: no second request for version 1.
    assert [r.query for r in reads_of(vault, "secret/data/web/db")] == [{}]


def test_destroyed_version_says_destroyed(vault):
    vault.kv_put("secret", "web/db", {"password": "old"})
    vault.kv_put("secret", "web/db", {"password": "new"})
    vault.kv_destroy_versions("secret", "web/db", [2])
    result = fetch_one(make_backend(vault), {"path": "secret/web/db"})
    assert isinstance(result, SecretDeletedError)
    assert "destroyed" in str(result)
    assert "deleted at" not in str(result)
    assert len(reads_of(vault, "secret/data/web/db")) == 1


def test_deleted_pinned_version(vault):
    vault.kv_put("secret", "web/db", {"password": "old"})
    vault.kv_put("secret", "web/db", {"password": "new"})
    vault.kv_delete_versions("secret", "web/db", [1])
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "version": 1})
    assert isinstance(result, SecretDeletedError)
    assert "version 1" in str(result)
    assert "undelete -versions=1" in str(result)


def test_missing_secret_is_not_found(vault):
    result = fetch_one(make_backend(vault), {"path": "secret/web/nope"})
    assert type(result) is NotFoundError
    assert "secret/web/nope" in str(result)
    assert "None, on get" not in str(result)


def test_missing_version_is_not_found(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "version": 7})
    assert type(result) is NotFoundError
    assert "version 7 does not exist" in str(result)


def test_api_form_path_reads_mount_relative_path(vault, caplog):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    with caplog.at_level(logging.INFO):
        result = fetch_one(make_backend(vault), {"path": "secret/data/web/db"})
    assert result.value == {"password": "pw"}
    assert [r.logical_path for r in vault.requests if r.logical_path.startswith("secret/")] == [
        "secret/data/web/db"]
    assert not any("data/data" in r.path for r in vault.requests)
    assert "API form" in caplog.text


def test_api_form_reaches_key_named_data(vault):
    vault.kv_put("secret", "data/x", {"value": "inner"})
    result = fetch_one(make_backend(vault), {"path": "secret/data/data/x"})
    assert result.value == {"value": "inner"}


def test_mount_named_kv_prod_needs_no_extra_fields(vault):
    vault.enable_kv("kv-prod", version=2)
    vault.kv_put("kv-prod", "web/db", {"password": "prod"})
    result = fetch_one(make_backend(vault), {"path": "kv-prod/web/db"})
    assert result.value == {"password": "prod"}
    assert len(reads_of(vault, "kv-prod/data/web/db")) == 1


def test_mount_with_two_segments_is_detected(vault):
    vault.enable_kv("team/kv", version=2)
    vault.kv_put("team/kv", "web/db", {"password": "team"})
    result = fetch_one(make_backend(vault), {"path": "team/kv/web/db"})
    assert result.value == {"password": "team"}


def test_mount_given_with_kv_version_skips_detection(vault):
    vault.enable_kv("team/kv", version=2)
    vault.kv_put("team/kv", "web/db", {"password": "team"})
    result = fetch_one(make_backend(vault), {"path": "team/kv/web/db", "mount": "team/kv",
                                             "kv_version": 2})
    assert result.value == {"password": "team"}
    assert vault.requests_to("sys/internal/ui/mounts/*") == []


def test_mount_contradicting_detection_is_an_error(vault):
    vault.enable_kv("team/kv", version=2)
    result = fetch_one(make_backend(vault), {"path": "team/kv/web/db", "mount": "team"})
    assert isinstance(result, ConfigError)
    assert "team/kv" in str(result)


def test_mount_detected_once_per_mount(vault):
    for name in ("a", "b", "c", "d"):
        vault.kv_put("secret", name, {"v": name})
    vault.enable_kv("other", version=1)
    vault.kv_put("other", "x", {"v": "x"})
    results = run(make_backend(vault), [{"path": f"secret/{name}"} for name in "abcd"]
                  + [{"path": "other/x"}])
    assert [result.value["v"] for result in results] == ["a", "b", "c", "d", "x"]
    lookups = sorted(r.logical_path for r in vault.requests_to("sys/internal/ui/mounts/*"))
    assert len(lookups) == 2
    assert lookups[0].startswith("sys/internal/ui/mounts/other/")
    assert lookups[1].startswith("sys/internal/ui/mounts/secret/")


def test_kv_version_without_mount_access(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    token = vault.create_token(allow=["secret/data/web/db"], deny=["sys/internal/ui/mounts/*"])
    environ = {"VAULT_TOKEN": token}

    result = fetch_one(make_backend(vault, environ=environ), {"path": "secret/web/db",
                                                              "kv_version": 2})
    assert result.value == {"password": "pw"}

    result = fetch_one(make_backend(vault, environ=environ), {"path": "secret/web/db"})
    assert isinstance(result, PermissionDeniedError)
    assert not isinstance(result, CredentialsError)
    assert "kv_version" in str(result)
    assert "secret/web/db" in str(result)


# -- KV version 1 ----------------------------------------------------------------------------

def test_kv1_read(vault):
    vault.enable_kv("legacy", version=1)
    vault.kv_put("legacy", "web/db", {"password": "v1"})
    result = fetch_one(make_backend(vault), {"path": "legacy/web/db"})
    assert result.value == {"password": "v1"}
    assert result.version is None
    assert len(reads_of(vault, "legacy/web/db")) == 1


def test_kv1_rejects_version(vault):
    vault.enable_kv("legacy", version=1)
    vault.kv_put("legacy", "web/db", {"password": "v1"})
    result = fetch_one(make_backend(vault), {"path": "legacy/web/db", "version": 2})
    assert isinstance(result, ConfigError)
    assert "version" in str(result)
    assert reads_of(vault, "legacy/web/db") == []


def test_kv1_missing_secret(vault):
    vault.enable_kv("legacy", version=1)
    result = fetch_one(make_backend(vault), {"path": "legacy/nope"})
    assert type(result) is NotFoundError


# -- other engines ---------------------------------------------------------------------------

def test_database_credentials_with_lease(vault):
    vault.enable_database()
    vault.add_database_role("web", ttl=600)
    result = fetch_one(make_backend(vault), {"path": "database/creds/web"})
    assert set(result.value) == {"username", "password"}
    assert result.lease is not None
    assert result.lease.lease_id.startswith("database/creds/web/")
    assert result.lease.duration_seconds == 600
    assert result.lease.renewable is True


def test_dynamic_secret_read_once_for_all_keys(vault):
    vault.enable_database()
    vault.add_database_role("web")
    results = run(make_backend(vault), [{"path": "database/creds/web"},
                                        {"path": "database/creds/web/"},
                                        {"path": "database/creds/web", "method": "GET"}])
    assert len(reads_of(vault, "database/creds/web")) == 1
    assert results[0].value == results[1].value == results[2].value


def test_post_read_with_params(vault):
    def issue(data: dict) -> dict:
        return {"certificate": f"CERT for {data['common_name']}", "private_key": "KEY"}

    vault.set_generic("pki/issue/web", issue, method="POST", lease_id="pki/issue/web/abc",
                      lease_duration=300)
    result = fetch_one(make_backend(vault), {"path": "pki/issue/web",
                                             "params": {"common_name": "web.internal"}})
    assert result.value["certificate"] == "CERT for web.internal"
    assert result.lease is not None
    requests = reads_of(vault, "pki/issue/web")
    assert [r.method for r in requests] == ["POST"]
    assert requests[0].body == {"common_name": "web.internal"}


def test_get_read_with_params_sends_query(vault):
    vault.set_generic("aws/creds/deploy", lambda data: {"access_key": f"AK-{data.get('ttl')}"})
    result = fetch_one(make_backend(vault), {"path": "aws/creds/deploy", "method": "GET",
                                             "params": {"ttl": "15m"}})
    assert result.value == {"access_key": "AK-15m"}
    assert reads_of(vault, "aws/creds/deploy")[0].query == {"ttl": ["15m"]}
    assert vault.requests_to("sys/internal/ui/mounts/*") == []


def test_no_content_response_is_not_found(vault):
    vault.set_generic("sys-like/empty/thing", None)
    result = fetch_one(make_backend(vault), {"path": "sys-like/empty/thing", "method": "GET"})
    assert type(result) is NotFoundError
    assert "HTTP 204" in str(result)


def test_non_json_success_is_reported(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.inject("secret/data/web/db", status=200, body="<html>login portal</html>",
                 content_type="text/html")
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "kv_version": 2})
    assert isinstance(result, BackendUnavailableError)
    assert "not JSON" in str(result)
    assert "text/html" in str(result)


def test_version_on_non_kv_mount_is_an_error(vault):
    vault.enable_database()
    vault.add_database_role("web")
    result = fetch_one(make_backend(vault), {"path": "database/creds/web", "version": 2})
    assert isinstance(result, ConfigError)
    assert reads_of(vault, "database/creds/web") == []


def test_params_on_kv_path_is_an_error(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "params": {"a": "b"}})
    assert isinstance(result, ConfigError)
    assert "params" in str(result)


# -- deduplication and concurrency ----------------------------------------------------------

def test_five_references_to_one_path_read_once(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    entries = [{"path": "secret/web/db"}, {"path": "/secret/web/db/"},
               {"path": "secret/data/web/db"}, {"path": "secret/web/db", "kv_version": 2},
               {"path": "secret/web/db", "mount": "secret"}]
    results = run(make_backend(vault), entries)
    assert all(result.value == {"password": "pw"} for result in results)
    assert len(reads_of(vault, "secret/data/web/db")) == 1


def _max_overlap(requests: list) -> int:
    events = sorted([(r.timestamp, 1) for r in requests] + [(r.finished, -1) for r in requests],
                    key=lambda event: (event[0], event[1]))
    current = highest = 0
    for _, change in events:
        current += change
        highest = max(highest, current)
    return highest


@pytest.mark.parametrize("concurrency", [1, 3])
def test_reads_respect_concurrency(vault, concurrency):
    for index in range(9):
        vault.kv_put("secret", f"app/{index}", {"v": index})
    vault.set_latency(0.05, path="secret/data/*")
    backend = make_backend(vault, {"concurrency": concurrency})
    results = run(backend, [{"path": f"secret/app/{index}", "kv_version": 2} for index in range(9)])
    assert [result.value["v"] for result in results] == list(range(9))
    reads = vault.requests_to("secret/data/*")
    assert len(reads) == 9
    assert _max_overlap(reads) <= concurrency
    if concurrency > 1:
        assert _max_overlap(reads) > 1


# -- namespace -------------------------------------------------------------------------------

def test_vault_namespace_variable_reaches_every_request(vault):
    vault.require_namespace("team-a")
    vault.kv_put("secret", "web/db", {"password": "ns"})
    token = vault.create_token(allow=["secret/*"])
    result = fetch_one(make_backend(vault, environ={"VAULT_TOKEN": token,
                                                    "VAULT_NAMESPACE": "team-a"}),
                       {"path": "secret/web/db"})
    assert result.value == {"password": "ns"}
    assert vault.requests
    assert all(request.namespace == "team-a" for request in vault.requests)


def test_namespace_on_login_and_revoke(vault):
    vault.require_namespace("team-a")
    vault.kv_put("secret", "web/db", {"password": "ns"})
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/*"])
    backend = make_backend(vault, {"namespace": "team-a", "auth": {"method": "approle"}},
                           environ={"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id})
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "ns"}
    paths = [request.logical_path for request in vault.requests]
    assert "auth/approle/login" in paths
    assert "auth/token/revoke-self" in paths
    assert all(request.namespace == "team-a" for request in vault.requests)


def test_no_namespace_header_without_namespace(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    fetch_one(make_backend(vault), {"path": "secret/web/db"})
    assert all(request.namespace is None for request in vault.requests)


# -- token errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["1.17", "legacy"])
def test_expired_token_is_reported_as_invalid_or_expired(style):
    with VaultEmulator(invalid_token_style=style) as vault:
        vault.enable_kv("secret", version=2)
        vault.kv_put("secret", "web/db", {"password": "pw"})
        token = vault.create_token(allow=["secret/*"], expired=True)
        for entry in ({"path": "secret/web/db"}, {"path": "secret/web/db", "kv_version": 2}):
            result = fetch_one(make_backend(vault, environ={"VAULT_TOKEN": token}), entry)
            assert isinstance(result, CredentialsError), entry
            assert result.exit_code == EX_NOPERM
            assert "invalid or expired" in str(result)
            assert "VAULT_TOKEN" in str(result)
            assert "permission denied by the token's policies" not in str(result)


@pytest.mark.parametrize("style", ["1.17", "legacy"])
def test_policy_denial_is_permission_denied(style):
    with VaultEmulator(invalid_token_style=style) as vault:
        vault.enable_kv("secret", version=2)
        vault.kv_put("secret", "web/db", {"password": "pw"})
        token = vault.create_token(allow=["secret/data/other"])
        result = fetch_one(make_backend(vault, environ={"VAULT_TOKEN": token}),
                           {"path": "secret/web/db", "kv_version": 2})
        assert type(result) is PermissionDeniedError
        assert "permission denied by the token's policies" in str(result)
        assert "secret/data/" in str(result)


def test_missing_token_is_a_credentials_error(vault, tmp_path):
    result = fetch_one(make_backend(vault, environ={"HOME": str(tmp_path)}),
                       {"path": "secret/web/db"})
    assert isinstance(result, CredentialsError)
    assert "VAULT_TOKEN" in str(result)
    assert vault.requests == []


# -- auth methods ----------------------------------------------------------------------------

def test_token_file(vault, tmp_path):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    (tmp_path / "token").write_text(vault.root_token + "\n")
    backend = make_backend(vault, {"auth": {"token_file": "token"}}, environ={},
                           manifest_dir=tmp_path)
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}
    assert all(request.token == vault.root_token for request in vault.requests)


def test_token_helper_file_in_home(vault, tmp_path):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    (tmp_path / ".vault-token").write_text(vault.root_token)
    backend = make_backend(vault, environ={"HOME": str(tmp_path)})
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}


def test_empty_token_file(vault, tmp_path):
    (tmp_path / "token").write_text("\n")
    backend = make_backend(vault, {"auth": {"token_file": str(tmp_path / "token")}}, environ={})
    result = fetch_one(backend, {"path": "secret/web/db"})
    assert isinstance(result, CredentialsError)
    assert "is empty" in str(result)


def test_user_token_is_never_revoked(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    token = vault.create_token(allow=["secret/*"])
    fetch_one(make_backend(vault, environ={"VAULT_TOKEN": token}), {"path": "secret/web/db"})
    assert vault.requests_to("auth/token/revoke-self") == []
    assert token not in vault.revoked_tokens


def test_approle_login_from_files_and_revoke(vault, tmp_path):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/*"])
    (tmp_path / "role-id").write_text(role_id)
    (tmp_path / "secret-id").write_text(secret_id)
    backend = make_backend(vault, {"auth": {"method": "approle", "role_id_file": "role-id",
                                            "secret_id_file": "secret-id"}},
                           environ={}, manifest_dir=tmp_path)
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}

    login = vault.requests_to("auth/approle/login")
    assert len(login) == 1
    assert login[0].body == {"role_id": role_id, "secret_id": secret_id}
    revoke = vault.requests_to("auth/token/revoke-self")
    assert len(revoke) == 1
    assert revoke[0].token in vault.revoked_tokens
    assert (tmp_path / "secret-id").exists()


def test_approle_removes_secret_id_file(vault, tmp_path):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/*"])
    (tmp_path / "secret-id").write_text(secret_id)
    backend = make_backend(vault, {"auth": {"method": "approle", "role_id": role_id,
                                            "secret_id_file": "secret-id",
                                            "remove_secret_id_file": True}},
                           environ={}, manifest_dir=tmp_path)
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}
    assert not (tmp_path / "secret-id").exists()


def test_approle_custom_mount_from_environment(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.enable_approle("apps")
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/*"], mount="apps")
    backend = make_backend(vault, {"auth": {"method": "approle", "mount": "apps"}},
                           environ={"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id})
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}
    assert len(vault.requests_to("auth/apps/login")) == 1
    assert backend.consumed_environment() == {"VAULT_ROLE_ID", "VAULT_SECRET_ID"}


def test_approle_wrong_secret_id(vault):
    vault.enable_approle()
    role_id, _ = vault.add_approle_role("web", allow=["secret/*"])
    backend = make_backend(vault, {"auth": {"method": "approle"}},
                           environ={"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": "wrong"})
    results = run(backend, [{"path": "secret/a"}, {"path": "secret/b"}])
    for result in results:
        assert isinstance(result, CredentialsError)
        assert "invalid role or secret ID" in str(result)
    assert results[0] is not results[1]
    assert len(vault.requests_to("auth/approle/login")) == 1
    assert reads_of(vault, "secret/data/a") == []


def test_kubernetes_login(vault, tmp_path):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.enable_kubernetes_auth("k8s")
    vault.add_kubernetes_role("web", jwt="eyJ.service-account.jwt", allow=["secret/*"], mount="k8s")
    (tmp_path / "token").write_text("eyJ.service-account.jwt")
    backend = make_backend(vault, {"auth": {"method": "kubernetes", "role": "web", "mount": "k8s",
                                            "token_path": str(tmp_path / "token")}}, environ={})
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}
    login = vault.requests_to("auth/k8s/login")
    assert login[0].body == {"role": "web", "jwt": "eyJ.service-account.jwt"}
    assert len(vault.requests_to("auth/token/revoke-self")) == 1


def test_kubernetes_wrong_jwt(vault, tmp_path):
    vault.enable_kubernetes_auth()
    vault.add_kubernetes_role("web", jwt="right", allow=["secret/*"])
    (tmp_path / "token").write_text("wrong")
    backend = make_backend(vault, {"auth": {"method": "kubernetes", "role": "web",
                                            "token_path": str(tmp_path / "token")}}, environ={})
    result = fetch_one(backend, {"path": "secret/web/db"})
    assert isinstance(result, CredentialsError)
    assert "kubernetes login" in str(result)


def test_kubernetes_token_file_missing(vault, tmp_path):
    backend = make_backend(vault, {"auth": {"method": "kubernetes", "role": "web",
                                            "token_path": str(tmp_path / "none")}}, environ={})
    result = fetch_one(backend, {"path": "secret/web/db"})
    assert isinstance(result, CredentialsError)
    assert "does not exist" in str(result)


def test_jwt_login_from_file(vault, tmp_path):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.enable_jwt_auth()
    vault.add_jwt_role("ci", jwt="eyJ.ci.jwt", allow=["secret/*"])
    (tmp_path / "jwt").write_text("eyJ.ci.jwt\n")
    backend = make_backend(vault, {"auth": {"method": "jwt", "role": "ci",
                                            "token_file": str(tmp_path / "jwt")}}, environ={})
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}
    assert vault.requests_to("auth/jwt/login")[0].body == {"role": "ci", "jwt": "eyJ.ci.jwt"}


def test_jwt_login_from_variable_custom_mount(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.enable_jwt_auth("gitlab")
    vault.add_jwt_role("ci", jwt="eyJ.ci.jwt", allow=["secret/*"], mount="gitlab")
    backend = make_backend(vault, {"auth": {"method": "jwt", "role": "ci", "mount": "gitlab",
                                            "token_env": "CI_JOB_JWT"}},
                           environ={"CI_JOB_JWT": "eyJ.ci.jwt"})
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}
    assert len(vault.requests_to("auth/gitlab/login")) == 1


def test_login_token_kept_for_lease(vault, caplog):
    vault.enable_database()
    vault.add_database_role("web")
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["database/*"])
    backend = make_backend(vault, {"auth": {"method": "approle"}},
                           environ={"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id})
    with caplog.at_level(logging.INFO):
        result = fetch_one(backend, {"path": "database/creds/web"})
    assert result.lease is not None
    assert vault.requests_to("auth/token/revoke-self") == []
    assert vault.revoked_tokens == []
    assert "keeping the login token" in caplog.text
    assert result.lease.lease_id in caplog.text


# -- retries ---------------------------------------------------------------------------------

@pytest.fixture
def sleeps(monkeypatch):
    """Record the retry loop's sleep times instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr("secret_init.backends.vault.client.time.sleep", recorded.append)
    return recorded


def test_retries_sealed_503_then_succeeds(vault, sleeps):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.inject("secret/data/web/db", status=503, body={"errors": ["Vault is sealed"]}, times=2)
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "kv_version": 2})
    assert result.value == {"password": "pw"}
    assert [r.status for r in reads_of(vault, "secret/data/web/db")] == [503, 503, 200]
    assert len(sleeps) == 2
    # Full jitter: each delay lies in [0, base * 2**attempt] (base 0.1 s).
    assert 0 <= sleeps[0] <= 0.1
    assert 0 <= sleeps[1] <= 0.2


def test_retry_after_header_is_honoured(vault, sleeps):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.inject("secret/data/web/db", status=429, times=1, headers={"Retry-After": "3"},
                 body={"errors": ["request path \"secret/data/web/db\": rate limit quota exceeded"]})
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "kv_version": 2})
    assert result.value == {"password": "pw"}
    assert sleeps == [3.0]


def test_dropped_connection_is_retried(vault, sleeps):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.inject("secret/data/web/db", drop_connection=True, times=1)
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "kv_version": 2})
    assert result.value == {"password": "pw"}
    assert len(sleeps) == 1


def test_login_is_retried(vault, sleeps):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/*"])
    vault.inject("auth/approle/login", status=502, times=1)
    backend = make_backend(vault, {"auth": {"method": "approle"}},
                           environ={"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id})
    assert fetch_one(backend, {"path": "secret/web/db"}).value == {"password": "pw"}
    assert len(vault.requests_to("auth/approle/login")) == 2


def test_server_errors_until_deadline(vault, caplog):
    vault.inject("secret/data/web/db", status=500, times=10_000,
                 body={"errors": ["internal error"]})
    with caplog.at_level(logging.INFO):
        result = fetch_one(make_backend(vault), {"path": "secret/web/db", "kv_version": 2},
                           seconds=1.0)
    assert isinstance(result, (BackendUnavailableError, DeadlineExceededError))
    assert "HTTP 500" in str(result)
    assert "internal error" in str(result)
    assert len(reads_of(vault, "secret/data/web/db")) > 1
    assert "retrying" in caplog.text


def test_sealed_until_deadline(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.seal()
    result = fetch_one(make_backend(vault), {"path": "secret/web/db"}, seconds=0.5)
    # Failing until the deadline is exit 75, the same as for the AWS backends.
    assert isinstance(result, DeadlineExceededError)
    assert "Vault is sealed" in str(result)


@pytest.mark.parametrize("status,error_class", [(400, ConfigError), (403, PermissionDeniedError),
                                                (404, NotFoundError)])
def test_client_errors_are_not_retried(vault, sleeps, status, error_class):
    vault.inject("secret/data/web/db", status=status, times=5)
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "kv_version": 2})
    assert isinstance(result, error_class)
    assert len(reads_of(vault, "secret/data/web/db")) == 1
    assert sleeps == []


def test_slow_server_bounded_by_deadline(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    vault.set_latency(1.5, path="secret/data/web/db")
    result = fetch_one(make_backend(vault), {"path": "secret/web/db", "kv_version": 2},
                       seconds=0.3)
    assert isinstance(result, DeadlineExceededError)
    assert "deadline" in str(result)


def test_unreachable_vault(sleeps):
    with VaultEmulator() as stopped:
        address = stopped.url
    fields = Fields({"address": address}, file="manifest.yaml", where="backends.vault")
    backend = VaultBackend("vault", fields, BackendContext(Path("/"), {"VAULT_TOKEN": "hvs.x"}))
    result = fetch_one(backend, {"path": "secret/web/db", "kv_version": 2}, seconds=0.5)
    assert isinstance(result, DeadlineExceededError)
    assert "connection failed" in str(result)


def test_proxy_variables_do_not_affect_loopback(vault):
    vault.kv_put("secret", "web/db", {"password": "pw"})
    environ = {"VAULT_TOKEN": vault.root_token, "HTTP_PROXY": "http://127.0.0.1:9",
               "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = fetch_one(make_backend(vault, environ=environ), {"path": "secret/web/db"})
    assert result.value == {"password": "pw"}


def test_missing_ca_file_is_a_config_error(vault):
    backend = make_backend(vault, {"ca_cert": "/nonexistent/ca.pem"})
    result = fetch_one(backend, {"path": "secret/web/db"})
    assert isinstance(result, ConfigError)
    assert "ca_cert" in str(result)
    assert "/nonexistent/ca.pem" in str(result)
    assert vault.requests == []


# -- values and credentials stay out of errors and logs ----------------------------------------

def test_canary_never_in_errors_or_logs(vault, tmp_path, caplog):
    vault.kv_put("secret", "web/db", {"password": CANARY})
    vault.kv_put("secret", "web/db", {"password": CANARY + "-2"})
    vault.kv_delete_versions("secret", "web/db", [2])
    vault.kv_put("secret", "web/ok", {"password": CANARY})
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/*"],
                                                secret_id="SECRET-ID-" + CANARY)
    (tmp_path / "secret-id").write_text(secret_id)
    backend = make_backend(vault, {"auth": {"method": "approle", "role_id": role_id,
                                            "secret_id_file": str(tmp_path / "secret-id")}},
                           environ={})
    vault.inject("secret/data/web/ok", status=500, times=1)
    with caplog.at_level(logging.DEBUG):
        results = run(backend, [{"path": "secret/web/db"}, {"path": "secret/web/db", "version": 1},
                                {"path": "secret/web/ok"}, {"path": "secret/web/none"}])
    assert isinstance(results[0], SecretDeletedError)
    assert results[1].value == {"password": CANARY}
    assert results[2].value == {"password": CANARY}
    assert isinstance(results[3], NotFoundError)
    login_token = vault.requests_to("auth/token/revoke-self")[0].token
    for result in results:
        if isinstance(result, SecretInitError):
            assert CANARY not in str(result)
            assert login_token not in str(result)
    assert CANARY not in caplog.text
    assert login_token not in caplog.text
