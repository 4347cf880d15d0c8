"""Wire-level tests of the Vault emulator, through raw HTTP and through hvac 2.4."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import hvac
import pytest
import requests
from hvac import exceptions

from vault_emulator import (
    VaultEmulator,
    VaultError,
    go_duration,
    go_json,
    multierror,
    parse_duration,
    path_matches,
    rfc3339nano,
)

ENVELOPE_KEYS = ["request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings",
                 "auth", "mount_type"]
AUTH_KEYS = ["client_token", "accessor", "policies", "token_policies", "metadata", "lease_duration",
             "renewable", "entity_id", "token_type", "orphan", "mfa_requirement", "num_uses"]
ACL_DENIED = {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
INVALID_TOKEN = {"errors": ["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]}
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def vault():
    with VaultEmulator() as emulator:
        emulator.enable_kv("secret", version=2)
        emulator.enable_kv("kv1", version=1)
        yield emulator


def _session() -> requests.Session:
    # Ignore HTTP(S)_PROXY from the environment: all traffic stays on 127.0.0.1.
    session = requests.Session()
    session.trust_env = False
    return session


def client_for(vault: VaultEmulator, token: str | None = None, **kwargs) -> hvac.Client:
    return hvac.Client(url=vault.url, token=token, session=_session(), **kwargs)


def http(vault: VaultEmulator, method: str, path: str, *, token: str | None = None, body=None,
         headers: dict[str, str] | None = None, data: bytes | None = None, **kwargs) -> requests.Response:
    """Send one raw request to /v1/<path> (or to *path* as is when it starts with "/")."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["X-Vault-Token"] = token
    url = vault.url + (path if path.startswith("/") else "/v1/" + path)
    with _session() as session:
        return session.request(method, url, headers=all_headers, json=body, data=data,
                               allow_redirects=False, **kwargs)


def key_order(response: requests.Response) -> list[str]:
    return list(json.loads(response.text).keys())


# ---------------------------------------------------------------------------
# Go-compatible encoding helpers
# ---------------------------------------------------------------------------


def test_go_json_sorts_maps_and_escapes_html():
    assert go_json({"b": 1, "a": "<&>"}) == '{"a":"\\u003c\\u0026\\u003e","b":1}'


def test_rfc3339nano_trims_trailing_zeros():
    assert rfc3339nano(1_700_000_000_512_330_000) == "2023-11-14T22:13:20.51233Z"
    assert rfc3339nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert rfc3339nano(None) == ""


def test_go_duration_and_parse_duration():
    assert go_duration(0) == "0s"
    assert go_duration(3600) == "1h0m0s"
    assert go_duration(12319) == "3h25m19s"
    assert go_duration(90) == "1m30s"
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    assert parse_duration(10) == 10
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_multierror_format():
    assert multierror("permission denied") == "1 error occurred:\n\t* permission denied\n\n"
    assert multierror("a", "b") == "2 errors occurred:\n\t* a\n\t* b\n\n"


def test_policy_path_patterns():
    assert path_matches("secret/data/web/*", "secret/data/web/db")
    assert path_matches("secret/data/+/db", "secret/data/web/db")
    assert not path_matches("secret/data/+/db", "secret/data/web/x/db")
    assert not path_matches("secret/web/db", "secret/data/web/db")


# ---------------------------------------------------------------------------
# Cross-cutting HTTP behaviour
# ---------------------------------------------------------------------------


def test_success_envelope_headers_and_field_order(vault):
    vault.kv_put("secret", "web/db", {"password": "x"})
    response = http(vault, "GET", "secret/data/web/db", token=vault.root_token)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Server" not in response.headers
    assert response.text.endswith("}\n")
    assert key_order(response) == ENVELOPE_KEYS
    body = response.json()
    assert UUID.match(body["request_id"])
    assert body["lease_id"] == ""
    assert body["renewable"] is False
    assert body["lease_duration"] == 0
    assert body["wrap_info"] is None
    assert body["warnings"] is None
    assert body["auth"] is None
    assert body["mount_type"] == "kv"


def test_no_content_has_json_type_and_empty_body(vault):
    response = http(vault, "POST", "kv1/app", token=vault.root_token, body={"a": "b"})

    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_verb_is_405_with_empty_errors(vault):
    response = http(vault, "FOO", "secret/data/web/db", token=vault.root_token)

    assert response.status_code == 405
    assert response.text == '{"errors":[]}\n'


def test_invalid_json_body_is_400(vault):
    response = http(vault, "POST", "kv1/app", token=vault.root_token, data=b"{not json",
                    headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.text == '{"errors":["error parsing JSON"]}\n'


def test_write_to_path_ending_in_slash_is_400(vault):
    response = http(vault, "POST", "kv1/app/", token=vault.root_token, body={"a": "b"})

    assert response.status_code == 400
    assert response.json() == {"errors": ["cannot write to a path ending in '/'"]}


def test_percent_encoded_path_is_decoded(vault):
    vault.kv_put("secret", "my secret", {"k": "v"})
    client = client_for(vault, vault.root_token)

    result = client.secrets.kv.v2.read_secret_version("my secret", mount_point="secret",
                                                      raise_on_deleted_version=True)

    assert result["data"]["data"] == {"k": "v"}
    assert vault.requests[-1].raw_path == "/v1/secret/data/my%20secret"


def test_unclean_path_redirects_like_go_servemux(vault):
    response = http(vault, "GET", "/v1/secret//data/web/db", token=vault.root_token)

    assert response.status_code == 301
    assert response.headers["Location"] == "/v1/secret/data/web/db"


def test_path_outside_v1_is_go_not_found(vault):
    response = http(vault, "GET", "/nope")

    assert response.status_code == 404
    assert response.text == "404 page not found\n"


def test_bearer_authorization_header_is_accepted(vault):
    vault.kv_put("secret", "web/db", {"password": "x"})

    bearer = http(vault, "GET", "secret/data/web/db", headers={"Authorization": f"Bearer {vault.root_token}"})
    basic = http(vault, "GET", "secret/data/web/db", headers={"Authorization": "Basic dXNlcjpwdw=="})
    both = http(vault, "GET", "secret/data/web/db", token="hvs.bogus",
                headers={"Authorization": f"Bearer {vault.root_token}"})

    assert bearer.status_code == 200
    assert basic.status_code == 403
    assert basic.json() == {"errors": ["permission denied"]}
    assert both.status_code == 403  # X-Vault-Token wins over Authorization


# ---------------------------------------------------------------------------
# KV version 2
# ---------------------------------------------------------------------------


def test_kv2_read_latest_and_specific_version(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    assert vault.kv_put("secret", "web/db", {"password": "two"}) == 2
    client = client_for(vault, vault.root_token)

    latest = client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret",
                                                      raise_on_deleted_version=True)
    first = client.secrets.kv.v2.read_secret_version("web/db", version=1, mount_point="secret",
                                                     raise_on_deleted_version=True)

    assert latest["data"]["data"] == {"password": "two"}
    assert latest["data"]["metadata"]["version"] == 2
    assert first["data"]["data"] == {"password": "one"}
    metadata = first["data"]["metadata"]
    assert list(metadata) == ["created_time", "custom_metadata", "deletion_time", "destroyed", "version"]
    assert RFC3339NANO.match(metadata["created_time"])
    assert metadata["custom_metadata"] is None
    assert metadata["deletion_time"] == ""
    assert metadata["destroyed"] is False
    assert vault.requests[-1].query == {"version": ["1"]}


def test_kv2_missing_key_is_404_with_empty_errors(vault):
    response = http(vault, "GET", "secret/data/nope", token=vault.root_token)
    client = client_for(vault, vault.root_token)

    assert response.status_code == 404
    assert response.text == '{"errors":[]}\n'
    with pytest.raises(exceptions.InvalidPath) as caught:
        client.secrets.kv.v2.read_secret_version("nope", mount_point="secret", raise_on_deleted_version=False)
    # errors == [] is falsy, so hvac keeps no message at all.
    assert caught.value.errors == []
    assert str(caught.value).startswith("None, on get ")


def test_kv2_version_not_present_is_404(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})

    response = http(vault, "GET", "secret/data/web/db?version=7", token=vault.root_token)

    assert response.status_code == 404
    assert response.text == '{"errors":[]}\n'


def test_kv2_version_zero_and_negative_mean_latest(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_put("secret", "web/db", {"password": "two"})

    for value in ("0", "-3"):
        response = http(vault, "GET", f"secret/data/web/db?version={value}", token=vault.root_token)
        assert response.json()["data"]["data"] == {"password": "two"}


def test_kv2_non_integer_version_is_400(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})

    response = http(vault, "GET", "secret/data/web/db?version=abc", token=vault.root_token)

    assert response.status_code == 400
    assert "version" in response.json()["errors"][0]


def test_kv2_soft_deleted_version_is_raw_404(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_delete_versions("secret", "web/db", [1])

    response = http(vault, "GET", "secret/data/web/db", token=vault.root_token)

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert not response.text.endswith("\n")
    assert key_order(response) == ENVELOPE_KEYS
    body = response.json()
    assert "errors" not in body
    assert body["mount_type"] == ""
    assert body["data"]["data"] is None
    assert RFC3339NANO.match(body["data"]["metadata"]["deletion_time"])
    assert body["data"]["metadata"]["destroyed"] is False
    assert body["data"]["metadata"]["version"] == 1


def test_kv2_deleted_version_through_hvac(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_delete_versions("secret", "web/db", [1])
    client = client_for(vault, vault.root_token)

    with pytest.raises(exceptions.InvalidPath) as caught:
        client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret", raise_on_deleted_version=True)
    returned = client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret",
                                                        raise_on_deleted_version=False)

    # No "errors" key: hvac's message is the whole body and .json the envelope.
    assert caught.value.errors is None
    assert caught.value.json["data"]["data"] is None
    assert returned["data"]["data"] is None
    assert returned["data"]["metadata"]["deletion_time"] != ""


def test_kv2_destroyed_only_version_still_raises_with_false(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_destroy_versions("secret", "web/db", [1])
    client = client_for(vault, vault.root_token)

    body = http(vault, "GET", "secret/data/web/db", token=vault.root_token).json()

    assert body["data"]["metadata"]["destroyed"] is True
    assert body["data"]["metadata"]["deletion_time"] == ""
    # hvac returns e.json only when deletion_time is set, so this still raises.
    with pytest.raises(exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret", raise_on_deleted_version=False)


def test_kv2_deleted_latest_does_not_fall_back(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_put("secret", "web/db", {"password": "two"})
    vault.kv_delete_versions("secret", "web/db", [2])

    latest = http(vault, "GET", "secret/data/web/db", token=vault.root_token)
    first = http(vault, "GET", "secret/data/web/db?version=1", token=vault.root_token)

    assert latest.status_code == 404
    assert latest.json()["data"]["metadata"]["version"] == 2
    assert first.status_code == 200


def test_kv2_future_deletion_time_still_reads(vault):
    vault.kv_set_metadata("secret", "web/db", delete_version_after="1h")
    vault.kv_put("secret", "web/db", {"password": "one"})

    response = http(vault, "GET", "secret/data/web/db", token=vault.root_token)

    assert response.status_code == 200
    assert response.json()["data"]["data"] == {"password": "one"}
    assert RFC3339NANO.match(response.json()["data"]["metadata"]["deletion_time"])


def test_kv2_undelete_restores_version(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    client = client_for(vault, vault.root_token)

    client.secrets.kv.v2.delete_secret_versions("web/db", [1], mount_point="secret")
    deleted = http(vault, "GET", "secret/data/web/db", token=vault.root_token)
    client.secrets.kv.v2.undelete_secret_versions("web/db", [1], mount_point="secret")
    restored = http(vault, "GET", "secret/data/web/db", token=vault.root_token)

    assert deleted.status_code == 404
    assert restored.status_code == 200
    assert restored.json()["data"]["metadata"]["deletion_time"] == ""


def test_kv2_delete_latest_and_destroy_over_http(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_put("secret", "web/db", {"password": "two"})
    client = client_for(vault, vault.root_token)

    deleted = client.secrets.kv.v2.delete_latest_version_of_secret("web/db", mount_point="secret")
    destroyed = client.secrets.kv.v2.destroy_secret_versions("web/db", [1], mount_point="secret")
    metadata = client.secrets.kv.v2.read_secret_metadata("web/db", mount_point="secret")["data"]

    assert deleted.status_code == 204
    assert destroyed.status_code == 204
    assert metadata["current_version"] == 2
    assert metadata["versions"]["1"]["destroyed"] is True
    assert metadata["versions"]["2"]["deletion_time"] != ""


def test_kv2_version_op_without_versions_is_400(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})

    response = http(vault, "POST", "secret/delete/web/db", token=vault.root_token, body={})

    assert response.status_code == 400
    assert response.json() == {"errors": ["No version number provided"]}


def test_kv2_write_returns_version_metadata(vault):
    client = client_for(vault, vault.root_token)

    written = client.secrets.kv.v2.create_or_update_secret("web/db", {"password": "x"}, mount_point="secret")

    assert written["data"]["version"] == 1
    assert list(written["data"]) == ["created_time", "custom_metadata", "deletion_time", "destroyed", "version"]


def test_kv2_cas_mismatch_and_missing_data(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})

    mismatch = http(vault, "POST", "secret/data/web/db", token=vault.root_token,
                    body={"options": {"cas": 0}, "data": {"password": "two"}})
    no_data = http(vault, "POST", "secret/data/web/db", token=vault.root_token, body={"password": "two"})

    assert mismatch.status_code == 400
    assert mismatch.json() == {"errors": ["check-and-set parameter did not match the current version"]}
    assert no_data.status_code == 400
    assert no_data.json() == {"errors": ["no data provided"]}


def test_kv2_metadata_read_shape(vault):
    vault.kv_put("secret", "web/db", {"password": "one"}, custom_metadata={"owner": "team-a"})
    vault.kv_put("secret", "web/db", {"password": "two"})

    data = http(vault, "GET", "secret/metadata/web/db", token=vault.root_token).json()["data"]

    assert list(data) == ["cas_required", "created_time", "current_version", "custom_metadata",
                          "delete_version_after", "max_versions", "oldest_version", "updated_time", "versions"]
    assert data["current_version"] == 2
    assert data["custom_metadata"] == {"owner": "team-a"}
    assert data["delete_version_after"] == "0s"
    assert sorted(data["versions"]) == ["1", "2"]
    assert list(data["versions"]["1"]) == ["created_time", "deletion_time", "destroyed"]


def test_kv2_list_with_verb_and_query(vault):
    vault.kv_put("secret", "app/db", {"a": 1})
    vault.kv_put("secret", "app/nested/key", {"a": 1})

    with_verb = http(vault, "LIST", "secret/metadata/app", token=vault.root_token)
    with_query = http(vault, "GET", "secret/metadata/app?list=true", token=vault.root_token)
    empty = http(vault, "LIST", "secret/metadata/nothing", token=vault.root_token)
    client_keys = client_for(vault, vault.root_token).secrets.kv.v2.list_secrets("app", mount_point="secret")

    assert with_verb.json()["data"] == {"keys": ["db", "nested/"]}
    assert with_query.json()["data"] == {"keys": ["db", "nested/"]}
    assert empty.status_code == 404
    assert empty.text == '{"errors":[]}\n'
    assert client_keys["data"]["keys"] == ["db", "nested/"]


@pytest.mark.parametrize("method,word", [("GET", "get"), ("POST", "put"), ("DELETE", "delete"), ("LIST", "list")])
def test_kv2_v1_style_path_raw_404(vault, method, word):
    vault.kv_put("secret", "web/db", {"password": "one"})

    response = http(vault, method, "secret/web/db", token=vault.root_token,
                    body={"password": "x"} if method == "POST" else None)

    assert response.status_code == 404
    body = response.json()
    assert "errors" not in body
    assert body["data"] is None
    assert body["mount_type"] == ""
    assert body["warnings"] == [
        "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints "
        f"to use. If using the Vault CLI, use 'vault kv {word}' for this operation."]


def test_kv2_root_of_sub_path_is_raw_404(vault):
    response = http(vault, "GET", "secret/data", token=vault.root_token)

    assert response.status_code == 404
    assert response.json()["warnings"] == [
        "Non-listing operations on the root of a K/V v2 mount are not supported."]


def test_kv2_doubled_data_segment_is_missing_key(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    client = client_for(vault, vault.root_token)

    response = http(vault, "GET", "secret/data/data/web/db", token=vault.root_token)

    assert response.status_code == 404
    assert response.text == '{"errors":[]}\n'
    # Passing an API path into hvac doubles the segment.
    with pytest.raises(exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version("data/web/db", mount_point="secret", raise_on_deleted_version=True)


def test_hvac_empty_mount_point_hits_missing_route(vault):
    client = client_for(vault, vault.root_token)

    with pytest.raises(exceptions.InvalidPath) as caught:
        client.secrets.kv.v2.read_secret_version("web/db", mount_point="", raise_on_deleted_version=True)

    assert caught.value.errors == ['no handler for route "data/web/db". route entry not found.']


def test_hvac_deprecation_warning_without_raise_flag(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    client = client_for(vault, vault.root_token)

    with pytest.warns(DeprecationWarning):
        client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret")


def test_hvac_client_read_swallows_404(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.kv_delete_versions("secret", "web/db", [1])
    client = client_for(vault, vault.root_token)

    assert client.read("secret/data/web/db") is None
    assert client.read("secret/data/missing") is None


def test_kv2_custom_mount_name(vault):
    vault.enable_kv("kv-prod", version=2)
    vault.kv_put("kv-prod", "app", {"k": "v"})
    client = client_for(vault, vault.root_token)

    result = client.secrets.kv.v2.read_secret_version("app", mount_point="kv-prod", raise_on_deleted_version=True)

    assert result["data"]["data"] == {"k": "v"}


# ---------------------------------------------------------------------------
# KV version 1
# ---------------------------------------------------------------------------


def test_kv1_read_uses_default_lease_duration(vault):
    vault.kv_put("kv1", "app", {"user": "u", "count": 3})
    client = client_for(vault, vault.root_token)

    result = client.secrets.kv.v1.read_secret("app", mount_point="kv1")

    assert result["data"] == {"count": 3, "user": "u"}
    assert result["lease_duration"] == 2764800
    assert result["lease_id"] == ""
    assert result["renewable"] is False
    assert result["mount_type"] == "kv"


def test_kv1_ttl_key_sets_lease_duration(vault):
    vault.kv_put("kv1", "app", {"user": "u", "ttl": "1h"})

    response = http(vault, "GET", "kv1/app", token=vault.root_token)

    assert response.json()["lease_duration"] == 3600


def test_kv1_v2_style_path_is_plain_missing_key(vault):
    vault.kv_put("kv1", "app", {"user": "u"})

    response = http(vault, "GET", "kv1/data/app", token=vault.root_token)

    assert response.status_code == 404
    assert response.text == '{"errors":[]}\n'


def test_kv1_write_list_delete(vault):
    client = client_for(vault, vault.root_token)

    client.secrets.kv.v1.create_or_update_secret("dir/a", {"x": "1"}, mount_point="kv1")
    client.secrets.kv.v1.create_or_update_secret("dir/sub/b", {"x": "2"}, mount_point="kv1")
    listed = client.secrets.kv.v1.list_secrets("dir", mount_point="kv1")
    deleted = client.secrets.kv.v1.delete_secret("dir/a", mount_point="kv1")

    assert listed["data"]["keys"] == ["a", "sub/"]
    assert deleted.status_code == 204
    assert http(vault, "GET", "kv1/dir/a", token=vault.root_token).status_code == 404


# ---------------------------------------------------------------------------
# Tokens and ACL
# ---------------------------------------------------------------------------


def test_acl_denial_is_multierror_403(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token(allow=["secret/web/db"])
    client = client_for(vault, token)

    response = http(vault, "GET", "secret/data/web/db", token=token)

    # A policy on secret/web/db does not cover the API path secret/data/web/db.
    assert response.status_code == 403
    assert response.text == '{"errors":["1 error occurred:\\n\\t* permission denied\\n\\n"]}\n'
    with pytest.raises(exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret", raise_on_deleted_version=True)


def test_missing_token_is_plain_permission_denied(vault):
    response = http(vault, "GET", "secret/data/web/db")

    assert response.status_code == 403
    assert response.text == '{"errors":["permission denied"]}\n'


def test_invalid_expired_and_revoked_tokens(vault):
    expired = vault.create_token(allow=["secret/*"], expired=True)
    revoked = vault.create_token(allow=["secret/*"])
    vault.revoke_token(revoked)

    for token in ("hvs.doesnotexist", expired, revoked):
        response = http(vault, "GET", "secret/data/web/db", token=token)
        assert response.status_code == 403
        assert response.json() == INVALID_TOKEN
    assert vault.revoked_tokens == [revoked]  # expiry is not revocation


def test_token_expires_after_ttl(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token(allow=["secret/data/*"], ttl=1)

    before = http(vault, "GET", "secret/data/web/db", token=token)
    time.sleep(1.1)
    after = http(vault, "GET", "secret/data/web/db", token=token)

    assert before.status_code == 200
    assert after.status_code == 403
    assert after.json() == INVALID_TOKEN


def test_legacy_invalid_token_style():
    with VaultEmulator(invalid_token_style="legacy") as vault:
        response = http(vault, "GET", "sys/mounts", token="hvs.doesnotexist")

    assert response.status_code == 403
    assert response.json() == {"errors": ["permission denied"]}


def test_missing_mount_403_or_404(vault):
    token = vault.create_token(allow=["secret/data/*"])

    denied = http(vault, "GET", "nomount/foo/bar", token=token)
    missing = http(vault, "GET", "nomount/foo/bar", token=vault.root_token)

    assert denied.status_code == 403
    assert denied.json() == ACL_DENIED
    assert missing.status_code == 404
    assert missing.json() == {"errors": ['no handler for route "nomount/foo/bar". route entry not found.']}


def test_deny_pattern_wins_over_allow(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token(allow=["secret/data/*"], deny=["secret/data/web/db"])

    assert http(vault, "GET", "secret/data/web/db", token=token).status_code == 403


def test_capability_map_limits_operations(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token(allow={"secret/data/web/*": ["read"]})

    read = http(vault, "GET", "secret/data/web/db", token=token)
    write = http(vault, "POST", "secret/data/web/db", token=token, body={"data": {"a": "b"}})

    assert read.status_code == 200
    assert write.status_code == 403


def test_lookup_self_fields(vault):
    token = vault.create_token(policies=["default", "app-read"], ttl=3600, meta={"team": "a"})
    client = client_for(vault, token)

    data = client.auth.token.lookup_self()["data"]

    assert sorted(data) == sorted([
        "accessor", "creation_time", "creation_ttl", "display_name", "entity_id", "expire_time",
        "explicit_max_ttl", "id", "issue_time", "meta", "num_uses", "orphan", "path", "policies",
        "renewable", "ttl", "type"])
    assert data["id"] == token
    assert data["creation_ttl"] == 3600
    assert 3590 <= data["ttl"] <= 3600
    assert RFC3339NANO.match(data["expire_time"])
    assert data["policies"] == ["default", "app-read"]
    assert data["meta"] == {"team": "a"}
    assert data["renewable"] is True
    assert data["type"] == "service"
    assert re.fullmatch(r"hvs\.[A-Za-z0-9]{24}", token)


def test_lookup_self_of_root_token(vault):
    data = client_for(vault, vault.root_token).auth.token.lookup_self()["data"]

    assert data["policies"] == ["root"]
    assert data["expire_time"] is None
    assert data["ttl"] == 0
    assert data["creation_ttl"] == 0
    assert data["path"] == "auth/token/root"
    assert "renewable" not in data
    assert "issue_time" not in data


def test_renew_self_with_increment(vault):
    token = vault.create_token(ttl=60)
    client = client_for(vault, token)

    renewed = client.auth.token.renew_self(increment="1h")
    looked_up = client.auth.token.lookup_self()["data"]

    assert renewed["auth"]["client_token"] == token
    assert renewed["auth"]["lease_duration"] == 3600
    assert renewed["data"] is None
    assert list(renewed["auth"]) == AUTH_KEYS
    assert "last_renewal" in looked_up
    assert looked_up["creation_ttl"] == 60


def test_renew_self_of_non_renewable_and_root_tokens(vault):
    fixed = vault.create_token(ttl=60, renewable=False)

    with pytest.raises(exceptions.InvalidRequest) as non_renewable:
        client_for(vault, fixed).auth.token.renew_self()
    with pytest.raises(exceptions.InvalidRequest):
        client_for(vault, vault.root_token).auth.token.renew_self()

    assert non_renewable.value.errors == ["lease is not renewable"]


def test_revoke_self_then_token_is_invalid(vault):
    token = vault.create_token(ttl=600)
    client = client_for(vault, token)

    result = client.auth.token.revoke_self()

    assert isinstance(result, requests.Response)
    assert result.status_code == 204
    assert token in vault.revoked_tokens
    with pytest.raises(exceptions.Forbidden) as caught:
        client.auth.token.lookup_self()
    assert "invalid token" in caught.value.errors[0]
    assert client.is_authenticated() is False


def test_num_uses_limits_requests(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token(allow=["secret/data/*"], num_uses=2)

    first = http(vault, "GET", "secret/data/web/db", token=token)
    second = http(vault, "GET", "secret/data/web/db", token=token)
    third = http(vault, "GET", "secret/data/web/db", token=token)

    assert first.status_code == 200
    assert second.status_code == 200
    assert third.status_code == 403
    assert third.json() == INVALID_TOKEN
    assert token in vault.revoked_tokens


def test_num_uses_shown_by_lookup_self(vault):
    token = vault.create_token(num_uses=5)

    data = client_for(vault, token).auth.token.lookup_self()["data"]

    assert data["num_uses"] == 4


def test_is_authenticated(vault):
    assert client_for(vault, vault.root_token).is_authenticated() is True
    assert client_for(vault, "hvs.bogus").is_authenticated() is False
    assert client_for(vault, None).is_authenticated() is False


def test_default_policy_token_cannot_read_secrets(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token()

    assert http(vault, "GET", "auth/token/lookup-self", token=token).status_code == 200
    assert http(vault, "GET", "secret/data/web/db", token=token).status_code == 403


def test_no_default_policy_blocks_lookup_self(vault):
    token = vault.create_token(policies=["app"], allow=["secret/data/*"])

    assert client_for(vault, token).is_authenticated() is False


# ---------------------------------------------------------------------------
# sys/internal/ui/mounts
# ---------------------------------------------------------------------------


def test_ui_mounts_record_shape(vault):
    token = vault.create_token(allow=["secret/data/web/*"])

    by_mount = http(vault, "GET", "sys/internal/ui/mounts/secret", token=token)
    by_secret = http(vault, "GET", "sys/internal/ui/mounts/secret/web/db", token=token)

    assert by_mount.status_code == 200
    assert key_order(by_mount) == ENVELOPE_KEYS
    data = by_mount.json()["data"]
    assert data["path"] == "secret/"
    assert data["type"] == "kv"
    assert data["options"] == {"version": "2"}
    assert data["config"] == {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0}
    assert {"accessor", "description", "external_entropy_access", "local", "seal_wrap", "uuid"} <= set(data)
    assert by_secret.json()["data"] == data


def test_ui_mounts_kv1_and_hvac_read(vault):
    data = client_for(vault, vault.root_token).read("sys/internal/ui/mounts/kv1/app")["data"]

    assert data["path"] == "kv1/"
    assert data["options"] == {"version": "1"}


def test_ui_mounts_without_mount_access_is_preflight_403(vault):
    token = vault.create_token(allow=["kv1/*"])

    response = http(vault, "GET", "sys/internal/ui/mounts/secret/app/db", token=token)

    assert response.status_code == 403
    assert response.json() == {"errors": [
        "preflight capability check returned 403, please ensure client's policies grant access to path "
        '"secret/app/db/"']}
    with pytest.raises(exceptions.Forbidden):
        client_for(vault, token).read("sys/internal/ui/mounts/secret/app/db")


def test_ui_mounts_missing_mount_403(vault):
    response = http(vault, "GET", "sys/internal/ui/mounts/nomount/x", token=vault.root_token)

    assert response.status_code == 403
    assert "nomount/x/" in response.json()["errors"][0]


def test_ui_mounts_without_token_is_preflight_403(vault):
    for token in (None, "hvs.bogus"):
        response = http(vault, "GET", "sys/internal/ui/mounts/secret", token=token)
        assert response.status_code == 403
        assert response.json()["errors"][0].startswith("preflight capability check returned 403")


def test_ui_mounts_denied_while_data_allowed(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token(allow=["secret/data/web/db"], deny=["sys/internal/ui/mounts/*"])

    preflight = http(vault, "GET", "sys/internal/ui/mounts/secret/web/db", token=token)
    data = http(vault, "GET", "secret/data/web/db", token=token)

    assert preflight.status_code == 403
    assert data.status_code == 200


# ---------------------------------------------------------------------------
# Auth methods
# ---------------------------------------------------------------------------


def test_approle_login_auth_block(vault):
    vault.enable_approle()
    vault.kv_put("secret", "web/db", {"password": "one"})
    role_id, secret_id = vault.add_approle_role("web", role_id="rid-1", secret_id="sid-1",
                                                allow=["secret/data/web/*"], policies=["web"], token_ttl=600)

    raw = http(vault, "POST", "auth/approle/login", body={"role_id": role_id, "secret_id": secret_id})
    client = client_for(vault)
    login = client.auth.approle.login(role_id, secret_id)

    assert raw.status_code == 200
    assert key_order(raw) == ENVELOPE_KEYS
    assert list(raw.json()["auth"]) == AUTH_KEYS
    auth = login["auth"]
    assert login["data"] is None
    assert login["lease_duration"] == 0
    assert login["mount_type"] == "approle"
    assert auth["policies"] == ["default", "web"]
    assert auth["token_policies"] == ["default", "web"]
    assert auth["metadata"] == {"role_name": "web"}
    assert auth["lease_duration"] == 600
    assert auth["renewable"] is True
    assert UUID.match(auth["entity_id"])
    assert auth["token_type"] == "service"
    assert auth["orphan"] is True
    assert auth["mfa_requirement"] is None
    assert client.token == auth["client_token"]
    assert client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret",
                                                    raise_on_deleted_version=True)["data"]["data"]
    assert client.auth.token.lookup_self()["data"]["display_name"] == "approle"


@pytest.mark.parametrize("body,message", [
    ({"role_id": "", "secret_id": "s"}, "missing role_id"),
    ({"role_id": "unknown", "secret_id": "s"}, "invalid role or secret ID"),
    ({"role_id": "rid-1", "secret_id": None}, "missing secret_id"),
    ({"role_id": "rid-1", "secret_id": "wrong"}, "invalid role or secret ID"),
])
def test_approle_login_errors(vault, body, message):
    vault.enable_approle()
    vault.add_approle_role("web", role_id="rid-1", secret_id="sid-1")

    response = http(vault, "POST", "auth/approle/login", body=body)

    assert response.status_code == 400
    assert response.json() == {"errors": [message]}


def test_approle_secret_id_num_uses(vault):
    vault.enable_approle(mount="ar-prod")
    role_id, secret_id = vault.add_approle_role("web", mount="ar-prod", secret_id_num_uses=1)
    client = client_for(vault)

    client.auth.approle.login(role_id, secret_id, mount_point="ar-prod")
    with pytest.raises(exceptions.InvalidRequest) as caught:
        client.auth.approle.login(role_id, secret_id, mount_point="ar-prod")

    assert caught.value.errors == ["invalid role or secret ID"]
    assert vault.requests[-1].path == "/v1/auth/ar-prod/login"


def test_kubernetes_login(vault):
    vault.enable_kubernetes_auth(mount="k8s-prod")
    vault.add_kubernetes_role("web", jwt="sa.jwt.value", mount="k8s-prod", policies=["web"],
                              service_account_name="app-sa", service_account_namespace="prod")
    client = client_for(vault)

    login = client.auth.kubernetes.login("web", "sa.jwt.value", mount_point="k8s-prod")

    metadata = login["auth"]["metadata"]
    assert metadata["role"] == "web"
    assert metadata["service_account_name"] == "app-sa"
    assert metadata["service_account_namespace"] == "prod"
    assert metadata["service_account_secret_name"] == ""
    assert UUID.match(metadata["service_account_uid"])
    assert login["mount_type"] == "kubernetes"
    assert client.auth.token.lookup_self()["data"]["display_name"] == "k8s-prod-prod-app-sa"


def test_kubernetes_login_errors(vault):
    vault.enable_kubernetes_auth()
    vault.add_kubernetes_role("web", jwt="sa.jwt.value")
    client = client_for(vault)

    with pytest.raises(exceptions.Forbidden) as wrong_jwt:
        client.auth.kubernetes.login("web", "other.jwt")
    unknown = http(vault, "POST", "auth/kubernetes/login", body={"role": "nope", "jwt": "x"})
    no_role = http(vault, "POST", "auth/kubernetes/login", body={"jwt": "x"})
    no_jwt = http(vault, "POST", "auth/kubernetes/login", body={"role": "web"})

    assert wrong_jwt.value.errors == ["permission denied"]
    assert unknown.status_code == 400
    assert unknown.json() == {"errors": ['invalid role name "nope"']}
    assert no_role.json() == {"errors": ["missing role"]}
    assert no_jwt.json() == {"errors": ["missing jwt"]}


def test_jwt_login(vault):
    vault.enable_jwt_auth(mount="gitlab")
    vault.add_jwt_role("ci", jwt="header.payload.sig", mount="gitlab", allow=["secret/data/ci/*"])
    client = client_for(vault)

    login = client.auth.jwt.jwt_login("ci", "header.payload.sig", path="gitlab")

    assert login["auth"]["metadata"] == {"role": "ci"}
    assert login["auth"]["policies"] == ["default"]
    assert vault.requests[-1].path == "/v1/auth/gitlab/login"
    assert vault.requests[-1].body == {"role": "ci", "jwt": "header.payload.sig"}


def test_jwt_login_errors(vault):
    vault.enable_jwt_auth()
    vault.add_jwt_role("ci", jwt="good")

    wrong = http(vault, "POST", "auth/jwt/login", body={"role": "ci", "jwt": "bad"})
    unknown = http(vault, "POST", "auth/jwt/login", body={"role": "nope", "jwt": "good"})
    no_jwt = http(vault, "POST", "auth/jwt/login", body={"role": "ci"})
    no_role = http(vault, "POST", "auth/jwt/login", body={"jwt": "good"})

    assert wrong.status_code == 400
    assert wrong.json()["errors"][0].startswith("error validating token: ")
    assert unknown.json() == {"errors": ['role "nope" could not be found']}
    assert no_jwt.json() == {"errors": ["missing token"]}
    assert no_role.json() == {"errors": ["missing role"]}


def test_login_on_missing_auth_mount(vault):
    no_token = http(vault, "POST", "auth/approle/login", body={"role_id": "x"})
    root = http(vault, "POST", "auth/approle/login", token=vault.root_token, body={"role_id": "x"})

    assert no_token.status_code == 403
    assert no_token.json() == {"errors": ["permission denied"]}
    assert root.status_code == 404


def test_login_ignores_a_bad_token_header(vault):
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web")

    response = http(vault, "POST", "auth/approle/login", token="hvs.bogus",
                    body={"role_id": role_id, "secret_id": secret_id})

    assert response.status_code == 200


# ---------------------------------------------------------------------------
# Dynamic secrets, leases and generic paths
# ---------------------------------------------------------------------------


def test_database_creds_lease(vault):
    vault.enable_database()
    vault.add_database_role("readonly", ttl=3600)
    client = client_for(vault, vault.root_token)

    creds = client.secrets.database.generate_credentials("readonly")

    assert re.fullmatch(r"database/creds/readonly/[A-Za-z0-9]{24}", creds["lease_id"])
    assert creds["lease_duration"] == 3600
    assert creds["renewable"] is True
    assert creds["mount_type"] == "database"
    assert set(creds["data"]) == {"username", "password"}


def test_lease_lookup_renew_revoke(vault):
    vault.enable_database(mount="db-prod")
    vault.add_database_role("app", ttl=600, max_ttl=900, mount="db-prod")
    client = client_for(vault, vault.root_token)
    lease_id = client.secrets.database.generate_credentials("app", mount_point="db-prod")["lease_id"]

    looked_up = client.sys.read_lease(lease_id)["data"]
    renewed = client.sys.renew_lease(lease_id, increment=3600)
    revoked = client.sys.revoke_lease(lease_id)

    assert list(looked_up) == ["expire_time", "id", "issue_time", "last_renewal", "renewable", "ttl"]
    assert looked_up["id"] == lease_id
    assert looked_up["last_renewal"] is None
    assert renewed["lease_id"] == lease_id
    assert renewed["data"] is None
    assert 890 <= renewed["lease_duration"] <= 900  # capped by max_ttl
    assert revoked.status_code == 204
    assert lease_id in vault.revoked_leases
    with pytest.raises(exceptions.InvalidRequest) as caught:
        client.sys.renew_lease(lease_id)
    assert caught.value.errors == ["lease not found"]


def test_lease_errors(vault):
    client = client_for(vault, vault.root_token)

    with pytest.raises(exceptions.InvalidRequest) as missing:
        client.sys.renew_lease("database/creds/x/unknown")
    empty = http(vault, "PUT", "sys/leases/renew", token=vault.root_token, body={})

    assert missing.value.errors == ["lease not found"]
    assert empty.json() == {"errors": ["lease_id must be specified"]}


def test_default_policy_renews_but_cannot_revoke_leases(vault):
    vault.enable_database()
    vault.add_database_role("app")
    token = vault.create_token(allow=["database/creds/app"])
    client = client_for(vault, token)
    lease_id = client.secrets.database.generate_credentials("app")["lease_id"]

    client.sys.renew_lease(lease_id)
    with pytest.raises(exceptions.Forbidden):
        client.sys.revoke_lease(lease_id)


def test_revoke_self_revokes_token_leases(vault):
    vault.enable_database()
    vault.add_database_role("app")
    token = vault.create_token(allow=["database/creds/app"])
    client = client_for(vault, token)
    lease_id = client.secrets.database.generate_credentials("app")["lease_id"]

    client.auth.token.revoke_self()

    assert lease_id in vault.revoked_leases


def test_database_role_errors(vault):
    vault.enable_database()
    vault.add_database_role("blocked", allowed=False)
    client = client_for(vault, vault.root_token)

    with pytest.raises(exceptions.InvalidRequest) as unknown:
        client.secrets.database.generate_credentials("nope")
    with pytest.raises(exceptions.InternalServerError) as blocked:
        client.secrets.database.generate_credentials("blocked")

    assert unknown.value.errors == ["unknown role: nope"]
    assert blocked.value.errors == ['"blocked" is not an allowed role']


def test_last_token_use_withholds_leased_secret(vault):
    vault.enable_database()
    vault.add_database_role("app")
    token = vault.create_token(allow=["database/creds/app"], num_uses=1)

    response = http(vault, "GET", "database/creds/app", token=token)

    assert response.status_code == 400
    assert response.json()["errors"][0].startswith("Secret cannot be returned; token had one use left")
    assert len(vault.revoked_leases) == 1


def test_generic_post_path_with_parameters(vault):
    def issue(data):
        if "common_name" not in data:
            raise VaultError(400, "the common_name field is required")
        return {"certificate": f"CERT({data['common_name']})", "serial_number": "01"}

    vault.set_generic("pki/issue/web", issue, method="POST")
    client = client_for(vault, vault.root_token)

    issued = client.write_data("pki/issue/web", data={"common_name": "web.example.com"})
    through_adapter = client.adapter.post("/v1/pki/issue/web", json={"common_name": "a"})
    with pytest.raises(exceptions.InvalidRequest) as missing:
        client.write_data("pki/issue/web", data={})
    read = http(vault, "GET", "pki/issue/web", token=vault.root_token)
    unknown = http(vault, "POST", "pki/issue/other", token=vault.root_token, body={})

    assert issued["data"] == {"certificate": "CERT(web.example.com)", "serial_number": "01"}
    assert issued["mount_type"] == "pki"
    assert through_adapter["data"]["certificate"] == "CERT(a)"
    assert missing.value.errors == ["the common_name field is required"]
    assert read.status_code == 405
    assert unknown.status_code == 404
    assert unknown.json() == {"errors": ["1 error occurred:\n\t* unsupported path\n\n"]}


def test_generic_get_path_through_client_read(vault):
    vault.set_generic("aws/creds/deploy", {"access_key": "AKIA", "secret_key": "s"}, lease_duration=900,
                      renewable=True, lease_id="aws/creds/deploy/abc")
    client = client_for(vault, vault.root_token)

    result = client.read("aws/creds/deploy")

    assert result["data"] == {"access_key": "AKIA", "secret_key": "s"}
    assert result["lease_duration"] == 900
    assert result["lease_id"] == "aws/creds/deploy/abc"


# ---------------------------------------------------------------------------
# Transit
# ---------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_transit_round_trip_with_real_aes_gcm(vault):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    vault.enable_transit(mount="sops")
    vault.create_transit_key("sops-key", mount="sops")
    client = client_for(vault, vault.root_token)
    data_key = bytes(range(32))

    encrypted = client.secrets.transit.encrypt_data("sops-key", plaintext=_b64(data_key), mount_point="sops")
    ciphertext = encrypted["data"]["ciphertext"]
    decrypted = client.secrets.transit.decrypt_data("sops-key", ciphertext=ciphertext, mount_point="sops")

    assert encrypted["data"]["key_version"] == 1
    assert ciphertext.startswith("vault:v1:")
    payload = base64.b64decode(ciphertext[len("vault:v1:"):])
    assert len(payload) == 12 + len(data_key) + 16  # nonce, ciphertext, GCM tag
    key = vault._mounts["sops/"].keys["sops-key"][0]
    assert AESGCM(key).decrypt(payload[:12], payload[12:], None) == data_key
    assert base64.b64decode(decrypted["data"]["plaintext"]) == data_key
    assert decrypted["mount_type"] == "transit"


def test_transit_same_plaintext_gives_different_ciphertexts(vault):
    vault.enable_transit()

    first = vault.transit_encrypt("k", b"secret")
    second = vault.transit_encrypt("k", b"secret")

    assert first != second


@pytest.mark.parametrize("ciphertext,message", [
    ("abc", "invalid ciphertext: no prefix"),
    ("vault:v1", "invalid ciphertext: wrong number of fields"),
    ("vault:vX:AAAA", "invalid ciphertext: version number could not be decoded"),
    ("vault:v1:!!!", "invalid ciphertext: could not decode base64"),
    ("vault:v1:" + _b64(b"\0" * 40), "cipher: message authentication failed"),
])
def test_transit_decrypt_errors(vault, ciphertext, message):
    vault.enable_transit()
    vault.create_transit_key("k")

    response = http(vault, "POST", "transit/decrypt/k", token=vault.root_token, body={"ciphertext": ciphertext})

    assert response.status_code == 400
    assert response.json() == {"errors": [message]}


def test_transit_missing_key_and_fields(vault):
    vault.enable_transit()

    missing_key = http(vault, "POST", "transit/decrypt/nokey", token=vault.root_token,
                       body={"ciphertext": "vault:v1:AAAA"})
    no_ciphertext = http(vault, "POST", "transit/decrypt/nokey", token=vault.root_token, body={})
    no_plaintext = http(vault, "POST", "transit/encrypt/k", token=vault.root_token, body={})
    bad_plaintext = http(vault, "POST", "transit/encrypt/k", token=vault.root_token, body={"plaintext": "%%"})

    assert missing_key.json() == {"errors": ["encryption key not found"]}
    assert no_ciphertext.json() == {"errors": ["missing ciphertext to decrypt"]}
    assert no_plaintext.json() == {"errors": ["missing plaintext to encrypt"]}
    assert bad_plaintext.json() == {"errors": ["failed to base64-decode plaintext"]}


def test_transit_tampered_ciphertext_and_500_switch():
    with VaultEmulator(transit_auth_failure_status=500) as vault:
        vault.enable_transit()
        ciphertext = vault.transit_encrypt("k", b"data")
        tampered = ciphertext[:-4] + ("AAAA" if not ciphertext.endswith("AAAA") else "BBBB")
        client = client_for(vault, vault.root_token)

        with pytest.raises(exceptions.InternalServerError) as caught:
            client.secrets.transit.decrypt_data("k", ciphertext=tampered)

    assert caught.value.errors == ["cipher: message authentication failed"]


def test_transit_rotation_and_associated_data(vault):
    vault.enable_transit()
    old = vault.transit_encrypt("k", b"v1 data", associated_data=b"ctx")
    assert vault.rotate_transit_key("k") == 2
    client = client_for(vault, vault.root_token)

    new = client.secrets.transit.encrypt_data("k", plaintext=_b64(b"v2 data"))["data"]
    old_plain = client.secrets.transit.decrypt_data("k", ciphertext=old, associated_data=_b64(b"ctx"))
    wrong_context = http(vault, "POST", "transit/decrypt/k", token=vault.root_token,
                         body={"ciphertext": old, "associated_data": _b64(b"other")})

    assert new["ciphertext"].startswith("vault:v2:")
    assert base64.b64decode(old_plain["data"]["plaintext"]) == b"v1 data"
    assert wrong_context.status_code == 400


def test_transit_batch_results(vault):
    vault.enable_transit()
    good = vault.transit_encrypt("k", b"one")

    response = http(vault, "POST", "transit/decrypt/k", token=vault.root_token,
                    body={"batch_input": [{"ciphertext": good}, {"ciphertext": "bad"}]})

    results = response.json()["data"]["batch_results"]
    assert base64.b64decode(results[0]["plaintext"]) == b"one"
    assert results[1] == {"error": "invalid ciphertext: no prefix"}


# ---------------------------------------------------------------------------
# Namespaces
# ---------------------------------------------------------------------------


def test_namespace_header_is_logged_for_every_request(vault):
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/data/*"])
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.clear_log()
    client = client_for(vault, namespace="team-a")

    client.auth.approle.login(role_id, secret_id)
    client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret", raise_on_deleted_version=True)

    # The community edition ignores the header but the log keeps it.
    assert [request.namespace for request in vault.requests] == ["team-a", "team-a"]


def test_required_namespace(vault):
    vault.require_namespace("team-a")
    vault.kv_put("secret", "web/db", {"password": "one"})
    token = vault.create_token(allow=["secret/data/*"])

    with_header = http(vault, "GET", "secret/data/web/db", token=token, headers={"X-Vault-Namespace": "team-a/"})
    in_path = http(vault, "GET", "team-a/secret/data/web/db", token=token)
    missing = http(vault, "GET", "secret/data/web/db", token=token)
    wrong = http(vault, "GET", "secret/data/web/db", token=token, headers={"X-Vault-Namespace": "team-b"})
    root_missing = http(vault, "GET", "secret/data/web/db", token=vault.root_token)
    root_in_namespace = http(vault, "GET", "secret/data/web/db", token=vault.root_token,
                             headers={"X-Vault-Namespace": "team-a"})

    assert with_header.status_code == 200
    assert in_path.status_code == 200
    assert missing.status_code == 403
    assert missing.json() == ACL_DENIED
    assert wrong.status_code == 403
    assert root_missing.status_code == 404
    assert root_in_namespace.status_code == 200


def test_required_namespace_login_and_preflight(vault):
    vault.require_namespace("team-a")
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web", allow=["secret/data/*"])

    client = client_for(vault, namespace="team-a")
    client.auth.approle.login(role_id, secret_id)
    outside = http(vault, "POST", "auth/approle/login", body={"role_id": role_id, "secret_id": secret_id})
    preflight_inside = http(vault, "GET", "sys/internal/ui/mounts/secret", token=client.token,
                            headers={"X-Vault-Namespace": "team-a"})
    preflight_outside = http(vault, "GET", "sys/internal/ui/mounts/secret", token=vault.root_token)

    assert outside.status_code == 403
    assert preflight_inside.status_code == 200
    assert preflight_outside.status_code == 403


# ---------------------------------------------------------------------------
# Sealed, standby and health
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("GET", "secret/data/web/db"),
    ("GET", "auth/token/lookup-self"),
    ("POST", "auth/approle/login"),
    ("GET", "sys/internal/ui/mounts/secret"),
    ("GET", "nomount/x"),
])
def test_sealed_returns_503_everywhere(vault, method, path):
    vault.seal()

    response = http(vault, method, path, token=vault.root_token, body={} if method == "POST" else None)

    assert response.status_code == 503
    assert response.text == '{"errors":["Vault is sealed"]}\n'
    assert response.headers["Content-Type"] == "application/json"


def test_sealed_through_hvac(vault):
    vault.seal()
    client = client_for(vault, vault.root_token)

    # is_authenticated only swallows 400/403/404, so a sealed server raises.
    with pytest.raises(exceptions.VaultDown):
        client.is_authenticated()
    assert client.sys.is_sealed() is True
    status = client.sys.read_seal_status()
    assert status["sealed"] is True
    assert list(status)[:3] == ["type", "initialized", "sealed"]

    vault.unseal()
    assert client.is_authenticated() is True


def test_health_codes_and_body(vault):
    active = http(vault, "GET", "sys/health")
    vault.set_standby()
    standby = http(vault, "GET", "sys/health")
    standby_ok = http(vault, "GET", "sys/health?standbyok=true")
    vault.set_standby(False)
    vault.seal()
    sealed = http(vault, "GET", "sys/health")
    sealed_head = http(vault, "HEAD", "sys/health")
    sealed_custom = http(vault, "GET", "sys/health?sealedcode=200")

    assert active.status_code == 200
    assert list(active.json())[:4] == ["initialized", "sealed", "standby", "performance_standby"]
    assert active.json()["sealed"] is False
    assert standby.status_code == 429
    assert standby_ok.status_code == 200
    assert sealed.status_code == 503
    assert sealed.json()["sealed"] is True
    assert sealed_head.status_code == 503
    assert sealed_head.content == b""
    assert sealed_custom.status_code == 200


def test_health_through_hvac_never_raises(vault):
    client = client_for(vault)

    healthy = client.sys.read_health_status(method="GET")
    vault.seal()
    sealed = client.sys.read_health_status(method="HEAD")

    assert healthy["initialized"] is True
    assert isinstance(sealed, requests.Response)
    assert sealed.status_code == 503


# ---------------------------------------------------------------------------
# Rate limit
# ---------------------------------------------------------------------------


def test_rate_limit_429_without_headers(vault):
    vault.kv_put("secret", "app", {"a": 1})
    vault.set_rate_limit(2, interval=60)

    statuses = [http(vault, "GET", "secret/data/app", token=vault.root_token) for _ in range(3)]
    health = http(vault, "GET", "sys/health")

    assert [response.status_code for response in statuses] == [200, 200, 429]
    assert statuses[2].text == '{"errors":["request path \\"secret/data/app\\": rate limit quota exceeded"]}\n'
    assert "Retry-After" not in statuses[2].headers
    assert "X-Ratelimit-Limit" not in statuses[0].headers
    assert health.status_code == 200  # sys/health is exempt


def test_rate_limit_headers_and_hvac_exception(vault):
    vault.set_rate_limit(1, interval=30, response_headers=True)
    client = client_for(vault, vault.root_token)

    first = http(vault, "GET", "auth/token/lookup-self", token=vault.root_token)
    with pytest.raises(exceptions.RateLimitExceeded):
        client.auth.token.lookup_self()
    limited = http(vault, "GET", "auth/token/lookup-self", token=vault.root_token)

    assert first.headers["X-Ratelimit-Limit"] == "1"
    assert first.headers["X-Ratelimit-Remaining"] == "0"
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 30
    assert int(limited.headers["X-Ratelimit-Reset"]) <= 30


def test_rate_limit_applies_to_logins(vault):
    vault.enable_approle()
    role_id, secret_id = vault.add_approle_role("web")
    vault.set_rate_limit(1, interval=60, path="auth/")

    first = http(vault, "POST", "auth/approle/login", body={"role_id": role_id, "secret_id": secret_id})
    second = http(vault, "POST", "auth/approle/login", body={"role_id": role_id, "secret_id": secret_id})
    other = http(vault, "GET", "auth/token/lookup-self", token=vault.root_token)

    assert first.status_code == 200
    assert second.status_code == 429
    assert other.status_code == 429  # auth/token/ is under the auth/ prefix
    vault.set_rate_limit(None)
    assert http(vault, "GET", "auth/token/lookup-self", token=vault.root_token).status_code == 200


# ---------------------------------------------------------------------------
# Injected failures and latency
# ---------------------------------------------------------------------------


def test_inject_is_consumed_in_order(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.inject("secret/data/web/db", status=500, times=2)
    vault.inject("secret/data/web/db", status=503)

    statuses = [http(vault, "GET", "secret/data/web/db", token=vault.root_token) for _ in range(4)]

    assert [response.status_code for response in statuses] == [500, 500, 503, 200]
    assert statuses[0].text == '{"errors":["internal error"]}\n'
    assert statuses[2].json() == {"errors": ["Vault is sealed"]}


@pytest.mark.parametrize("status,exception", [
    (400, exceptions.InvalidRequest),
    (403, exceptions.Forbidden),
    (404, exceptions.InvalidPath),
    (412, exceptions.UnexpectedError),
    (429, exceptions.RateLimitExceeded),
    (500, exceptions.InternalServerError),
    (502, exceptions.BadGateway),
    (503, exceptions.VaultDown),
])
def test_injected_status_maps_to_hvac_exception(vault, status, exception):
    vault.inject("/v1/auth/token/lookup-self", status=status)

    with pytest.raises(exception):
        client_for(vault, vault.root_token).auth.token.lookup_self()


def test_injected_charset_content_type_hides_errors_from_hvac(vault):
    vault.inject("auth/token/lookup-self", status=500, body={"errors": ["boom"]},
                 content_type="application/json; charset=utf-8", headers={"X-Proxy": "1"})

    with pytest.raises(exceptions.InternalServerError) as caught:
        client_for(vault, vault.root_token).auth.token.lookup_self()

    assert caught.value.errors is None
    assert caught.value.json is None
    assert '"boom"' in str(caught.value)


def test_injected_raw_body_and_headers(vault):
    vault.inject("secret/*", status=502, body="<html>bad gateway</html>", content_type="text/html",
                 headers={"Retry-After": "3"})

    response = http(vault, "GET", "secret/data/anything", token=vault.root_token)

    assert response.status_code == 502
    assert response.text == "<html>bad gateway</html>"
    assert response.headers["Retry-After"] == "3"
    assert response.headers["Content-Type"] == "text/html"


def test_injected_dropped_connection(vault):
    vault.inject("auth/token/lookup-self", drop_connection=True)
    client = client_for(vault, vault.root_token)

    with pytest.raises(requests.exceptions.ConnectionError):
        client.auth.token.lookup_self()
    assert client.auth.token.lookup_self()["data"]["policies"] == ["root"]
    assert vault.requests_to("auth/token/lookup-self")[0].status is None


def test_inject_method_filter(vault):
    vault.inject("kv1/app", status=500, method="POST")
    vault.kv_put("kv1", "app", {"a": "b"})

    read = http(vault, "GET", "kv1/app", token=vault.root_token)
    write = http(vault, "POST", "kv1/app", token=vault.root_token, body={"a": "c"})

    assert read.status_code == 200
    assert write.status_code == 500


def test_path_latency_overlaps_in_parallel(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.set_latency(0.3, path="secret/data/web/db")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(
            lambda _: http(vault, "GET", "secret/data/web/db", token=vault.root_token), range(4)))
    elapsed = time.monotonic() - started
    unaffected_started = time.monotonic()
    http(vault, "GET", "auth/token/lookup-self", token=vault.root_token)
    unaffected = time.monotonic() - unaffected_started

    assert all(response.status_code == 200 for response in responses)
    assert 0.3 <= elapsed < 1.0  # four 0.3 s delays overlap instead of adding up to 1.2 s
    assert unaffected < 0.3


def test_global_latency(vault):
    vault.set_latency(0.1)

    started = time.monotonic()
    http(vault, "GET", "sys/health")

    assert time.monotonic() - started >= 0.1


# ---------------------------------------------------------------------------
# Request log and lifecycle
# ---------------------------------------------------------------------------


def test_request_log_records_hvac_request(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    vault.clear_log()
    client = client_for(vault, vault.root_token, namespace="ns1")
    before = time.time()

    client.secrets.kv.v2.read_secret_version("web/db", version=1, mount_point="secret",
                                             raise_on_deleted_version=True)
    client.secrets.kv.v2.create_or_update_secret("web/db", {"password": "two"}, mount_point="secret")

    read, write = vault.requests
    assert read.method == "GET"
    assert read.path == "/v1/secret/data/web/db"
    assert read.logical_path == "secret/data/web/db"
    assert read.query == {"version": ["1"]}
    assert read.token == vault.root_token
    assert read.namespace == "ns1"
    assert read.vault_request == "true"
    assert read.body is None
    assert read.status == 200
    assert before <= read.timestamp <= write.timestamp
    assert write.method == "POST"
    assert write.body == {"options": {}, "data": {"password": "two"}}  # hvac always sends options
    vault.clear_log()
    assert vault.requests == []


def test_request_log_is_thread_safe(vault):
    vault.clear_log()

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda i: http(vault, "GET", f"sys/health?n={i}"), range(64)))

    logged = sorted(int(request.query["n"][0]) for request in vault.requests)
    assert logged == list(range(64))


def test_stop_closes_port_and_joins_threads():
    threads_before = set(threading.enumerate())
    vault = VaultEmulator().start()
    port = vault.port
    with _session() as session:
        session.get(vault.url + "/v1/sys/health")  # leaves a keep-alive connection open
        vault.stop()

    assert set(threading.enumerate()) <= threads_before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_context_manager_and_double_start():
    with VaultEmulator() as vault:
        with pytest.raises(RuntimeError):
            vault.start()
        assert vault.url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError):
        _ = vault.url


def test_no_warnings_from_emulator_under_hvac(vault):
    vault.kv_put("secret", "web/db", {"password": "one"})
    client = client_for(vault, vault.root_token)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client.secrets.kv.v2.read_secret_version("web/db", mount_point="secret", raise_on_deleted_version=True)


# ---------------------------------------------------------------------------
# hvac behaviours a client must work around
# ---------------------------------------------------------------------------


def test_hvac_list_sends_list_verb_and_request_header(vault):
    vault.kv_put("secret", "app/db", {"a": 1})
    vault.clear_log()

    client_for(vault, vault.root_token).secrets.kv.v2.list_secrets("app", mount_point="secret")

    request = vault.requests[-1]
    assert request.method == "LIST"
    assert request.path == "/v1/secret/metadata/app"
    assert request.vault_request == "true"


def test_hvac_does_not_retry(vault):
    vault.inject("auth/token/lookup-self", status=503)
    vault.clear_log()

    with pytest.raises(exceptions.VaultDown):
        client_for(vault, vault.root_token).auth.token.lookup_self()

    assert len(vault.requests) == 1


def test_retrying_session_recovers_from_injected_503(vault):
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    vault.inject("auth/token/lookup-self", status=503, times=2, headers={"Retry-After": "0"})
    session = _session()
    session.mount("http://", HTTPAdapter(max_retries=Retry(total=3, backoff_factor=0, status_forcelist=[503],
                                                           raise_on_status=False)))
    client = hvac.Client(url=vault.url, token=vault.root_token, session=session)

    assert client.auth.token.lookup_self()["data"]["policies"] == ["root"]
    assert [request.status for request in vault.requests_to("auth/token/lookup-self")] == [503, 503, 200]


def test_hvac_ignores_vault_namespace_env(vault, monkeypatch):
    monkeypatch.setenv("VAULT_NAMESPACE", "team-a")
    vault.clear_log()

    client_for(vault, vault.root_token).auth.token.lookup_self()

    assert vault.requests[-1].namespace is None


def test_hvac_health_head_on_active_node(vault):
    result = client_for(vault).sys.read_health_status()

    request = vault.requests[-1]
    assert request.method == "HEAD"
    assert request.status == 200
    assert isinstance(result, requests.Response)
    assert result.status_code == 200


def test_hvac_adapter_get_raw_access(vault):
    token = vault.create_token(allow=["secret/data/*"])
    client = client_for(vault, token)

    mount = client.adapter.get("/v1/sys/internal/ui/mounts/secret/web/db")

    assert mount["data"]["options"]["version"] == "2"
