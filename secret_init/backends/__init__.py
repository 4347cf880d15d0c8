"""Backend lookup by ``type`` name, importing each adapter only when a manifest uses it."""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import ConfigError, MissingExtraError
from .base import Backend

# type name -> (module, class). Modules import only the standard library at load time.
BACKEND_TYPES: dict[str, tuple[str, str]] = {
    "file": ("secret_init.backends.file", "FileBackend"),
    "vault": ("secret_init.backends.vault", "VaultBackend"),
    "aws-secretsmanager": ("secret_init.backends.aws.secretsmanager", "SecretsManagerBackend"),
    "aws-ssm": ("secret_init.backends.aws.ssm", "ParameterStoreBackend"),
    "sops": ("secret_init.backends.sops", "SopsBackend"),
}


def backend_class(type_name: str) -> type[Backend]:
    """Import and return the adapter class for ``type_name``."""
    try:
        module_name, class_name = BACKEND_TYPES[type_name]
    except KeyError:
        raise ConfigError(f"unknown backend type '{type_name}'; "
                          f"known types: {', '.join(sorted(BACKEND_TYPES))}") from None
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def missing_modules(cls: type[Backend]) -> list[str]:
    """Return the libraries ``cls`` needs that are not installed, without importing them."""
    return [name for name in cls.requires if importlib.util.find_spec(name) is None]


def require_installed(cls: type[Backend], backend_name: str) -> None:
    """Raise MissingExtraError naming the pip command when the adapter's libraries are absent."""
    missing = missing_modules(cls)
    if missing:
        raise MissingExtraError(
            f"backend '{backend_name}' (type {cls.type_name}) needs {', '.join(missing)}, "
            f"which is not installed; run: pip install 'secret-init[{cls.extra}]'")
