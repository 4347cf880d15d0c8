"""Parsing of Secrets Manager ids and SSM parameter names."""

from __future__ import annotations

import pytest

from secret_init.backends.aws.arn import parse_parameter_name, parse_secret_id

ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf"


def test_ecs_value_from_all_fields():
    parsed = parse_secret_id(ARN + ":password:AWSPREVIOUS:")

    assert parsed.secret_id == ARN
    assert parsed.region == "eu-west-1"
    assert parsed.json_key == "password"
    assert parsed.version_stage == "AWSPREVIOUS"
    assert parsed.version_id is None


def test_ecs_value_from_version_id_only():
    parsed = parse_secret_id(ARN + ":::" + "0" * 32)

    assert parsed.json_key is None
    assert parsed.version_stage is None
    assert parsed.version_id == "0" * 32


def test_full_arn_keeps_suffix_and_slash():
    parsed = parse_secret_id(ARN)

    assert parsed.secret_id == ARN
    assert parsed.json_key is None


def test_partial_arn_accepted():
    partial = "arn:aws:secretsmanager:us-west-2:123456789012:secret:team/app/db"

    parsed = parse_secret_id(partial)

    assert parsed.secret_id == partial
    assert parsed.region == "us-west-2"


def test_other_partition_accepted():
    parsed = parse_secret_id("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x")

    assert parsed.region == "cn-north-1"


def test_name_with_suffix_like_part_is_a_name():
    parsed = parse_secret_id("prod/db-AbCdEf")

    assert parsed.secret_id == "prod/db-AbCdEf"
    assert parsed.region is None


@pytest.mark.parametrize("text", [
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret",
    "arn:aws:secretsmanager::123456789012:secret:x",
    "arn:aws:secretsmanager:eu-west-1:123456789012:parameter:x",
    ARN + ":k:s:i:extra",
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:bad name",
    "x" * 513,
])
def test_invalid_secret_ids(text):
    with pytest.raises(ValueError):
        parse_secret_id(text)


def test_parameter_plain_name():
    parsed = parse_parameter_name("/app/db/password")

    assert parsed.name == "/app/db/password"
    assert parsed.selector is None
    assert parsed.request_name() == "/app/db/password"


def test_parameter_version_selector():
    parsed = parse_parameter_name("/app/db:12")

    assert parsed.name == "/app/db"
    assert parsed.selector == "12"
    assert parsed.request_name() == "/app/db:12"


def test_parameter_arn_with_label():
    parsed = parse_parameter_name("arn:aws:ssm:us-east-1:123456789012:parameter/app/db:prod")

    assert parsed.name == "arn:aws:ssm:us-east-1:123456789012:parameter/app/db"
    assert parsed.region == "us-east-1"
    assert parsed.selector == "prod"


@pytest.mark.parametrize("text", ["/a b", "/a:", "/a:9lives", "/a:1:2",
                                  "arn:aws:ssm:us-east-1:123456789012:document/x",
                                  "arn:aws:ssm::123456789012:parameter/x"])
def test_invalid_parameter_names(text):
    with pytest.raises(ValueError):
        parse_parameter_name(text)
