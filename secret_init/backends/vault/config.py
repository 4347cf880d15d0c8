"""The vault backend's settings: address, namespace, TLS, proxy and auth method.

Each setting comes from the manifest first and from the variable the Vault CLI reads
(VAULT_ADDR, VAULT_NAMESPACE, VAULT_CACERT, ...) second. Variables are read from the run's
environment mapping, not from what hvac read when it was imported, so a test or a wrapper
that sets them after import is obeyed. Only the standard library is imported here.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from ...errors import ConfigError
from ...fields import Fields
from ..base import BackendContext

log = logging.getLogger(__name__)

AUTH_METHODS = ("token", "approle", "kubernetes", "jwt")
DEFAULT_KUBERNETES_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Parallel reads against one Vault. The maximum keeps one container from flooding Vault with
# requests; the session's connection pool is sized to the setting.
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64
# Upper bound for one HTTP request; the run's deadline cuts it further. hvac uses 30 s too.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 30.0

# Values Go's strconv.ParseBool accepts, which is how the Vault CLI reads VAULT_SKIP_VERIFY.
_TRUE_WORDS = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE_WORDS = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass(frozen=True)
class TLSSettings:
    """Certificate checks and the client certificate for HTTPS connections to Vault.

    Each path keeps the name of where it came from (``ca_cert`` or ``VAULT_CACERT``), so a
    missing file is reported against the setting the user has to fix.
    """

    ca_cert: tuple[str, Path] | None = None
    ca_path: tuple[str, Path] | None = None
    client_cert: tuple[str, Path] | None = None
    client_key: tuple[str, Path] | None = None
    skip_verify: bool = False

    def verify(self) -> bool | str:
        """Return the value for requests' ``verify``: False, a CA file or folder, or True."""
        if self.skip_verify:
            return False
        if self.ca_cert is not None:
            return str(self.ca_cert[1])
        if self.ca_path is not None:
            # NOTE: OpenSSL reads a CA folder only through hashed names (openssl rehash);
            # no test runs a ca_path connection.
            return str(self.ca_path[1])
        return True

    def cert(self) -> tuple[str, str] | None:
        """Return the (certificate, key) pair for requests' ``cert``, or None."""
        if self.client_cert is None or self.client_key is None:
            return None
        return str(self.client_cert[1]), str(self.client_key[1])

    def files(self) -> list[tuple[str, Path, bool]]:
        """Return (setting name, path, is a folder) for every configured file."""
        found = []
        for setting, is_dir in ((self.ca_cert, False), (self.ca_path, True),
                                (self.client_cert, False), (self.client_key, False)):
            if setting is not None:
                found.append((setting[0], setting[1], is_dir))
        return found


@dataclass(frozen=True)
class AuthSettings:
    """The auth method and its credential sources.

    ``token`` reads ``token_file``, else VAULT_TOKEN, else ~/.vault-token, and that token is
    never revoked. ``approle``, ``kubernetes`` and ``jwt`` log in, and ``close`` revokes the
    token of that login unless a fetched secret holds a lease created with it.
    """

    method: str = "token"
    mount: str = "token"
    token_file: Path | None = None
    role: str | None = None
    role_id: str | None = None
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    remove_secret_id_file: bool = False
    token_path: Path | None = None
    token_env: str | None = None


@dataclass(frozen=True)
class VaultSettings:
    """Everything needed to connect and authenticate to one Vault server."""

    address: str
    namespace: str | None
    tls: TLSSettings
    proxy: str | None
    auth: AuthSettings
    concurrency: int = DEFAULT_CONCURRENCY
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    # Credential variables this configuration reads from the environment.
    consumed_environment: frozenset[str] = field(default_factory=frozenset)


def read_settings(config: Fields, context: BackendContext) -> VaultSettings:
    """Read and validate the backend's manifest fields, falling back to VAULT_* variables."""
    environ = context.environ
    address = _read_address(config, environ)
    namespace = config.string("namespace") or environ.get("VAULT_NAMESPACE") or None
    if namespace is not None:
        namespace = namespace.strip("/") or None
    # Without an address, the other fields are still checked; the run fails at fetch time.
    tls = _read_tls(config, context, address or "https://address-not-set")
    concurrency = config.integer("concurrency", DEFAULT_CONCURRENCY, minimum=1,
                                 maximum=MAX_CONCURRENCY)
    request_timeout = config.duration("request_timeout", DEFAULT_REQUEST_TIMEOUT_SECONDS)
    if request_timeout <= 0:
        raise config.error("request_timeout", "must be greater than zero")

    auth_fields = config.fields("auth")
    if auth_fields is None:
        auth_fields = Fields({}, file=config.file, where=f"{config.where}.auth")
    auth, consumed = _read_auth(auth_fields, context)
    auth_fields.finish()

    return VaultSettings(address=address or "", namespace=namespace, tls=tls,
                         proxy=select_proxy(address, environ) if address else None, auth=auth,
                         concurrency=concurrency, request_timeout=request_timeout,
                         consumed_environment=frozenset(consumed))


MISSING_ADDRESS = ("missing Vault address; set 'address' (for example "
                   "https://vault.example.com:8200) or VAULT_ADDR")


def _read_address(config: Fields, environ: Mapping[str, str]) -> str | None:
    """Return the address from the manifest or VAULT_ADDR, or None when neither is set."""
    address = config.string("address")
    source = "address"
    if address is None:
        address = environ.get("VAULT_ADDR") or None
        source = "VAULT_ADDR"
    if address is None:
        return None
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        message = (f"'{address}' is not an http:// or https:// URL with a host; "
                   "write it as https://HOST:8200")
        if source == "address":
            raise config.error("address", message)
        raise ConfigError(f"VAULT_ADDR: {message}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        message = (f"'{address}' must not contain a path or query; the API prefix /v1/ is "
                   "added for each request")
        if source == "address":
            raise config.error("address", message)
        raise ConfigError(f"VAULT_ADDR: {message}")
    return address.rstrip("/")


def _parse_bool_variable(name: str, value: str) -> bool:
    if value in _TRUE_WORDS:
        return True
    if value in _FALSE_WORDS:
        return False
    raise ConfigError(f"{name}='{value}' is not a boolean; use true or false")


def _read_tls(config: Fields, context: BackendContext, address: str) -> TLSSettings:
    environ = context.environ

    def path_setting(key: str, variable: str) -> tuple[str, Path] | None:
        value = config.string(key)
        if value is not None:
            return key, context.resolve_path(value)
        if environ.get(variable):
            return variable, Path(environ[variable])
        return None

    config.exclusive("ca_cert", "ca_path")
    for key in ("ca_cert", "ca_path"):
        if config.has(key) and config.has("skip_verify") and config.raw("skip_verify") is True:
            raise config.error("skip_verify", f"'{key}' and 'skip_verify' cannot be used "
                                              "together; remove one")
    ca_cert = path_setting("ca_cert", "VAULT_CACERT")
    ca_path = path_setting("ca_path", "VAULT_CAPATH")
    # The Vault CLI gives VAULT_CACERT precedence over VAULT_CAPATH; do the same.
    if ca_cert is not None and ca_path is not None:
        ca_path = None

    client_cert = path_setting("client_cert", "VAULT_CLIENT_CERT")
    client_key = path_setting("client_key", "VAULT_CLIENT_KEY")
    if (client_cert is None) != (client_key is None):
        if client_key is None:
            present, missing_field, missing_variable = client_cert, "client_key", "VAULT_CLIENT_KEY"
        else:
            present, missing_field, missing_variable = client_key, "client_cert", "VAULT_CLIENT_CERT"
        assert present is not None
        if present[0] in ("client_cert", "client_key"):
            raise config.error(present[0], f"a client certificate needs both 'client_cert' and "
                                           f"'client_key'; set '{missing_field}' too")
        raise ConfigError(f"{present[0]} is set but {missing_variable} is not; a client "
                          "certificate needs both")

    if config.has("skip_verify"):
        skip_verify = config.boolean("skip_verify")
    elif environ.get("VAULT_SKIP_VERIFY"):
        skip_verify = _parse_bool_variable("VAULT_SKIP_VERIFY", environ["VAULT_SKIP_VERIFY"])
    else:
        skip_verify = False

    tls = TLSSettings(ca_cert=ca_cert, ca_path=ca_path, client_cert=client_cert,
                      client_key=client_key, skip_verify=skip_verify)
    if urlsplit(address).scheme == "http" and (tls.files() or skip_verify):
        log.warning("Vault address %s uses plain http, so the TLS settings (%s) have no "
                    "effect and the token travels unencrypted", address,
                    ", ".join(name for name, _, _ in tls.files()) or "skip_verify")
    return tls


def _read_auth(auth: Fields, context: BackendContext) -> tuple[AuthSettings, set[str]]:
    environ = context.environ
    method = auth.string("method", "token", choices=AUTH_METHODS)
    mount = (auth.string("mount") or method).strip("/")
    if not mount:
        raise auth.error("mount", "must name the auth mount, for example 'approle'")
    consumed: set[str] = set()

    def optional_path(key: str) -> Path | None:
        value = auth.string(key)
        return context.resolve_path(value) if value is not None else None

    if method == "token":
        token_file = optional_path("token_file")
        if token_file is None and environ.get("VAULT_TOKEN"):
            consumed.add("VAULT_TOKEN")
        return AuthSettings(method=method, mount=mount, token_file=token_file), consumed

    if method == "approle":
        auth.exclusive("role_id", "role_id_file")
        role_id = auth.string("role_id")
        role_id_file = optional_path("role_id_file")
        if role_id is None and role_id_file is None:
            if not environ.get("VAULT_ROLE_ID"):
                raise auth.error(None, "approle needs a role ID: set 'role_id', "
                                       "'role_id_file' or VAULT_ROLE_ID")
            consumed.add("VAULT_ROLE_ID")
        secret_id_file = optional_path("secret_id_file")
        if secret_id_file is None and environ.get("VAULT_SECRET_ID"):
            consumed.add("VAULT_SECRET_ID")
        remove = auth.boolean("remove_secret_id_file", False)
        if remove and secret_id_file is None:
            raise auth.error("remove_secret_id_file", "needs 'secret_id_file'")
        return AuthSettings(method=method, mount=mount, role_id=role_id,
                            role_id_file=role_id_file, secret_id_file=secret_id_file,
                            remove_secret_id_file=remove), consumed

    if method == "kubernetes":
        role = auth.string("role", required=True)
        token_path = optional_path("token_path") or Path(DEFAULT_KUBERNETES_TOKEN_PATH)
        return AuthSettings(method=method, mount=mount, role=role,
                            token_path=token_path), consumed

    # jwt: the role may be omitted when the mount has a default_role.
    role = auth.string("role")
    token_source = auth.exclusive("token_file", "token_env", required=True)
    if token_source == "token_file":
        return AuthSettings(method=method, mount=mount, role=role,
                            token_path=optional_path("token_file")), consumed
    token_env = auth.string("token_env")
    consumed.add(token_env)
    return AuthSettings(method=method, mount=mount, role=role, token_env=token_env), consumed


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_no_proxy_entry(entry: str) -> tuple[str, str]:
    """Split a NO_PROXY entry into (host, port); port is "" when the entry has none."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


def _no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    """Match ``host``:``port`` against NO_PROXY entries as Go's httpproxy package does.

    An entry is "*", an IP address or CIDR prefix, or a domain name, each with an optional
    port. "example.com" matches that name and its subdomains, ".example.com" (or
    "*.example.com") only the subdomains.
    """
    host = host.lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address is not None and address in network:
                return True
            continue
        entry_host, entry_port = _split_no_proxy_entry(entry)
        if not entry_host or (entry_port and entry_port != str(port)):
            continue
        try:
            entry_address = ipaddress.ip_address(entry_host)
        except ValueError:
            entry_address = None
        if entry_address is not None:
            if address is not None and address == entry_address:
                return True
            continue
        if entry_host.startswith("*."):
            entry_host = entry_host[1:]
        if entry_host.startswith("."):
            if host.endswith(entry_host):
                return True
        elif host == entry_host or host.endswith("." + entry_host):
            return True
    return False


def select_proxy(address: str, environ: Mapping[str, str]) -> str | None:
    """Return the proxy URL for ``address`` from HTTP(S)_PROXY and NO_PROXY, or None.

    The rules follow Go's net/http ProxyFromEnvironment, which the Vault CLI and Agent use.
    Upper-case variables win over lower-case ones, and ALL_PROXY is not read. A loopback
    address (localhost, 127.0.0.0/8, ::1) never goes through a proxy, so a Vault Agent
    sidecar or a local test server is reached directly.
    """
    parts = urlsplit(address)
    host = parts.hostname or ""
    if _is_loopback(host):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)

    def variable(name: str) -> str | None:
        return environ.get(name.upper()) or environ.get(name.lower()) or None

    no_proxy = variable("no_proxy")
    if no_proxy and _no_proxy_matches(host, port, no_proxy):
        return None
    if parts.scheme == "https":
        return variable("https_proxy")
    return variable("http_proxy")
