"""Deadline-bounded retries and the mapping of botocore errors to secret-init errors.

This is the one place where the AWS backends catch botocore exceptions. Throttling, 5xx
responses and connection errors are retried with exponential backoff and full jitter until
the run's deadline. Every other error fails at once with its own class and exit code.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping, TypeVar

from ...deadline import Deadline, backoff_delays, retry_after_seconds
from ...errors import (BackendUnavailableError, ConfigError, CredentialsError,
                       DeadlineExceededError, PermissionDeniedError, SecretInitError)

log = logging.getLogger("secret_init.backends.aws")

T = TypeVar("T")

# Error codes AWS services use for throttling (the set botocore's standard retry mode treats
# as throttling, in botocore/retries/standard.py).
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException",
})
# Server-side errors that are worth another attempt whatever their HTTP status.
TRANSIENT_CODES = frozenset({
    "InternalServiceError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
})
# Codes meaning the credentials themselves are invalid, expired or missing a signature.
CREDENTIAL_CODES = frozenset({
    "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
    "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "IncompleteSignature",
    "MissingAuthenticationToken", "MissingAuthenticationTokenException",
})
ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})

# Maps a service-specific error code to a function building the error from (subject, message).
ErrorFactory = Callable[[str, str], SecretInitError]


def error_code(error: BaseException) -> str:
    """Return the AWS error code of a botocore ClientError, or '' for other exceptions."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def aws_message(error: BaseException) -> str:
    """Return the AWS error message on one line (moto pads some messages with newlines)."""
    response = getattr(error, "response", None)
    text = response.get("Error", {}).get("Message", "") if isinstance(response, dict) else ""
    # The message goes inside our own sentence, so its final period would read "secret.; check".
    return " ".join(str(text).split()).rstrip(".")


def _status(error: BaseException) -> int:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_transient(error: BaseException) -> bool:
    """Return whether another attempt may succeed: throttling, 5xx or a connection error."""
    import botocore.exceptions as bce

    if isinstance(error, bce.SSLError):
        # A certificate or TLS setup problem does not go away by retrying.
        return False
    if isinstance(error, (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError)):
        return True
    if isinstance(error, bce.ClientError):
        code = error_code(error)
        return code in THROTTLING_CODES or code in TRANSIENT_CODES or _status(error) >= 500
    return False


def describe_failure(error: BaseException) -> str:
    """Describe an exception for logs and errors: the AWS code and message, never a body."""
    code = error_code(error)
    if code:
        status = _status(error)
        # botocore uses the HTTP status as the code when the error body is not JSON.
        if code == str(status):
            return f"HTTP {status}"
        message = aws_message(error)
        return f"{code}: {message}" if message else code
    return f"{type(error).__name__}: {error}"


def map_error(error: BaseException, subject: str, permission: str,
              service_codes: Mapping[str, ErrorFactory]) -> SecretInitError:
    """Map a botocore exception that will not be retried to a SecretInitError.

    ``subject`` names what failed ("secret 'prod/db' in eu-west-1") and ``permission`` the
    IAM action a denied caller needs. The result carries the AWS error code, or '', as
    ``aws_code``, so that a caller can choose a fallback for a request-level failure.
    """
    import botocore.exceptions as bce

    code = error_code(error)
    # A numeric code means the error body was not JSON, and its text is not shown.
    if code and code != str(_status(error)):
        mapped = map_code(code, aws_message(error), subject, permission, service_codes)
    elif isinstance(error, bce.ParamValidationError):
        mapped = ConfigError(f"invalid request for {subject}: {error}")
    else:
        mapped = BackendUnavailableError(f"request for {subject} failed: {describe_failure(error)}")
    mapped.aws_code = code  # type: ignore[attr-defined]
    return mapped


def map_code(code: str, message: str, subject: str, permission: str,
             service_codes: Mapping[str, ErrorFactory]) -> SecretInitError:
    """Map an AWS error code and message, from a response or a batch's error list."""
    if code in service_codes:
        return service_codes[code](subject, message)
    if code in ACCESS_DENIED_CODES:
        return PermissionDeniedError(
            f"access denied to {subject}: {message}; the caller needs {permission}")
    if code in CREDENTIAL_CODES:
        return CredentialsError(
            f"the AWS credentials were rejected for {subject}: {code}: {message}; check that "
            "they are valid, not expired, and belong to the endpoint's partition")
    return BackendUnavailableError(f"request for {subject} failed: {code}: {message}")


def call_with_retry(operation: Callable[[], T], deadline: Deadline, subject: str,
                    permission: str, service_codes: Mapping[str, ErrorFactory]) -> T:
    """Call ``operation`` and retry transient failures until ``deadline``.

    Raise the mapped SecretInitError for a permanent failure, and DeadlineExceededError,
    naming the last failure, when the next attempt would start after the deadline.
    """
    import botocore.exceptions as bce

    delays = backoff_delays(deadline)
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except (bce.BotoCoreError, bce.ClientError) as error:
            if not is_transient(error):
                raise map_error(error, subject, permission, service_codes) from None
            failure = describe_failure(error)
            retry_after = _retry_after(error, deadline)

        delay = next(delays, None)
        if delay is not None and retry_after is not None:
            delay = max(delay, retry_after)
        if delay is None or delay >= deadline.remaining():
            raise DeadlineExceededError(
                f"{subject}: the fetch deadline of {deadline.seconds:g} s passed after "
                f"{attempt} attempt(s); last error: {failure}") from None
        log.warning("retrying %s in %.2f s after attempt %d failed: %s",
                    subject, delay, attempt, failure)
        time.sleep(delay)


def _retry_after(error: BaseException, deadline: Deadline) -> float | None:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    return retry_after_seconds(headers.get("retry-after"), deadline)
