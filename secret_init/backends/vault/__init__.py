"""The ``vault`` backend: secrets from HashiCorp Vault through hvac.

Backend fields (each falls back to the variable the Vault CLI reads)::

    backends:
      vault:
        type: vault
        address: https://vault.example.com:8200   # VAULT_ADDR
        namespace: team-a                         # VAULT_NAMESPACE (Enterprise, HCP)
        ca_cert: /etc/ssl/vault-ca.pem            # VAULT_CACERT
        ca_path: /etc/ssl/vault-cas/              # VAULT_CAPATH (a hashed OpenSSL folder)
        client_cert: /etc/vault/client.pem       # VAULT_CLIENT_CERT
        client_key: /etc/vault/client-key.pem    # VAULT_CLIENT_KEY
        skip_verify: false                        # VAULT_SKIP_VERIFY
        concurrency: 8                            # parallel reads
        request_timeout: 30s                      # per request, cut by the run's deadline
        auth:
          method: approle                         # token | approle | kubernetes | jwt
          mount: approle                          # defaults to the method's name
          role_id_file: /etc/vault/role-id        # or role_id, or VAULT_ROLE_ID
          secret_id_file: /run/vault/secret-id    # or VAULT_SECRET_ID
          remove_secret_id_file: true

Other methods: ``token`` reads ``token_file``, else VAULT_TOKEN, else ~/.vault-token;
``kubernetes`` takes ``role`` and ``token_path`` (default: the service account token);
``jwt`` takes ``role`` and ``token_file`` or ``token_env``.

Secret fields: ``path`` as ``vault kv get`` takes it (``secret/web/db``), ``version`` (KV
version 2), ``kv_version`` and ``mount`` to skip mount detection, and for other engines
``method`` (GET or POST) and ``params`` (the POST body, or the query of a GET).

Proxies: HTTPS_PROXY, HTTP_PROXY and NO_PROXY are honoured as the Vault CLI honours them,
except that a loopback address is always reached directly. .netrc and REQUESTS_CA_BUNDLE are
ignored; use the fields above.

Tokens: a token obtained by a login is revoked (revoke-self) after the fetch, unless a
fetched secret holds a lease, because revoking a token revokes the leases created with it.
A token the user supplied is never revoked.

Only the standard library is imported at module level; hvac loads when a fetch starts.
"""

from __future__ import annotations

import copy
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence
import threading
import time

from ...deadline import Deadline
from ...errors import ConfigError, SecretInitError
from ...fields import Fields
from ..base import Backend, BackendContext, Fetched, KeyPath, Reference
from .config import MISSING_ADDRESS, VaultSettings, read_settings

if TYPE_CHECKING:
    from .auth import Session
    from .client import VaultConnection
    from .reads import VaultRead

log = logging.getLogger(__name__)

READ_METHODS = ("GET", "POST")


@dataclass(frozen=True)
class VaultReference(Reference):
    """A Vault path and the secret's fields that choose how to read it."""

    path: str
    version: int | None = None
    mount: str | None = None
    kv_version: int | None = None
    method: str | None = None
    # Canonical JSON (sorted keys) so that equal params compare and hash equal.
    params_json: str | None = None

    def describe(self) -> str:
        where = f"{self.backend}:{self.path}"
        if self.version is not None:
            where += f" version {self.version}"
        if self.params_json is not None:
            # Parameter names only: a value may be sensitive.
            where += f" ({', '.join(sorted(json.loads(self.params_json)))})"
        return where


def normalize_path(path: str) -> str | None:
    """Return ``path`` without leading, trailing or doubled slashes; None if it is invalid."""
    segments = [segment for segment in path.strip().split("/") if segment]
    if not segments or any(segment in (".", "..") for segment in segments):
        return None
    return "/".join(segments)


def _check_params(value: Any, entry: Fields) -> str:
    for key, item in value.items():
        scalar = isinstance(item, (str, int, float, bool)) or item is None
        scalar_list = isinstance(item, list) and all(
            isinstance(element, (str, int, float, bool)) for element in item)
        if not isinstance(key, str) or not (scalar or scalar_list):
            raise entry.error("params", f"'{key}' must be a string, number, boolean or a "
                                        "list of them")
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class VaultBackend(Backend):
    """HashiCorp Vault: KV versions 1 and 2, and any other engine's read path."""

    type_name = "vault"
    extra = "vault"
    requires = ("hvac",)

    def __init__(self, name: str, config: Fields, context: BackendContext) -> None:
        super().__init__(name, config, context)
        self.settings: VaultSettings = read_settings(config, context)
        if not self.settings.address:
            self.deferred_error = ConfigError(f"backend '{name}': {MISSING_ADDRESS}")
        self._connection: VaultConnection | None = None
        self._session: Session | None = None
        self._leases: list[str] = []

    # -- manifest -----------------------------------------------------------------------

    def reference(self, entry: Fields) -> tuple[Reference, KeyPath | None]:
        raw_path = entry.string("path", required=True)
        path = normalize_path(raw_path)
        if path is None:
            raise entry.error("path", f"'{raw_path}' is not a Vault path; write it as "
                                      "<mount>/<path>, for example secret/web/db")
        version = entry.integer("version", minimum=1)
        kv_version = entry.integer("kv_version", minimum=1, maximum=2)
        mount = entry.string("mount")
        if mount is not None:
            normalized_mount = normalize_path(mount)
            if normalized_mount is None or not path.startswith(normalized_mount + "/"):
                raise entry.error("mount", f"'{mount}' must be the leading part of the path "
                                           f"'{path}' (the path includes the mount)")
            mount = normalized_mount
        method = entry.string("method")
        if method is not None:
            method = method.upper()
            if method not in READ_METHODS:
                raise entry.error("method", f"'{method}' is not one of: {', '.join(READ_METHODS)}")
        params = entry.string_map("params")
        params_json = _check_params(params, entry) if params is not None else None

        if method is not None:
            for key in ("version", "kv_version", "mount"):
                if entry.has(key):
                    raise entry.error(key, f"applies to KV secrets; 'method' reads {path} "
                                           "from another engine")
        if kv_version is not None:
            if params_json is not None:
                raise entry.error("params", "KV reads take no params; remove 'params' or "
                                            "'kv_version'")
            if mount is None and "/" not in path:
                raise entry.error("path", f"'{path}' has no secret path after the mount")
            if kv_version == 1 and version is not None:
                raise entry.error("version", "KV version 1 keeps no versions; remove "
                                             "'version' or set 'kv_version: 2'")
        return VaultReference(self.name, path, version=version, mount=mount,
                              kv_version=kv_version, method=method,
                              params_json=params_json), None

    def consumed_environment(self) -> set[str]:
        return set(self.settings.consumed_environment)

    # -- fetch --------------------------------------------------------------------------

    def fetch(self, references: Sequence[Reference],
              deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        if not references:
            return {}
        try:
            connection = self._connect(deadline)
        except SecretInitError as error:
            return {reference: _copy_error(error) for reference in references}

        from .reads import MountCache

        mounts = MountCache(connection)
        reads = _ReadOnce()
        workers = min(self.settings.concurrency, len(references))
        results: dict[Reference, Fetched | SecretInitError] = {}
        with ThreadPoolExecutor(max_workers=workers,
                                thread_name_prefix=f"vault-{self.name}") as pool:
            futures = {reference: pool.submit(self._fetch_one, connection, mounts, reads,
                                              reference, deadline)
                       for reference in references}
            for reference, future in futures.items():
                results[reference] = future.result()
        self._leases.extend(sorted({result.lease.lease_id for result in results.values()
                                    if isinstance(result, Fetched) and result.lease}))
        return results

    def _connect(self, deadline: Deadline) -> VaultConnection:
        from .auth import authenticate
        from .client import VaultConnection

        if self._connection is None:
            self._connection = VaultConnection(self.settings, self.name)
        self._connection.set_deadline(deadline)
        if self._session is None:
            self._session = authenticate(self._connection, self.settings.auth,
                                         self.context.environ, deadline)
        return self._connection

    def _fetch_one(self, connection: VaultConnection, mounts: Any, reads: "_ReadOnce",
                   reference: Reference, deadline: Deadline) -> Fetched | SecretInitError:
        from .reads import plan_read, read

        assert isinstance(reference, VaultReference)
        try:
            plan = plan_read(reference, mounts, deadline)
            return reads.run(plan, lambda: read(connection, plan, deadline), self.name)
        except SecretInitError as error:
            return _copy_error(error)

    # -- clean-up -------------------------------------------------------------------------

    def close(self) -> None:
        connection, session = self._connection, self._session
        self._session = None
        if connection is None:
            return
        try:
            if session is not None and session.from_login:
                self._revoke_login_token(connection, session)
        finally:
            connection.close()
            self._connection = None

    def _revoke_login_token(self, connection: VaultConnection, session: Session) -> None:
        if self._leases:
            log.info("vault %s: keeping the login token (accessor %s) because %d fetched "
                     "secret(s) hold leases created with it (%s); revoking the token would "
                     "revoke them. It expires with its TTL of %s s", self.name,
                     session.accessor, len(self._leases), ", ".join(self._leases),
                     session.lease_seconds)
            return
        connection.set_deadline(None)
        connection.revoke_self()
        log.info("vault %s: revoked the login token (accessor %s)", self.name, session.accessor)


class _ReadOnce:
    """Runs each distinct VaultRead once; other threads asking for it wait for that result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[Any, Future] = {}

    def run(self, plan: VaultRead, function: Any, backend_name: str) -> Fetched | SecretInitError:
        with self._lock:
            future = self._futures.get(plan)
            owner = future is None
            if owner:
                future = Future()
                self._futures[plan] = future
        assert future is not None
        if owner:
            started = time.monotonic()
            try:
                fetched = function()
            except SecretInitError as error:
                future.set_result(error)
            except BaseException as error:
                future.set_exception(error)
                raise
            else:
                log.debug("vault %s: read %s%s in %d ms", backend_name, plan.describe(),
                          f" (version {fetched.version})" if fetched.version and plan.version is None else "",
                          (time.monotonic() - started) * 1000)
                future.set_result(fetched)
        result = future.result()
        if isinstance(result, SecretInitError):
            raise _copy_error(result)
        return result


def _copy_error(error: SecretInitError) -> SecretInitError:
    """Return a separate error instance, because the core tags each with its secret's name."""
    duplicate = copy.copy(error)
    duplicate.secret = None
    return duplicate
