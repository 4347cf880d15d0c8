"""The ``aws-ssm`` backend: parameters from AWS Systems Manager Parameter Store.

Manifest field of a secret: ``name`` (or ``id``), a parameter name or ARN with an optional
``:VERSION`` or ``:LABEL`` selector. ``/aws/reference/secretsmanager/NAME`` reads a Secrets
Manager secret through Parameter Store. Values are always requested with WithDecryption, so
SecureString parameters arrive decrypted, and are returned as ``str``; the version is the
parameter's Version. Plain names and ARNs are read with GetParameters, 10 per call, the calls
in parallel. Names with a selector and /aws/reference/secretsmanager/ names are read one by
one with GetParameter, because a batch response cannot be matched to them reliably.

NOTE: a binary Secrets Manager secret read through /aws/reference/secretsmanager/ is not
handled specially, and Parameter Store's response for it was not verified.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

from ...deadline import Deadline
from ...errors import (BackendUnavailableError, ConfigError, DecryptionFailedError,
                       NotFoundError, SecretInitError)
from ...fields import Fields
from ..base import Fetched, KeyPath, Reference
from .arn import SECRET_NAME, SECRETS_MANAGER_REFERENCE_PREFIX, parse_parameter_name
from .common import AwsBackend, chunks, run_tasks
from .retry import call_with_retry

log = logging.getLogger("secret_init.backends.aws")

# GetParameters accepts at most 10 names (ParameterNameList in the botocore model).
BATCH_SIZE = 10
# The IAM actions a denied caller needs, for GetParameters and for GetParameter.
DECRYPT_PERMISSION = "kms:Decrypt for SecureString parameters with a customer managed key"
PERMISSION = f"ssm:GetParameters (and {DECRYPT_PERMISSION})"
GET_PARAMETER_PERMISSION = f"ssm:GetParameter (and {DECRYPT_PERMISSION})"


def _not_found(subject: str, message: str) -> SecretInitError:
    return NotFoundError(f"{subject} not found: {message}")


def _invalid_key(subject: str, message: str) -> SecretInitError:
    return DecryptionFailedError(
        f"{subject} could not be decrypted with its KMS key: {message}; check that the key "
        "exists, is enabled, and that the caller has kms:Decrypt on it")


def _validation(subject: str, message: str) -> SecretInitError:
    return ConfigError(f"invalid request for {subject}: {message}")


ERROR_CODES = {
    "ParameterNotFound": _not_found,
    "ParameterVersionNotFound": _not_found,
    "InvalidKeyId": _invalid_key,
    "ValidationException": _validation,
}


@dataclass(frozen=True)
class ParameterReference(Reference):
    """One parameter: its name or ARN, the Region from an ARN (None means the backend's),
    and an optional selector."""

    name: str = ""
    region: str | None = None
    selector: str | None = None

    def request_name(self) -> str:
        return f"{self.name}:{self.selector}" if self.selector else self.name

    def describe(self) -> str:
        return f"{self.backend}: {self.request_name()}"


class ParameterStoreBackend(AwsBackend):
    """Reads parameters with GetParameters."""

    type_name = "aws-ssm"
    service = "ssm"

    def reference(self, entry: Fields) -> tuple[Reference, KeyPath | None]:
        field_name = entry.exclusive("name", "id", required=True)
        assert field_name is not None
        text = entry.string(field_name, required=True)
        entry.raw("id" if field_name == "name" else "name")  # null at most, see exclusive()
        try:
            parsed = parse_parameter_name(text)
        except ValueError as error:
            raise entry.error(field_name, str(error)) from None
        if parsed.name.startswith(SECRETS_MANAGER_REFERENCE_PREFIX):
            secret_name = parsed.name[len(SECRETS_MANAGER_REFERENCE_PREFIX):]
            if not SECRET_NAME.match(secret_name):
                raise entry.error(field_name, f"'{secret_name}' is not a valid secret name")
        reference = ParameterReference(backend=self.name, name=parsed.name,
                                       region=parsed.region, selector=parsed.selector)
        return reference, None

    def fetch(self, references: Sequence[Reference],
              deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        refs = [ref for ref in references if isinstance(ref, ParameterReference)]
        results, located = self.locate(refs)
        by_region: dict[str, dict[str, list[ParameterReference]]] = {}
        for region, ref in located:
            by_region.setdefault(region, {}).setdefault(ref.request_name(), []).append(ref)

        tasks = []
        for region, by_name in by_region.items():
            plain = [name for name, refs in by_name.items() if _batchable(refs[0])]
            for names in chunks(plain, BATCH_SIZE):
                group = {name: by_name[name] for name in names}
                tasks.append(partial(self._fetch_chunk, region, group, deadline))
            for name, refs in by_name.items():
                if not _batchable(refs[0]):
                    tasks.append(partial(self._fetch_one, region, name, refs, deadline))
        results.update(run_tasks(tasks, self.concurrency))
        return results

    def _fetch_chunk(self, region: str, group: Mapping[str, list[ParameterReference]],
                     deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        names = list(group)
        by_name = self._get_parameters(region, names, deadline)
        return {ref: by_name[name] for name, refs in group.items() for ref in refs}

    def _fetch_one(self, region: str, name: str, refs: list[ParameterReference],
                   deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        subject = f"SSM parameter '{name}' ({region})"
        response = self._call(region, deadline, subject, GET_PARAMETER_PERMISSION,
                              lambda client: client.get_parameter(Name=name, WithDecryption=True))
        if isinstance(response, SecretInitError):
            return {ref: response for ref in refs}
        result = _fetched(response.get("Parameter") or {}, subject)
        return {ref: result for ref in refs}

    def _call(self, region: str, deadline: Deadline, subject: str, permission: str,
              request: Callable[[Any], dict]) -> dict | SecretInitError:
        """Send one SSM request with retries, and return its response or its final error."""
        started = time.monotonic()
        try:
            client = self.client(region, deadline)
            response = call_with_retry(lambda: request(client), deadline, subject, permission,
                                       ERROR_CODES)
        except SecretInitError as error:
            return error
        log.debug("%s: %d ms", subject, (time.monotonic() - started) * 1000)
        return response

    def _get_parameters(self, region: str, names: list[str],
                        deadline: Deadline) -> dict[str, Fetched | SecretInitError]:
        subject = (f"SSM parameter '{names[0]}' ({region})" if len(names) == 1
                   else f"GetParameters of {len(names)} parameters in {region}")
        response = self._call(region, deadline, subject, PERMISSION,
                              lambda client: client.get_parameters(Names=names, WithDecryption=True))
        if isinstance(response, SecretInitError):
            return {name: response for name in names}

        results: dict[str, Fetched | SecretInitError] = {}
        requested = set(names)
        for parameter in response.get("Parameters", []) or []:
            matched = requested & _identifiers(parameter)
            for name in matched:
                results[name] = _fetched(parameter, f"SSM parameter '{name}' ({region})")
        # Names that do not exist, or whose version or label does not, come back here.
        for name in response.get("InvalidParameters", []) or []:
            if name in requested:
                results[name] = NotFoundError(
                    f"SSM parameter '{name}' ({region}) not found; check the name, the "
                    "version or label, the Region and the account")
        for name in names:
            if name not in results:
                results[name] = BackendUnavailableError(
                    f"GetParameters in {region} returned neither a value nor an error for "
                    f"parameter '{name}'")
        return results


def _batchable(ref: ParameterReference) -> bool:
    """Return whether GetParameters can read ``ref`` in a batch.

    A batch response is matched to the request by the parameter's Name or ARN. That is
    ambiguous for a selector, because moto 5.2 omits the Selector field and one parameter
    may then appear in several versions. It is ambiguous for /aws/reference/secretsmanager/
    names too, because moto 5.2 returns the bare secret name. Both are read one by one with
    GetParameter.
    """
    return ref.selector is None and not ref.name.startswith(SECRETS_MANAGER_REFERENCE_PREFIX)


def _identifiers(parameter: Mapping[str, Any]) -> set[str]:
    """Return the request names that may have returned ``parameter``: its Name and ARN."""
    return {text for text in (parameter.get("Name"), parameter.get("ARN")) if text}


def _fetched(parameter: Mapping[str, Any], subject: str) -> Fetched | SecretInitError:
    value = parameter.get("Value")
    if not isinstance(value, str):
        return BackendUnavailableError(f"invalid response for {subject}: it contains no Value")
    version = parameter.get("Version")
    return Fetched(value=value, version=None if version is None else str(version))
