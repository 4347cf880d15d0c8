"""Master key sources: decrypting the data key (or a Shamir share) stored in one key entry.

Native sources are age (pyrage), PGP (the ``gpg`` binary), AWS KMS (botocore) and Vault
transit (hvac). Each raises ``KeySourceError`` with a reason that never contains key
material, and a ``kind`` from which the caller picks the error class and hint.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...deadline import Deadline
from .metadata import MasterKey

# Key types and age recipients this module cannot decrypt; the sops binary can.
FALLBACK_KEY_TYPES = ("gcp_kms", "hckms", "azure_kv")
_X25519_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
# A gpg or key command is stopped when the remaining deadline runs out. This floor gives a
# local command a fair chance even when the deadline is nearly spent.
MIN_COMMAND_SECONDS = 1.0
# sops names its KMS role sessions "sops@<hostname>"; AWS allows 64 characters.
MAX_ROLE_SESSION_NAME = 64
STDERR_CHARS_SHOWN = 300


class KeySourceError(Exception):
    """One master key could not decrypt the data key.

    ``kind`` is one of: "credentials" (no usable key or credentials), "denied", "tool"
    (a program or library is missing), "unsupported" (only the sops binary can do it),
    "unavailable" (network), "deadline", "invalid" (the key entry is damaged).
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class KeyContext:
    """Inputs of the key sources: the environment, the deadline and the file's sops version."""

    environ: Mapping[str, str]
    deadline: Deadline
    version: tuple[int, ...] | None = None
    # Environment variable names that held credentials and were read.
    consumed: set[str] = field(default_factory=set)

    def home(self) -> Path:
        return Path(self.environ.get("HOME") or os.path.expanduser("~"))

    def command_timeout(self) -> float:
        return max(MIN_COMMAND_SECONDS, self.deadline.remaining())


def is_native(key: MasterKey) -> bool:
    """Return whether this module can decrypt ``key`` without the sops binary."""
    if key.key_type in FALLBACK_KEY_TYPES:
        return False
    if key.key_type == "age":
        recipient = key.text("recipient")
        return bool(_X25519_RECIPIENT.match(recipient)) or recipient.startswith(("ssh-ed25519 ", "ssh-rsa "))
    return key.key_type in ("pgp", "kms", "hc_vault")


def decrypt_master_key(key: MasterKey, context: KeyContext, age: "AgeIdentities") -> bytes:
    """Decrypt the data key (or share) stored in ``key``; raise KeySourceError."""
    if not is_native(key):
        raise KeySourceError("unsupported", f"{key.key_type} keys are decrypted only by the "
                                            "sops binary")
    if key.key_type == "age":
        return age.decrypt(key, context)
    if key.key_type == "pgp":
        return decrypt_pgp(key, context)
    if key.key_type == "kms":
        return decrypt_kms(key, context)
    return decrypt_vault_transit(key, context)


# -- age ------------------------------------------------------------------------------------

class AgeIdentities:
    """age identities from the environment, loaded once per backend and shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._x25519: list[Any] | None = None
        self._ssh: list[Any] | None = None
        self._sources: list[str] = []
        self._problems: list[str] = []

    def decrypt(self, key: MasterKey, context: KeyContext) -> bytes:
        pyrage = _import_pyrage()
        recipient = key.text("recipient")
        enc = key.text("enc")
        with self._lock:
            if recipient.startswith("ssh-"):
                identities = self._ssh_identities(context, pyrage)
            else:
                identities = self._x25519_identities(context, pyrage, recipient)
            sources = list(self._sources)
            problems = list(self._problems)
        if not identities:
            detail = f" ({'; '.join(problems)})" if problems else ""
            raise KeySourceError("credentials", f"no age identity is available{detail}")
        try:
            return pyrage.decrypt(enc.encode("ascii"), identities)
        except pyrage.DecryptError as error:
            where = ", ".join(sources) or "no source"
            raise KeySourceError("credentials", f"none of the age identities from {where} "
                                                f"matches recipient {recipient} ({error})") from None
        except UnicodeEncodeError:
            raise KeySourceError("invalid", "the age 'enc' field is not ASCII armor") from None

    def _x25519_identities(self, context: KeyContext, pyrage: Any, recipient: str) -> list[Any]:
        if self._x25519 is not None:
            return self._x25519
        identities: list[Any] = []
        environ = context.environ
        if environ.get("SOPS_AGE_KEY"):
            context.consumed.add("SOPS_AGE_KEY")
            identities += self._parse(environ["SOPS_AGE_KEY"], "SOPS_AGE_KEY", pyrage)
        if environ.get("SOPS_AGE_KEY_FILE"):
            context.consumed.add("SOPS_AGE_KEY_FILE")
            path = Path(os.path.expanduser(environ["SOPS_AGE_KEY_FILE"]))
            identities += self._parse_file(path, "SOPS_AGE_KEY_FILE", pyrage)
        if environ.get("SOPS_AGE_KEY_CMD"):
            context.consumed.add("SOPS_AGE_KEY_CMD")
            output = self._run_key_command(environ["SOPS_AGE_KEY_CMD"], context, recipient)
            if output is not None:
                identities += self._parse(output, "SOPS_AGE_KEY_CMD", pyrage)
        config_home = environ.get("XDG_CONFIG_HOME") or str(context.home() / ".config")
        default_file = Path(config_home) / "sops" / "age" / "keys.txt"
        try:
            has_default = default_file.is_file()
        except OSError:
            # An unsearchable HOME (another user's, mode 0700) just means no default file.
            has_default = False
        if has_default:
            identities += self._parse_file(default_file, str(default_file), pyrage)
        self._x25519 = identities
        return identities

    def _ssh_identities(self, context: KeyContext, pyrage: Any) -> list[Any]:
        if self._ssh is not None:
            return self._ssh
        paths: list[tuple[Path, str]] = []
        if context.environ.get("SOPS_AGE_SSH_PRIVATE_KEY_FILE"):
            context.consumed.add("SOPS_AGE_SSH_PRIVATE_KEY_FILE")
            paths.append((Path(context.environ["SOPS_AGE_SSH_PRIVATE_KEY_FILE"]),
                          "SOPS_AGE_SSH_PRIVATE_KEY_FILE"))
        for name in ("id_ed25519", "id_rsa"):
            paths.append((context.home() / ".ssh" / name, f"~/.ssh/{name}"))
        identities = []
        for path, label in paths:
            if not path.is_file():
                continue
            try:
                identities.append(pyrage.ssh.Identity.from_buffer(path.read_bytes()))
                self._sources.append(label)
            except (OSError, pyrage.IdentityError, ValueError) as error:
                # Encrypted SSH keys land here: pyrage cannot ask for a passphrase.
                self._problems.append(f"{label} is not a usable unencrypted SSH key "
                                      f"({type(error).__name__})")
        self._ssh = identities
        return identities

    def _parse_file(self, path: Path, label: str, pyrage: Any) -> list[Any]:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            if isinstance(error, PermissionError):
                reason += (f"; make it readable by uid {os.geteuid()}, the user secret-init "
                           "runs as")
            self._problems.append(f"cannot read {label} {path}: {reason}")
            return []
        return self._parse(text, label, pyrage)

    def _parse(self, text: str, label: str, pyrage: Any) -> list[Any]:
        stripped = text.lstrip()
        if stripped.startswith(("age-encryption.org", "-----BEGIN AGE")):
            # NOTE: passphrase-protected identity files (sops >= 3.10) are not supported.
            self._problems.append(f"{label} is a passphrase-protected age file, which "
                                  "secret-init cannot unlock; give the plain identity instead")
            return []
        identities = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            # Since sops 3.13.0 one line may hold several identities separated by spaces.
            for word in line.split():
                if word.startswith("AGE-SECRET-KEY-1"):
                    try:
                        identities.append(pyrage.x25519.Identity.from_str(word))
                    except (pyrage.IdentityError, ValueError):
                        self._problems.append(f"{label} holds an invalid age identity")
                elif word.startswith(("AGE-SECRET-KEY-PQ-", "AGE-PLUGIN-")):
                    self._problems.append(f"{label} holds a post-quantum or plugin identity, "
                                          "which only the sops binary can use")
                else:
                    self._problems.append(f"{label} holds a line that is not an age identity")
        if identities:
            self._sources.append(label)
        return identities

    def _run_key_command(self, command: str, context: KeyContext, recipient: str) -> str | None:
        try:
            argv = shlex.split(command)
        except ValueError as error:
            self._problems.append(f"SOPS_AGE_KEY_CMD cannot be split into arguments: {error}")
            return None
        if not argv:
            return None
        environment = dict(context.environ)
        environment["SOPS_AGE_RECIPIENT"] = recipient
        try:
            completed = subprocess.run(argv, env=environment, capture_output=True,
                                       timeout=context.command_timeout(), check=False)
        except FileNotFoundError:
            self._problems.append(f"SOPS_AGE_KEY_CMD program '{argv[0]}' was not found")
            return None
        except subprocess.TimeoutExpired:
            self._problems.append("SOPS_AGE_KEY_CMD timed out")
            return None
        if completed.returncode != 0:
            self._problems.append(f"SOPS_AGE_KEY_CMD failed with exit code {completed.returncode}")
            return None
        return completed.stdout.decode("utf-8", errors="replace")


def _import_pyrage() -> Any:
    try:
        import pyrage
    except ImportError:
        raise KeySourceError("tool", "the age library pyrage is not installed; run: "
                                     "pip install 'secret-init[sops]'") from None
    return pyrage


# -- PGP ------------------------------------------------------------------------------------

def decrypt_pgp(key: MasterKey, context: KeyContext) -> bytes:
    """Decrypt the armored PGP message with ``gpg -d`` (GNUPGHOME is honoured)."""
    program = context.environ.get("SOPS_GPG_EXEC") or "gpg"
    found = shutil.which(program, path=context.environ.get("PATH", os.defpath))
    if found is None:
        raise KeySourceError("tool", f"the gpg program '{program}' was not found on PATH; "
                                     "install GnuPG or set SOPS_GPG_EXEC")
    try:
        completed = subprocess.run(
            [found, "--batch", "--no-tty", "--quiet", "--yes", "--decrypt"],
            input=key.text("enc").encode("utf-8"), capture_output=True,
            env=dict(context.environ), timeout=context.command_timeout(), check=False)
    except subprocess.TimeoutExpired:
        raise KeySourceError("deadline", "gpg did not finish before the fetch deadline") from None
    except OSError as error:
        raise KeySourceError("tool", f"cannot run {found}: {error.strerror}") from None
    if completed.returncode != 0 or not completed.stdout:
        # gpg's messages name key ids and reasons, never plaintext.
        message = completed.stderr.decode("utf-8", errors="replace").strip()
        message = " ".join(message.split())[-STDERR_CHARS_SHOWN:]
        raise KeySourceError("credentials", f"gpg could not decrypt the data key "
                                            f"(exit code {completed.returncode}): {message}")
    return completed.stdout


# -- AWS KMS --------------------------------------------------------------------------------

_KMS_ARN = re.compile(r"^arn:aws[\w-]*:kms:(.+):[0-9]+:(key|alias)/.+$")


def decrypt_kms(key: MasterKey, context: KeyContext) -> bytes:
    """Call KMS Decrypt for the key's ARN, with its encryption context and optional role."""
    try:
        import botocore.config
        import botocore.exceptions
        import botocore.session
    except ImportError:
        raise KeySourceError("tool", "botocore is not installed; run: "
                                     "pip install 'secret-init[aws]'") from None
    arn = key.text("arn")
    match = _KMS_ARN.match(arn)
    if not match:
        raise KeySourceError("invalid", f"'{arn}' is not a KMS key ARN")
    region = match.group(1)
    try:
        blob = base64.b64decode(key.text("enc"), validate=True)
    except (binascii.Error, ValueError):
        raise KeySourceError("invalid", "the KMS 'enc' field is not base64") from None
    encryption_context = {str(k): str(v) for k, v in (key.fields.get("context") or {}).items()}

    environ = context.environ
    # botocore reads these from the environment; like the AWS backends, hide them from the app.
    from ..aws.session import consumed_variables

    context.consumed.update(consumed_variables(environ))
    timeout = context.command_timeout()
    config = botocore.config.Config(connect_timeout=timeout, read_timeout=timeout,
                                    retries={"mode": "standard", "max_attempts": 3})
    try:
        session = botocore.session.Session(profile=key.text("aws_profile") or None)
        credentials: dict[str, str] = {}
        role = key.text("role")
        if role:
            credentials = _assume_role(session, role, region, environ, config)
        client = session.create_client(
            "kms", region_name=region, config=config,
            endpoint_url=environ.get("AWS_ENDPOINT_URL_KMS") or environ.get("AWS_ENDPOINT_URL") or None,
            **credentials)
        last_error: KeySourceError | None = None
        for candidate in _kms_contexts(encryption_context, context.version):
            try:
                response = client.decrypt(CiphertextBlob=blob, EncryptionContext=candidate,
                                          KeyId=arn)
                return response["Plaintext"]
            except botocore.exceptions.ClientError as error:
                last_error = _kms_client_error(error, arn)
                if last_error.kind != "denied":
                    raise last_error from None
        assert last_error is not None
        raise last_error
    except botocore.exceptions.NoCredentialsError:
        raise KeySourceError("credentials", "no AWS credentials were found; set "
                                            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                                            "AWS_PROFILE or a role") from None
    except botocore.exceptions.ProfileNotFound as error:
        raise KeySourceError("credentials", f"AWS profile not found: {error}") from None
    except (botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError) as error:
        raise KeySourceError("unavailable", f"KMS could not be reached: {error}") from None
    except botocore.exceptions.ClientError as error:
        raise _kms_client_error(error, arn) from None


def _assume_role(session: Any, role: str, region: str, environ: Mapping[str, str],
                 config: Any) -> dict[str, str]:
    sts = session.create_client(
        "sts", region_name=region, config=config,
        endpoint_url=environ.get("AWS_ENDPOINT_URL_STS") or environ.get("AWS_ENDPOINT_URL") or None)
    hostname = re.sub(r"[^\w+=,.@-]", "", socket.gethostname())
    name = f"sops@{hostname}"[:MAX_ROLE_SESSION_NAME]
    response = sts.assume_role(RoleArn=role, RoleSessionName=name)
    granted = response["Credentials"]
    return {"aws_access_key_id": granted["AccessKeyId"],
            "aws_secret_access_key": granted["SecretAccessKey"],
            "aws_session_token": granted["SessionToken"]}


def _kms_contexts(encryption_context: dict[str, str],
                  version: tuple[int, ...] | None) -> list[dict[str, str]]:
    """Return the encryption contexts to try, the stored one first.

    When a context had two or more different values, sops before 3.3.0 encrypted with a
    context in which every key mapped to one of those values. sops retries each value.
    """
    candidates = [encryption_context]
    values = list(dict.fromkeys(encryption_context.values()))
    if version is not None and version < (3, 3, 0) and len(values) >= 2:
        candidates += [{name: value for name in encryption_context} for value in values]
    return candidates


def _kms_client_error(error: Any, arn: str) -> KeySourceError:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "")
    if code in ("AccessDeniedException", "AccessDenied", "InvalidCiphertextException",
                "IncorrectKeyException", "DisabledException", "KMSInvalidStateException"):
        return KeySourceError("denied", f"KMS denied decryption with {arn}: {code} {message}".strip())
    if code in ("UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException",
                "ExpiredToken", "SignatureDoesNotMatch"):
        return KeySourceError("credentials", f"KMS rejected the AWS credentials: {code}")
    if code == "NotFoundException":
        return KeySourceError("denied", f"KMS key {arn} was not found")
    if code in ("ThrottlingException", "KMSInternalException", "DependencyTimeoutException"):
        return KeySourceError("unavailable", f"KMS failed: {code}")
    return KeySourceError("denied", f"KMS Decrypt failed: {code} {message}".strip())


# -- Vault transit --------------------------------------------------------------------------

def decrypt_vault_transit(key: MasterKey, context: KeyContext) -> bytes:
    """Decrypt with Vault's transit engine: POST {engine_path}/decrypt/{key_name}."""
    try:
        import hvac
        import hvac.exceptions
        import requests
    except ImportError:
        raise KeySourceError("tool", "hvac is not installed; run: "
                                     "pip install 'secret-init[vault]'") from None

    environ = context.environ
    # The address stored in the file wins over VAULT_ADDR, as in sops itself, because the
    # file names the Vault that has its key.
    address = key.text("vault_address")
    token = _vault_token(context)
    if not token:
        raise KeySourceError("credentials", "no Vault token; set VAULT_TOKEN or write "
                                            "~/.vault-token")

    client = hvac.Client(url=address, token=token, namespace=environ.get("VAULT_NAMESPACE") or None,
                         timeout=context.command_timeout())
    engine_path = key.text("engine_path").strip("/")
    key_name = key.text("key_name")

    try:
        response = client.secrets.transit.decrypt_data(
            name=key_name, ciphertext=key.text("enc"), mount_point=engine_path)
        plaintext = response["data"]["plaintext"]
        return base64.b64decode(plaintext, validate=True)
    except hvac.exceptions.Forbidden:
        raise KeySourceError("denied", f"Vault denied transit decryption with key '{key_name}' "
                                       f"at {address}/v1/{engine_path}") from None
    except hvac.exceptions.Unauthorized:
        raise KeySourceError("credentials", f"Vault at {address} rejected the token") from None
    except hvac.exceptions.InvalidPath:
        raise KeySourceError("denied", f"Vault has no transit key '{key_name}' under "
                                       f"{address}/v1/{engine_path}") from None
    except hvac.exceptions.InvalidRequest as error:
        raise KeySourceError("denied", f"Vault rejected the transit request: {error}") from None
    except hvac.exceptions.VaultError as error:
        raise KeySourceError("unavailable", f"Vault at {address} failed: {type(error).__name__}") from None
    except requests.exceptions.RequestException as error:
        raise KeySourceError("unavailable", f"Vault at {address} could not be reached: "
                                            f"{type(error).__name__}") from None
    except (KeyError, TypeError, binascii.Error, ValueError):
        raise KeySourceError("invalid", f"Vault at {address} returned no valid plaintext") from None


def _vault_token(context: KeyContext) -> str:
    if context.environ.get("VAULT_TOKEN"):
        context.consumed.add("VAULT_TOKEN")
        return context.environ["VAULT_TOKEN"].strip()
    token_file = context.home() / ".vault-token"
    try:
        return token_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""

