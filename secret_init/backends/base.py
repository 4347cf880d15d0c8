"""The small interface every backend adapter implements.

A backend is configured once from its manifest entry under ``backends:``. For each secret that
names it with ``from:``, it turns the secret's backend-specific fields into a ``Reference``: a
hashable description of what to fetch. Equal references are fetched once, however many
secrets use them. ``fetch`` receives the distinct references of one run as a batch and
returns, for each, either a ``Fetched`` value or a ``SecretInitError``. It never raises a
library exception.

Backend modules import only the standard library at module level. Heavy client libraries
(hvac, botocore, cryptography) are imported inside ``fetch`` or helpers it calls, so that
``check`` and ``plan`` work without the optional extras and an image pays only for the
backends it uses.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

from ..deadline import Deadline
from ..errors import SecretInitError
from ..fields import Fields

# A key path into a structured value: ("database", "password").
KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Reference:
    """The description of one value to fetch from one backend.

    Subclasses add hashable fields such as a path or a version.
    """

    backend: str

    def describe(self) -> str:
        """Return where the value comes from, for logs and errors (never a value)."""
        return self.backend


@dataclass(frozen=True)
class Lease:
    """A lease on a dynamic secret, recorded so that it can be renewed or revoked later."""

    lease_id: str
    duration_seconds: int
    renewable: bool


@dataclass
class Fetched:
    """One fetched value and what is known about its version.

    ``value`` is bytes, str, or a parsed structure (dict, list, scalar). ``document_format``
    names the format a whole structured document is rendered in when the secret sets neither
    ``key`` nor ``format`` (a SOPS dotenv file stays dotenv); None means JSON.
    """

    value: Any
    version: str | None = None
    lease: Lease | None = None
    document_format: str | None = None


@dataclass
class BackendContext:
    """The parts of the run a backend may use besides its own configuration."""

    manifest_dir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    # Other configured backends by name, for backends that read their input through another
    # one (a SOPS file stored in Secrets Manager, for example).
    backends: Mapping[str, "Backend"] = field(default_factory=dict)

    def resolve_path(self, path: str) -> Path:
        """Resolve a manifest path: relative paths are relative to the manifest's folder."""
        expanded = Path(os.path.expanduser(path))
        return expanded if expanded.is_absolute() else self.manifest_dir / expanded


class Backend(abc.ABC):
    """A configured backend instance (one per entry under ``backends:``)."""

    # The name used as ``type:`` in the manifest.
    type_name: ClassVar[str]
    # The pip extra that installs this backend's libraries, and the modules it provides.
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    # A setting the environment must complete at run time but does not (no VAULT_ADDR, say):
    # ``check`` reports it as a warning, because it may run outside the container, and a run
    # fails every reference of this backend with it.
    deferred_error: SecretInitError | None = None

    def __init__(self, name: str, config: Fields, context: BackendContext) -> None:
        """Read and validate this backend's configuration; ``config`` excludes ``type``.

        Implementations read every field they accept through ``config`` and do not call
        ``config.finish()``: the caller does. Raise ManifestError through
        ``config.error(...)`` for invalid values. Do no I/O or network here.
        """
        self.name = name
        self.context = context

    @abc.abstractmethod
    def reference(self, entry: Fields) -> tuple[Reference, KeyPath | None]:
        """Read a secret's backend-specific fields and return its reference.

        The second item is a key path implied by the reference itself (the JSON key of an
        ECS ``valueFrom`` ARN). The secret's own ``key`` field wins over it. Validate
        offline only, and leave ``entry.finish()`` to the caller.
        """

    @abc.abstractmethod
    def fetch(self, references: Sequence[Reference],
              deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        """Fetch every reference, retrying transient errors until ``deadline``.

        Return a result for each reference. Map library exceptions to SecretInitError
        subclasses here; a missing or denied secret is a per-reference error, not an
        exception that loses the other results.
        """

    def consumed_environment(self) -> set[str]:
        """Return the credential variables this backend read, to drop from the child's environment."""
        return set()

    def close(self) -> None:
        """Release what the fetch acquired (revoke a login token); called once after fetching."""
