"""Recovering a file's data key from its key groups, in sops' decryption order.

Within a group the master keys are tried one by one until one works. One group yields the
data key itself. Several groups each yield a Shamir share, and ``shamir_threshold`` shares
(every group when the file sets no threshold) are combined into the data key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from ...errors import (BackendUnavailableError, ConfigError, CredentialsError,
                       DeadlineExceededError, MissingExtraError, PermissionDeniedError,
                       SecretInitError)
from . import shamir
from .keysources import AgeIdentities, KeyContext, KeySourceError, decrypt_master_key
from .metadata import DEFAULT_DECRYPTION_ORDER, KEY_TYPES, MasterKey, Metadata

log = logging.getLogger(__name__)

# Hints by key type: the setting to fix when no key of that type worked.
KEY_HINTS = {
    "age": "set SOPS_AGE_KEY_FILE (or SOPS_AGE_KEY, SOPS_AGE_KEY_CMD) to an identity for "
           "one of the file's age recipients",
    "pgp": "import a private key for one of the file's PGP fingerprints into the GnuPG home "
           "(GNUPGHOME)",
    "kms": "give AWS credentials (or the file's role) kms:Decrypt on the file's KMS key",
    "hc_vault": "set VAULT_TOKEN to a token allowed to use the file's transit key",
}


@dataclass
class KeyFailure:
    """The reason one master key of one group did not yield the data key."""

    group: int
    key: MasterKey
    error: KeySourceError


class DataKeyError(Exception):
    """No data key: the failures, for the caller to turn into one SecretInitError."""

    def __init__(self, failures: list[KeyFailure], missing_groups: list[int],
                 shares_needed: int, shares_found: int, group_count: int) -> None:
        super().__init__("data key not recovered")
        self.failures = failures
        self.missing_groups = missing_groups
        self.shares_needed = shares_needed
        self.shares_found = shares_found
        self.group_count = group_count

    @property
    def needs_sops_binary(self) -> bool:
        """Whether some group failed only because its keys need the sops binary."""
        for group in self.missing_groups:
            kinds = {failure.error.kind for failure in self.failures if failure.group == group}
            if "unsupported" in kinds:
                return True
        return False


def decryption_order(configured: Sequence[str] | None) -> list[str]:
    """Return the configured key type order, or sops' default (age, pgp), then the other types."""
    order = list(configured) if configured else list(DEFAULT_DECRYPTION_ORDER)
    return order + [key_type for key_type in KEY_TYPES if key_type not in order]


def recover_data_key(metadata: Metadata, context: KeyContext, age: AgeIdentities,
                     order: Sequence[str]) -> bytes:
    """Return the data key, or raise DataKeyError listing every key that failed."""
    rank = {key_type: index for index, key_type in enumerate(order)}
    failures: list[KeyFailure] = []
    shares: list[bytes] = []
    missing: list[int] = []
    groups = metadata.key_groups
    needed = 1 if len(groups) == 1 else metadata.shamir_threshold

    for number, group in enumerate(groups, start=1):
        if len(shares) >= needed:
            break
        ordered = sorted(group, key=lambda key: rank.get(key.key_type, len(rank)))
        share = None
        for key in ordered:
            try:
                share = decrypt_master_key(key, context, age)
                log.debug("decrypted the data key with %s", key.describe())
                break
            except KeySourceError as error:
                log.debug("key %s failed: %s", key.describe(), error.reason)
                failures.append(KeyFailure(number, key, error))
                if error.kind == "deadline":
                    raise DataKeyError(failures, [number], needed, len(shares), len(groups))
        if share is None:
            missing.append(number)
        else:
            shares.append(share)

    if len(shares) < needed:
        raise DataKeyError(failures, missing, needed, len(shares), len(groups))
    if len(groups) == 1:
        return shares[0]
    try:
        return shamir.combine(shares)
    except ValueError as error:
        raise DataKeyError([KeyFailure(0, MasterKey("shamir", {}),
                                       KeySourceError("invalid", f"the key group shares do not "
                                                                 f"combine: {error}"))],
                           [], needed, len(shares), len(groups)) from None


def data_key_error(error: DataKeyError, metadata: Metadata, source: str,
                   fallback_note: str) -> SecretInitError:
    """Turn DataKeyError into the SecretInitError whose class fits what the user can do."""
    key_types = ", ".join(metadata.key_types()) or "none"
    details = "; ".join(
        (f"group {failure.group}: " if error.group_count > 1 else "")
        + f"{failure.key.describe()}: {failure.error.reason}"
        for failure in error.failures)
    if error.group_count > 1:
        head = (f"cannot decrypt {source}: its data key is split over {error.group_count} key "
                f"groups and needs {error.shares_needed}, but only {error.shares_found} could be "
                f"decrypted; key group(s) {', '.join(map(str, error.missing_groups))} failed")
    else:
        head = f"cannot decrypt the data key of {source} (key types in the file: {key_types})"
    failed_types = [failure.key.key_type for failure in error.failures]
    hints = [KEY_HINTS[key_type] for key_type in dict.fromkeys(failed_types) if key_type in KEY_HINTS]
    message = head + (f": {details}" if details else "")
    if error.needs_sops_binary:
        message += f"; {fallback_note}"
    elif hints:
        message += "; to fix: " + "; ".join(hints)

    kinds = {failure.error.kind for failure in error.failures}
    if "deadline" in kinds:
        return DeadlineExceededError(message)
    if kinds == {"tool"} and any("pip install" in failure.error.reason for failure in error.failures):
        return MissingExtraError(message)
    if kinds and kinds <= {"tool", "unsupported", "invalid"}:
        return ConfigError(message)
    if kinds and kinds <= {"unavailable", "tool", "unsupported"}:
        return BackendUnavailableError(message)
    if "denied" in kinds:
        return PermissionDeniedError(message)
    return CredentialsError(message)
