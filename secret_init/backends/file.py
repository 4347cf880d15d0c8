"""The ``file`` backend: values from a local YAML/JSON document, or whole files from a folder.

Two shapes, chosen by the backend's fields:

- ``path: ./dev-secrets.yaml`` reads one YAML or JSON document; each secret picks a value
  with ``key`` (or takes the whole document). With ``format: raw`` the whole file is one
  value, byte for byte.
- ``dir: /run/secrets-swarm`` serves each secret's ``file: NAME`` from that folder, byte for
  byte: Docker Swarm secrets, Kubernetes-mounted secrets, anything already on disk that a
  template should combine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..deadline import Deadline
from ..errors import ConfigError, DataError, NotFoundError, PermissionDeniedError, SecretInitError, os_reason
from ..fields import Fields
from .base import Backend, BackendContext, Fetched, KeyPath, Reference

# A development secrets file beyond this size is a mistake (a log, a dump), not secrets.
MAX_FILE_BYTES = 16 * 1024 * 1024
DOCUMENT_FORMATS = ("auto", "yaml", "json", "raw")


@dataclass(frozen=True)
class FileReference(Reference):
    """A document file, or one file inside the backend's folder."""

    path: str

    def describe(self) -> str:
        return f"{self.backend}:{self.path}"


def read_bytes(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read a local file of at most ``limit`` bytes, with errors that name it and the fix."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a directory, not a file") from None
    except PermissionError:
        raise PermissionDeniedError(
            f"{what} {path} is not readable by uid {os.geteuid()}; fix its mode or owner") from None
    except OSError as error:
        raise NotFoundError(f"cannot read {what} {path}: {os_reason(error)}") from None
    if len(data) > limit:
        raise DataError(f"{what} {path} is larger than {limit} bytes")
    return data


# Nodes a YAML document may expand to through aliases: far above any real secrets file,
# far below what a "billion laughs" document would build.
MAX_EXPANDED_NODES = 1_000_000


def _load_yaml_bounded(text: str, path: Path) -> Any:
    """Load YAML safely, rejecting documents whose aliases expand beyond MAX_EXPANDED_NODES."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        visiting: set[int] = set()

        def expanded(current: yaml.Node) -> int:
            # Aliases reuse the anchored node object, so each distinct node is counted once
            # and its size reused wherever an alias points at it.
            if id(current) in visiting:
                raise DataError(f"{path} has an alias inside the value it refers to; a secrets "
                                "document cannot contain itself")
            if id(current) in sizes:
                return sizes[id(current)]
            visiting.add(id(current))
            total = 1
            if isinstance(current, yaml.SequenceNode):
                total += sum(expanded(item) for item in current.value)
            elif isinstance(current, yaml.MappingNode):
                total += sum(expanded(k) + expanded(v) for k, v in current.value)
            if total > MAX_EXPANDED_NODES:
                raise DataError(f"{path} expands to more than {MAX_EXPANDED_NODES} YAML nodes "
                                "through aliases; remove the aliases that repeat large parts")
            visiting.discard(id(current))
            sizes[id(current)] = total
            return total

        expanded(node)
        return loader.construct_document(node)
    except RecursionError:
        raise DataError(f"{path} nests too deeply or an alias refers to its own parent; "
                        "flatten the document") from None
    finally:
        loader.dispose()


def parse_document(data: bytes, path: Path, document_format: str) -> Any:
    """Parse a YAML or JSON secrets document without echoing its content in errors."""
    import yaml

    if document_format == "auto":
        document_format = "json" if path.suffix.lower() == ".json" else "yaml"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (invalid byte at offset {error.start})") from None
    if document_format == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            # The library message quotes no content, only the position.
            raise DataError(f"{path} is not valid JSON: {error.msg} at line {error.lineno} "
                            f"column {error.colno}") from None
        except RecursionError:
            raise DataError(f"{path} nests too deeply; flatten the document") from None
    try:
        return _load_yaml_bounded(text, path)
    except yaml.MarkedYAMLError as error:
        # Only the position: PyYAML's problem text quotes aliases, tags and context lines,
        # and any of them may be a secret value.
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise DataError(f"{path} is not valid YAML{where}; quote values that start with "
                        "*, &, !, %, @ or `") from None
    except yaml.YAMLError:
        raise DataError(f"{path} is not valid YAML") from None


class FileBackend(Backend):
    """Local files: the development backend, and files other tools already mounted."""

    type_name = "file"

    def __init__(self, name: str, config: Fields, context: BackendContext) -> None:
        super().__init__(name, config, context)
        which = config.exclusive("path", "dir", required=True)
        self.document_format = config.string("format", "auto", choices=DOCUMENT_FORMATS)
        if which == "path":
            self.path: Path | None = context.resolve_path(config.string("path"))
            self.dir: Path | None = None
        else:
            self.dir = context.resolve_path(config.string("dir"))
            self.path = None
            if config.has("format"):
                raise config.error("format", "applies to 'path' documents; files under 'dir' "
                                             "are read byte for byte")

    def reference(self, entry: Fields) -> tuple[Reference, KeyPath | None]:
        if self.dir is not None:
            file_name = entry.string("file", required=True)
            if "/" in file_name or file_name in (".", ".."):
                raise entry.error("file", f"'{file_name}' must be a file name inside {self.dir}")
            return FileReference(self.name, str(self.dir / file_name)), None
        assert self.path is not None
        if entry.has("file"):
            raise entry.error("file", f"backend '{self.name}' reads the document {self.path}; "
                                      "pick a value with 'key', or give the backend 'dir:' instead")
        return FileReference(self.name, str(self.path)), None

    def fetch(self, references: Sequence[Reference],
              deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        results: dict[Reference, Fetched | SecretInitError] = {}
        for reference in references:
            assert isinstance(reference, FileReference)
            try:
                results[reference] = self._fetch_one(Path(reference.path))
            except SecretInitError as error:
                results[reference] = error
        return results

    def _fetch_one(self, path: Path) -> Fetched:
        if self.dir is not None:
            return Fetched(value=read_bytes(path, "secret file"))
        data = read_bytes(path, "secrets file")
        if self.document_format == "raw":
            return Fetched(value=data)
        return Fetched(value=parse_document(data, path, self.document_format))
