"""The aws-secretsmanager backend against moto server on 127.0.0.1, over real HTTP."""

from __future__ import annotations

import logging

import pytest

from secret_init.backends.aws.secretsmanager import (BATCH_SIZE, SecretReference,
                                                     SecretsManagerBackend)
from secret_init.backends.base import Fetched
from secret_init.errors import (EX_CONFIG, EX_NOINPUT, ConfigError, ManifestError,
                                NotFoundError, SecretDeletedError)
from secret_init.fields import Fields
from secret_init.located import load_located_yaml
from tests.moto_server import (aws_env, fetch_entries, make_backend, make_reference,  # noqa: F401
                               moto, moto_session_server)

CANARY = "canary-7f3a9c-do-not-log"


def backend_for(moto, **config) -> SecretsManagerBackend:
    config.setdefault("endpoint_url", moto.endpoint)
    backend = make_backend(SecretsManagerBackend, config)
    assert isinstance(backend, SecretsManagerBackend)
    return backend


def test_plain_name_uses_aws_region(moto, monkeypatch):
    moto.client("secretsmanager", "eu-west-1").create_secret(Name="app/token", SecretString="west")
    moto.client("secretsmanager", "eu-central-1").create_secret(Name="app/token",
                                                                SecretString="central")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    backend = backend_for(moto)

    [result] = fetch_entries(backend, [{"id": "app/token"}])

    assert isinstance(result, Fetched)
    assert result.value == "west"


def test_backend_region_wins_over_aws_region(moto, monkeypatch):
    moto.client("secretsmanager", "eu-west-1").create_secret(Name="app/token", SecretString="west")
    moto.client("secretsmanager", "eu-central-1").create_secret(Name="app/token",
                                                                SecretString="central")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    backend = backend_for(moto, region="eu-central-1")

    [result] = fetch_entries(backend, [{"id": "app/token"}])

    assert isinstance(result, Fetched)
    assert result.value == "central"


def test_aws_default_region_used_last(moto, monkeypatch):
    moto.client("secretsmanager", "ap-south-1").create_secret(Name="s", SecretString="south")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")

    [result] = fetch_entries(backend_for(moto), [{"id": "s"}])

    assert isinstance(result, Fetched)
    assert result.value == "south"


def test_region_from_config_file(moto, aws_env):
    moto.client("secretsmanager", "sa-east-1").create_secret(Name="s", SecretString="sa")
    (aws_env / "aws-config").write_text("[default]\nregion = sa-east-1\n")

    [result] = fetch_entries(backend_for(moto), [{"id": "s"}])

    assert isinstance(result, Fetched)
    assert result.value == "sa"


def test_no_region_lists_sources(moto):
    [result] = fetch_entries(backend_for(moto), [{"id": "s"}])

    assert isinstance(result, ConfigError)
    assert result.exit_code == EX_CONFIG
    for source in ("AWS_REGION", "AWS_DEFAULT_REGION", "'region'", "config file", "ARN"):
        assert source in str(result)


def test_binary_secret_bytes_unchanged(moto):
    payload = bytes([0x00, 0xFF, 0x10, 0x0A, 0x80])
    moto.client("secretsmanager").create_secret(Name="blob", SecretBinary=payload)

    [result] = fetch_entries(backend_for(moto, region="eu-central-1"), [{"id": "blob"}])

    assert isinstance(result, Fetched)
    assert result.value == payload
    assert isinstance(result.value, bytes)


def test_json_string_returned_unchanged(moto):
    text = '{"user":"app","pass":"p:w=1"}'
    created = moto.client("secretsmanager").create_secret(Name="db", SecretString=text)

    [result] = fetch_entries(backend_for(moto, region="eu-central-1"), [{"id": "db"}])

    assert isinstance(result, Fetched)
    assert result.value == text
    assert result.version == created["VersionId"]


def test_full_arn_uses_its_region(moto):
    created = moto.client("secretsmanager", "us-west-2").create_secret(Name="svc/key",
                                                                       SecretString="oregon")
    moto.client("secretsmanager", "eu-central-1").create_secret(Name="svc/key",
                                                                SecretString="frankfurt")
    backend = backend_for(moto, region="eu-central-1")

    reference, _ = make_reference(backend, {"id": created["ARN"]})
    [result] = fetch_entries(backend, [{"id": created["ARN"]}])

    assert isinstance(reference, SecretReference)
    assert reference.region == "us-west-2"
    assert isinstance(result, Fetched)
    assert result.value == "oregon"


def test_partial_arn_fetched(moto):
    created = moto.client("secretsmanager").create_secret(Name="svc/key", SecretString="v")
    partial_arn = created["ARN"][:-7]

    [result] = fetch_entries(backend_for(moto), [{"id": partial_arn}])

    assert isinstance(result, Fetched)
    assert result.value == "v"


def test_scheduled_deletion_reported_as_such(moto):
    client = moto.client("secretsmanager")
    client.create_secret(Name="old/db", SecretString=CANARY)
    client.delete_secret(SecretId="old/db", RecoveryWindowInDays=7)

    [result] = fetch_entries(backend_for(moto, region="eu-central-1"), [{"id": "old/db"}])

    assert isinstance(result, SecretDeletedError)
    assert result.exit_code == EX_NOINPUT
    assert "scheduled for deletion" in str(result)
    assert "not found" not in str(result)
    assert "restore-secret" in str(result)
    assert CANARY not in str(result)


def test_missing_secret_not_found(moto):
    [result] = fetch_entries(backend_for(moto, region="eu-central-1"), [{"id": "nope"}])

    assert isinstance(result, NotFoundError)
    assert not isinstance(result, SecretDeletedError)
    assert "'nope'" in str(result)
    assert "eu-central-1" in str(result)


def test_ecs_arn_previous_stage_and_key(moto):
    client = moto.client("secretsmanager", "eu-west-1")
    created = client.create_secret(Name="prod/db", SecretString='{"password":"old-pw"}')
    client.put_secret_value(SecretId="prod/db", SecretString='{"password":"new-pw"}')
    backend = backend_for(moto, region="eu-central-1")
    ecs_arn = created["ARN"] + ":password:AWSPREVIOUS:"

    reference, implied_key = make_reference(backend, {"id": ecs_arn})
    [result] = fetch_entries(backend, [{"id": ecs_arn}])

    assert implied_key == ("password",)
    assert isinstance(reference, SecretReference)
    assert reference.version_stage == "AWSPREVIOUS"
    assert reference.secret_id == created["ARN"]
    assert isinstance(result, Fetched)
    assert result.value == '{"password":"old-pw"}'
    assert result.version == created["VersionId"]


def test_version_id_selects_version(moto):
    client = moto.client("secretsmanager")
    first = client.create_secret(Name="k", SecretString="one")
    client.put_secret_value(SecretId="k", SecretString="two")

    [result] = fetch_entries(backend_for(moto, region="eu-central-1"),
                             [{"id": "k", "version_id": first["VersionId"]}])

    assert isinstance(result, Fetched)
    assert result.value == "one"
    assert moto.requests.count("GetSecretValue") == 1


def test_custom_stage_selects_version(moto):
    client = moto.client("secretsmanager")
    client.create_secret(Name="k", SecretString="one")
    second = client.put_secret_value(SecretId="k", SecretString="two", VersionStages=["CANARY"])

    [result] = fetch_entries(backend_for(moto, region="eu-central-1"),
                             [{"id": "k", "version_stage": "CANARY"}])

    assert isinstance(result, Fetched)
    assert result.value == "two"
    assert result.version == second["VersionId"]


def test_unknown_stage_not_found(moto):
    moto.client("secretsmanager").create_secret(Name="k", SecretString="one")

    [result] = fetch_entries(backend_for(moto, region="eu-central-1"),
                             [{"id": "k", "version_stage": "NOPE"}])

    assert isinstance(result, NotFoundError)
    assert "stage NOPE" in str(result)


def test_45_current_secrets_three_batches(moto):
    client = moto.client("secretsmanager")
    for index in range(45):
        client.create_secret(Name=f"bulk/{index:02d}", SecretString=f"value-{index}")
    moto.requests.clear()

    results = fetch_entries(backend_for(moto, region="eu-central-1"),
                            [{"id": f"bulk/{index:02d}"} for index in range(45)])

    assert [result.value for result in results] == [f"value-{i}" for i in range(45)]
    assert moto.requests.count("BatchGetSecretValue") == 3
    assert moto.requests.count("GetSecretValue") == 0
    assert moto.requests.count() == 3
    assert BATCH_SIZE == 20


def test_five_equal_references_one_request(moto):
    moto.client("secretsmanager").create_secret(Name="shared", SecretString="s")
    moto.requests.clear()
    # The core dedups equal references before fetch; this checks they are equal, and that
    # one fetch of the distinct set sends one request.
    backend = backend_for(moto, region="eu-central-1")
    references = {make_reference(backend, {"id": "shared"})[0] for _ in range(5)}

    results = fetch_entries(backend, [{"id": "shared"}] * 5)

    assert len(references) == 1
    assert all(result.value == "s" for result in results)
    assert moto.requests.count() == 1


def test_batch_reports_each_failure(moto):
    client = moto.client("secretsmanager")
    client.create_secret(Name="good", SecretString=CANARY)
    client.create_secret(Name="deleted", SecretString=CANARY)
    client.delete_secret(SecretId="deleted")
    moto.requests.clear()

    good, missing, deleted = fetch_entries(backend_for(moto, region="eu-central-1"),
                                           [{"id": "good"}, {"id": "missing"}, {"id": "deleted"}])

    assert isinstance(good, Fetched)
    assert good.value == CANARY
    assert isinstance(missing, NotFoundError)
    assert "'missing'" in str(missing)
    assert isinstance(deleted, SecretDeletedError)
    assert "'deleted'" in str(deleted)
    assert moto.requests.count("BatchGetSecretValue") == 1
    for error in (missing, deleted):
        assert CANARY not in str(error)


def test_batch_matches_arn_and_name_ids(moto):
    client = moto.client("secretsmanager")
    first = client.create_secret(Name="a", SecretString="A")
    client.create_secret(Name="b", SecretString="B")
    moto.requests.clear()

    by_arn, by_partial, by_name = fetch_entries(
        backend_for(moto, region="eu-central-1"),
        [{"id": first["ARN"]}, {"id": first["ARN"][:-7]}, {"id": "b"}])

    assert by_arn.value == "A"
    assert by_partial.value == "A"
    assert by_name.value == "B"
    assert moto.requests.count("BatchGetSecretValue") == 1


def test_regions_batched_separately(moto):
    for region in ("eu-west-1", "us-east-1"):
        client = moto.client("secretsmanager", region)
        for name in ("x", "y"):
            client.create_secret(Name=name, SecretString=f"{name}@{region}")
    arns = {}
    for region in ("eu-west-1", "us-east-1"):
        for name in ("x", "y"):
            arns[(name, region)] = moto.client("secretsmanager", region).describe_secret(
                SecretId=name)["ARN"]
    moto.requests.clear()

    results = fetch_entries(backend_for(moto, region="eu-west-1"),
                            [{"id": "x"}, {"id": "y"}, {"id": arns[("x", "us-east-1")]},
                             {"id": arns[("y", "us-east-1")]}])

    assert [r.value for r in results] == ["x@eu-west-1", "y@eu-west-1", "x@us-east-1",
                                          "y@us-east-1"]
    assert moto.requests.count("BatchGetSecretValue") == 2


def test_versioned_secrets_use_get_secret_value(moto):
    client = moto.client("secretsmanager")
    for index in range(12):
        client.create_secret(Name=f"v{index}", SecretString="old")
        client.put_secret_value(SecretId=f"v{index}", SecretString="new")
    moto.requests.clear()

    results = fetch_entries(backend_for(moto, region="eu-central-1", concurrency=4),
                            [{"id": f"v{i}", "version_stage": "AWSPREVIOUS"} for i in range(12)])

    assert [r.value for r in results] == ["old"] * 12
    assert moto.requests.count("GetSecretValue") == 12
    assert moto.requests.count("BatchGetSecretValue") == 0


def test_values_absent_from_debug_logs(moto, caplog):
    client = moto.client("secretsmanager")
    client.create_secret(Name="one", SecretString=CANARY)
    client.create_secret(Name="two", SecretBinary=CANARY.encode())
    caplog.set_level(logging.DEBUG)

    results = fetch_entries(backend_for(moto, region="eu-central-1"),
                            [{"id": "one"}, {"id": "two"}, {"id": "missing"}])

    assert results[0].value == CANARY
    assert caplog.records, "expected debug log records from the fetch"
    assert CANARY not in caplog.text
    assert CANARY not in str(results[2])


# -- manifest fields, checked offline --------------------------------------------------------

def offline_backend() -> SecretsManagerBackend:
    backend = make_backend(SecretsManagerBackend, {"region": "eu-central-1"})
    assert isinstance(backend, SecretsManagerBackend)
    return backend


def test_stage_and_version_id_rejected_at_line():
    manifest = load_located_yaml(
        "id: prod/db\nversion_stage: AWSPREVIOUS\nversion_id: 0123456789abcdef0123456789abcdef\n",
        "manifest.yaml")
    entry = Fields(manifest, file="manifest.yaml", where="secrets.db")

    with pytest.raises(ManifestError) as raised:
        offline_backend().reference(entry)

    assert raised.value.line in (2, 3)
    assert "cannot be used together" in str(raised.value)


def test_default_stage_is_current():
    reference, key = make_reference(offline_backend(), {"id": "prod/db"})

    assert isinstance(reference, SecretReference)
    assert reference.version_stage == "AWSCURRENT"
    assert reference.version_id is None
    assert reference.region is None
    assert key is None


def test_explicit_current_equals_default():
    default, _ = make_reference(offline_backend(), {"id": "prod/db"})
    explicit, _ = make_reference(offline_backend(), {"id": "prod/db",
                                                     "version_stage": "AWSCURRENT"})

    assert default == explicit


def test_stage_given_twice_rejected():
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf::AWSPREVIOUS:"

    with pytest.raises(ManifestError) as raised:
        make_reference(offline_backend(), {"id": arn, "version_stage": "AWSPENDING"})

    assert "differs" in str(raised.value)


def test_short_version_id_rejected():
    with pytest.raises(ManifestError) as raised:
        make_reference(offline_backend(), {"id": "db", "version_id": "abc"})

    assert "32 to 64" in str(raised.value)


@pytest.mark.parametrize("bad_id", ["has space", "semi;colon", "a:b",
                                    "arn:aws:s3:::bucket/key",
                                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:n:k:s:i:x"])
def test_invalid_id_rejected(bad_id):
    with pytest.raises(ManifestError):
        make_reference(offline_backend(), {"id": bad_id})


def test_missing_id_rejected():
    with pytest.raises(ManifestError) as raised:
        make_reference(offline_backend(), {})

    assert "'id'" in str(raised.value)


def test_bad_endpoint_url_rejected():
    with pytest.raises(ManifestError):
        make_backend(SecretsManagerBackend, {"endpoint_url": "127.0.0.1:4566"})


def test_concurrency_bounds_checked():
    with pytest.raises(ManifestError):
        make_backend(SecretsManagerBackend, {"concurrency": 0})
