"""Load and validate the manifest (version 1) into plain, typed objects.

The manifest names the secrets a container needs, where each comes from and how its file
is written. Every field is checked here, offline, with errors that point at the file, line
and column. Backends check their own fields through the same ``Fields`` reader.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import backend_class
from .backends.base import Backend, BackendContext, KeyPath, Reference
from .errors import ConfigError, ManifestError, NotFoundError, os_reason
from .fields import Fields
from .located import load_located_yaml

log = logging.getLogger(__name__)

DEFAULT_MANIFEST = "/etc/secret-init/manifest.yaml"
DEFAULT_OUTPUT_DIR = "/run/secrets"
DEFAULT_FILE_MODE = 0o400
# The version directories must be searchable by the application user; 0755 shows names only.
DEFAULT_DIR_MODE = 0o755
DEFAULT_TIMEOUT_SECONDS = 60.0
# A manifest larger than this is almost certainly the wrong file (a binary, a dump).
MAX_MANIFEST_BYTES = 1024 * 1024
# Linux NAME_MAX: the longest file name a directory entry can hold.
MAX_NAME_BYTES = 255

FORMATS = ("json", "yaml", "dotenv", "raw")
ENCODINGS = ("base64",)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Variables that change how every program in the container starts or finds its code. A
# secret exported under one of these names is almost always a mistake.
STARTUP_VARIABLES = re.compile(r"LD_[A-Z_]+|PATH|PYTHON(PATH|HOME|STARTUP)|NODE_OPTIONS|"
                               r"JAVA_TOOL_OPTIONS|PERL5LIB|RUBYOPT|BASH_ENV|ENV")

TOP_LEVEL_FIELDS = ("version", "output", "timeout", "user", "cleanup", "keep_env", "backends",
                    "secrets")

# Fields every secret may have, whatever its backend.
GENERIC_SECRET_FIELDS = ("from", "key", "optional", "format", "encoding", "template",
                         "mode", "owner", "group", "env", "env_file", "write")


@dataclass
class OutputSpec:
    """Output settings: the directory and the default mode and owner of the secret files."""

    dir: str = DEFAULT_OUTPUT_DIR
    mode: int = DEFAULT_FILE_MODE
    dir_mode: int = DEFAULT_DIR_MODE
    owner: str | None = None
    allow_disk: bool = False
    # Where output.owner sits, for errors found when the plan resolves it.
    owner_error: Any = None


@dataclass
class SecretSpec:
    """One entry under ``secrets:``: a file name and how to produce its content."""

    name: str
    source: str | None = None
    key: KeyPath | None = None
    optional: bool = False
    format: str | None = None
    encoding: str | None = None
    template: str | None = None
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    env: str | None = None
    env_file: str | None = None
    # False: fetch the secret for templates and env only, and write no file for it.
    write: bool = True
    reference: Reference | None = None
    # Where the entry and each of its fields sit in the manifest, for errors found later.
    file: str = ""
    position: tuple[int, int] | None = None
    field_positions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def error(self, field_name: str | None, message: str) -> ManifestError:
        """Build a ManifestError located at one of this secret's fields (or the entry)."""
        position = self.field_positions.get(field_name or "", self.position) or (None, None)
        subject = f"secrets.{self.name}" + (f".{field_name}" if field_name else "")
        return ManifestError(f"{subject}: {message}", file=self.file, line=position[0],
                             column=position[1])


@dataclass
class Manifest:
    """A validated manifest with its backends configured but not yet connected."""

    path: str
    output: OutputSpec
    backends: dict[str, Backend]
    secrets: list[SecretSpec]
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    user: str | None = None
    cleanup: bool = False
    keep_env: list[str] = field(default_factory=list)
    # Builds a ManifestError located at the 'user' field.
    user_error: Any = None

    def secret(self, name: str) -> SecretSpec:
        return next(s for s in self.secrets if s.name == name)


def read_manifest_text(path: str) -> str:
    """Read the manifest file, with errors that name the file and how to choose another."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise NotFoundError(
            f"manifest {path} not found; pass -f/--manifest FILE or set SECRET_INIT_MANIFEST") from None
    except IsADirectoryError:
        raise ConfigError(f"manifest {path} is a directory; pass the YAML file itself") from None
    except OSError as error:
        raise ConfigError(f"cannot read manifest {path}: {os_reason(error)}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ConfigError(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes; "
                          "is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"manifest {path} is not UTF-8 text (invalid byte at offset {error.start})") from None


def load_manifest(path: str) -> Manifest:
    """Read, parse and validate the manifest at ``path``, configuring its backends."""
    text = read_manifest_text(path)
    document = load_located_yaml(text, path)
    if document is None:
        raise ManifestError("the manifest is empty; it needs at least 'version: 1' and 'secrets:'",
                            file=path)
    top = Fields(document, file=path, where="manifest")
    # Unknown keys first: a typo such as 'secret:' should be named as such, not reported as
    # the required 'secrets' missing.
    top.reject_unknown(TOP_LEVEL_FIELDS)

    version = top.raw("version")
    if version is None:
        raise top.error(None, "missing required field 'version'; add 'version: 1'")
    if version != 1:
        raise top.error("version", f"unsupported manifest version {version!r}; this secret-init reads version 1")

    output = _read_output(top.fields("output"))
    timeout = top.duration("timeout", DEFAULT_TIMEOUT_SECONDS)
    if timeout <= 0:
        raise top.error("timeout", "must be greater than 0")
    user = top.string("user")
    user_error = lambda message: top.error("user", message)  # noqa: E731
    cleanup = top.boolean("cleanup", False)
    keep_env = top.string_list("keep_env", [])
    for name in keep_env:
        if not ENV_NAME.fullmatch(name):
            raise top.error("keep_env", f"'{name}' is not a valid environment variable name")

    context = BackendContext(manifest_dir=Path(path).resolve().parent)
    backends = _read_backends(top.fields("backends"), context)
    context.backends = backends
    secrets = _read_secrets(top, backends)
    top.finish()

    return Manifest(path=path, output=output, backends=backends, secrets=secrets,
                    timeout=timeout, user=user, cleanup=cleanup, keep_env=keep_env,
                    user_error=user_error)


def _read_output(output: Fields | None) -> OutputSpec:
    if output is None:
        return OutputSpec()
    spec = OutputSpec(
        dir=output.string("dir", DEFAULT_OUTPUT_DIR),
        mode=output.mode("mode", DEFAULT_FILE_MODE),
        dir_mode=output.mode("dir_mode", DEFAULT_DIR_MODE),
        owner=output.string("owner"),
        allow_disk=output.boolean("allow_disk", False),
    )
    spec.owner_error = lambda message: output.error("owner", message)
    _warn_other_readable(output.file, "output.mode", spec.mode)
    if not spec.dir.startswith("/"):
        raise output.error("dir", f"'{spec.dir}' must be an absolute path, such as /run/secrets")
    output.finish()
    return spec


def _read_backends(section: Fields | None, context: BackendContext) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    if section is None:
        return backends
    for name in section.mapping:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise section.key_error(name, f"backend name {name!r} may contain only letters, "
                                          "digits, '_', '-' and '.'")
        config = section.fields(name, required=True)
        assert config is not None
        type_name = config.string("type", required=True)
        try:
            cls = backend_class(type_name)
        except ConfigError as error:
            raise config.error("type", error.message) from None
        backends[name] = cls(name, config, context)
        config.finish()
    section.finish()
    return backends


def _read_secrets(top: Fields, backends: dict[str, Backend]) -> list[SecretSpec]:
    if top.has("secrets") and top.mapping["secrets"] is None:
        raise top.error("secrets", "no secrets are listed; add at least one entry under 'secrets:'")
    section = top.fields("secrets", required=True)
    assert section is not None
    if not section.mapping:
        raise section.error(None, "no secrets are listed; add at least one entry")

    secrets: list[SecretSpec] = []
    for name in section.mapping:
        _check_name(section, name)
        entry = section.fields(str(name), required=True)
        assert entry is not None
        secrets.append(_read_secret(str(name), entry, backends))
    section.finish()

    _check_exports(section, secrets)
    return secrets


def _check_name(section: Fields, name: Any) -> None:
    """Reject names that are not a single safe file name."""
    if not isinstance(name, str):
        raise section.key_error(name, f"secret name {name!r} must be a string")
    problems = []
    if not name:
        problems.append("is empty")
    if "/" in name:
        problems.append("contains '/'")
    if "\x00" in name:
        problems.append("contains a NUL byte")
    if name in (".", ".."):
        problems.append("is a directory reference")
    elif name.startswith("."):
        problems.append("starts with '.', which is reserved for the ..data layout and hidden files")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        problems.append(f"is longer than {MAX_NAME_BYTES} bytes")
    if problems:
        shown = name.replace("\x00", "\\0")
        raise section.key_error(name, f"secret name '{shown}' {' and '.join(problems)}; "
                                      "a secret name is a single file name")


def _read_key(entry: Fields) -> KeyPath | None:
    raw = entry.raw("key")
    if raw is None:
        return None
    if isinstance(raw, list):
        if not raw or not all(isinstance(part, (str, int)) and not isinstance(part, bool) for part in raw):
            raise entry.error("key", "a key list must contain strings, one per level")
        return tuple(str(part) for part in raw)
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise entry.error("key", "must be a dotted path string or a list of keys")
    text = str(raw)
    parts = tuple(text.split("."))
    if any(part == "" for part in parts):
        raise entry.error("key", f"'{text}' has an empty part; for keys that contain dots, "
                                 "use the list form: key: [\"tls.key\"]")
    return parts


def _read_secret(name: str, entry: Fields, backends: dict[str, Backend]) -> SecretSpec:
    spec = SecretSpec(name=name, file=entry.file)
    spec.position = getattr(entry.mapping, "position", None)
    spec.field_positions = dict(getattr(entry.mapping, "value_positions", {}))
    spec.template = entry.string("template", allow_empty=True)
    spec.source = entry.string("from")
    spec.key = _read_key(entry)
    spec.optional = entry.boolean("optional", False)
    spec.format = entry.string("format", choices=FORMATS)
    spec.encoding = entry.string("encoding", choices=ENCODINGS)
    spec.mode = entry.mode("mode")
    if spec.mode is not None:
        _warn_other_readable(entry.file, f"secrets.{name}.mode", spec.mode)
    spec.owner = entry.string("owner")
    spec.group = entry.string("group")
    spec.env = entry.string("env")
    spec.env_file = entry.string("env_file")
    spec.write = entry.boolean("write", True)
    if not spec.write:
        for other in ("mode", "owner", "group", "env_file"):
            if entry.has(other):
                raise entry.error(other, f"'{other}' describes the file, but 'write: false' "
                                         "writes none; remove one of them")

    if spec.template is not None:
        for other in ("from", "key", "encoding"):
            if entry.has(other):
                raise entry.error(other, f"'{other}' cannot be used with 'template'; a template "
                                         "combines other secrets by ${name}")
        entry.finish()
        return spec

    if spec.source is None:
        entry.reject_unknown(GENERIC_SECRET_FIELDS)
        raise entry.error(None, "needs 'from: BACKEND' (one of the names under 'backends:') "
                                "or 'template:'")
    backend = backends.get(spec.source)
    if backend is None:
        known = ", ".join(sorted(backends)) or "none are defined"
        raise entry.error("from", f"backend '{spec.source}' is not defined under 'backends:' "
                                  f"(defined: {known})")
    spec.reference, implied_key = backend.reference(entry)
    if spec.key is None:
        spec.key = implied_key
    entry.finish(GENERIC_SECRET_FIELDS)
    return spec


def _warn_other_readable(file: str, field_name: str, mode: int) -> None:
    if mode & 0o004:
        log.warning("%s: %s %04o lets every user in the container read the file; "
                    "use a mode without the last digit's read bit, such as 0440", file,
                    field_name, mode)


def _check_exports(section: Fields, secrets: list[SecretSpec]) -> None:
    """Check env and env_file names: valid, and each variable set by one secret only."""
    seen: dict[str, str] = {}
    for spec in secrets:
        entry = Fields(section.mapping[spec.name], file=section.file, where=f"secrets.{spec.name}")
        for field_name in ("env", "env_file"):
            variable = getattr(spec, field_name)
            if variable is None:
                continue
            if not ENV_NAME.fullmatch(variable):
                raise entry.error(field_name, f"'{variable}' is not a valid environment variable "
                                              "name (letters, digits and '_', not starting with a digit)")
            if STARTUP_VARIABLES.fullmatch(variable):
                log.warning("%s: secret '%s' is exported as %s, which changes how every "
                            "program the command starts behaves; use another name unless "
                            "that is intended", section.file, spec.name, variable)
            if variable in seen:
                raise entry.error(field_name, f"variable '{variable}' is already set by secret "
                                              f"'{seen[variable]}'")
            seen[variable] = spec.name


def key_path_text(key: KeyPath) -> str:
    """Show a key path the way a user writes it."""
    if any("." in part for part in key):
        return "[" + ", ".join(json.dumps(part) for part in key) + "]"
    return ".".join(key)


__all__ = ["Manifest", "OutputSpec", "SecretSpec", "load_manifest", "key_path_text",
           "DEFAULT_MANIFEST"]
