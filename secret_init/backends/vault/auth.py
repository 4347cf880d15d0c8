"""Getting the Vault token: a supplied token, or a login with AppRole, Kubernetes or JWT.

Credential files are read when the fetch starts, not when the manifest is loaded, so
``check`` and ``plan`` need no credentials. No credential value reaches a log or a message.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ... import redact
from ...deadline import Deadline
from ...errors import CredentialsError, os_reason
from .client import VaultConnection
from .config import AuthSettings

log = logging.getLogger(__name__)

# A token, role ID, secret ID or JWT file larger than this is the wrong file.
MAX_CREDENTIAL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Session:
    """The token in use and whether secret-init obtained it by logging in."""

    from_login: bool
    accessor: str | None = None
    lease_seconds: int | None = None


def read_credential_file(path: Path, description: str) -> str:
    """Read a one-line credential file; raise CredentialsError naming the file, never its content."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CREDENTIAL_BYTES + 1)
    except FileNotFoundError:
        raise CredentialsError(f"{description} file {path} does not exist") from None
    except PermissionError:
        raise CredentialsError(f"{description} file {path} is not readable by uid {os.geteuid()}; "
                               "fix its mode or owner") from None
    except OSError as error:
        raise CredentialsError(f"cannot read {description} file {path}: {os_reason(error)}") from None
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise CredentialsError(f"{description} file {path} is larger than {MAX_CREDENTIAL_BYTES} "
                               "bytes; it is not a credential file")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialsError(f"{description} file {path} is not UTF-8 text") from None
    if not value:
        raise CredentialsError(f"{description} file {path} is empty")
    return value


def _supplied_token(auth: AuthSettings, environ: Mapping[str, str]) -> tuple[str, str]:
    """Return (token, where it came from): token_file, VAULT_TOKEN, then ~/.vault-token."""
    if auth.token_file is not None:
        return read_credential_file(auth.token_file, "token"), f"the token in {auth.token_file}"
    token = environ.get("VAULT_TOKEN", "").strip()
    if token:
        return token, "the token in VAULT_TOKEN"
    home = environ.get("HOME") or os.path.expanduser("~")
    helper_file = Path(home) / ".vault-token"
    if helper_file.is_file():
        return read_credential_file(helper_file, "token"), f"the token in {helper_file}"
    raise CredentialsError("no Vault token: set VAULT_TOKEN, set auth.token_file, write "
                           f"{helper_file}, or log in with auth.method approle, kubernetes "
                           "or jwt")


def _approle_credentials(auth: AuthSettings, environ: Mapping[str, str]) -> tuple[str, str | None]:
    if auth.role_id is not None:
        role_id = auth.role_id
    elif auth.role_id_file is not None:
        role_id = read_credential_file(auth.role_id_file, "AppRole role ID")
    else:
        role_id = environ.get("VAULT_ROLE_ID", "").strip()
        if not role_id:
            raise CredentialsError("AppRole login needs a role ID: set auth.role_id, "
                                   "auth.role_id_file or VAULT_ROLE_ID")

    secret_id: str | None = None
    if auth.secret_id_file is not None:
        secret_id = read_credential_file(auth.secret_id_file, "AppRole secret ID")
        if auth.remove_secret_id_file:
            try:
                auth.secret_id_file.unlink()
                log.info("removed the AppRole secret ID file %s after reading it",
                         auth.secret_id_file)
            except OSError as error:
                log.warning("could not remove the AppRole secret ID file %s after reading "
                            "it: %s; remove it yourself", auth.secret_id_file, os_reason(error))
    elif environ.get("VAULT_SECRET_ID", "").strip():
        secret_id = environ["VAULT_SECRET_ID"].strip()
    # No secret ID at all is valid for a role created with bind_secret_id=false. For other
    # roles Vault rejects the login with "missing secret_id".
    return role_id, secret_id


def authenticate(connection: VaultConnection, auth: AuthSettings, environ: Mapping[str, str],
                 deadline: Deadline) -> Session:
    """Set the connection's token, logging in first unless the method is ``token``."""
    client = connection.client
    if auth.method == "token":
        token, source = _supplied_token(auth, environ)
        redact.register(token)
        client.token = token
        connection.token_source = source
        return Session(from_login=False)

    action = f"{auth.method} login at auth/{auth.mount}"
    if auth.method == "approle":
        role_id, secret_id = _approle_credentials(auth, environ)
        # Credentials are masked in logs too: a proxy's error page may echo a request.
        redact.register(role_id)
        redact.register(secret_id)
        response: Any = connection.call(
            action, lambda: client.auth.approle.login(role_id=role_id, secret_id=secret_id,
                                                     mount_point=auth.mount, use_token=False),
            deadline, login=True)
    elif auth.method == "kubernetes":
        assert auth.token_path is not None and auth.role is not None
        jwt = read_credential_file(auth.token_path, "Kubernetes service account token")
        redact.register(jwt)
        response = connection.call(
            action, lambda: client.auth.kubernetes.login(role=auth.role, jwt=jwt,
                                                        mount_point=auth.mount, use_token=False),
            deadline, login=True)
    else:
        if auth.token_path is not None:
            jwt = read_credential_file(auth.token_path, "JWT")
        else:
            assert auth.token_env is not None
            jwt = environ.get(auth.token_env, "").strip()
            if not jwt:
                raise CredentialsError(f"JWT login: the variable {auth.token_env} named by "
                                       "auth.token_env is empty or not set")
        redact.register(jwt)
        response = connection.call(
            action, lambda: client.auth.jwt.jwt_login(role=auth.role, jwt=jwt, path=auth.mount,
                                                    use_token=False),
            deadline, login=True)

    login_auth = response.get("auth") if isinstance(response, dict) else None
    if not isinstance(login_auth, dict) or not login_auth.get("client_token"):
        raise CredentialsError(f"{action}: Vault's response contains no token (auth.client_token); "
                               "is the mount an auth method of that type?")
    client.token = login_auth["client_token"]
    redact.register(client.token)
    connection.token_source = f"the token from the {action}"
    session = Session(from_login=True, accessor=login_auth.get("accessor"),
                      lease_seconds=login_auth.get("lease_duration"))
    log.info("logged in to Vault at %s with %s (mount auth/%s); token accessor %s, TTL %s s",
             connection.settings.address, auth.method, auth.mount, session.accessor,
             session.lease_seconds)
    return session
