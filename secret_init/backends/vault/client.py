"""The connection to Vault: an hvac client on a deadline-aware session, with retries.

Every Vault call of the backend goes through ``VaultConnection.call``, which retries
transient failures with exponential backoff and full jitter inside the run's deadline and
maps hvac and requests exceptions to secret-init's errors. This module imports hvac and
requests, so the package imports it only when a fetch starts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from typing import Any, Callable, TypeVar

import hvac
import hvac.exceptions
import requests
import requests.adapters

from ...deadline import Deadline, backoff_delays, retry_after_seconds
from ...errors import (BackendUnavailableError, ConfigError, CredentialsError,
                       DeadlineExceededError, NotFoundError, PermissionDeniedError,
                       SecretInitError)
from .config import VaultSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Statuses retried with backoff: throttling (429), a consistency miss on a performance
# standby (412), and every 5xx except 501, which means "not initialized" and does not heal
# by waiting. Vault Agent's retry rule is the same except for 429.
RETRY_STATUSES = frozenset({412, 429, 500, 502, 503, 504})
# Time ``close`` gives the revoke-self request; the run's deadline may already have passed.
REVOKE_TIMEOUT_SECONDS = 5.0
_MULTIERROR_HEADER = re.compile(r"^\d+ errors? occurred:")
# Maximum characters of a non-JSON error body (a proxy's HTML page) quoted in a message.
MAX_QUOTED_BODY = 200

# hvac maps status codes to exception classes and keeps no status code on the exception.
_STATUS_BY_EXCEPTION: dict[type, int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}


class DeadlinePassed(Exception):
    """Raised by the session when a request would start after the run's deadline."""


class VaultSession(requests.Session):
    """A requests session that applies the backend's TLS and proxy settings to every request,
    bounds each request's timeout by the run's deadline, and remembers each thread's last
    response so that a retry can read its status code and Retry-After header.

    hvac passes ``verify``, ``cert`` and ``proxies`` per request, partly from variables it
    read at import time. This session overrides them with the settings read for this run.
    ``trust_env`` is off so that .netrc, REQUESTS_CA_BUNDLE and the proxy variables are not
    applied behind the backend's back; ``proxies`` comes from ``select_proxy`` instead.
    """

    def __init__(self, settings: VaultSettings) -> None:
        super().__init__()
        self.trust_env = False
        self.settings = settings
        self.deadline: Deadline | None = None
        self.timeout_override: float | None = None
        self._local = threading.local()
        pool = requests.adapters.HTTPAdapter(pool_connections=1,
                                             pool_maxsize=settings.concurrency + 2)
        self.mount("http://", pool)
        self.mount("https://", pool)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self._local.response = None
        timeout = self.timeout_override or self.settings.request_timeout
        if self.deadline is not None and self.timeout_override is None:
            remaining = self.deadline.remaining()
            if remaining <= 0:
                raise DeadlinePassed()
            timeout = min(timeout, remaining)
        kwargs["timeout"] = timeout
        kwargs["verify"] = self.settings.tls.verify()
        kwargs["cert"] = self.settings.tls.cert()
        proxy = self.settings.proxy
        kwargs["proxies"] = {"http": proxy, "https": proxy} if proxy else {}
        response = super().request(method, url, *args, **kwargs)
        self._local.response = response
        return response

    def last_response(self) -> requests.Response | None:
        """Return the last response this thread received, or None."""
        return getattr(self._local, "response", None)


def check_tls_files(settings: VaultSettings) -> None:
    """Raise ConfigError for a configured CA or client certificate file that is missing."""
    for setting, path, is_dir in settings.tls.files():
        kind = "folder" if is_dir else "file"
        if is_dir and not path.is_dir():
            raise ConfigError(f"{setting}: the CA certificate folder {path} does not exist")
        if not is_dir and not path.is_file():
            raise ConfigError(f"{setting}: the {kind} {path} does not exist")


def build_client(settings: VaultSettings) -> tuple[hvac.Client, VaultSession]:
    """Create the hvac client and its session; no request is sent."""
    check_tls_files(settings)
    if settings.tls.skip_verify:
        log.warning("TLS certificate verification for Vault at %s is off (skip_verify); "
                    "anyone on the network path can read the token and the secrets",
                    settings.address)
        # One warning above instead of urllib3's warning on every request.
        import urllib3
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    session = VaultSession(settings)
    # token="" keeps hvac from reading VAULT_TOKEN or ~/.vault-token itself; the auth step
    # sets the token it chose.
    client = hvac.Client(url=settings.address, token="", verify=settings.tls.verify(),
                         cert=settings.tls.cert(), timeout=settings.request_timeout,
                         session=session, namespace=settings.namespace)
    return client, session


def _flatten_multierror(text: str) -> str:
    """Turn Go's "2 errors occurred:\n\t* a\n\t* b\n\n" into "a; b"."""
    text = text.strip()
    if _MULTIERROR_HEADER.match(text):
        items = [item.strip() for item in text.split("\n\t* ")[1:]]
        return "; ".join(item for item in items if item)
    return " ".join(text.split())


def vault_message(error: hvac.exceptions.VaultError) -> str:
    """Return Vault's error text without hvac's ", on <method> <url>" suffix."""
    if error.errors:
        return "; ".join(_flatten_multierror(str(item)) for item in error.errors)
    if error.json is not None:
        warnings_list = error.json.get("warnings") if isinstance(error.json, dict) else None
        if warnings_list:
            return "; ".join(" ".join(str(item).split()) for item in warnings_list)
        return "no error message"
    text = (error.text or "").strip()
    if not text:
        return "no error message"
    # A non-JSON body comes from something in front of Vault (a proxy or load balancer).
    # One line, so a body cannot forge log lines.
    return f"non-JSON response: {' '.join(text[:MAX_QUOTED_BODY].split())}"


def is_invalid_token_message(message: str) -> bool:
    """Return True when Vault's 403 message blames the token itself.

    Vault 1.17 and later add "invalid token" to every 403 caused by a missing, expired or
    revoked token. Earlier servers send only "permission denied", so a token lookup decides.
    """
    lowered = message.lower()
    return "invalid token" in lowered or "token is expired" in lowered or "bad token" in lowered


class VaultConnection:
    """One authenticated hvac client for one run, and the retry loop around every call."""

    def __init__(self, settings: VaultSettings, backend_name: str) -> None:
        self.settings = settings
        self.backend_name = backend_name
        self.client, self.session = build_client(settings)
        # Describes where the token came from, for error messages ("VAULT_TOKEN", ...).
        self.token_source = "the Vault token"
        self._token_valid: bool | None = None
        self._token_lock = threading.Lock()

    def set_deadline(self, deadline: Deadline | None) -> None:
        self.session.deadline = deadline

    # -- the retry loop ---------------------------------------------------------------------

    def call(self, action: str, function: Callable[[], T], deadline: Deadline, *,
             login: bool = False) -> T:
        """Run ``function`` (one hvac call) with retries; raise a SecretInitError on failure.

        ``action`` names the request for logs and errors ("read secret/web/db"). With
        ``login`` set, a 400 or 403 means the credentials were rejected.
        NOTE: a POST that timed out may have reached Vault. Retrying a login or a dynamic
        secret read then creates a second token or lease, which Vault expires by its TTL.
        """
        attempts = 0
        delays = backoff_delays(deadline)
        while True:
            attempts += 1
            started = time.monotonic()
            try:
                return function()
            except SecretInitError:
                raise
            except DeadlinePassed:
                raise DeadlineExceededError(
                    f"{action}: the {deadline.seconds:g} s fetch deadline passed after "
                    f"{attempts - 1} attempt(s) against Vault at {self.settings.address}") from None
            except hvac.exceptions.VaultError as error:
                status = self._status_of(error)
                if status not in RETRY_STATUSES and not (status >= 500 and status != 501):
                    raise self._map_final(action, error, status, login=login) from None
                reason = f"HTTP {status}: {vault_message(error)}"
                retry_after = self._retry_after(deadline)
            except requests.exceptions.SSLError as error:
                raise BackendUnavailableError(
                    f"{action}: TLS connection to Vault at {self.settings.address} failed: "
                    f"{_tls_reason_and_fix(error)}") from None
            except requests.exceptions.Timeout as error:
                if deadline.expired():
                    raise DeadlineExceededError(
                        f"{action}: Vault at {self.settings.address} did not respond before the "
                        f"{deadline.seconds:g} s fetch deadline ({attempts} attempt(s))") from None
                reason = f"timed out after {time.monotonic() - started:.1f} s ({type(error).__name__})"
                retry_after = None
            except (requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as error:
                reason = f"connection failed: {_short_reason(error)}"
                retry_after = None
            except requests.exceptions.RequestException as error:
                # An invalid URL or header: sending again cannot help.
                raise BackendUnavailableError(
                    f"{action}: the request to Vault at {self.settings.address} failed: "
                    f"{_short_reason(error)}") from None

            delay = next(delays, None)
            if retry_after is not None:
                delay = retry_after
            if delay is None or delay >= deadline.remaining():
                raise DeadlineExceededError(
                    f"{action}: Vault at {self.settings.address} kept failing until the "
                    f"{deadline.seconds:g} s fetch deadline; {attempts} attempt(s), last "
                    f"error {reason}")
            log.info("vault %s: %s failed (%s); retrying in %.2f s (attempt %d)",
                     self.backend_name, action, reason, delay, attempts + 1)
            time.sleep(delay)

    def _status_of(self, error: hvac.exceptions.VaultError) -> int:
        response = self.session.last_response()
        if response is not None and response.status_code >= 400:
            return response.status_code
        return _STATUS_BY_EXCEPTION.get(type(error), 0)

    def _retry_after(self, deadline: Deadline) -> float | None:
        response = self.session.last_response()
        if response is None:
            return None
        return retry_after_seconds(response.headers.get("Retry-After"), deadline)

    # -- error mapping ----------------------------------------------------------------------

    def _map_final(self, action: str, error: hvac.exceptions.VaultError, status: int, *,
                   login: bool) -> SecretInitError:
        message = vault_message(error)
        detail = f"HTTP {status}: {message}"
        if login and status in (400, 401, 403):
            return CredentialsError(f"{action}: Vault rejected the credentials ({detail})")
        if status in (401, 403):
            return self._forbidden(action, error, detail, message)
        if status == 404:
            return NotFoundError(f"{action}: not found in Vault at {self.settings.address} "
                                 f"({detail if message != 'no error message' else 'HTTP 404'})")
        if status == 400:
            return ConfigError(f"{action}: Vault rejected the request ({detail}); check the "
                               "path and params of the secret")
        if status == 405:
            return ConfigError(f"{action}: Vault does not support this operation ({detail}); "
                               "check the secret's 'method'")
        if status == 501:
            return BackendUnavailableError(f"{action}: Vault at {self.settings.address} is not "
                                           f"initialized ({detail})")
        return BackendUnavailableError(f"{action}: Vault at {self.settings.address} failed "
                                       f"({detail})")

    def _forbidden(self, action: str, error: hvac.exceptions.VaultError, detail: str,
                   message: str) -> SecretInitError:
        if is_invalid_token_message(message) or not self.token_is_valid():
            return CredentialsError(
                f"{action}: {self.token_source} is invalid or expired ({detail}); supply a "
                "current token or log in again")
        capability = "update" if (error.method or "").lower() in ("post", "put") else "read"
        api_path = (error.url or "").partition("/v1/")[2] or "the path"
        return PermissionDeniedError(
            f"{action}: permission denied by the token's policies ({detail}); the token needs "
            f"'{capability}' on {api_path} (a KV version 2 policy names <mount>/data/<path>)")

    def token_is_valid(self) -> bool:
        """Look the token up once (lookup-self) to tell an expired token from a policy denial.

        NOTE: a token whose policies lack the default policy cannot look itself up either,
        so its denials are reported as an invalid token.
        """
        with self._token_lock:
            if self._token_valid is None:
                try:
                    self.client.auth.token.lookup_self()
                    self._token_valid = True
                except hvac.exceptions.Forbidden:
                    self._token_valid = False
                except (hvac.exceptions.VaultError, requests.exceptions.RequestException,
                        DeadlinePassed):
                    # The lookup itself failed, so the token's state is unknown. Report a
                    # policy denial and look again on the next 403.
                    return True
            return self._token_valid

    # -- clean-up ---------------------------------------------------------------------------

    def revoke_self(self) -> None:
        """Revoke the client's token (revoke-self), with its own short timeout."""
        self.session.timeout_override = REVOKE_TIMEOUT_SECONDS
        try:
            self.client.auth.token.revoke_self()
        finally:
            self.session.timeout_override = None

    def close(self) -> None:
        self.session.close()


def _short_reason(error: Exception) -> str:
    """Return the innermost reason of a requests error, without the long urllib3 wrapper."""
    reason: Any = error
    while getattr(reason, "args", None):
        inner = reason.args[0]
        if not isinstance(inner, Exception):
            break
        nested = getattr(inner, "reason", None)
        reason = nested if isinstance(nested, Exception) else inner
    text = str(reason)
    return text if len(text) <= 300 else text[:300] + "..."


def _tls_reason_and_fix(error: Exception) -> str:
    reason = _short_reason(error)
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        fix = "set ca_cert (or VAULT_CACERT) to the CA that signed Vault's certificate"
    elif "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        fix = ("Vault asks for a client certificate it accepts; set client_cert and client_key "
               "(or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)")
    else:
        fix = "check the TLS settings (ca_cert, client_cert, client_key) and the address"
    return f"{reason}; {fix}"
