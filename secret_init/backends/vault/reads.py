"""Turning a secret's path into one Vault request, and sending it.

A KV path is written the way ``vault kv get`` takes it (``secret/web/db``). The mount and
its KV version come from ``GET sys/internal/ui/mounts/<path>``, asked once per mount and
cached, unless the secret sets ``kv_version`` (and ``mount`` for a mount path with more than
one segment). Any other engine's path (``database/creds/web``) is read as it is written.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import hvac.exceptions

from ...deadline import Deadline
from ...errors import (BackendUnavailableError, ConfigError, NotFoundError, PermissionDeniedError,
                       SecretDeletedError, SecretInitError)
from ..base import Fetched, Lease
from .client import VaultConnection, is_invalid_token_message, vault_message

log = logging.getLogger(__name__)

# Mount types whose secrets are read as KV (``generic`` is the legacy name of ``kv``).
KV_MOUNT_TYPES = ("kv", "generic")


@dataclass(frozen=True)
class VaultRead:
    """One concrete request. Secrets whose paths resolve to the same request share its result,
    so ``secret/web/db`` and ``secret/data/web/db`` are read once, and two keys of one
    dynamic credential come from the same lease."""

    kind: str  # "kv1", "kv2" or "logical"
    mount: str  # without slashes; "" for logical reads
    path: str  # mount-relative for KV, the whole logical path otherwise
    version: int | None = None
    method: str = "GET"
    params_json: str | None = None

    def describe(self) -> str:
        full = f"{self.mount}/{self.path}" if self.mount else self.path
        return full if self.version is None else f"{full} version {self.version}"


@dataclass(frozen=True)
class MountInfo:
    """A mount as sys/internal/ui/mounts reports it."""

    path: str  # without the trailing slash
    type: str
    kv_version: int | None  # None when the mount is not KV


class MountCache:
    """Mount lookups, one request per mount, shared by the reading threads.

    Vault rejects a mount nested inside another, so the first cached mount whose path is a
    prefix of a secret's path is its mount. Threads resolving paths that start with the
    same first segment wait for each other, so a mount is looked up once even when many of
    its secrets are resolved at the same time.
    """

    def __init__(self, connection: VaultConnection) -> None:
        self.connection = connection
        self._mounts: list[MountInfo] = []
        self._lock = threading.Lock()
        self._segment_locks: dict[str, threading.Lock] = {}
        self._endpoint_missing = False

    def _cached(self, path: str) -> MountInfo | None:
        with self._lock:
            for mount in self._mounts:
                if path == mount.path or path.startswith(mount.path + "/"):
                    return mount
        return None

    def lookup(self, path: str, deadline: Deadline) -> MountInfo:
        """Return the mount of ``path``, asking Vault when no cached mount covers it."""
        first_segment = path.split("/", 1)[0]
        with self._lock:
            segment_lock = self._segment_locks.setdefault(first_segment, threading.Lock())
        with segment_lock:
            cached = self._cached(path)
            if cached is not None:
                return cached
            if self._endpoint_missing:
                return MountInfo(path=first_segment, type="kv", kv_version=1)
            mount = self._ask(path, deadline)
            with self._lock:
                self._mounts.append(mount)
            return mount

    def _ask(self, path: str, deadline: Deadline) -> MountInfo:
        connection = self.connection
        client = connection.client
        request_path = f"sys/internal/ui/mounts/{quote(path)}"
        action = f"look up the mount of {path}"

        def request() -> Any:
            try:
                return client.adapter.get(f"/v1/{request_path}")
            except hvac.exceptions.InvalidPath:
                return None
            except hvac.exceptions.Forbidden as error:
                message = vault_message(error)
                if is_invalid_token_message(message) or not connection.token_is_valid():
                    raise  # mapped by the connection to an invalid-token error
                raise PermissionDeniedError(
                    f"cannot detect the mount and KV version of {path}: GET {request_path} "
                    f"was denied (HTTP 403: {message}). Either the mount does not exist or "
                    "the token may not query it. If the path is right, set 'kv_version: 2' "
                    "(or 1) on the secret to skip detection, with 'mount' when the mount path "
                    "has more than one segment; for another engine set 'method: GET'") from None

        response = connection.call(action, request, deadline)
        if response is None:
            # Servers older than the endpoint return 404, and the Vault CLI then assumes KV v1.
            first_segment = path.split("/", 1)[0]
            log.info("Vault at %s has no sys/internal/ui/mounts endpoint; reading %s as KV "
                     "version 1 at mount %s", connection.settings.address, path, first_segment)
            self._endpoint_missing = True
            return MountInfo(path=first_segment, type="kv", kv_version=1)
        return self._parse(path, response)

    def _parse(self, path: str, response: Any) -> MountInfo:
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            raise ConfigError(f"Vault's mount lookup for {path} returned no mount path")
        mount_path = data["path"].strip("/")
        namespace = self.connection.settings.namespace
        # A mount in a parent namespace is reported with that namespace's prefix.
        if namespace and not _under(path, mount_path) and mount_path.startswith(namespace + "/"):
            mount_path = mount_path[len(namespace) + 1:]
        if not _under(path, mount_path):
            raise ConfigError(f"Vault reports mount '{data['path']}' for {path}, which is not a "
                              "prefix of the path; set 'mount' and 'kv_version' on the secret")
        mount_type = str(data.get("type") or "")
        kv_version = None
        if mount_type in KV_MOUNT_TYPES:
            options = data.get("options") or {}
            kv_version = 2 if str(options.get("version") or "1") == "2" else 1
        log.debug("Vault mount %s/ has type %s%s", mount_path, mount_type,
                  f" (KV version {kv_version})" if kv_version else "")
        return MountInfo(path=mount_path, type=mount_type, kv_version=kv_version)


def _under(path: str, mount_path: str) -> bool:
    return bool(mount_path) and (path == mount_path or path.startswith(mount_path + "/"))


def plan_read(reference: Any, mounts: MountCache, deadline: Deadline) -> VaultRead:
    """Resolve a VaultReference to the request that reads it."""
    path: str = reference.path
    params_json = reference.params_json
    if reference.method is not None:
        return VaultRead(kind="logical", mount="", path=path, method=reference.method,
                         params_json=params_json)

    if reference.kv_version is not None:
        mount_path = reference.mount or path.split("/", 1)[0]
        mount = MountInfo(path=mount_path, type="kv", kv_version=reference.kv_version)
    else:
        mount = mounts.lookup(path, deadline)
        if reference.mount is not None and reference.mount != mount.path:
            raise ConfigError(f"the secret sets mount '{reference.mount}', but Vault reports "
                              f"that {path} is under mount '{mount.path}'; fix or remove 'mount'")

    if mount.kv_version is None:
        if reference.version is not None:
            raise ConfigError(f"{path} is on a '{mount.type}' mount, not KV version 2; "
                              "'version' applies only to KV version 2 secrets")
        method = "POST" if params_json is not None else "GET"
        return VaultRead(kind="logical", mount="", path=path, method=method,
                         params_json=params_json)

    if params_json is not None:
        raise ConfigError(f"{path} is a KV secret, and KV reads take no 'params'; remove "
                          "'params', or set 'method' for another engine's path")
    relative = path[len(mount.path):].strip("/")
    if not relative:
        raise ConfigError(f"{path} names the KV mount '{mount.path}' itself; add the secret's "
                          f"path, for example {mount.path}/app/config")
    if mount.kv_version == 1:
        if reference.version is not None:
            raise ConfigError(f"{path} is on KV version 1 mount '{mount.path}', which keeps no "
                              "versions; remove 'version'")
        return VaultRead(kind="kv1", mount=mount.path, path=relative)

    if relative.startswith("data/"):
        # The API form <mount>/data/<path> of a KV v2 secret. Reading it as written would
        # request <mount>/data/data/<path>; the user means <path>. A key whose name really
        # starts with "data/" is reachable by writing <mount>/data/data/<name>.
        stripped = relative[len("data/"):]
        log.info("reading %s as %s/%s: '%s/data/' is the API form of KV version 2 paths; "
                 "write the path the way 'vault kv get' takes it", path, mount.path, stripped,
                 mount.path)
        relative = stripped
    return VaultRead(kind="kv2", mount=mount.path, path=relative, version=reference.version)


def read(connection: VaultConnection, plan: VaultRead, deadline: Deadline) -> Fetched:
    """Send the request of ``plan`` with retries; return the value, its version and lease."""
    if plan.kind == "kv2":
        return _read_kv2(connection, plan, deadline)
    client = connection.client
    if plan.kind == "kv1":
        response = connection.call(
            f"read {plan.describe()}",
            lambda: client.secrets.kv.v1.read_secret(path=plan.path, mount_point=plan.mount),
            deadline)
        return Fetched(value=_data_of(response, plan), version=None)

    params = json.loads(plan.params_json) if plan.params_json is not None else None
    url = f"/v1/{quote(plan.path)}"
    if plan.method == "GET":
        function = lambda: client.adapter.get(url, params=params)  # noqa: E731
    else:
        function = lambda: client.adapter.post(url, json=params or {})  # noqa: E731
    response = connection.call(f"{plan.method} {plan.describe()}", function, deadline)
    _check_json(response, plan)
    lease = None
    if response.get("lease_id"):
        lease = Lease(lease_id=response["lease_id"],
                      duration_seconds=int(response.get("lease_duration") or 0),
                      renewable=bool(response.get("renewable")))
    return Fetched(value=_data_of(response, plan), version=None, lease=lease)


def _check_json(response: Any, plan: VaultRead) -> None:
    """Raise for a response hvac did not parse: a 204, or a 200 whose body is not JSON."""
    if isinstance(response, dict):
        return
    status = getattr(response, "status_code", None)
    if status == 200:
        content_type = response.headers.get("Content-Type", "none")
        raise BackendUnavailableError(
            f"{plan.describe()}: Vault returned HTTP 200 with a body that is not JSON "
            f"(Content-Type {content_type}); is the address that of a proxy or another server?")
    raise NotFoundError(f"{plan.describe()}: Vault returned HTTP {status} with no data")


def _data_of(response: Any, plan: VaultRead) -> Any:
    _check_json(response, plan)
    if response.get("data") is None:
        raise NotFoundError(f"{plan.describe()}: Vault returned no data")
    return response["data"]


def _read_kv2(connection: VaultConnection, plan: VaultRead, deadline: Deadline) -> Fetched:
    client = connection.client
    where = f"{plan.mount}/{plan.path}"

    def request() -> Any:
        try:
            return client.secrets.kv.v2.read_secret_version(
                path=plan.path, version=plan.version, mount_point=plan.mount,
                raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath as error:
            raise _kv2_not_found(error, plan, where) from None

    response = connection.call(f"read {plan.describe()}", request, deadline)
    _check_json(response, plan)
    data = response.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise NotFoundError(f"{plan.describe()}: Vault returned no secret data")
    metadata = data.get("metadata") or {}
    version = metadata.get("version")
    return Fetched(value=data["data"], version=str(version) if version is not None else None)


def _kv2_not_found(error: Any, plan: VaultRead, where: str) -> SecretInitError:
    """Tell a deleted or destroyed version from a missing secret (all three are HTTP 404)."""
    body = error.json if isinstance(error.json, dict) else {}
    data = body.get("data") if isinstance(body.get("data"), dict) else {}
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else None
    version_label = f"version {plan.version}" if plan.version is not None else "the latest version"
    if metadata is not None:
        version = metadata.get("version", plan.version)
        version_label = f"version {version}" + ("" if plan.version is not None else " (the latest)")
        if metadata.get("destroyed"):
            return SecretDeletedError(
                f"{where}: {version_label} was destroyed and cannot be recovered; write a new version "
                "or pin 'version' to a live one. secret-init does not fall back to an older "
                "version")
        if metadata.get("deletion_time"):
            return SecretDeletedError(
                f"{where}: {version_label} was deleted at {metadata['deletion_time']}; restore it "
                f"with 'vault kv undelete -versions={version} {where}' or pin 'version' to a "
                "live one. secret-init does not fall back to an older version")
    if body.get("warnings"):
        return NotFoundError(f"{where}: Vault rejected the KV version 2 request: "
                             f"{vault_message(error)}")
    if plan.version is not None:
        return NotFoundError(f"{where}: {version_label} does not exist in Vault (HTTP 404)")
    return NotFoundError(f"{where}: secret not found in Vault (HTTP 404); check the path "
                         f"under mount '{plan.mount}'")
