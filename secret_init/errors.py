"""The one error hierarchy of secret-init.

Every failure a user can cause or meet is one of these classes, and the class decides the
process exit code. Backends map their library's exceptions (hvac, botocore, cryptography) to
these classes at their own boundary, so no other module imports a backend library to catch
its errors. Messages name the secret, the source and the fix, and never contain a value.
"""

from __future__ import annotations

import copy
import os

# Exit codes follow sysexits.h where one fits, and the shell for commands and signals.
EX_OK = 0
EX_USAGE = 64  # bad command line
EX_DATAERR = 65  # a fetched value cannot be rendered (missing key, bad base64, bad MAC)
EX_NOINPUT = 66  # a secret, version or manifest does not exist
EX_UNAVAILABLE = 69  # a backend could not be reached or kept failing
EX_SOFTWARE = 70  # a bug in secret-init
EX_CANTCREAT = 73  # the secret files could not be written
EX_TEMPFAIL = 75  # the fetch deadline passed
EX_NOPERM = 77  # the backend denied access (policy, invalid or expired credentials)
EX_CONFIG = 78  # the manifest, an option or the environment is invalid
EX_NOT_EXECUTABLE = 126  # the command exists but cannot be executed
EX_NOT_FOUND = 127  # the command was not found
EX_SIGNAL_BASE = 128  # a process killed by signal N exits 128+N


class SecretInitError(Exception):
    """Base class: a failure that ends the run with ``exit_code``."""

    exit_code = EX_SOFTWARE

    def __init__(self, message: str, *, secret: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.secret = secret

    def __str__(self) -> str:
        if self.secret and f"'{self.secret}'" not in self.message:
            return f"secret '{self.secret}': {self.message}"
        return self.message

    def for_secret(self, secret: str) -> "SecretInitError":
        """Return a copy of this error tagged with the manifest secret it failed for.

        A copy, because one fetch error is shared by every secret that uses the reference.
        """
        tagged = copy.copy(self)
        if tagged.secret is None:
            tagged.secret = secret
        return tagged


class UsageError(SecretInitError):
    """The command line is invalid."""

    exit_code = EX_USAGE


class ConfigError(SecretInitError):
    """The manifest, an option, an environment variable or the installation is invalid."""

    exit_code = EX_CONFIG


class ManifestError(ConfigError):
    """The manifest is invalid at a known file, line and column."""

    def __init__(self, message: str, *, file: str, line: int | None = None,
                 column: int | None = None) -> None:
        where = file if line is None else f"{file}:{line}:{column}"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
        self.column = column


class MissingExtraError(ConfigError):
    """A backend's optional dependencies are not installed."""


class DataError(SecretInitError):
    """A fetched value cannot be turned into the requested file content."""

    exit_code = EX_DATAERR


class KeyNotFoundError(DataError):
    """The value has no field at the requested key path."""


class IntegrityError(DataError):
    """An encrypted file failed its integrity check (modified or damaged)."""


class NotFoundError(SecretInitError):
    """A secret, a version of it, or an input file does not exist."""

    exit_code = EX_NOINPUT


class SecretDeletedError(NotFoundError):
    """The secret or the requested version was deleted or is scheduled for deletion."""


class PermissionDeniedError(SecretInitError):
    """The backend denied access, by policy or because the credentials are invalid."""

    exit_code = EX_NOPERM


class CredentialsError(PermissionDeniedError):
    """No usable credentials, or they are invalid or expired."""


class BackendUnavailableError(SecretInitError):
    """The backend could not be reached or kept failing after retries."""

    exit_code = EX_UNAVAILABLE


class DeadlineExceededError(SecretInitError):
    """The overall fetch deadline passed before the secret was fetched."""

    exit_code = EX_TEMPFAIL


class OutputError(SecretInitError):
    """The secret files could not be written or published."""

    exit_code = EX_CANTCREAT


class CommandNotFoundError(SecretInitError):
    """The command to hand over to does not exist."""

    exit_code = EX_NOT_FOUND


class CommandNotExecutableError(SecretInitError):
    """The command exists but cannot be executed."""

    exit_code = EX_NOT_EXECUTABLE


class StoppedBySignalError(SecretInitError):
    """A signal stopped the run before the hand-over."""

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} before starting the command; nothing was written")
        self.signum = signum
        self.exit_code = EX_SIGNAL_BASE + signum


def os_reason(error: OSError) -> str:
    """Return the OS reason of ``error`` without the file name, which callers name themselves."""
    return error.strerror or os.strerror(error.errno or 0) or type(error).__name__


class DecryptionFailedError(PermissionDeniedError):
    """The backend could not decrypt the value with its KMS key (key disabled or kms:Decrypt denied)."""


class PrivilegeDropError(SecretInitError):
    """Switching to the requested user failed, so the command was not started."""

    exit_code = EX_NOPERM
