"""In-process HTTP emulator of the HashiCorp Vault API, for tests that drive hvac.

No Vault binary is available to the test suite, so the Vault backend of
secret-init is tested against this server. It copies the wire behaviour of a
Vault 1.17+ community server: status codes, JSON envelopes with Go field order
and sorted map keys, error bodies, the raw 404 bodies of the KV v2 plugin, and
the `Content-Type: application/json` / `Cache-Control: no-store` headers.

The server binds 127.0.0.1 on an ephemeral port and uses only the standard
library, except transit encryption, which imports `cryptography` (AES-256-GCM)
when a transit request arrives.

Usage::

    with VaultEmulator() as vault:
        vault.enable_kv("secret", version=2)
        vault.kv_put("secret", "web/db", {"password": "x"})
        client = hvac.Client(url=vault.url, token=vault.root_token)

Not emulated: response wrapping (X-Vault-Wrap-TTL is logged and ignored),
PATCH requests, standby forwarding and redirects (only sys/health reports a
standby), identity groups and the AWS auth method.

Handler delays from `set_latency` wait on an event in the handler thread, so
they overlap across connections and end early when the server stops.

Policies are modelled as per-token path patterns rather than HCL policies.
`allow` patterns grant capabilities and `deny` patterns win over any allow. A
token whose policies include "default" also gets the paths of Vault's built-in
default policy (lookup-self, renew-self, revoke-self, lease renew and lookup).
Vault applies the most specific matching rule, while the emulator applies the
union of all matching allow rules. The two differ only when a narrower rule
grants fewer capabilities than a broader one.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import socket
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

log = logging.getLogger(__name__)

# System default lease TTL (768h), used for tokens and KV v1 reads.
DEFAULT_LEASE_TTL = 2764800
# Version string reported by sys/health and sys/seal-status.
VAULT_VERSION = "1.18.1"

PERMISSION_DENIED = "permission denied"
INVALID_TOKEN = "invalid token"
SEALED = "Vault is sealed"
# Body that Go's net/http ServeMux returns for paths outside /v1/.
GO_NOT_FOUND = b"404 page not found\n"

_BASE62 = string.ascii_letters + string.digits

# Paths of Vault's built-in "default" policy that matter to a client, with
# their capabilities (from `vault read sys/policy/default`).
DEFAULT_POLICY_PATHS: dict[str, set[str]] = {
    "auth/token/lookup-self": {"read"},
    "auth/token/renew-self": {"update"},
    "auth/token/revoke-self": {"update"},
    "sys/capabilities-self": {"update"},
    "sys/renew": {"update"},
    "sys/leases/renew": {"update"},
    "sys/leases/lookup": {"update"},
    "cubbyhole/*": {"create", "read", "update", "delete", "list"},
    "sys/wrapping/wrap": {"update"},
    "sys/wrapping/lookup": {"update"},
    "sys/wrapping/unwrap": {"update"},
    "sys/tools/hash": {"update"},
    "sys/tools/hash/*": {"update"},
    "sys/internal/ui/resultant-acl": {"read"},
}

ALL_CAPABILITIES = frozenset({"create", "read", "update", "delete", "list", "patch", "sudo"})

# Paths the rate-limit quota never applies to (Vault's default exempt list).
# NOTE: taken from memory of vault/quotas defaults, not re-read from source.
RATE_LIMIT_EXEMPT_PATHS = (
    "sys/health",
    "sys/seal-status",
    "sys/unseal",
    "sys/generate-root/attempt",
    "sys/generate-root/update",
    "sys/generate-recovery-token/attempt",
    "sys/generate-recovery-token/update",
)


# ---------------------------------------------------------------------------
# Go-compatible JSON and time formatting
# ---------------------------------------------------------------------------


class GoStruct(dict):
    """JSON object written in insertion order, like a Go struct.

    Plain dicts are written with sorted keys, as Go's encoder writes maps.
    """


def _to_go_order(value: Any) -> Any:
    if isinstance(value, GoStruct):
        return {key: _to_go_order(item) for key, item in value.items()}
    if isinstance(value, dict):
        return {key: _to_go_order(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_to_go_order(item) for item in value]
    return value


def go_json(value: Any) -> str:
    """Encode *value* as Go's encoding/json does: compact, sorted map keys, HTML-escaped."""
    text = json.dumps(_to_go_order(value), separators=(",", ":"), ensure_ascii=False)
    # Go escapes these characters even inside strings; they never occur outside strings.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def multierror(*messages: str) -> str:
    """Format messages as hashicorp/go-multierror's default formatter does."""
    if len(messages) == 1:
        return f"1 error occurred:\n\t* {messages[0]}\n\n"
    points = "\n\t".join(f"* {message}" for message in messages)
    return f"{len(messages)} errors occurred:\n\t{points}\n\n"


def rfc3339nano(ns: int | None) -> str:
    """Format a Unix time in nanoseconds as Go's time.RFC3339Nano in UTC ("" for None)."""
    if ns is None:
        return ""
    seconds, fraction = divmod(ns, 10**9)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def go_duration(seconds: int) -> str:
    """Format whole seconds as Go's time.Duration.String() ("0s", "1h0m0s", "3h25m19s")."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> int:
    """Parse a Vault duration (seconds as int or string, or Go syntax such as "1h30m") to seconds.

    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            raise ValueError(f"invalid duration {value!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}")
    return int(total)


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def _new_token_id() -> str:
    return "hvs." + _random_base62(24)


# ---------------------------------------------------------------------------
# Public records
# ---------------------------------------------------------------------------


@dataclass
class Request:
    """One HTTP request as the emulator received it, in arrival order in `VaultEmulator.requests`."""

    method: str
    path: str  # percent-decoded URL path, e.g. "/v1/secret/data/web/db"
    raw_path: str  # URL path as sent, still percent-encoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # the last value of each header, names as sent
    header_items: list[tuple[str, str]]  # every header line in order
    body: Any  # parsed JSON (or form) body, None when empty or unparseable
    raw_body: bytes
    timestamp: float  # time.time() at arrival
    client_address: tuple[str, int]
    status: int | None = None  # response status; None while running or when the connection was dropped
    finished: float | None = None  # time.time() just before the response was sent

    def header(self, name: str) -> str | None:
        """Return the last value of header *name* (case-insensitive), or None."""
        found = None
        for key, value in self.header_items:
            if key.lower() == name.lower():
                found = value
        return found

    @property
    def token(self) -> str | None:
        """Value of the X-Vault-Token header."""
        return self.header("X-Vault-Token")

    @property
    def namespace(self) -> str | None:
        """Value of the X-Vault-Namespace header."""
        return self.header("X-Vault-Namespace")

    @property
    def vault_request(self) -> str | None:
        """Value of the X-Vault-Request header (hvac sends "true")."""
        return self.header("X-Vault-Request")

    @property
    def logical_path(self) -> str:
        """Request path after "/v1/", e.g. "secret/data/web/db"."""
        return self.path[len("/v1/"):] if self.path.startswith("/v1/") else self.path.lstrip("/")


@dataclass
class Token:
    """A token in the emulator's token store."""

    id: str
    accessor: str
    policies: list[str]
    allow: dict[str, set[str]]
    deny: list[str]
    ttl: int  # seconds granted at creation or last renewal, 0 for non-expiring
    creation_time: float
    expire_time: float | None
    renewable: bool
    num_uses: int
    path: str = "auth/token/create"
    display_name: str = "token"
    meta: dict[str, str] | None = None
    entity_id: str = ""
    orphan: bool = True
    token_type: str = "service"
    namespace: str = ""
    explicit_max_ttl: int = 0
    last_renewal: float | None = None
    is_root: bool = False
    revoked: bool = False


@dataclass
class Lease:
    """A lease on a dynamic secret."""

    id: str
    issue_time: float
    expire_time: float
    ttl: int
    max_ttl: int
    renewable: bool
    token_id: str | None
    last_renewal: float | None = None
    revoked: bool = False


class VaultError(Exception):
    """Error that a `set_generic` callable raises to return a Vault error body."""

    def __init__(self, status: int, *messages: str):
        super().__init__(", ".join(messages) or f"HTTP {status}")
        self.status = status
        self.messages = list(messages)


# ---------------------------------------------------------------------------
# Internal request and response objects
# ---------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop_connection: bool = False


def _json_response(status: int, value: Any, *, raw: bool = False) -> _Response:
    """JSON response; *raw* omits the trailing newline, as logical.RespondWithStatusCode bodies do."""
    text = go_json(value)
    if not raw:
        text += "\n"
    return _Response(status, text.encode())


def _error_response(status: int, *messages: str) -> _Response:
    return _json_response(status, {"errors": list(messages)})


def _no_content() -> _Response:
    return _Response(204)


@dataclass
class _Call:
    """Logical request after HTTP parsing, as a Vault backend receives it."""

    request: Request
    path: str  # namespace-relative logical path
    operation: str  # read, list, update, delete
    data: dict[str, Any]
    namespace: str
    token: Token | None = None
    final_use: bool = False


@dataclass
class _Injection:
    pattern: str
    status: int
    body: Any
    remaining: int
    headers: dict[str, str]
    drop_connection: bool
    method: str | None
    content_type: str


@dataclass
class _RateLimit:
    rate: int
    interval: float
    path: str | None
    response_headers: bool
    block_interval: float | None
    window_start: float = 0.0
    count: int = 0
    blocked_until: float = 0.0


# ---------------------------------------------------------------------------
# Path patterns
# ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a Vault policy path ("*" suffix = prefix glob, "+" = one segment)."""
    parts = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "+":
            parts.append("[^/]*")
        elif last and segment.endswith("*"):
            parts.append(re.escape(segment[:-1]) + ".*")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts), re.DOTALL)


def path_matches(pattern: str, path: str) -> bool:
    """Return whether a Vault policy path pattern matches *path*."""
    return _pattern_regex(pattern).fullmatch(path) is not None


def _pattern_reaches_under(pattern: str, mount_path: str) -> bool:
    """Return whether *pattern* can match the mount root or any path below it (Vault's hasMountAccess)."""
    if path_matches(pattern, mount_path):
        return True
    if "+" not in pattern:
        return pattern.startswith(mount_path)
    mount_segments = mount_path.rstrip("/").split("/")
    pattern_segments = pattern.split("/")
    for index, mount_segment in enumerate(mount_segments):
        if index >= len(pattern_segments):
            return False
        segment = pattern_segments[index]
        if index == len(pattern_segments) - 1 and segment.endswith("*"):
            return mount_segment.startswith(segment[:-1])
        if segment not in ("+", mount_segment):
            return False
    return len(pattern_segments) > len(mount_segments)


def _normalise_pattern(path: str) -> str:
    path = path.strip()
    if path.startswith("/v1/"):
        path = path[len("/v1/"):]
    return path.lstrip("/")


def _clean_url_path(path: str) -> str:
    """Clean a URL path as Go's ServeMux does (collapse "//", resolve "." and ".."), keeping a trailing slash."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    cleaned = "/" + "/".join(segments)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


# ---------------------------------------------------------------------------
# Mounts
# ---------------------------------------------------------------------------


class _Mount:
    """A mounted secrets engine or auth method."""

    type_name = ""
    description = ""

    def __init__(self, emulator: VaultEmulator, path: str):
        self.emulator = emulator
        self.path = path  # with trailing "/", e.g. "secret/" or "auth/approle/"
        self.uuid = str(uuid.uuid4())
        self.accessor = f"{self.type_name}_{secrets.token_hex(4)}"
        self.options: dict[str, str] | None = None
        self.login_paths: tuple[str, ...] = ()
        self.local = False

    def mount_info(self) -> dict[str, Any]:
        return {
            "accessor": self.accessor,
            "config": {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0},
            "description": self.description,
            "external_entropy_access": False,
            "local": self.local,
            "options": self.options,
            "plugin_version": "",
            "running_plugin_version": f"v{VAULT_VERSION}+builtin.vault",
            "running_sha256": "",
            "seal_wrap": False,
            "type": self.type_name,
            "uuid": self.uuid,
        }

    def handle(self, call: _Call, rel: str) -> _Response:
        raise NotImplementedError

    def envelope(self, data: Any, **kwargs: Any) -> GoStruct:
        return self.emulator._envelope(data, mount_type=self.type_name, **kwargs)


def _unsupported_path() -> _Response:
    # The router's ErrUnsupportedPath reaches the client wrapped in a multierror.
    return _error_response(404, multierror("unsupported path"))


def _unsupported_operation() -> _Response:
    # NOTE: the multierror rendering of "unsupported operation" is inferred
    # from how router errors are wrapped; the 405 status is from RespondErrorCommon.
    return _error_response(405, multierror("unsupported operation"))


@dataclass
class _KvVersion:
    data: dict[str, Any] | None
    created_ns: int
    deletion_ns: int | None = None
    destroyed: bool = False


@dataclass
class _KvKey:
    created_ns: int
    updated_ns: int
    versions: dict[int, _KvVersion] = field(default_factory=dict)
    current_version: int = 0
    oldest_version: int = 0
    max_versions: int = 0
    cas_required: bool = False
    delete_version_after: int = 0
    custom_metadata: dict[str, str] | None = None


class _KvV1Mount(_Mount):
    type_name = "kv"
    description = "key/value secret storage"

    def __init__(self, emulator: VaultEmulator, path: str):
        super().__init__(emulator, path)
        self.options = {"version": "1"}
        self.store: dict[str, dict[str, Any]] = {}

    def handle(self, call: _Call, rel: str) -> _Response:
        if call.operation == "read":
            stored = self.store.get(rel)
            if stored is None:
                return _error_response(404)
            return _json_response(200, self.envelope(stored, lease_duration=self._lease_duration(stored)))
        if call.operation == "list":
            keys = _list_children(self.store.keys(), rel)
            if not keys:
                return _error_response(404)
            return _json_response(200, self.envelope({"keys": keys}))
        if call.operation == "update":
            if not call.data:
                # NOTE: status and wording for an empty KV v1 write are unverified.
                return _error_response(400, "missing data fields")
            self.store[rel] = dict(call.data)
            return _no_content()
        if call.operation == "delete":
            self.store.pop(rel, None)
            return _no_content()
        return _unsupported_operation()

    @staticmethod
    def _lease_duration(stored: dict[str, Any]) -> int:
        # A "ttl" (or legacy "lease") key parseable as a duration sets the lease duration.
        for key in ("ttl", "lease"):
            if key in stored:
                try:
                    return parse_duration(stored[key])
                except ValueError:
                    pass
        return DEFAULT_LEASE_TTL


def _list_children(keys: Any, prefix: str) -> list[str]:
    """List the direct children of *prefix*; folders end with "/"."""
    children = set()
    for key in keys:
        if not key.startswith(prefix) or key == prefix:
            continue
        rest = key[len(prefix):]
        head, slash, _ = rest.partition("/")
        children.add(head + slash)
    return sorted(children)


_KV2_ROOTS = ("data", "metadata", "delete", "undelete", "destroy")
_KV2_SUBCOMMAND = {"read": "get", "update": "put", "list": "list", "delete": "delete", "patch": "patch"}


class _KvV2Mount(_Mount):
    type_name = "kv"
    description = "key/value secret storage"

    def __init__(self, emulator: VaultEmulator, path: str):
        super().__init__(emulator, path)
        self.options = {"version": "2"}
        self.keys: dict[str, _KvKey] = {}
        self.max_versions = 0
        self.cas_required = False
        self.delete_version_after = 0

    # -- wire handlers -----------------------------------------------------

    def handle(self, call: _Call, rel: str) -> _Response:
        head, slash, key = rel.partition("/")
        operation = call.operation
        # Patterns follow the KV plugin: data/ needs a key without a trailing
        # slash, and anything unmatched reaches the plugin's pathInvalid.
        if head == "config" and not slash:
            return self._config(call)
        if head == "data" and slash and key and not key.endswith("/"):
            return self._data(call, key)
        if head == "metadata" and slash:
            return self._metadata(call, key)
        if head in ("delete", "undelete", "destroy") and slash:
            if operation != "update":
                return _unsupported_operation()
            return self._version_op(call, head, key)
        return self._invalid_path(call, rel)

    def _invalid_path(self, call: _Call, rel: str) -> _Response:
        # pathInvalid of the KV plugin: a raw 404 whose only content is a warning.
        if rel in _KV2_ROOTS:
            warning = "Non-listing operations on the root of a K/V v2 mount are not supported."
        else:
            warning = (
                "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate "
                "API endpoints to use. If using the Vault CLI, use "
                f"'vault kv {_KV2_SUBCOMMAND.get(call.operation, '')}' for this operation."
            )
        return self.emulator._raw_response(404, None, warnings=[warning])

    def _config(self, call: _Call) -> _Response:
        if call.operation == "read":
            return _json_response(200, self.envelope({
                "cas_required": self.cas_required,
                "delete_version_after": go_duration(self.delete_version_after),
                "max_versions": self.max_versions,
            }))
        if call.operation == "update":
            if "max_versions" in call.data:
                self.max_versions = int(call.data["max_versions"])
            if "cas_required" in call.data:
                self.cas_required = bool(call.data["cas_required"])
            if "delete_version_after" in call.data:
                self.delete_version_after = parse_duration(call.data["delete_version_after"])
            return _no_content()
        return _unsupported_operation()

    def _data(self, call: _Call, key: str) -> _Response:
        if call.operation == "read":
            return self._read_version(call, key)
        if call.operation == "update":
            data = call.data.get("data")
            if not isinstance(data, dict):
                return _error_response(400, "no data provided")
            cas = None
            options = call.data.get("options")
            if isinstance(options, dict) and "cas" in options:
                try:
                    cas = int(options["cas"])
                except (TypeError, ValueError):
                    return _error_response(400, "error parsing check-and-set parameter")
            try:
                entry = self.put(key, data, cas=cas)
            except VaultError as error:
                return _error_response(error.status, *error.messages)
            version = entry.versions[entry.current_version]
            return _json_response(200, self.envelope(self._version_metadata(entry, entry.current_version, version)))
        if call.operation == "delete":
            entry = self.keys.get(key)
            if entry is not None and entry.current_version:
                self.delete_versions(key, [entry.current_version])
            return _no_content()
        return _unsupported_operation()

    def _read_version(self, call: _Call, key: str) -> _Response:
        raw_version = call.data.get("version")
        requested = 0
        if raw_version not in (None, ""):
            try:
                requested = int(str(raw_version))
            except ValueError:
                # NOTE: message text follows the framework's field conversion
                # error as remembered, not re-read from source.
                return _error_response(400, (
                    f"error converting input {raw_version} for field \"version\": cannot parse '' as int: "
                    f"strconv.ParseInt: parsing \"{raw_version}\": invalid syntax"))
        entry = self.keys.get(key)
        if entry is None:
            return _error_response(404)
        number = requested if requested > 0 else entry.current_version
        version = entry.versions.get(number)
        if version is None:
            return _error_response(404)
        metadata = self._version_metadata(entry, number, version)
        now_ns = time.time_ns()
        deleted = version.deletion_ns is not None and version.deletion_ns < now_ns
        if deleted or version.destroyed:
            return self.emulator._raw_response(404, {"data": None, "metadata": metadata})
        return _json_response(200, self.envelope({"data": version.data, "metadata": metadata}))

    @staticmethod
    def _version_metadata(entry: _KvKey, number: int, version: _KvVersion) -> dict[str, Any]:
        return {
            "created_time": rfc3339nano(version.created_ns),
            "custom_metadata": entry.custom_metadata,
            "deletion_time": rfc3339nano(version.deletion_ns),
            "destroyed": version.destroyed,
            "version": number,
        }

    def _metadata(self, call: _Call, key: str) -> _Response:
        if call.operation == "list":
            keys = _list_children(self.keys.keys(), key)
            if not keys:
                return _error_response(404)
            return _json_response(200, self.envelope({"keys": keys}))
        if call.operation == "read":
            entry = self.keys.get(key)
            if entry is None:
                return _error_response(404)
            versions = {
                str(number): {
                    "created_time": rfc3339nano(version.created_ns),
                    "deletion_time": rfc3339nano(version.deletion_ns),
                    "destroyed": version.destroyed,
                }
                for number, version in entry.versions.items()
            }
            return _json_response(200, self.envelope({
                "cas_required": entry.cas_required,
                "created_time": rfc3339nano(entry.created_ns),
                "current_version": entry.current_version,
                "custom_metadata": entry.custom_metadata,
                "delete_version_after": go_duration(entry.delete_version_after),
                "max_versions": entry.max_versions,
                "oldest_version": entry.oldest_version,
                "updated_time": rfc3339nano(entry.updated_ns),
                "versions": versions,
            }))
        if call.operation == "update":
            try:
                self.set_metadata(
                    key,
                    max_versions=call.data.get("max_versions"),
                    cas_required=call.data.get("cas_required"),
                    delete_version_after=call.data.get("delete_version_after"),
                    custom_metadata=call.data.get("custom_metadata"),
                )
            except ValueError as error:
                return _error_response(400, str(error))
            return _no_content()
        if call.operation == "delete":
            self.keys.pop(key, None)
            return _no_content()
        return _unsupported_operation()

    def _version_op(self, call: _Call, operation: str, key: str) -> _Response:
        raw_versions = call.data.get("versions")
        if isinstance(raw_versions, str):
            raw_versions = [part for part in raw_versions.split(",") if part.strip()]
        try:
            versions = [int(number) for number in (raw_versions or [])]
        except (TypeError, ValueError):
            return _error_response(400, "No version number provided")
        if not versions:
            # NOTE: destroy's wording is assumed to match delete/undelete.
            return _error_response(400, "No version number provided")
        if operation == "delete":
            self.delete_versions(key, versions)
        elif operation == "undelete":
            self.undelete_versions(key, versions)
        else:
            self.destroy_versions(key, versions)
        return _no_content()

    # -- storage operations (shared by the wire and the Python API) -------

    def put(self, key: str, data: dict[str, Any], cas: int | None = None) -> _KvKey:
        now_ns = time.time_ns()
        entry = self.keys.get(key)
        if entry is None:
            entry = _KvKey(created_ns=now_ns, updated_ns=now_ns)
        if cas is not None:
            if cas != entry.current_version:
                raise VaultError(400, "check-and-set parameter did not match the current version")
        elif self.cas_required or entry.cas_required:
            raise VaultError(400, "check-and-set parameter required for this call")
        self.keys[key] = entry
        number = entry.current_version + 1
        after = entry.delete_version_after or self.delete_version_after
        deletion_ns = now_ns + after * 10**9 if after > 0 else None
        entry.versions[number] = _KvVersion(data=json.loads(json.dumps(data)), created_ns=now_ns,
                                           deletion_ns=deletion_ns)
        entry.current_version = number
        entry.updated_ns = now_ns
        limit = entry.max_versions or self.max_versions or 10
        while len(entry.versions) > limit:
            oldest = min(entry.versions)
            del entry.versions[oldest]
            entry.oldest_version = min(entry.versions)
        return entry

    def delete_versions(self, key: str, versions: list[int]) -> None:
        entry = self.keys.get(key)
        if entry is None:
            return
        now_ns = time.time_ns()
        for number in versions:
            version = entry.versions.get(number)
            if version is None or version.destroyed:
                continue
            if version.deletion_ns is not None and version.deletion_ns < now_ns:
                continue
            version.deletion_ns = now_ns

    def undelete_versions(self, key: str, versions: list[int]) -> None:
        entry = self.keys.get(key)
        if entry is None:
            return
        for number in versions:
            version = entry.versions.get(number)
            if version is None or version.destroyed:
                continue
            version.deletion_ns = None

    def destroy_versions(self, key: str, versions: list[int]) -> None:
        entry = self.keys.get(key)
        if entry is None:
            return
        for number in versions:
            version = entry.versions.get(number)
            if version is None:
                continue
            version.destroyed = True
            version.data = None

    def set_metadata(self, key: str, *, max_versions: Any = None, cas_required: Any = None,
                     delete_version_after: Any = None, custom_metadata: Any = None) -> None:
        now_ns = time.time_ns()
        entry = self.keys.get(key)
        if entry is None:
            entry = _KvKey(created_ns=now_ns, updated_ns=now_ns)
            self.keys[key] = entry
        if max_versions is not None:
            entry.max_versions = int(max_versions)
        if cas_required is not None:
            entry.cas_required = bool(cas_required)
        if delete_version_after is not None:
            entry.delete_version_after = parse_duration(delete_version_after)
        if custom_metadata is not None:
            entry.custom_metadata = {str(k): str(v) for k, v in dict(custom_metadata).items()}
        entry.updated_ns = now_ns


@dataclass
class _DatabaseRole:
    ttl: int
    max_ttl: int
    renewable: bool
    allowed: bool


class _DatabaseMount(_Mount):
    type_name = "database"

    def __init__(self, emulator: VaultEmulator, path: str):
        super().__init__(emulator, path)
        self.roles: dict[str, _DatabaseRole] = {}

    def handle(self, call: _Call, rel: str) -> _Response:
        head, slash, role_name = rel.partition("/")
        if head != "creds" or not slash or not role_name:
            return _unsupported_path()
        if call.operation != "read":
            return _unsupported_operation()
        role = self.roles.get(role_name)
        if role is None:
            return _error_response(400, f"unknown role: {role_name}")
        if not role.allowed:
            # A plain Go error from the plugin, hence 500.
            return _error_response(500, f"\"{role_name}\" is not an allowed role")
        lease = self.emulator._create_lease(f"{self.path}creds/{role_name}", role.ttl, role.max_ttl,
                                            role.renewable, call.token)
        if call.final_use:
            # Vault revokes leases created by a token's last use and withholds the secret.
            self.emulator._revoke_lease(lease.id)
            return _error_response(400, "Secret cannot be returned; token had one use left, so leased "
                                        "credentials were immediately revoked.")
        display = call.token.display_name if call.token else "token"
        username = f"v-{display}-{role_name}-{_random_base62(20)}-{int(time.time())}"[:63]
        password = "A1a-" + _random_base62(16)
        return _json_response(200, self.envelope(
            {"username": username, "password": password},
            lease_id=lease.id, renewable=lease.renewable, lease_duration=lease.ttl))


class _TransitMount(_Mount):
    type_name = "transit"

    def __init__(self, emulator: VaultEmulator, path: str):
        super().__init__(emulator, path)
        self.keys: dict[str, list[bytes]] = {}

    def create_key(self, name: str) -> None:
        self.keys.setdefault(name, [secrets.token_bytes(32)])

    def handle(self, call: _Call, rel: str) -> _Response:
        head, slash, key_name = rel.partition("/")
        if head not in ("encrypt", "decrypt") or not slash or not key_name:
            return _unsupported_path()
        if call.operation != "update":
            return _unsupported_operation()
        if head == "encrypt":
            return self._encrypt(call, key_name)
        return self._decrypt(call, key_name)

    def _encrypt(self, call: _Call, key_name: str) -> _Response:
        batch = call.data.get("batch_input")
        if batch is None and "plaintext" not in call.data:
            return _error_response(400, "missing plaintext to encrypt")
        # Encrypting to a missing key creates it (transit upserts on encrypt).
        self.create_key(key_name)
        if batch is not None:
            results = []
            for item in batch:
                try:
                    results.append(self._encrypt_one(key_name, item))
                except VaultError as error:
                    results.append({"error": ", ".join(error.messages)})
            return _json_response(200, self.envelope({"batch_results": results}))
        try:
            result = self._encrypt_one(key_name, call.data)
        except VaultError as error:
            return _error_response(error.status, *error.messages)
        return _json_response(200, self.envelope(result))

    def _encrypt_one(self, key_name: str, item: dict[str, Any]) -> dict[str, Any]:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            plaintext = base64.b64decode(str(item.get("plaintext", "")), validate=True)
        except (binascii.Error, ValueError):
            raise VaultError(400, "failed to base64-decode plaintext") from None
        associated_data = self._decode_associated_data(item)
        versions = self.keys[key_name]
        key_version = int(item.get("key_version") or len(versions))
        if key_version < 1 or key_version > len(versions):
            raise VaultError(400, "invalid key version")
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(versions[key_version - 1]).encrypt(nonce, plaintext, associated_data)
        ciphertext = f"vault:v{key_version}:" + base64.b64encode(nonce + sealed).decode()
        return {"ciphertext": ciphertext, "key_version": key_version}

    def _decrypt(self, call: _Call, key_name: str) -> _Response:
        batch = call.data.get("batch_input")
        if batch is None and not call.data.get("ciphertext"):
            return _error_response(400, "missing ciphertext to decrypt")
        if key_name not in self.keys:
            return _error_response(400, "encryption key not found")
        if batch is not None:
            results = []
            for item in batch:
                try:
                    results.append(self._decrypt_one(key_name, item))
                except VaultError as error:
                    results.append({"error": ", ".join(error.messages)})
            return _json_response(200, self.envelope({"batch_results": results}))
        try:
            result = self._decrypt_one(key_name, call.data)
        except VaultError as error:
            return _error_response(error.status, *error.messages)
        return _json_response(200, self.envelope(result))

    def _decrypt_one(self, key_name: str, item: dict[str, Any]) -> dict[str, Any]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        # Parsing steps and messages follow keysutil.Policy.Decrypt.
        value = str(item.get("ciphertext") or "")
        if not value.startswith("vault:v"):
            raise VaultError(400, "invalid ciphertext: no prefix")
        fields = value[len("vault:v"):].split(":", 1)
        if len(fields) != 2:
            raise VaultError(400, "invalid ciphertext: wrong number of fields")
        try:
            key_version = int(fields[0])
        except ValueError:
            raise VaultError(400, "invalid ciphertext: version number could not be decoded") from None
        key_version = key_version or 1
        versions = self.keys[key_name]
        if key_version > len(versions):
            # NOTE: wording from keysutil as remembered; not re-read from source.
            raise VaultError(400, "invalid ciphertext: version is too new")
        try:
            decoded = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            raise VaultError(400, "invalid ciphertext: could not decode base64") from None
        associated_data = self._decode_associated_data(item)
        try:
            plaintext = AESGCM(versions[key_version - 1]).decrypt(decoded[:12], decoded[12:], associated_data)
        except (InvalidTag, ValueError):
            raise VaultError(self.emulator.transit_auth_failure_status,
                             "cipher: message authentication failed") from None
        return {"plaintext": base64.b64encode(plaintext).decode()}

    @staticmethod
    def _decode_associated_data(item: dict[str, Any]) -> bytes | None:
        raw = item.get("associated_data")
        if not raw:
            return None
        try:
            return base64.b64decode(str(raw), validate=True)
        except (binascii.Error, ValueError):
            raise VaultError(400, "failed to base64-decode associated_data") from None


@dataclass
class _GenericPath:
    response_data: Any
    operations: set[str]
    lease_duration: int
    renewable: bool
    lease_id: str


class _GenericMount(_Mount):
    """A mount serving canned or computed responses on exact paths (PKI-style engines)."""

    def __init__(self, emulator: VaultEmulator, path: str, type_name: str):
        self.type_name = type_name
        super().__init__(emulator, path)
        self.paths: dict[str, _GenericPath] = {}

    def handle(self, call: _Call, rel: str) -> _Response:
        entry = self.paths.get(rel)
        if entry is None:
            return _unsupported_path()
        if call.operation not in entry.operations:
            return _unsupported_operation()
        data = entry.response_data
        if callable(data):
            try:
                data = data(dict(call.data))
            except VaultError as error:
                return _error_response(error.status, *error.messages)
        if data is None:
            return _no_content()
        return _json_response(200, self.envelope(data, lease_id=entry.lease_id, renewable=entry.renewable,
                                                 lease_duration=entry.lease_duration))


@dataclass
class _AuthRole:
    allow: dict[str, set[str]]
    deny: list[str]
    policies: list[str]
    ttl: int
    num_uses: int
    extra: dict[str, Any] = field(default_factory=dict)


class _AuthMount(_Mount):
    def __init__(self, emulator: VaultEmulator, path: str):
        super().__init__(emulator, path)
        self.login_paths = ("login",)
        self.roles: dict[str, _AuthRole] = {}

    def handle(self, call: _Call, rel: str) -> _Response:
        if rel != "login":
            return _unsupported_path()
        if call.operation != "update":
            return _unsupported_operation()
        return self.login(call)

    def login(self, call: _Call) -> _Response:
        raise NotImplementedError

    def issue(self, role: _AuthRole, metadata: dict[str, str], display_name: str) -> _Response:
        token = self.emulator._issue_login_token(
            role, metadata=metadata, path=f"{self.path}login", display_name=display_name)
        auth = self.emulator._auth_block(token)
        return _json_response(200, self.envelope(None, auth=auth))


class _AppRoleMount(_AuthMount):
    type_name = "approle"

    def __init__(self, emulator: VaultEmulator, path: str):
        super().__init__(emulator, path)
        self.role_ids: dict[str, str] = {}  # role_id -> role name
        self.secret_ids: dict[str, dict[str, Any]] = {}  # role name -> {secret_id: remaining uses}
        self.bind_secret_id: dict[str, bool] = {}

    def login(self, call: _Call) -> _Response:
        role_id = str(call.data.get("role_id") or "").strip()
        if not role_id:
            return _error_response(400, "missing role_id")
        role_name = self.role_ids.get(role_id)
        if role_name is None:
            return _error_response(400, "invalid role or secret ID")
        secret_id = str(call.data.get("secret_id") or "").strip()
        if self.bind_secret_id.get(role_name, True):
            if not secret_id:
                return _error_response(400, "missing secret_id")
            uses = self.secret_ids[role_name]
            if secret_id not in uses:
                return _error_response(400, "invalid role or secret ID")
            remaining = uses[secret_id]
            if remaining == 1:
                # The last permitted use succeeds and deletes the secret ID.
                del uses[secret_id]
            elif remaining > 1:
                uses[secret_id] = remaining - 1
        return self.issue(self.roles[role_name], {"role_name": role_name}, "approle")


class _KubernetesMount(_AuthMount):
    type_name = "kubernetes"

    def login(self, call: _Call) -> _Response:
        role_name = str(call.data.get("role") or "")
        if not role_name:
            return _error_response(400, "missing role")
        jwt = str(call.data.get("jwt") or "")
        if not jwt:
            return _error_response(400, "missing jwt")
        role = self.roles.get(role_name)
        if role is None:
            return _error_response(400, f"invalid role name \"{role_name}\"")
        if jwt != role.extra["jwt"]:
            # A failed signature check or TokenReview returns logical.ErrPermissionDenied.
            return _error_response(403, PERMISSION_DENIED)
        account = role.extra
        metadata = {
            "role": role_name,
            "service_account_name": account["service_account_name"],
            "service_account_namespace": account["service_account_namespace"],
            "service_account_secret_name": "",
            "service_account_uid": account["service_account_uid"],
        }
        display = f"{account['service_account_namespace']}-{account['service_account_name']}"
        return self.issue(role, metadata, f"{self.path[len('auth/'):].rstrip('/')}-{display}")


class _JwtMount(_AuthMount):
    type_name = "jwt"

    def __init__(self, emulator: VaultEmulator, path: str):
        super().__init__(emulator, path)
        self.default_role: str | None = None

    def login(self, call: _Call) -> _Response:
        role_name = str(call.data.get("role") or "") or (self.default_role or "")
        if not role_name:
            return _error_response(400, "missing role")
        role = self.roles.get(role_name)
        if role is None:
            return _error_response(400, f"role \"{role_name}\" could not be found")
        jwt = str(call.data.get("jwt") or "")
        if not jwt:
            return _error_response(400, "missing token")
        if jwt != role.extra["jwt"]:
            # NOTE: the detail after "error validating token: " comes from
            # the cap/jwt validator and was not verified.
            return _error_response(400, "error validating token: failed to verify signature")
        subject = role.extra["subject"]
        return self.issue(role, {"role": role_name}, f"{self.path[len('auth/'):].rstrip('/')}-{subject}")


class _BuiltinMount(_Mount):
    """The always-present sys/ and auth/token/ mounts, served by the emulator itself."""

    def __init__(self, emulator: VaultEmulator, path: str, type_name: str, description: str):
        self.type_name = type_name
        self.description = description
        super().__init__(emulator, path)

    def handle(self, call: _Call, rel: str) -> _Response:
        if self.type_name == "system":
            return self.emulator._handle_sys(call, rel)
        return self.emulator._handle_token(call, rel)


# ---------------------------------------------------------------------------
# HTTP server plumbing
# ---------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Go servers turn Nagle off; without this, a reused connection waits ~40 ms on delayed ACKs
    # because headers and body go out in separate writes.
    disable_nagle_algorithm = True
    server: _Server

    def send_response(self, code: int, message: str | None = None) -> None:
        # Go's net/http sends no Server header; only the status line and Date.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        log.debug("vault emulator %s: " + format, self.address_string(), *args)

    def handle_any_method(self) -> None:
        self.server.emulator._serve(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_HEAD = do_PATCH = handle_any_method

    def __getattr__(self, name: str) -> Any:
        # Unknown verbs reach the emulator too, which returns 405 as Vault does.
        if name.startswith("do_"):
            return self.handle_any_method
        raise AttributeError(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, emulator: VaultEmulator):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.emulator = emulator
        self._connections_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connection_threads: set[threading.Thread] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                  name="vault-emulator-connection", daemon=True)
        with self._connections_lock:
            self._connections.add(request)
            self._connection_threads.add(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except OSError as error:
            log.debug("vault emulator connection from %s ended: %s", client_address, error)
        except Exception:
            log.exception("vault emulator failed to serve a connection from %s", client_address)
        finally:
            self.shutdown_request(request)
            with self._connections_lock:
                self._connections.discard(request)
                self._connection_threads.discard(threading.current_thread())

    def close_connections(self) -> list[threading.Thread]:
        """Shut down every open client connection and return the threads serving them."""
        with self._connections_lock:
            connections = list(self._connections)
            threads = list(self._connection_threads)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return threads


# ---------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------


class VaultEmulator:
    """A Vault server emulated over HTTP on 127.0.0.1; see the module docstring."""

    def __init__(self, *, invalid_token_style: str = "1.17", transit_auth_failure_status: int = 400):
        """Create a stopped emulator.

        *invalid_token_style* selects the 403 body for missing-from-store,
        expired and revoked tokens: "1.17" (Vault 1.17 and later: "permission
        denied" and "invalid token" as a two-item multierror) or "legacy"
        (a plain "permission denied", as before 1.17). *transit_auth_failure_status* is the status of
        a transit decrypt whose GCM tag does not verify (Vault 1.4-1.6 used 500).

        Attributes tests read: `revoked_tokens` and `revoked_leases` list ids
        in revocation order. A token is revoked by revoke-self, by
        `revoke_token()` or by its last permitted use. Expiry alone does not
        add a token to the list.
        """
        if invalid_token_style not in ("1.17", "legacy"):
            raise ValueError(f"invalid_token_style must be '1.17' or 'legacy', got {invalid_token_style!r}")
        self.invalid_token_style = invalid_token_style
        self.transit_auth_failure_status = transit_auth_failure_status
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._requests: list[Request] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.sealed = False
        self.standby = False
        self.required_namespace: str | None = None
        self._tokens: dict[str, Token] = {}
        self._leases: dict[str, Lease] = {}
        self.revoked_tokens: list[str] = []
        self.revoked_leases: list[str] = []
        self._mounts: dict[str, _Mount] = {}
        self._builtin_mounts = {
            "sys/": _BuiltinMount(self, "sys/", "system", "system endpoints used for control, policy and debugging"),
            "auth/token/": _BuiltinMount(self, "auth/token/", "token", "token based credentials"),
        }
        self._injections: list[_Injection] = []
        self._global_latency = 0.0
        self._path_latency: dict[str, float] = {}
        self._rate_limit: _RateLimit | None = None
        self.cluster_name = "vault-cluster-" + secrets.token_hex(4)
        self.cluster_id = str(uuid.uuid4())
        root = self._add_token(policies=["root"], allow={}, deny=[], ttl=0, renewable=False, num_uses=0,
                               path="auth/token/root", display_name="root", is_root=True)
        self.root_token = root.id

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> VaultEmulator:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the Vault emulator is already running")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="vault-emulator", daemon=True)
        self._thread.start()
        log.debug("vault emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, close client connections and join every server thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        connection_threads = server.close_connections()
        server.server_close()
        for connection_thread in connection_threads:
            connection_thread.join(timeout=5)
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        log.debug("vault emulator stopped")

    def __enter__(self) -> VaultEmulator:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Vault emulator is not running; call start() first")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:PORT"."""
        return f"http://127.0.0.1:{self.port}"

    # -- request log -------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Copy of the request log, in arrival order."""
        with self._log_lock:
            return list(self._requests)

    def clear_log(self) -> None:
        with self._log_lock:
            self._requests.clear()

    def requests_to(self, logical_path: str, method: str | None = None) -> list[Request]:
        """Logged requests whose path after /v1/ matches *logical_path* (a policy-style pattern)."""
        pattern = _normalise_pattern(logical_path)
        return [request for request in self.requests
                if path_matches(pattern, request.logical_path) and (method is None or request.method == method)]

    # -- server state ------------------------------------------------------

    def seal(self) -> None:
        with self._lock:
            self.sealed = True

    def unseal(self) -> None:
        with self._lock:
            self.sealed = False

    def set_standby(self, standby: bool = True) -> None:
        """Report this node as an unsealed standby in sys/health (429 by default).

        Only sys/health changes: a real standby forwards other requests to
        the active node, and the emulator serves them itself.
        """
        with self._lock:
            self.standby = standby

    def require_namespace(self, namespace: str | None) -> None:
        """Emulate Vault Enterprise with every mount and non-root token inside *namespace*.

        Requests whose namespace (X-Vault-Namespace plus any leading path
        prefix) differs see only the built-in sys/ and auth/token/ mounts, as
        in a namespace without those mounts. None restores community
        behaviour, which ignores the header.
        """
        with self._lock:
            self.required_namespace = namespace.strip("/") if namespace else None
            for token in self._tokens.values():
                if not token.is_root:
                    token.namespace = self.required_namespace or ""

    def set_rate_limit(self, rate: int | None, *, interval: float = 1.0, path: str | None = None,
                       response_headers: bool = False, block_interval: float | None = None) -> None:
        """Install a rate-limit quota of *rate* requests per *interval* seconds (None removes it).

        *path* limits the quota to logical paths under that prefix.
        *response_headers* mirrors `enable_rate_limit_response_headers` of
        sys/quotas/config: X-Ratelimit-* headers on every response under the
        quota and Retry-After on a 429. *block_interval* blocks a client that
        exceeded the quota for that many seconds.
        """
        with self._lock:
            if rate is None:
                self._rate_limit = None
                return
            self._rate_limit = _RateLimit(rate=rate, interval=interval,
                                          path=_normalise_pattern(path) if path else None,
                                          response_headers=response_headers, block_interval=block_interval)

    def inject(self, path: str, status: int = 500, body: Any = None, times: int = 1,
               headers: dict[str, str] | None = None, drop_connection: bool = False,
               method: str | None = None, content_type: str = "application/json") -> None:
        """Return a canned response to the next *times* requests to *path*.

        *path* is a logical path ("secret/data/web/db", an optional "/v1/"
        prefix is ignored) or a policy-style pattern with a trailing "*".
        *body* is a dict/list (written as JSON), str or bytes (written as is),
        or None for the body Vault sends with that status. With
        *drop_connection* the server reads the request and closes the socket
        without a response. Injections run before seal, quota and token
        checks, and queue in the order they were added.
        """
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        with self._lock:
            self._injections.append(_Injection(
                pattern=_normalise_pattern(path), status=status, body=body, remaining=times,
                headers=dict(headers or {}), drop_connection=drop_connection,
                method=method.upper() if method else None, content_type=content_type))

    def clear_injections(self) -> None:
        with self._lock:
            self._injections.clear()

    def set_latency(self, seconds: float, path: str | None = None) -> None:
        """Delay every request (or those matching *path*) by *seconds* before responding.

        The delay runs in the handler thread, so concurrent requests overlap.
        Global and per-path delays add up.
        """
        with self._lock:
            if path is None:
                self._global_latency = seconds
            elif seconds:
                self._path_latency[_normalise_pattern(path)] = seconds
            else:
                self._path_latency.pop(_normalise_pattern(path), None)

    # -- mounts ------------------------------------------------------------

    def _add_mount(self, mount: _Mount) -> _Mount:
        with self._lock:
            if mount.path in self._mounts or mount.path in self._builtin_mounts:
                raise ValueError(f"path is already in use at {mount.path}")
            self._mounts[mount.path] = mount
        return mount

    @staticmethod
    def _mount_path(path: str) -> str:
        path = _normalise_pattern(path).strip("/")
        if not path:
            raise ValueError("mount path must not be empty")
        return path + "/"

    def enable_kv(self, path: str, version: int = 2) -> None:
        """Mount a KV secrets engine of *version* 1 or 2 at *path*."""
        mount_path = self._mount_path(path)
        if version == 1:
            self._add_mount(_KvV1Mount(self, mount_path))
        elif version == 2:
            self._add_mount(_KvV2Mount(self, mount_path))
        else:
            raise ValueError(f"KV version must be 1 or 2, got {version}")

    def _kv_mount(self, mount: str) -> _Mount:
        found = self._mounts.get(self._mount_path(mount))
        if not isinstance(found, (_KvV1Mount, _KvV2Mount)):
            raise KeyError(f"no KV mount at {mount!r}; call enable_kv first")
        return found

    def _kv2_mount(self, mount: str) -> _KvV2Mount:
        found = self._kv_mount(mount)
        if not isinstance(found, _KvV2Mount):
            raise KeyError(f"the mount {mount!r} is KV version 1; versions exist only on KV version 2")
        return found

    def kv_put(self, mount: str, path: str, data: dict[str, Any], *, cas: int | None = None,
               custom_metadata: dict[str, str] | None = None) -> int | None:
        """Write a secret; return the new version on KV v2 and None on KV v1."""
        with self._lock:
            found = self._kv_mount(mount)
            key = path.strip("/")
            if isinstance(found, _KvV1Mount):
                found.store[key] = json.loads(json.dumps(data))
                return None
            assert isinstance(found, _KvV2Mount)
            if custom_metadata is not None:
                found.set_metadata(key, custom_metadata=custom_metadata)
            return found.put(key, data, cas=cas).current_version

    def kv_delete_versions(self, mount: str, path: str, versions: list[int]) -> None:
        """Soft-delete KV v2 versions (deletion_time = now)."""
        with self._lock:
            self._kv2_mount(mount).delete_versions(path.strip("/"), list(versions))

    def kv_undelete_versions(self, mount: str, path: str, versions: list[int]) -> None:
        with self._lock:
            self._kv2_mount(mount).undelete_versions(path.strip("/"), list(versions))

    def kv_destroy_versions(self, mount: str, path: str, versions: list[int]) -> None:
        """Destroy KV v2 versions: their data is erased for good."""
        with self._lock:
            self._kv2_mount(mount).destroy_versions(path.strip("/"), list(versions))

    def kv_set_metadata(self, mount: str, path: str, *, max_versions: int | None = None,
                        cas_required: bool | None = None, delete_version_after: int | str | None = None,
                        custom_metadata: dict[str, str] | None = None) -> None:
        """Set KV v2 key metadata; *delete_version_after* is seconds or a Go duration string."""
        with self._lock:
            self._kv2_mount(mount).set_metadata(
                path.strip("/"), max_versions=max_versions, cas_required=cas_required,
                delete_version_after=delete_version_after, custom_metadata=custom_metadata)

    def kv_delete(self, mount: str, path: str) -> None:
        """Remove a KV v1 key, or a KV v2 key with all its versions and metadata."""
        with self._lock:
            found = self._kv_mount(mount)
            key = path.strip("/")
            if isinstance(found, _KvV1Mount):
                found.store.pop(key, None)
            else:
                assert isinstance(found, _KvV2Mount)
                found.keys.pop(key, None)

    def enable_database(self, mount: str = "database") -> None:
        self._add_mount(_DatabaseMount(self, self._mount_path(mount)))

    def add_database_role(self, name: str, ttl: int = 3600, *, mount: str = "database", max_ttl: int = 86400,
                          renewable: bool = True, allowed: bool = True) -> None:
        """Add a role to a database mount; *allowed* False emulates a role missing from allowed_roles."""
        with self._lock:
            found = self._mounts.get(self._mount_path(mount))
            if not isinstance(found, _DatabaseMount):
                raise KeyError(f"no database mount at {mount!r}; call enable_database first")
            found.roles[name] = _DatabaseRole(ttl=ttl, max_ttl=max_ttl, renewable=renewable, allowed=allowed)

    def enable_transit(self, mount: str = "transit") -> None:
        self._add_mount(_TransitMount(self, self._mount_path(mount)))

    def _transit_mount(self, mount: str) -> _TransitMount:
        found = self._mounts.get(self._mount_path(mount))
        if not isinstance(found, _TransitMount):
            raise KeyError(f"no transit mount at {mount!r}; call enable_transit first")
        return found

    def create_transit_key(self, name: str, *, mount: str = "transit") -> None:
        """Create an aes256-gcm96 key with a random 32-byte version 1."""
        with self._lock:
            self._transit_mount(mount).create_key(name)

    def rotate_transit_key(self, name: str, *, mount: str = "transit") -> int:
        """Add a new key version and return its number."""
        with self._lock:
            versions = self._transit_mount(mount).keys[name]
            versions.append(secrets.token_bytes(32))
            return len(versions)

    def transit_encrypt(self, name: str, plaintext: bytes, *, mount: str = "transit",
                        associated_data: bytes | None = None) -> str:
        """Encrypt *plaintext* with the latest key version and return the "vault:v<N>:..." string."""
        item: dict[str, Any] = {"plaintext": base64.b64encode(plaintext).decode()}
        if associated_data is not None:
            item["associated_data"] = base64.b64encode(associated_data).decode()
        with self._lock:
            found = self._transit_mount(mount)
            found.create_key(name)
            return found._encrypt_one(name, item)["ciphertext"]

    def set_generic(self, path: str, response_data: Any, method: str = "GET", *, mount_type: str | None = None,
                    lease_duration: int = 0, renewable: bool = False, lease_id: str = "") -> None:
        """Serve *response_data* as the `data` of a logical path such as "pki/issue/web".

        The first path segment becomes a mount of type *mount_type* (default:
        that segment). *method* "GET" serves reads, "POST" or "PUT" serves
        writes, "LIST" and "DELETE" the other operations. *response_data* may
        be a callable that takes the request data (body or query parameters)
        and returns the data dict. The callable may raise VaultError to return
        an error. Data None returns 204.
        """
        logical = _normalise_pattern(path).strip("/")
        head, slash, rel = logical.partition("/")
        if not slash or not rel:
            raise ValueError(f"generic path needs a mount and a sub-path, got {path!r}")
        operations = {"GET": {"read"}, "POST": {"update"}, "PUT": {"update"},
                      "LIST": {"list"}, "DELETE": {"delete"}}.get(method.upper())
        if operations is None:
            raise ValueError(f"method must be GET, POST, PUT, LIST or DELETE, got {method!r}")
        with self._lock:
            mount = self._mounts.get(head + "/")
            if mount is None:
                mount = self._add_mount(_GenericMount(self, head + "/", mount_type or head))
            if not isinstance(mount, _GenericMount):
                raise ValueError(f"{head}/ is already mounted as {mount.type_name}")
            existing = mount.paths.get(rel)
            if existing is not None and existing.response_data is response_data:
                existing.operations |= operations
                return
            mount.paths[rel] = _GenericPath(response_data=response_data, operations=operations,
                                            lease_duration=lease_duration, renewable=renewable, lease_id=lease_id)

    # -- auth methods ------------------------------------------------------

    def _auth_mount(self, mount: str, kind: type) -> Any:
        found = self._mounts.get("auth/" + self._mount_path(mount))
        if not isinstance(found, kind):
            raise KeyError(f"no {kind.type_name} auth method at auth/{mount}")
        return found

    def enable_approle(self, mount: str = "approle") -> None:
        self._add_mount(_AppRoleMount(self, "auth/" + self._mount_path(mount)))

    def add_approle_role(self, name: str, role_id: str | None = None, secret_id: str | None = None, *,
                         allow: Any = None, deny: list[str] | None = None, policies: list[str] | None = None,
                         mount: str = "approle", token_ttl: int = DEFAULT_LEASE_TTL, token_num_uses: int = 0,
                         secret_id_num_uses: int = 0, bind_secret_id: bool = True) -> tuple[str, str | None]:
        """Add an AppRole role and return (role_id, secret_id); missing ids are generated.

        *secret_id_num_uses* 0 means unlimited logins with that secret ID.
        """
        with self._lock:
            found = self._auth_mount(mount, _AppRoleMount)
            role_id = role_id or str(uuid.uuid4())
            found.roles[name] = _make_role(allow, deny, policies, token_ttl, token_num_uses)
            found.role_ids[role_id] = name
            found.bind_secret_id[name] = bind_secret_id
            found.secret_ids.setdefault(name, {})
            if bind_secret_id:
                secret_id = secret_id or str(uuid.uuid4())
                found.secret_ids[name][secret_id] = secret_id_num_uses
            return role_id, secret_id if bind_secret_id else None

    def add_approle_secret_id(self, name: str, secret_id: str | None = None, *, num_uses: int = 0,
                              mount: str = "approle") -> str:
        """Add another secret ID to an AppRole role and return it."""
        with self._lock:
            found = self._auth_mount(mount, _AppRoleMount)
            secret_id = secret_id or str(uuid.uuid4())
            found.secret_ids[name][secret_id] = num_uses
            return secret_id

    def enable_kubernetes_auth(self, mount: str = "kubernetes") -> None:
        self._add_mount(_KubernetesMount(self, "auth/" + self._mount_path(mount)))

    def add_kubernetes_role(self, name: str, jwt: str, *, allow: Any = None, deny: list[str] | None = None,
                            policies: list[str] | None = None, mount: str = "kubernetes",
                            token_ttl: int = DEFAULT_LEASE_TTL, token_num_uses: int = 0,
                            service_account_name: str = "default", service_account_namespace: str = "default",
                            service_account_uid: str | None = None) -> None:
        """Add a Kubernetes role; a login succeeds only with exactly this service-account *jwt*."""
        with self._lock:
            found = self._auth_mount(mount, _KubernetesMount)
            role = _make_role(allow, deny, policies, token_ttl, token_num_uses)
            role.extra = {
                "jwt": jwt,
                "service_account_name": service_account_name,
                "service_account_namespace": service_account_namespace,
                "service_account_uid": service_account_uid or str(uuid.uuid4()),
            }
            found.roles[name] = role

    def enable_jwt_auth(self, mount: str = "jwt", *, default_role: str | None = None) -> None:
        mount_object = _JwtMount(self, "auth/" + self._mount_path(mount))
        mount_object.default_role = default_role
        self._add_mount(mount_object)

    def add_jwt_role(self, name: str, jwt: str, *, allow: Any = None, deny: list[str] | None = None,
                     policies: list[str] | None = None, mount: str = "jwt", token_ttl: int = DEFAULT_LEASE_TTL,
                     token_num_uses: int = 0, subject: str = "ci") -> None:
        """Add a JWT role; a login succeeds only with exactly this *jwt* (no signature check)."""
        with self._lock:
            found = self._auth_mount(mount, _JwtMount)
            role = _make_role(allow, deny, policies, token_ttl, token_num_uses)
            role.extra = {"jwt": jwt, "subject": subject}
            found.roles[name] = role

    # -- tokens and leases -------------------------------------------------

    def create_token(self, policies: list[str] | None = None, allow: Any = None, deny: list[str] | None = None,
                     ttl: int = 3600, num_uses: int = 0, expired: bool = False, renewable: bool = True,
                     display_name: str = "token", meta: dict[str, str] | None = None) -> str:
        """Create a service token and return its id.

        *allow* is a list of policy path patterns granting every capability,
        or a dict mapping patterns to capability lists; *deny* patterns win
        over any allow. *policies* (default ["default"]) are the names
        reported by Vault, and "default" adds the built-in default policy
        paths. *ttl* 0 makes a non-expiring token; *expired* creates it with an
        expiry in the past.
        """
        with self._lock:
            token = self._add_token(
                policies=policies if policies is not None else ["default"],
                allow=_normalise_allow(allow), deny=[_normalise_pattern(p) for p in (deny or [])],
                ttl=ttl, renewable=renewable, num_uses=num_uses, display_name=display_name, meta=meta)
            if expired:
                token.expire_time = time.time() - 1
            return token.id

    def token_info(self, token_id: str) -> Token | None:
        with self._lock:
            return self._tokens.get(token_id)

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token and the leases it created."""
        with self._lock:
            self._revoke_token(token_id)

    def lease_info(self, lease_id: str) -> Lease | None:
        with self._lock:
            return self._leases.get(lease_id)

    @property
    def leases(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def _add_token(self, *, policies: list[str], allow: dict[str, set[str]], deny: list[str], ttl: int,
                   renewable: bool, num_uses: int, path: str = "auth/token/create", display_name: str = "token",
                   meta: dict[str, str] | None = None, entity_id: str = "", is_root: bool = False) -> Token:
        now = time.time()
        token = Token(
            id=_new_token_id(), accessor=_random_base62(24), policies=list(policies), allow=allow, deny=deny,
            ttl=ttl, creation_time=now, expire_time=now + ttl if ttl else None, renewable=renewable and ttl > 0,
            num_uses=num_uses, path=path, display_name=display_name, meta=meta, entity_id=entity_id,
            namespace="" if is_root else (self.required_namespace or ""), is_root=is_root)
        self._tokens[token.id] = token
        return token

    def _issue_login_token(self, role: _AuthRole, *, metadata: dict[str, str], path: str,
                           display_name: str) -> Token:
        # Vault adds "default" to auth method policies and sorts them.
        policies = sorted(set(role.policies) | {"default"})
        return self._add_token(policies=policies, allow=role.allow, deny=role.deny, ttl=role.ttl,
                               renewable=True, num_uses=role.num_uses, path=path, display_name=display_name,
                               meta=metadata, entity_id=str(uuid.uuid4()))

    def _auth_block(self, token: Token) -> GoStruct:
        lease_duration = int(token.expire_time - time.time() + 0.5) if token.expire_time else 0
        auth = GoStruct(
            client_token=token.id,
            accessor=token.accessor,
            policies=token.policies,
            token_policies=token.policies,
        )
        # identity_policies is omitempty, and the emulator has no identity groups.
        auth.update(
            metadata=token.meta,
            lease_duration=max(lease_duration, 0),
            renewable=token.renewable,
            entity_id=token.entity_id,
            token_type=token.token_type,
            orphan=token.orphan,
            mfa_requirement=None,
            num_uses=token.num_uses,
        )
        return auth

    def _revoke_token(self, token_id: str) -> None:
        token = self._tokens.get(token_id)
        if token is None or token.revoked:
            return
        token.revoked = True
        self.revoked_tokens.append(token_id)
        for lease in list(self._leases.values()):
            if lease.token_id == token_id and not lease.revoked:
                self._revoke_lease(lease.id)

    def _create_lease(self, prefix: str, ttl: int, max_ttl: int, renewable: bool, token: Token | None) -> Lease:
        now = time.time()
        lease = Lease(id=f"{prefix}/{_random_base62(24)}", issue_time=now, expire_time=now + ttl, ttl=ttl,
                      max_ttl=max_ttl, renewable=renewable, token_id=token.id if token else None)
        with self._lock:
            self._leases[lease.id] = lease
        return lease

    def _revoke_lease(self, lease_id: str) -> None:
        lease = self._leases.get(lease_id)
        if lease is None or lease.revoked:
            return
        lease.revoked = True
        self.revoked_leases.append(lease_id)

    # -- response helpers --------------------------------------------------

    def _envelope(self, data: Any, *, mount_type: str, lease_id: str = "", renewable: bool = False,
                  lease_duration: int = 0, warnings: list[str] | None = None, auth: Any = None,
                  request_id: str | None = None) -> GoStruct:
        return GoStruct(
            request_id=request_id if request_id is not None else str(uuid.uuid4()),
            lease_id=lease_id,
            renewable=renewable,
            lease_duration=lease_duration,
            data=data,
            wrap_info=None,
            warnings=warnings,
            auth=auth,
            mount_type=mount_type,
        )

    def _raw_response(self, status: int, data: Any, warnings: list[str] | None = None) -> _Response:
        # logical.RespondWithStatusCode: the plugin marshals the envelope
        # itself, before the router fills in mount_type, with no newline.
        return _json_response(status, self._envelope(data, mount_type="", warnings=warnings), raw=True)

    # -- HTTP entry point --------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        request = self._read_request(handler)
        if request is None:
            return
        with self._log_lock:
            self._requests.append(request)

        response = None
        latency = self._latency_for(request.logical_path)
        if latency > 0:
            self._stopping.wait(latency)
        try:
            response = self._respond(handler, request)
        except Exception as error:  # a bug in the emulator must not hang the client
            log.exception("vault emulator failed on %s %s", request.method, request.path)
            response = _error_response(500, f"vault emulator error: {error}")

        if response.drop_connection:
            handler.close_connection = True
            request.finished = time.time()
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._write(handler, request, response)

    def _read_request(self, handler: _Handler) -> Request | None:
        split = urlsplit(handler.path)
        raw_body = self._read_body(handler)
        if raw_body is None:
            return None
        header_items = list(handler.headers.items())
        body: Any = None
        if raw_body:
            content_type = handler.headers.get("Content-Type", "")
            if content_type.startswith("application/x-www-form-urlencoded"):
                body = {key: values[0] if len(values) == 1 else values
                        for key, values in parse_qs(raw_body.decode("utf-8", "replace")).items()}
            else:
                try:
                    body = json.loads(raw_body)
                except ValueError:
                    body = None
        return Request(
            method=handler.command, path=unquote(split.path), raw_path=split.path,
            query=parse_qs(split.query, keep_blank_values=True), headers=dict(header_items),
            header_items=header_items, body=body, raw_body=raw_body, timestamp=time.time(),
            client_address=handler.client_address)

    @staticmethod
    def _read_body(handler: _Handler) -> bytes | None:
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = handler.rfile.readline()
                if not size_line:
                    return None
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()
                    return b"".join(chunks)
                chunks.append(handler.rfile.read(size))
                handler.rfile.readline()
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(length) if length else b""

    def _write(self, handler: _Handler, request: Request, response: _Response) -> None:
        # Status and finish time are recorded before the response goes out: a client may read
        # it, and a test may then inspect the log, before this thread runs again.
        request.status = response.status
        handler.send_response(response.status)
        handler.send_header("Cache-Control", "no-store")
        if response.content_type is not None:
            handler.send_header("Content-Type", response.content_type)
        for name, value in response.headers:
            handler.send_header(name, value)
        body = b"" if request.method == "HEAD" else response.body
        if response.status != 204:
            handler.send_header("Content-Length", str(len(body)))
        request.finished = time.time()
        handler.end_headers()
        if body:
            handler.wfile.write(body)
        handler.wfile.flush()

    def _latency_for(self, logical_path: str) -> float:
        with self._lock:
            total = self._global_latency
            for pattern, seconds in self._path_latency.items():
                if path_matches(pattern, logical_path):
                    total += seconds
            return total

    def _take_injection(self, request: Request) -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.method is not None and injection.method != request.method:
                    continue
                if not path_matches(injection.pattern, request.logical_path):
                    continue
                injection.remaining -= 1
                if injection.remaining <= 0:
                    self._injections.remove(injection)
                return injection
        return None

    def _injected_response(self, injection: _Injection, logical_path: str) -> _Response:
        if injection.drop_connection:
            return _Response(0, drop_connection=True)
        body = injection.body
        if body is None:
            default_messages = {
                429: [f"request path \"{logical_path}\": rate limit quota exceeded"],
                500: ["internal error"],
                503: [SEALED],
                412: ["required index state not present"],
            }
            payload = (go_json({"errors": default_messages.get(injection.status, [])}) + "\n").encode()
        elif isinstance(body, bytes):
            payload = body
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = (go_json(body) + "\n").encode()
        return _Response(injection.status, payload, content_type=injection.content_type,
                         headers=list(injection.headers.items()))

    def _respond(self, handler: _Handler, request: Request) -> _Response:
        injection = self._take_injection(request)
        if injection is not None:
            return self._injected_response(injection, request.logical_path)

        if not request.path.startswith("/v1/"):
            return _Response(404, GO_NOT_FOUND, content_type="text/plain; charset=utf-8",
                             headers=[("X-Content-Type-Options", "nosniff")])
        cleaned = _clean_url_path(request.path)
        if cleaned != request.path and request.method != "CONNECT":
            # Go's ServeMux redirects unclean paths ("//", "/./") to the cleaned path.
            query = urlsplit(handler.path).query
            location = quote(cleaned) + (f"?{query}" if query else "")
            body = f"<a href=\"{location}\">Moved Permanently</a>.\n\n".encode() if request.method == "GET" else b""
            return _Response(301, body, content_type="text/html; charset=utf-8", headers=[("Location", location)])

        logical_path = request.logical_path
        if logical_path in ("sys/health", "sys/seal-status"):
            return self._handle_status_endpoint(request, logical_path)

        with self._lock:
            if self.sealed:
                return _error_response(503, SEALED)
            quota_headers, quota_error = self._check_rate_limit(request, logical_path)
        if quota_error is not None:
            return quota_error
        response = self._handle_logical(request)
        response.headers.extend(quota_headers)
        return response

    # -- sys/health and sys/seal-status -------------------------------------

    def _handle_status_endpoint(self, request: Request, logical_path: str) -> _Response:
        with self._lock:
            sealed, standby = self.sealed, self.standby
        if logical_path == "sys/seal-status":
            if request.method != "GET":
                return _error_response(405)
            status = GoStruct(type="shamir", initialized=True, sealed=sealed, t=1, n=1, progress=0, nonce="",
                              version=VAULT_VERSION, build_date="2024-10-29T14:21:31Z", migration=False)
            if not sealed:
                status.update(cluster_name=self.cluster_name, cluster_id=self.cluster_id)
            status.update(recovery_seal=False, storage_type="inmem")
            return _json_response(200, status)

        if request.method not in ("GET", "HEAD"):
            return _error_response(405)
        query = {key: values[-1] for key, values in request.query.items()}
        if sealed:
            code = self._health_code(query, "sealedcode", 503)
        elif standby:
            code = 200 if _query_bool(query.get("standbyok")) else self._health_code(query, "standbycode", 429)
        else:
            code = self._health_code(query, "activecode", 200)
        body = GoStruct(initialized=True, sealed=sealed, standby=sealed or standby, performance_standby=False,
                        replication_performance_mode="disabled", replication_dr_mode="disabled",
                        server_time_utc=int(time.time()), version=VAULT_VERSION, enterprise=False)
        if not sealed:
            body.update(cluster_name=self.cluster_name, cluster_id=self.cluster_id)
        body.update(echo_duration_ms=0, clock_skew_ms=0, replication_primary_canary_age_ms=0)
        if request.method == "HEAD":
            # The HEAD variant writes only the status line.
            return _Response(code, content_type=None)
        return _json_response(code, body)

    @staticmethod
    def _health_code(query: dict[str, str], name: str, default: int) -> int:
        try:
            return int(query[name]) if query.get(name) else default
        except ValueError:
            return default

    # -- rate limit --------------------------------------------------------

    def _check_rate_limit(self, request: Request, logical_path: str) -> tuple[list[tuple[str, str]], _Response | None]:
        quota = self._rate_limit
        if quota is None or logical_path in RATE_LIMIT_EXEMPT_PATHS:
            return [], None
        if quota.path is not None and not logical_path.startswith(quota.path):
            return [], None
        now = time.monotonic()
        if now - quota.window_start >= quota.interval:
            quota.window_start = now
            quota.count = 0
        reset = max(int(quota.window_start + quota.interval - now), 0)

        blocked = quota.blocked_until > now
        allowed = not blocked and quota.count < quota.rate
        if allowed:
            quota.count += 1
        elif quota.block_interval and not blocked:
            quota.blocked_until = now + quota.block_interval
        headers: list[tuple[str, str]] = []
        if quota.response_headers:
            headers = [("X-Ratelimit-Limit", str(quota.rate)),
                       ("X-Ratelimit-Remaining", str(max(quota.rate - quota.count, 0))),
                       ("X-Ratelimit-Reset", str(reset))]
        if allowed:
            return headers, None

        if quota.response_headers:
            retry_after = int(quota.blocked_until - now) if quota.blocked_until > now else reset
            headers.append(("Retry-After", str(retry_after)))
        _, path = self._split_namespace(request, logical_path)
        response = _error_response(429, f"request path \"{path}\": rate limit quota exceeded")
        response.headers.extend(headers)
        return [], response

    # -- logical requests --------------------------------------------------

    def _split_namespace(self, request: Request, logical_path: str) -> tuple[str, str]:
        """Return (namespace, namespace-relative path); the community edition ignores namespaces."""
        required = self.required_namespace
        if required is None:
            return "", logical_path
        namespace = (request.namespace or "").strip("/")
        path = logical_path
        if path == required or path.startswith(required + "/"):
            # The namespace may also be given as a path prefix.
            namespace = "/".join(part for part in (namespace, required) if part)
            path = path[len(required):].lstrip("/")
        return namespace, path

    def _handle_logical(self, request: Request) -> _Response:
        operation = {"GET": "read", "POST": "update", "PUT": "update", "DELETE": "delete",
                     "LIST": "list"}.get(request.method)
        if request.method == "PATCH":
            # NOTE: JSON merge-patch requests are not emulated.
            return _unsupported_operation()
        if request.method == "HEAD":
            return _Response(405, content_type="application/json")
        if operation is None:
            return _error_response(405)
        query = {key: values[0] if len(values) == 1 else values for key, values in request.query.items()}
        if operation == "read" and _query_bool(query.get("list")):
            operation = "list"
        query.pop("list", None)
        query.pop("help", None)

        if operation == "update":
            if request.raw_body and not isinstance(request.body, dict):
                return _error_response(400, "error parsing JSON")
            data = dict(request.body or {})
        else:
            data = query

        with self._lock:
            namespace, path = self._split_namespace(request, request.logical_path)
            if operation == "list" and not path.endswith("/"):
                path += "/"
            call = _Call(request=request, path=path, operation=operation, data=data, namespace=namespace)
            if operation == "update" and path.endswith("/"):
                return _error_response(400, "cannot write to a path ending in '/'")
            return self._route(call)

    def _visible_mounts(self, namespace: str) -> list[_Mount]:
        mounts: list[_Mount] = list(self._builtin_mounts.values())
        if self.required_namespace is None or namespace == self.required_namespace:
            mounts.extend(self._mounts.values())
        return mounts

    def _match_mount(self, path: str, namespace: str) -> _Mount | None:
        """Return the mount with the longest path prefix of *path* ("foo" is also tried as "foo/")."""
        best = None
        for mount in self._visible_mounts(namespace):
            if (path.startswith(mount.path) or path + "/" == mount.path) and (
                    best is None or len(mount.path) > len(best.path)):
                best = mount
        return best

    def _route(self, call: _Call) -> _Response:
        mount = self._match_mount(call.path, call.namespace)
        rel = call.path[len(mount.path):] if mount is not None else ""
        if mount is not None and rel in mount.login_paths:
            # Login paths are unauthenticated: any token sent along is ignored.
            return mount.handle(call, rel)
        if call.path == "sys/internal/ui/mounts" or call.path.startswith("sys/internal/ui/mounts/"):
            return self._ui_mounts(call)

        denied = self._authenticate(call)
        if denied is not None:
            return denied
        try:
            if mount is None:
                return _error_response(404, f"no handler for route \"{call.path}\". route entry not found.")
            return mount.handle(call, rel)
        finally:
            if call.final_use and call.token is not None:
                self._revoke_token(call.token.id)

    def _invalid_token_response(self) -> _Response:
        if self.invalid_token_style == "1.17":
            # NOTE: Vault 1.17+ returns both errors; the multierror rendering
            # and their order are inferred, so clients should match substrings.
            return _error_response(403, multierror(PERMISSION_DENIED, INVALID_TOKEN))
        return _error_response(403, PERMISSION_DENIED)

    def _lookup_token(self, request: Request) -> tuple[Token | None, bool]:
        """Return (token, whether a token value was sent) from X-Vault-Token or Authorization: Bearer."""
        value = request.header("X-Vault-Token")
        if not value:
            for key, header_value in request.header_items:
                if key.lower() == "authorization" and header_value.startswith("Bearer "):
                    value = header_value[len("Bearer "):].strip()
                    break
        if not value:
            return None, False
        token = self._tokens.get(value)
        if token is None or token.revoked:
            return None, True
        if token.expire_time is not None and token.expire_time <= time.time():
            return None, True
        return token, True

    def _authenticate(self, call: _Call) -> _Response | None:
        """Check the token and ACL of *call*; return the error response or None."""
        token, sent = self._lookup_token(call.request)
        if token is None:
            if not sent:
                # An empty token is logical.ErrPermissionDenied itself, not a multierror.
                return _error_response(403, PERMISSION_DENIED)
            return self._invalid_token_response()
        call.token = token
        # Every authenticated request uses up one use, even when the ACL denies it.
        if token.num_uses > 0:
            token.num_uses -= 1
            if token.num_uses == 0:
                call.final_use = True
                token.num_uses = -1
        if not self._token_valid_in_namespace(token, call.namespace) or not self._allowed(
                token, call.path, call.operation):
            if call.final_use:
                self._revoke_token(token.id)
            return _error_response(403, multierror(PERMISSION_DENIED))
        return None

    def _token_valid_in_namespace(self, token: Token, namespace: str) -> bool:
        # NOTE: Enterprise behaviour for a token used outside its namespace is
        # not public, so the emulator returns the ACL denial.
        if token.is_root or not token.namespace:
            return True
        return namespace == token.namespace or namespace.startswith(token.namespace + "/")

    @staticmethod
    def _token_rules(token: Token) -> dict[str, set[str]]:
        rules = {pattern: set(capabilities) for pattern, capabilities in token.allow.items()}
        if "default" in token.policies:
            for pattern, capabilities in DEFAULT_POLICY_PATHS.items():
                rules.setdefault(pattern, set()).update(capabilities)
        return rules

    def _allowed(self, token: Token, path: str, operation: str) -> bool:
        if token.is_root:
            return True
        if any(path_matches(pattern, path) for pattern in token.deny):
            return False
        needed = {"read": {"read"}, "list": {"list"}, "delete": {"delete"},
                  "update": {"update", "create"}}[operation]
        for pattern, capabilities in self._token_rules(token).items():
            if capabilities & needed and path_matches(pattern, path):
                return True
        return False

    def _has_mount_access(self, token: Token, mount_path: str) -> bool:
        if token.is_root:
            return True
        for pattern, capabilities in self._token_rules(token).items():
            if capabilities and _pattern_reaches_under(pattern, mount_path):
                return True
        return False

    # -- sys/internal/ui/mounts ------------------------------------------

    def _ui_mounts(self, call: _Call) -> _Response:
        if call.operation != "read":
            return _unsupported_operation()
        if call.path in ("sys/internal/ui/mounts", "sys/internal/ui/mounts/"):
            return self._ui_mounts_list(call)
        raw = call.path[len("sys/internal/ui/mounts/"):]
        target = raw.lstrip("/")
        if not target:
            return _error_response(400, "path not set")
        if not target.endswith("/"):
            target += "/"

        denied = _error_response(403, (
            "preflight capability check returned 403, please ensure client's policies grant access to "
            f"path \"{target}\""))
        mount = self._match_mount(target, call.namespace)
        if mount is None:
            # Vault returns 403, not 404, so the endpoint cannot enumerate mounts.
            return denied

        token, _ = self._lookup_token(call.request)
        if token is None or not self._token_valid_in_namespace(token, call.namespace):
            return denied
        if any(path_matches(pattern, call.path) for pattern in token.deny):
            # NOTE: Vault serves this path unauthenticated, so a policy cannot
            # deny it. A deny pattern on it is an emulator setting that
            # simulates a token without access to the mount.
            return denied
        if not self._has_mount_access(token, mount.path):
            return denied
        data = mount.mount_info()
        data["path"] = mount.path
        return _json_response(200, self._envelope(data, mount_type="system"))

    def _ui_mounts_list(self, call: _Call) -> _Response:
        token, _ = self._lookup_token(call.request)
        secret: dict[str, Any] = {}
        auth: dict[str, Any] = {}
        if token is not None:
            for mount in self._visible_mounts(call.namespace):
                if not self._has_mount_access(token, mount.path):
                    continue
                target = auth if mount.path.startswith("auth/") else secret
                key = mount.path[len("auth/"):] if mount.path.startswith("auth/") else mount.path
                target[key] = mount.mount_info()
        return _json_response(200, self._envelope({"auth": auth, "secret": secret}, mount_type="system"))

    # -- sys/ ------------------------------------------------------------

    def _handle_sys(self, call: _Call, rel: str) -> _Response:
        if rel == "mounts" and call.operation == "read":
            return self._sys_mounts(call)
        for name in ("leases/renew", "renew", "leases/revoke", "leases/lookup"):
            if rel == name or rel.startswith(name + "/"):
                if call.operation != "update":
                    return _unsupported_operation()
                lease_id = str(call.data.get("lease_id") or rel[len(name):].lstrip("/"))
                if name == "leases/lookup":
                    return self._lease_lookup(lease_id)
                if name == "leases/revoke":
                    return self._lease_revoke(lease_id)
                return self._lease_renew(lease_id, call.data.get("increment"))
        return _unsupported_path()

    def _sys_mounts(self, call: _Call) -> _Response:
        mounts = {mount.path: mount.mount_info() for mount in self._visible_mounts(call.namespace)
                  if not mount.path.startswith("auth/")}
        envelope = self._envelope(mounts, mount_type="system")
        # sys/mounts also repeats every mount at the top level, for old clients.
        envelope.update(mounts)
        return _json_response(200, envelope)

    def _active_lease(self, lease_id: str) -> Lease | None:
        lease = self._leases.get(lease_id)
        if lease is None or lease.revoked or lease.expire_time <= time.time():
            return None
        return lease

    def _lease_lookup(self, lease_id: str) -> _Response:
        if not lease_id:
            return _error_response(400, "lease_id must be specified")
        lease = self._active_lease(lease_id)
        if lease is None:
            # NOTE: message as remembered from handleLeaseLookup; unverified.
            return _error_response(400, "invalid lease")
        return _json_response(200, self._envelope({
            "expire_time": rfc3339nano(int(lease.expire_time * 10**9)),
            "id": lease.id,
            "issue_time": rfc3339nano(int(lease.issue_time * 10**9)),
            "last_renewal": rfc3339nano(int(lease.last_renewal * 10**9)) if lease.last_renewal else None,
            "renewable": lease.renewable,
            "ttl": max(int(lease.expire_time - time.time() + 0.5), 0),
        }, mount_type="system"))

    def _lease_renew(self, lease_id: str, increment: Any) -> _Response:
        if not lease_id:
            return _error_response(400, "lease_id must be specified")
        if lease_id.startswith("auth/token/"):
            return _error_response(400, "tokens cannot be renewed through this endpoint")
        lease = self._active_lease(lease_id)
        if lease is None:
            return _error_response(400, "lease not found")
        if not lease.renewable:
            return _error_response(400, "lease is not renewable")
        try:
            requested = parse_duration(increment) if increment not in (None, "", 0) else lease.ttl
        except ValueError:
            return _error_response(400, f"invalid increment {increment!r}")
        now = time.time()
        # The granted TTL is capped by the lease's max TTL from issue time.
        granted = max(min(requested, int(lease.issue_time + lease.max_ttl - now)), 0)
        lease.expire_time = now + granted
        lease.last_renewal = now
        return _json_response(200, self._envelope(None, mount_type="system", lease_id=lease.id,
                                                   renewable=lease.renewable, lease_duration=granted))

    def _lease_revoke(self, lease_id: str) -> _Response:
        if not lease_id:
            return _error_response(400, "lease_id must be specified")
        # NOTE: an unknown lease id returns 204 here, but real servers may return 400.
        self._revoke_lease(lease_id)
        return _no_content()

    # -- auth/token/ -----------------------------------------------------

    def _handle_token(self, call: _Call, rel: str) -> _Response:
        token = call.token
        assert token is not None
        if rel == "lookup-self":
            if call.operation != "read":
                return _unsupported_operation()
            return _json_response(200, self._envelope(self._lookup_data(token), mount_type="token"))
        if rel == "renew-self":
            if call.operation != "update":
                return _unsupported_operation()
            return self._renew_self(token, call.data.get("increment"))
        if rel == "revoke-self":
            if call.operation != "update":
                return _unsupported_operation()
            self._revoke_token(token.id)
            return _no_content()
        if rel in ("create", "create-orphan"):
            if call.operation != "update":
                return _unsupported_operation()
            return self._create_child_token(token, call.data, orphan=rel == "create-orphan")
        return _unsupported_path()

    def _lookup_data(self, token: Token) -> dict[str, Any]:
        data: dict[str, Any] = {
            "accessor": token.accessor,
            "creation_time": int(token.creation_time),
            "creation_ttl": token.ttl,
            "display_name": token.display_name,
            "entity_id": token.entity_id,
            "expire_time": None,
            "explicit_max_ttl": token.explicit_max_ttl,
            "id": token.id,
            "meta": token.meta,
            "num_uses": token.num_uses,
            "orphan": token.orphan,
            "path": token.path,
            "policies": token.policies,
            "ttl": 0,
            "type": token.token_type,
        }
        if token.namespace:
            data["namespace_path"] = token.namespace + "/"
        if token.expire_time is not None:
            # Root tokens have no lease, so these fields appear only for expiring tokens.
            data["expire_time"] = rfc3339nano(int(token.expire_time * 10**9))
            data["ttl"] = max(int(token.expire_time - time.time() + 0.5), 0)
            data["issue_time"] = rfc3339nano(int(token.creation_time * 10**9))
            data["renewable"] = token.renewable
        if token.last_renewal is not None:
            data["last_renewal"] = rfc3339nano(int(token.last_renewal * 10**9))
            data["last_renewal_time"] = int(token.last_renewal)
        return data

    def _renew_self(self, token: Token, increment: Any) -> _Response:
        if token.expire_time is None:
            # NOTE: the wording for a token without a lease (root) is unverified.
            return _error_response(400, "lease not found")
        if not token.renewable:
            return _error_response(400, "lease is not renewable")
        try:
            requested = parse_duration(increment) if increment not in (None, "", 0) else token.ttl
        except ValueError:
            return _error_response(400, f"invalid increment {increment!r}")
        now = time.time()
        granted = min(requested, DEFAULT_LEASE_TTL)
        if token.explicit_max_ttl:
            granted = min(granted, int(token.creation_time + token.explicit_max_ttl - now))
        token.expire_time = now + granted
        token.last_renewal = now
        return _json_response(200, self._envelope(None, mount_type="token", auth=self._auth_block(token)))

    def _create_child_token(self, parent: Token, data: dict[str, Any], orphan: bool) -> _Response:
        try:
            ttl = parse_duration(data.get("ttl") or DEFAULT_LEASE_TTL)
        except ValueError:
            return _error_response(400, f"invalid ttl {data.get('ttl')!r}")
        policies = list(data.get("policies") or parent.policies)
        if not data.get("no_default_policy") and "default" not in policies and "root" not in policies:
            policies.append("default")
        # A child token keeps its parent's access rules; named policies are labels only.
        is_root = parent.is_root and "root" in policies
        display_name = f"token-{data['display_name']}" if data.get("display_name") else "token"
        child = self._add_token(policies=sorted(set(policies)), allow=parent.allow, deny=parent.deny,
                                ttl=0 if is_root and not data.get("ttl") else ttl,
                                renewable=bool(data.get("renewable", True)), num_uses=int(data.get("num_uses") or 0),
                                display_name=display_name, meta=data.get("meta"), is_root=is_root)
        child.orphan = orphan
        return _json_response(200, self._envelope(None, mount_type="token", auth=self._auth_block(child)))


def _query_bool(value: Any) -> bool:
    if isinstance(value, list):
        value = value[-1] if value else ""
    return str(value or "").lower() in ("true", "1", "t", "yes")


def _normalise_allow(allow: Any) -> dict[str, set[str]]:
    """Turn a list of patterns (all capabilities) or a pattern->capabilities dict into rules."""
    if not allow:
        return {}
    if isinstance(allow, dict):
        rules = {}
        for pattern, capabilities in allow.items():
            unknown = set(capabilities) - ALL_CAPABILITIES - {"deny"}
            if unknown:
                raise ValueError(f"unknown capabilities {sorted(unknown)} for {pattern!r}")
            rules[_normalise_pattern(pattern)] = set(capabilities) - {"deny"}
        return rules
    return {_normalise_pattern(pattern): set(ALL_CAPABILITIES) for pattern in allow}


def _make_role(allow: Any, deny: list[str] | None, policies: list[str] | None, ttl: int,
               num_uses: int) -> _AuthRole:
    return _AuthRole(allow=_normalise_allow(allow), deny=[_normalise_pattern(p) for p in (deny or [])],
                     policies=list(policies or []), ttl=ttl, num_uses=num_uses)
