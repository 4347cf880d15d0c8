"""Retries, endpoints and credentials of the AWS backends.

Failures that moto cannot produce (throttling, 5xx, connection resets, bodies that are not
JSON, per-secret DecryptionFailure) come from the scripted endpoint in fake_aws_endpoint.
"""

from __future__ import annotations

import logging

import pytest

from secret_init.backends.aws import session
from secret_init.backends.aws.secretsmanager import SecretsManagerBackend
from secret_init.backends.aws.ssm import ParameterStoreBackend
from secret_init.backends.base import Fetched
from secret_init.errors import (EX_NOPERM, EX_TEMPFAIL, EX_UNAVAILABLE, BackendUnavailableError,
                                CredentialsError, DeadlineExceededError, DecryptionFailedError,
                                NotFoundError, PermissionDeniedError)
from tests.fake_aws_endpoint import RESET, FakeAwsEndpoint, Reply, server_error, throttled
from tests.moto_server import (ACCOUNT_ID, aws_env, fetch_entries, make_backend,  # noqa: F401
                               moto, moto_session_server)

CANARY = "canary-51e0b2-do-not-log"
VERSION_ID = "a" * 32


def secret_value(name: str, value: str = CANARY) -> dict:
    return {"ARN": f"arn:aws:secretsmanager:eu-central-1:{ACCOUNT_ID}:secret:{name}-AbCdEf",
            "Name": name, "VersionId": VERSION_ID, "SecretString": value,
            "VersionStages": ["AWSCURRENT"]}


def fake_backend(endpoint: FakeAwsEndpoint) -> SecretsManagerBackend:
    backend = make_backend(SecretsManagerBackend,
                           {"region": "eu-central-1", "endpoint_url": endpoint.url})
    assert isinstance(backend, SecretsManagerBackend)
    return backend


# -- retries ---------------------------------------------------------------------------------

def test_throttling_then_success(aws_env):
    script = [throttled(), throttled(), Reply(200, secret_value("db"))]
    with FakeAwsEndpoint(script) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}])

    assert isinstance(result, Fetched)
    assert result.value == CANARY
    assert endpoint.count("GetSecretValue") == 3


def test_server_errors_until_deadline(aws_env, caplog):
    caplog.set_level(logging.WARNING, logger="secret_init.backends.aws")
    with FakeAwsEndpoint(default=server_error(503)) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}], seconds=1.0)

    assert isinstance(result, DeadlineExceededError)
    assert result.exit_code == EX_TEMPFAIL
    assert "HTTP 503" in str(result) or "InternalServiceError" in str(result)
    assert endpoint.count("GetSecretValue") >= 2
    assert "retrying" in caplog.text


def test_connection_reset_retried(aws_env):
    with FakeAwsEndpoint([RESET, Reply(200, secret_value("db"))]) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}])

    assert isinstance(result, Fetched)
    assert result.value == CANARY
    assert endpoint.count("GetSecretValue") == 2


def test_invalid_json_body_fails(aws_env):
    body = b'{"SecretString": "' + CANARY.encode() + b'", truncated'
    with FakeAwsEndpoint([Reply(200, raw=body)]) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}])

    assert isinstance(result, BackendUnavailableError)
    assert result.exit_code == EX_UNAVAILABLE
    assert "invalid response" in str(result)
    assert CANARY not in str(result)
    assert endpoint.count("GetSecretValue") == 1


def test_html_error_body_not_quoted(aws_env):
    body = b"<html>" + CANARY.encode() + b"</html>"
    with FakeAwsEndpoint([Reply(403, raw=body)]) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}])

    assert isinstance(result, BackendUnavailableError)
    assert "HTTP 403" in str(result)
    assert CANARY not in str(result)


def test_access_denied_not_retried(aws_env):
    denied = Reply(400, {"__type": "AccessDeniedException", "message": "not authorized"})
    with FakeAwsEndpoint([denied]) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}])

    assert isinstance(result, PermissionDeniedError)
    assert result.exit_code == EX_NOPERM
    assert "secretsmanager:GetSecretValue" in str(result)
    assert endpoint.count("GetSecretValue") == 1


def test_decryption_failure_not_retried(aws_env):
    failure = Reply(400, {"__type": "DecryptionFailure", "message": "key disabled"})
    with FakeAwsEndpoint([failure]) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}])

    assert isinstance(result, DecryptionFailedError)
    assert "kms:Decrypt" in str(result)
    assert endpoint.count("GetSecretValue") == 1


def test_expired_token_is_credentials_error(aws_env):
    expired = Reply(400, {"__type": "ExpiredTokenException", "message": "token expired"})
    with FakeAwsEndpoint([expired]) as endpoint:
        [result] = fetch_entries(fake_backend(endpoint), [{"id": "db"}])

    assert isinstance(result, CredentialsError)
    assert endpoint.count("GetSecretValue") == 1


def test_batch_errors_mapped_per_secret(aws_env):
    batch = Reply(200, {
        "SecretValues": [secret_value("good")],
        "Errors": [
            {"SecretId": "locked", "ErrorCode": "DecryptionFailure", "Message": "key disabled"},
            {"SecretId": "denied", "ErrorCode": "AccessDeniedException", "Message": "no"},
        ]})
    with FakeAwsEndpoint([batch]) as endpoint:
        good, locked, denied = fetch_entries(fake_backend(endpoint),
                                             [{"id": "good"}, {"id": "locked"}, {"id": "denied"}])

    assert isinstance(good, Fetched)
    assert good.value == CANARY
    assert isinstance(locked, DecryptionFailedError)
    assert "'locked'" in str(locked)
    assert isinstance(denied, PermissionDeniedError)
    assert "'denied'" in str(denied)
    assert endpoint.count("BatchGetSecretValue") == 1


def test_batch_throttled_then_success(aws_env):
    batch = Reply(200, {"SecretValues": [secret_value("a", "A"), secret_value("b", "B")]})
    with FakeAwsEndpoint([throttled(), batch]) as endpoint:
        a, b = fetch_entries(fake_backend(endpoint), [{"id": "a"}, {"id": "b"}])

    assert (a.value, b.value) == ("A", "B")
    assert endpoint.count("BatchGetSecretValue") == 2


def test_batch_denied_falls_back_to_single_gets(aws_env):
    denied = Reply(400, {"__type": "AccessDeniedException",
                         "message": "not authorized to perform BatchGetSecretValue"})
    script = [denied, Reply(200, secret_value("a", "A")), Reply(200, secret_value("b", "B"))]
    with FakeAwsEndpoint(script) as endpoint:
        a, b = fetch_entries(fake_backend(endpoint), [{"id": "a"}, {"id": "b"}])

    assert (a.value, b.value) == ("A", "B")
    assert endpoint.count("BatchGetSecretValue") == 1
    assert endpoint.count("GetSecretValue") == 2


def test_batch_missing_entry_reported(aws_env):
    batch = Reply(200, {"SecretValues": [secret_value("a", "A")], "Errors": []})
    with FakeAwsEndpoint([batch]) as endpoint:
        a, b = fetch_entries(fake_backend(endpoint), [{"id": "a"}, {"id": "b"}])

    assert a.value == "A"
    assert isinstance(b, BackendUnavailableError)
    assert "'b'" in str(b)


def test_batch_follows_next_token(aws_env):
    first = Reply(200, {"SecretValues": [secret_value("a", "A")], "NextToken": "page-2"})
    second = Reply(200, {"SecretValues": [secret_value("b", "B")]})
    with FakeAwsEndpoint([first, second]) as endpoint:
        a, b = fetch_entries(fake_backend(endpoint), [{"id": "a"}, {"id": "b"}])

    assert (a.value, b.value) == ("A", "B")
    assert endpoint.bodies[1]["NextToken"] == "page-2"
    assert endpoint.bodies[1]["SecretIdList"] == ["a", "b"]


def test_ssm_throttling_then_success(aws_env):
    parameters = Reply(200, {"Parameters": [
        {"Name": "/p", "Value": CANARY, "Version": 4, "Type": "SecureString",
         "ARN": f"arn:aws:ssm:eu-central-1:{ACCOUNT_ID}:parameter/p"}], "InvalidParameters": []})
    with FakeAwsEndpoint([throttled(), parameters]) as endpoint:
        backend = make_backend(ParameterStoreBackend,
                               {"region": "eu-central-1", "endpoint_url": endpoint.url})
        [result] = fetch_entries(backend, [{"name": "/p"}])

    assert isinstance(result, Fetched)
    assert result.value == CANARY
    assert result.version == "4"
    assert endpoint.count("GetParameters") == 2
    assert endpoint.bodies[0]["WithDecryption"] is True


# -- endpoints -------------------------------------------------------------------------------

def test_service_endpoint_variable_honoured(moto, monkeypatch):
    moto.client("secretsmanager").create_secret(Name="s", SecretString="v")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint)
    backend = make_backend(SecretsManagerBackend, {"region": "eu-central-1"})

    [result] = fetch_entries(backend, [{"id": "s"}])

    assert isinstance(result, Fetched)
    assert result.value == "v"


def test_global_endpoint_variable_honoured(moto, monkeypatch):
    moto.client("ssm").put_parameter(Name="/p", Value="v", Type="String")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    backend = make_backend(ParameterStoreBackend, {"region": "eu-central-1"})

    [result] = fetch_entries(backend, [{"name": "/p"}])

    assert isinstance(result, Fetched)
    assert result.value == "v"


def test_manifest_endpoint_wins_over_variable(moto, monkeypatch):
    moto.client("secretsmanager").create_secret(Name="s", SecretString="v")
    with FakeAwsEndpoint(default=server_error()) as unused:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", unused.url)
        backend = make_backend(SecretsManagerBackend,
                               {"region": "eu-central-1", "endpoint_url": moto.endpoint})
        [result] = fetch_entries(backend, [{"id": "s"}])

    assert isinstance(result, Fetched)
    assert unused.operations == []


def test_clients_shared_between_backends(moto):
    moto.client("secretsmanager").create_secret(Name="s", SecretString="v")
    first = make_backend(SecretsManagerBackend, {"region": "eu-central-1",
                                                 "endpoint_url": moto.endpoint}, name="one")
    second = make_backend(SecretsManagerBackend, {"region": "eu-central-1",
                                                  "endpoint_url": moto.endpoint}, name="two")

    fetch_entries(first, [{"id": "s"}])
    fetch_entries(second, [{"id": "s"}])

    assert len(session._clients) == 1


# -- credentials -----------------------------------------------------------------------------

def test_no_credentials_lists_sources(moto, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backend = make_backend(SecretsManagerBackend, {"region": "eu-central-1",
                                                   "endpoint_url": moto.endpoint})

    [result] = fetch_entries(backend, [{"id": "s"}])

    assert isinstance(result, CredentialsError)
    assert result.exit_code == EX_NOPERM
    text = str(result)
    for source in ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE",
                   "AWS_CONTAINER_CREDENTIALS_FULL_URI", "instance metadata",
                   "disabled by AWS_EC2_METADATA_DISABLED", "profile 'default'"):
        assert source in text
    assert moto.requests.count() == 0


def test_missing_web_identity_token_file(moto, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_ROLE_ARN", f"arn:aws:iam::{ACCOUNT_ID}:role/app")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "missing-token"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    backend = make_backend(SecretsManagerBackend, {"region": "eu-central-1"})

    [result] = fetch_entries(backend, [{"id": "s"}])

    assert isinstance(result, CredentialsError)
    assert "missing-token" in str(result)
    assert "AWS_WEB_IDENTITY_TOKEN_FILE" in str(result)


def test_web_identity_through_moto_sts(moto, monkeypatch, tmp_path):
    moto.client("secretsmanager").create_secret(Name="irsa", SecretString="via-role")
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_ROLE_ARN", f"arn:aws:iam::{ACCOUNT_ID}:role/app")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "secret-init")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    moto.requests.clear()
    backend = make_backend(SecretsManagerBackend, {"region": "eu-central-1"})

    results = fetch_entries(backend, [{"id": "irsa"}])

    assert results[0].value == "via-role"
    assert session.ensure_credentials() == "assume-role-with-web-identity"
    assert moto.requests.count("AssumeRoleWithWebIdentity") == 1
    assert backend.consumed_environment() == set()


def test_consumed_environment_lists_secret_variables(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "dummy-session-token")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ROLE_ARN", f"arn:aws:iam::{ACCOUNT_ID}:role/app")
    backend = make_backend(SecretsManagerBackend, {})

    consumed = backend.consumed_environment()

    assert consumed == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def test_missing_secret_after_credentials(moto):
    backend = make_backend(SecretsManagerBackend, {"region": "eu-central-1",
                                                   "endpoint_url": moto.endpoint})

    [result] = fetch_entries(backend, [{"id": "absent"}])

    assert isinstance(result, NotFoundError)


def test_botocore_imported_lazily():
    import subprocess
    import sys

    code = ("import sys, secret_init.backends.aws.secretsmanager, secret_init.backends.aws.ssm;"
            "print(any(m.startswith('botocore') for m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()

    assert output == "False"


def test_botocore_client_does_not_retry(aws_env):
    import botocore.exceptions

    from secret_init.deadline import Deadline

    with FakeAwsEndpoint([server_error(503), Reply(200, secret_value("db"))]) as endpoint:
        client = session.get_client("secretsmanager", "eu-central-1", endpoint.url,
                                    Deadline.after(10), max_pool_connections=1)
        with pytest.raises(botocore.exceptions.ClientError):
            client.get_secret_value(SecretId="db")

    assert endpoint.count("GetSecretValue") == 1


def test_fast_loader_knows_services(aws_env):
    import botocore.exceptions

    loader = session.get_session().get_component("data_loader")
    services = loader.list_available_services("service-2")

    assert "secretsmanager" in services
    assert "sts" in services
    assert "no-such-service" not in services
    assert "secretsmanager" in list(services)
    with pytest.raises(botocore.exceptions.UnknownServiceError):
        session.get_session().create_client("no-such-service", region_name="eu-central-1")


def test_fast_loader_parses_into_dicts(aws_env):
    from botocore.loaders import Loader

    loader = session.get_session().get_component("data_loader")
    endpoints = loader.load_data("endpoints")
    model = loader.load_service_model("secretsmanager", "service-2")
    reference = Loader()

    assert type(endpoints) is dict
    assert type(endpoints["partitions"][0]) is dict
    assert type(model["operations"]) is dict
    assert endpoints == reference.load_data("endpoints")
    assert model == reference.load_service_model("secretsmanager", "service-2")
    assert list(model["operations"]) == list(
        reference.load_service_model("secretsmanager", "service-2")["operations"])
