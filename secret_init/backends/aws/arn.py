"""Parsing of Secrets Manager secret ids and SSM parameter names, offline.

Secrets Manager accepts a secret name, a partial ARN (without the random ``-AbCdEf`` suffix
AWS appends) or a full ARN. ECS task definitions extend the ARN with three optional fields,
``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME:JSON_KEY:VERSION_STAGE:VERSION_ID``,
any of which may be empty. That form can be parsed by splitting on ``:`` because AWS
restricts secret names to ``[A-Za-z0-9/_+=.@-]``, so a name never contains a colon.

SSM parameter names are restricted to ``[A-Za-z0-9_.-/]`` the same way, so in
``NAME:SELECTOR`` and ``arn:aws:ssm:REGION:ACCOUNT:parameter/NAME:SELECTOR`` the colon
always starts a version number or label selector.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Secret names: 1-512 characters of this set (NameType and SecretIdType in the botocore
# Secrets Manager model allow 512 and 2048 characters).
SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
SECRET_ID_MAX_LENGTH = 2048

# Parameter names: letters, digits and ``_.-/``, up to 2048 characters including the path.
PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,2048}$")
# A selector is a version number or a label (letters, digits, ``_.-``, up to 100 characters,
# and a label must not start with a digit, so digits alone always mean a version).
PARAMETER_SELECTOR = re.compile(r"^(?:[0-9]{1,19}|[A-Za-z_.-][A-Za-z0-9_.-]{0,99})$")

# The Secrets Manager path under which SSM returns secrets: /aws/reference/secretsmanager/NAME.
SECRETS_MANAGER_REFERENCE_PREFIX = "/aws/reference/secretsmanager/"


@dataclass(frozen=True)
class SecretId:
    """A parsed Secrets Manager ``id``.

    ``secret_id`` is what the API receives: a name, or an ARN cut after the secret name.
    ``region`` is set only for ARNs. The ECS fields are None when absent or empty.
    """

    secret_id: str
    region: str | None = None
    json_key: str | None = None
    version_stage: str | None = None
    version_id: str | None = None


@dataclass(frozen=True)
class ParameterName:
    """A parsed SSM parameter name or ARN, with an optional ``:version`` or ``:label`` selector."""

    name: str
    region: str | None = None
    selector: str | None = None

    def request_name(self) -> str:
        """Return the name as GetParameters receives it, selector included."""
        return f"{self.name}:{self.selector}" if self.selector else self.name


def parse_secret_id(text: str) -> SecretId:
    """Parse a secret name, partial or full ARN, or ECS ``valueFrom`` ARN; raise ValueError."""
    if len(text) > SECRET_ID_MAX_LENGTH:
        raise ValueError(f"'{text[:64]}...' is longer than {SECRET_ID_MAX_LENGTH} characters")
    if not text.startswith("arn:"):
        if not SECRET_NAME.match(text):
            raise ValueError(
                f"'{text}' is not a valid secret name; names contain only letters, digits "
                "and /_+=.@- (use a full ARN for another account or Region)")
        return SecretId(secret_id=text)

    parts = text.split(":")
    # arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME, then up to three ECS fields.
    if len(parts) < 7 or parts[2] != "secretsmanager" or parts[5] != "secret":
        raise ValueError(
            f"'{text}' is not a Secrets Manager ARN; expected "
            "arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY:VERSION_STAGE:VERSION_ID]")
    if len(parts) > 10:
        raise ValueError(
            f"'{text}' has {len(parts) - 7} fields after the secret name; at most three are "
            "allowed (JSON_KEY:VERSION_STAGE:VERSION_ID)")
    partition, region, account, name = parts[1], parts[3], parts[4], parts[6]
    if not partition or not region or not account:
        raise ValueError(f"'{text}' is missing the partition, Region or account")
    if not SECRET_NAME.match(name):
        raise ValueError(f"'{text}' does not contain a valid secret name after ':secret:'")
    extra = [part or None for part in parts[7:]] + [None] * (10 - len(parts))
    json_key, version_stage, version_id = extra
    return SecretId(secret_id=":".join(parts[:7]), region=region, json_key=json_key,
                    version_stage=version_stage, version_id=version_id)


def parse_parameter_name(text: str) -> ParameterName:
    """Parse an SSM parameter name or ARN with an optional selector; raise ValueError."""
    if text.startswith("arn:"):
        parts = text.split(":")
        if len(parts) not in (6, 7) or parts[2] != "ssm" or not parts[5].startswith("parameter/"):
            raise ValueError(
                f"'{text}' is not an SSM parameter ARN; expected "
                "arn:aws:ssm:REGION:ACCOUNT:parameter/NAME[:VERSION_OR_LABEL]")
        if not parts[1] or not parts[3] or not parts[4]:
            raise ValueError(f"'{text}' is missing the partition, Region or account")
        name_part = parts[5][len("parameter"):]
        if not PARAMETER_NAME.match(name_part):
            raise ValueError(f"'{text}' does not contain a valid parameter name")
        selector = parts[6] if len(parts) == 7 else None
        _check_selector(text, selector)
        return ParameterName(name=":".join(parts[:6]), region=parts[3], selector=selector)

    name, _, selector_text = text.partition(":")
    selector = selector_text if _ else None
    if not PARAMETER_NAME.match(name):
        raise ValueError(
            f"'{text}' is not a valid parameter name; names contain only letters, digits "
            "and _.-/, optionally followed by :VERSION or :LABEL")
    _check_selector(text, selector)
    return ParameterName(name=name, selector=selector)


def _check_selector(text: str, selector: str | None) -> None:
    if selector is not None and not PARAMETER_SELECTOR.match(selector):
        raise ValueError(
            f"'{text}' has an invalid selector '{selector}'; use :VERSION (a number) or "
            ":LABEL (letters, digits and _.-, not starting with a digit)")
