"""The AWS backends end to end: ``python -m secret_init fetch`` against moto, file bytes checked."""

from __future__ import annotations

from tests.moto_server import aws_env, fetch_with_cli, moto, moto_session_server  # noqa: F401

CANARY = "canary-c41d-do-not-log"


def manifest(moto, secrets: str, backend: str = "") -> str:
    return (f"version: 1\nbackends:\n  aws:\n    type: aws-secretsmanager\n"
            f"    endpoint_url: \"{moto.endpoint}\"\n{backend}secrets:\n{secrets}")


def test_plain_name_with_aws_region(moto, tmp_path, monkeypatch):
    moto.client("secretsmanager", "eu-west-1").create_secret(Name="app/token", SecretString="t0k")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")

    result, output = fetch_with_cli(tmp_path, manifest(moto, "  token: {from: aws, id: app/token}\n"))

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "token").read_bytes() == b"t0k"


def test_binary_secret_written_exactly(moto, tmp_path):
    payload = bytes([0x00, 0xFF, 0x10, 0x0A, 0x80])
    moto.client("secretsmanager").create_secret(Name="blob", SecretBinary=payload)

    result, output = fetch_with_cli(tmp_path, manifest(moto, "  blob: {from: aws, id: blob}\n",
                                                       "    region: eu-central-1\n"))

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "blob").read_bytes() == payload


def test_json_key_and_whole_document(moto, tmp_path):
    text = '{"user":"app","pass":"p:w=1"}'
    moto.client("secretsmanager").create_secret(Name="db", SecretString=text)
    secrets = "  pass: {from: aws, id: db, key: pass}\n  whole: {from: aws, id: db}\n"

    result, output = fetch_with_cli(tmp_path, manifest(moto, secrets,
                                                       "    region: eu-central-1\n"))

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "pass").read_bytes() == b"p:w=1"
    assert (output / "whole").read_bytes() == text.encode()


def test_spaced_json_written_byte_for_byte(moto, tmp_path):
    # Spaces and newlines prove the text is not parsed and re-encoded on the way.
    text = '{\n  "user": "app",\n  "pass": "p:w=1"\n}\n'
    moto.client("secretsmanager").create_secret(Name="db", SecretString=text)
    secrets = "  whole: {from: aws, id: db}\n  other: {from: aws, id: db, key: user}\n"

    result, output = fetch_with_cli(tmp_path, manifest(moto, secrets,
                                                       "    region: eu-central-1\n"))

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "whole").read_bytes() == text.encode()
    assert (output / "other").read_bytes() == b"app"


def test_full_arn_region_wins(moto, tmp_path):
    created = moto.client("secretsmanager", "us-west-2").create_secret(Name="svc",
                                                                       SecretString="oregon")
    moto.client("secretsmanager", "eu-central-1").create_secret(Name="svc",
                                                                SecretString="frankfurt")
    secrets = f"  svc: {{from: aws, id: \"{created['ARN']}\"}}\n"

    result, output = fetch_with_cli(tmp_path, manifest(moto, secrets,
                                                       "    region: eu-central-1\n"))

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "svc").read_bytes() == b"oregon"


def test_scheduled_deletion_fails_clearly(moto, tmp_path):
    client = moto.client("secretsmanager")
    client.create_secret(Name="old", SecretString=CANARY)
    client.delete_secret(SecretId="old")

    result, output = fetch_with_cli(tmp_path, manifest(moto, "  old: {from: aws, id: old}\n",
                                                       "    region: eu-central-1\n"))

    stderr = result.stderr.decode()
    assert result.returncode == 66
    assert "scheduled for deletion" in stderr
    assert "not found" not in stderr
    assert CANARY not in stderr
    assert not (output / "old").exists()


def test_missing_key_lists_existing_keys(moto, tmp_path):
    value = '{"user":"' + CANARY + '","host":"' + CANARY + '"}'
    moto.client("secretsmanager").create_secret(Name="db", SecretString=value)

    result, _ = fetch_with_cli(tmp_path, manifest(moto, "  dbpass: {from: aws, id: db, key: password}\n",
                                                  "    region: eu-central-1\n"))

    stderr = result.stderr.decode()
    assert result.returncode == 65
    assert "'dbpass'" in stderr
    assert "password" in stderr
    assert "host" in stderr
    assert "user" in stderr
    assert CANARY not in stderr


def test_ecs_value_from_previous_stage(moto, tmp_path):
    client = moto.client("secretsmanager", "eu-west-1")
    created = client.create_secret(Name="prod/db", SecretString='{"password":"previous-pw"}')
    client.put_secret_value(SecretId="prod/db", SecretString='{"password":"current-pw"}')
    secrets = f"  db: {{from: aws, id: \"{created['ARN']}:password:AWSPREVIOUS:\"}}\n"

    result, output = fetch_with_cli(tmp_path, manifest(moto, secrets,
                                                       "    region: eu-central-1\n"))

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "db").read_bytes() == b"previous-pw"


def test_five_entries_one_request(moto, tmp_path):
    moto.client("secretsmanager").create_secret(Name="shared", SecretString='{"a":"1","b":"2"}')
    moto.requests.clear()
    secrets = "".join(f"  s{i}: {{from: aws, id: shared, key: {'a' if i % 2 else 'b'}}}\n"
                      for i in range(5))

    result, output = fetch_with_cli(tmp_path, manifest(moto, secrets,
                                                       "    region: eu-central-1\n"))

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "s1").read_bytes() == b"1"
    assert (output / "s0").read_bytes() == b"2"
    assert moto.requests.count() == 1
    assert moto.requests.count("GetSecretValue") == 1


def test_ssm_parameter_written(moto, tmp_path):
    moto.client("ssm").put_parameter(Name="/app/key", Value="from-ssm", Type="SecureString")
    text = (f"version: 1\nbackends:\n  params:\n    type: aws-ssm\n    region: eu-central-1\n"
            f"    endpoint_url: \"{moto.endpoint}\"\nsecrets:\n"
            f"  key: {{from: params, name: /app/key}}\n")

    result, output = fetch_with_cli(tmp_path, text)

    assert result.returncode == 0, result.stderr.decode()
    assert (output / "key").read_bytes() == b"from-ssm"
