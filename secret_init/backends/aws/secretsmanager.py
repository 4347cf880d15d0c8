"""The ``aws-secretsmanager`` backend: secrets from AWS Secrets Manager.

Manifest fields of a secret: ``id`` (a name, a partial or full ARN, or an ECS ``valueFrom``
ARN ``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME:JSON_KEY:VERSION_STAGE:VERSION_ID``),
and at most one of ``version_stage`` (default AWSCURRENT) and ``version_id``.

One run sends as few requests as it can. Two or more distinct secrets on AWSCURRENT in one
Region are read with BatchGetSecretValue, 20 per call, the calls in parallel. Secrets with
another version, or alone in their Region, are read with GetSecretValue in parallel.
SecretString is returned as ``str`` unchanged (the core selects a ``key`` inside its JSON),
SecretBinary as ``bytes``, and the version is the VersionId.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Sequence

from ...deadline import Deadline
from ...errors import (BackendUnavailableError, ConfigError, CredentialsError,
                       DecryptionFailedError, DeadlineExceededError, NotFoundError,
                       SecretDeletedError, SecretInitError)
from ...fields import Fields
from ..base import Fetched, KeyPath, Reference
from .arn import parse_secret_id
from .common import AwsBackend, chunks, run_tasks
from .retry import call_with_retry, map_code

log = logging.getLogger("secret_init.backends.aws")

CURRENT_STAGE = "AWSCURRENT"
# BatchGetSecretValue accepts at most 20 ids (SecretIdListType in the botocore model).
BATCH_SIZE = 20
# Pages followed for one batch. With SecretIdList every value should come in the first page,
# but the API may still return a NextToken; the bound stops a misbehaving endpoint.
MAX_BATCH_PAGES = 20
VERSION_ID_LENGTH = (32, 64)
VERSION_STAGE_MAX_LENGTH = 256

GET_PERMISSION = "secretsmanager:GetSecretValue (and kms:Decrypt for a customer managed key)"
BATCH_PERMISSION = ("secretsmanager:BatchGetSecretValue, and secretsmanager:GetSecretValue "
                    "on each secret")


def _not_found(subject: str, message: str) -> SecretInitError:
    return NotFoundError(f"{subject} not found: {message}; check the name or ARN, the Region "
                         "and the account, and that the version exists")


def _invalid_request(subject: str, message: str) -> SecretInitError:
    # Secrets Manager returns InvalidRequestException for a secret marked for deletion, and
    # for requests that are valid but not allowed in the secret's state.
    if "delet" in message.lower():
        return SecretDeletedError(
            f"{subject} is scheduled for deletion ({message}); restore it with "
            "'aws secretsmanager restore-secret' or point the manifest at another secret")
    return ConfigError(f"invalid request for {subject}: {message}")


def _invalid_parameter(subject: str, message: str) -> SecretInitError:
    return ConfigError(f"invalid parameter for {subject}: {message}")


def _decryption_failure(subject: str, message: str) -> SecretInitError:
    return DecryptionFailedError(
        f"{subject} could not be decrypted with its KMS key: {message}; check that the key "
        "is enabled and that the caller has kms:Decrypt on it")


ERROR_CODES = {
    "ResourceNotFoundException": _not_found,
    "InvalidRequestException": _invalid_request,
    "InvalidParameterException": _invalid_parameter,
    "DecryptionFailure": _decryption_failure,
}


@dataclass(frozen=True)
class SecretReference(Reference):
    """One version of one secret.

    ``region`` comes from an ARN, and None means the backend's Region. Exactly one of
    ``version_stage`` and ``version_id`` is set.
    """

    secret_id: str = ""
    region: str | None = None
    version_stage: str | None = CURRENT_STAGE
    version_id: str | None = None

    def describe(self) -> str:
        return f"{self.backend}: {self.secret_id} {self.version_label()}"

    def version_label(self) -> str:
        if self.version_id:
            return f"version {self.version_id}"
        return f"stage {self.version_stage}"

    def is_current(self) -> bool:
        return self.version_id is None and self.version_stage == CURRENT_STAGE


class SecretsManagerBackend(AwsBackend):
    """Reads secrets with GetSecretValue and BatchGetSecretValue."""

    type_name = "aws-secretsmanager"
    service = "secretsmanager"

    def reference(self, entry: Fields) -> tuple[Reference, KeyPath | None]:
        text = entry.string("id", required=True)
        try:
            parsed = parse_secret_id(text)
        except ValueError as error:
            raise entry.error("id", str(error)) from None

        entry.exclusive("version_stage", "version_id")
        version_stage = entry.string("version_stage")
        version_id = entry.string("version_id")
        for field_name, value, from_arn in (("version_stage", version_stage, parsed.version_stage),
                                            ("version_id", version_id, parsed.version_id)):
            if value and from_arn and value != from_arn:
                raise entry.error(field_name, f"'{value}' differs from '{from_arn}' in the ARN "
                                  "in 'id'; give the version once")
        version_stage = version_stage or parsed.version_stage
        version_id = version_id or parsed.version_id
        if version_stage and version_id:
            raise entry.error("id", "selects both a version stage and a version id; "
                              "give only one of them")
        if version_id and not VERSION_ID_LENGTH[0] <= len(version_id) <= VERSION_ID_LENGTH[1]:
            field_name = "version_id" if entry.has("version_id") else "id"
            raise entry.error(field_name, f"version id '{version_id}' must be "
                              f"{VERSION_ID_LENGTH[0]} to {VERSION_ID_LENGTH[1]} characters long")
        if version_stage and len(version_stage) > VERSION_STAGE_MAX_LENGTH:
            raise entry.error("version_stage",
                              f"must be at most {VERSION_STAGE_MAX_LENGTH} characters long")
        if not version_id and not version_stage:
            version_stage = CURRENT_STAGE

        reference = SecretReference(backend=self.name, secret_id=parsed.secret_id,
                                    region=parsed.region, version_stage=version_stage,
                                    version_id=version_id)
        key_path = (parsed.json_key,) if parsed.json_key else None
        return reference, key_path

    def fetch(self, references: Sequence[Reference],
              deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        refs = [ref for ref in references if isinstance(ref, SecretReference)]
        results, located = self.locate(refs)
        current: dict[str, list[SecretReference]] = {}
        single: list[tuple[str, SecretReference]] = []
        for region, ref in located:
            if ref.is_current():
                current.setdefault(region, []).append(ref)
            else:
                single.append((region, ref))

        tasks = []
        for region, region_refs in current.items():
            if len({ref.secret_id for ref in region_refs}) < 2:
                single.extend((region, ref) for ref in region_refs)
                continue
            by_id: dict[str, list[SecretReference]] = {}
            for ref in region_refs:
                by_id.setdefault(ref.secret_id, []).append(ref)
            for ids in chunks(list(by_id), BATCH_SIZE):
                group = {secret_id: by_id[secret_id] for secret_id in ids}
                tasks.append(partial(self._fetch_batch, region, group, deadline))
        for region, ref in single:
            tasks.append(partial(self._fetch_one, region, ref, deadline))

        results.update(run_tasks(tasks, self.concurrency))
        return results

    # -- GetSecretValue -------------------------------------------------------------------

    def _fetch_one(self, region: str, ref: SecretReference,
                   deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        return {ref: self._get_secret_value(region, ref.secret_id, ref.version_stage,
                                            ref.version_id, deadline)}

    def _get_secret_value(self, region: str, secret_id: str, version_stage: str | None,
                          version_id: str | None, deadline: Deadline) -> Fetched | SecretInitError:
        selector = f"version {version_id}" if version_id else f"stage {version_stage}"
        subject = _subject(secret_id, region, selector)
        request: dict[str, str] = {"SecretId": secret_id}
        if version_id:
            request["VersionId"] = version_id
        elif version_stage and version_stage != CURRENT_STAGE:
            request["VersionStage"] = version_stage
        started = time.monotonic()
        try:
            client = self.client(region, deadline)
            response = call_with_retry(lambda: client.get_secret_value(**request), deadline,
                                       subject, GET_PERMISSION, ERROR_CODES)
        except SecretInitError as error:
            return error
        log.debug("GetSecretValue %s: %d ms", subject, (time.monotonic() - started) * 1000)
        return _fetched(response, subject)

    # -- BatchGetSecretValue --------------------------------------------------------------

    def _fetch_batch(self, region: str, group: Mapping[str, list[SecretReference]],
                     deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        by_id = self._batch_get(region, list(group), deadline)
        return {ref: by_id[secret_id] for secret_id, refs in group.items() for ref in refs}

    def _batch_get(self, region: str, secret_ids: list[str],
                   deadline: Deadline) -> dict[str, Fetched | SecretInitError]:
        subject = f"BatchGetSecretValue of {len(secret_ids)} secrets in {region}"
        client = self.client(region, deadline)
        results: dict[str, Fetched | SecretInitError] = {}
        request: dict[str, Any] = {"SecretIdList": secret_ids}
        started = time.monotonic()
        for _page in range(MAX_BATCH_PAGES):
            try:
                response = call_with_retry(lambda: client.batch_get_secret_value(**request),
                                           deadline, subject, BATCH_PERMISSION, ERROR_CODES)
            except SecretInitError as error:
                if not _batch_fallback_allowed(error):
                    return {secret_id: results.get(secret_id, error) for secret_id in secret_ids}
                # The whole call failed although the service responded, typically because a
                # policy grants GetSecretValue but not BatchGetSecretValue, or the endpoint
                # lacks the operation. One GetSecretValue per secret reports each secret's
                # own error instead of one error for all.
                log.warning("%s failed (%s); reading these secrets with GetSecretValue",
                            subject, error)
                return self._get_each(region, secret_ids, results, deadline)
            _collect_batch(response, secret_ids, region, results)
            next_token = response.get("NextToken")
            if not next_token or len(results) == len(secret_ids):
                break
            request["NextToken"] = next_token

        log.debug("%s: %d ms", subject, (time.monotonic() - started) * 1000)
        for secret_id in secret_ids:
            if secret_id not in results:
                results[secret_id] = BackendUnavailableError(
                    f"BatchGetSecretValue in {region} returned neither a value nor an error "
                    f"for secret '{secret_id}'")
        return results

    def _get_each(self, region: str, secret_ids: list[str],
                  results: dict[str, Fetched | SecretInitError],
                  deadline: Deadline) -> dict[str, Fetched | SecretInitError]:
        # NOTE: sequential on purpose: this runs inside a worker of the backend's pool, and
        # the fallback is for misconfigured permissions rather than the common path.
        for secret_id in secret_ids:
            if secret_id not in results:
                results[secret_id] = self._get_secret_value(region, secret_id, CURRENT_STAGE,
                                                            None, deadline)
        return results


def _subject(secret_id: str, region: str, selector: str) -> str:
    """Name one secret version for logs and errors: its id, Region and stage or version."""
    return f"Secrets Manager secret '{secret_id}' ({region}, {selector})"


def _batch_fallback_allowed(error: SecretInitError) -> bool:
    """Return whether a failed BatchGetSecretValue should be retried one secret at a time."""
    if isinstance(error, (CredentialsError, DeadlineExceededError)):
        return False
    # The service responded with an error code (not a connection failure or bad response).
    return bool(getattr(error, "aws_code", ""))


def _collect_batch(response: Mapping[str, Any], secret_ids: list[str], region: str,
                   results: dict[str, Fetched | SecretInitError]) -> None:
    """Match a BatchGetSecretValue page's values and errors to the requested ids."""
    requested = set(secret_ids)
    for value in response.get("SecretValues", []) or []:
        matched = requested & _identifiers(value)
        if not matched:
            log.warning("BatchGetSecretValue in %s returned secret '%s', which was not "
                        "requested", region, value.get("Name", "?"))
        for secret_id in matched:
            subject = _subject(secret_id, region, f"stage {CURRENT_STAGE}")
            results[secret_id] = _fetched(value, subject)

    # Per-secret failures come back here with HTTP 200, each naming the id as requested.
    for entry in response.get("Errors", []) or []:
        secret_id = entry.get("SecretId", "")
        if secret_id not in requested:
            log.warning("BatchGetSecretValue in %s returned an error for '%s', which was not "
                        "requested", region, secret_id)
            continue
        subject = _subject(secret_id, region, f"stage {CURRENT_STAGE}")
        message = " ".join(str(entry.get("Message", "")).split()).rstrip(".")
        results[secret_id] = map_code(entry.get("ErrorCode", ""), message, subject,
                                      GET_PERMISSION, ERROR_CODES)


def _identifiers(value: Mapping[str, Any]) -> set[str]:
    """Return every id that may have requested ``value``: its name, full ARN and partial ARN."""
    identifiers = {value.get("Name", ""), value.get("ARN", "")}
    arn = value.get("ARN", "")
    # A full ARN ends in '-' and six random characters; without them it is the partial ARN.
    if len(arn) > 7 and arn[-7] == "-":
        identifiers.add(arn[:-7])
    identifiers.discard("")
    return identifiers


def _fetched(response: Mapping[str, Any], subject: str) -> Fetched | SecretInitError:
    """Build the result from a GetSecretValue response or a BatchGetSecretValue item."""
    version = response.get("VersionId")
    if "SecretBinary" in response and response["SecretBinary"] is not None:
        # botocore has already decoded the base64 of the wire format.
        return Fetched(value=bytes(response["SecretBinary"]), version=version)
    if "SecretString" in response and response["SecretString"] is not None:
        return Fetched(value=response["SecretString"], version=version)
    # This also covers a 200 response whose body is not JSON: botocore then returns no fields.
    return BackendUnavailableError(
        f"invalid response for {subject}: it contains neither SecretString nor SecretBinary")
