"""The aws-ssm backend against moto server on 127.0.0.1, over real HTTP."""

from __future__ import annotations

import pytest

from secret_init.backends.aws.ssm import ParameterReference, ParameterStoreBackend
from secret_init.backends.base import Fetched
from secret_init.errors import ManifestError, NotFoundError
from tests.moto_server import (ACCOUNT_ID, aws_env, fetch_entries, make_backend,  # noqa: F401
                               make_reference, moto, moto_session_server)


def backend_for(moto, **config) -> ParameterStoreBackend:
    config.setdefault("endpoint_url", moto.endpoint)
    config.setdefault("region", "eu-central-1")
    backend = make_backend(ParameterStoreBackend, config)
    assert isinstance(backend, ParameterStoreBackend)
    return backend


def test_secure_string_decrypted(moto):
    moto.client("ssm").put_parameter(Name="/app/db", Value="s3cret", Type="SecureString")

    [result] = fetch_entries(backend_for(moto), [{"name": "/app/db"}])

    assert isinstance(result, Fetched)
    assert result.value == "s3cret"
    assert result.version == "1"


def test_id_field_accepted(moto):
    moto.client("ssm").put_parameter(Name="plain", Value="v", Type="String")

    [result] = fetch_entries(backend_for(moto), [{"id": "plain"}])

    assert result.value == "v"


def test_25_parameters_three_requests(moto):
    client = moto.client("ssm")
    for index in range(25):
        client.put_parameter(Name=f"/bulk/{index:02d}", Value=f"v{index}", Type="SecureString")
    moto.requests.clear()

    results = fetch_entries(backend_for(moto), [{"name": f"/bulk/{i:02d}"} for i in range(25)])

    assert [r.value for r in results] == [f"v{i}" for i in range(25)]
    assert moto.requests.count("GetParameters") == 3
    assert moto.requests.count() == 3


def test_version_and_label_selectors(moto):
    client = moto.client("ssm")
    client.put_parameter(Name="/app/key", Value="first", Type="SecureString")
    client.put_parameter(Name="/app/key", Value="second", Type="SecureString", Overwrite=True)
    client.label_parameter_version(Name="/app/key", ParameterVersion=1, Labels=["stable"])

    by_version, by_label, latest = fetch_entries(
        backend_for(moto), [{"name": "/app/key:1"}, {"name": "/app/key:stable"},
                            {"name": "/app/key"}])

    assert (by_version.value, by_version.version) == ("first", "1")
    assert (by_label.value, by_label.version) == ("first", "1")
    assert (latest.value, latest.version) == ("second", "2")


def test_arn_uses_its_region(moto):
    moto.client("ssm", "us-west-2").put_parameter(Name="/p", Value="oregon", Type="String")
    moto.client("ssm", "eu-central-1").put_parameter(Name="/p", Value="frankfurt", Type="String")
    arn = f"arn:aws:ssm:us-west-2:{ACCOUNT_ID}:parameter/p"
    backend = backend_for(moto)

    reference, _ = make_reference(backend, {"name": arn})
    [result] = fetch_entries(backend, [{"name": arn}])

    assert isinstance(reference, ParameterReference)
    assert reference.region == "us-west-2"
    assert result.value == "oregon"


def test_secrets_manager_reference(moto):
    moto.client("secretsmanager").create_secret(Name="prod/api", SecretString='{"k":"v"}')

    [result] = fetch_entries(backend_for(moto),
                             [{"name": "/aws/reference/secretsmanager/prod/api"}])

    assert isinstance(result, Fetched)
    assert result.value == '{"k":"v"}'


def test_missing_parameter_not_found(moto):
    moto.client("ssm").put_parameter(Name="/there", Value="v", Type="String")

    present, missing = fetch_entries(backend_for(moto), [{"name": "/there"}, {"name": "/missing"}])

    assert present.value == "v"
    assert isinstance(missing, NotFoundError)
    assert "'/missing'" in str(missing)


def test_missing_version_not_found(moto):
    moto.client("ssm").put_parameter(Name="/there", Value="v", Type="String")

    [result] = fetch_entries(backend_for(moto), [{"name": "/there:7"}])

    assert isinstance(result, NotFoundError)
    assert "/there:7" in str(result)


def test_string_list_returned_as_text(moto):
    moto.client("ssm").put_parameter(Name="/hosts", Value="a,b,c", Type="StringList")

    [result] = fetch_entries(backend_for(moto), [{"name": "/hosts"}])

    assert result.value == "a,b,c"


@pytest.mark.parametrize("bad_name", ["has space", "/p:", "/p:1abc", "/p:a:b",
                                      "arn:aws:secretsmanager:eu-west-1:1:secret:x",
                                      "/aws/reference/secretsmanager/bad name"])
def test_invalid_name_rejected(bad_name):
    backend = make_backend(ParameterStoreBackend, {"region": "eu-central-1"})

    with pytest.raises(ManifestError):
        make_reference(backend, {"name": bad_name})


def test_name_and_id_together_rejected():
    backend = make_backend(ParameterStoreBackend, {"region": "eu-central-1"})

    with pytest.raises(ManifestError) as raised:
        make_reference(backend, {"name": "/a", "id": "/b"})

    assert "cannot be used together" in str(raised.value)
