"""The ``sops`` backend: decrypt sops-encrypted files natively, verifying their MAC.

Manifest shape::

    backends:
      sops:
        type: sops
        path: secrets.enc.yaml      # default file for secrets of this backend
        # source: {from: aws, id: app/secrets.enc.yaml}   # or read the file via a backend
        # format: yaml              # yaml|json|dotenv|ini|binary; default from the extension
        # decryption_order: [age, pgp, kms, hc_vault]
        # verify_mac: false         # never in production: logged as a warning every run
    secrets:
      db_password: {from: sops, key: db.password}
      other: {from: sops, file: other.enc.env, file_format: dotenv}

Each secret returns the whole decrypted document (the core then picks ``key``); without
``key`` the document is written in its own format. A file is decrypted once per run
however many secrets read it. Data keys come from age identities, the ``gpg`` binary, AWS
KMS or Vault transit; GCP KMS, Azure Key Vault and other key types use the ``sops`` binary
when it is on PATH.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...deadline import Deadline
from ...errors import DataError, IntegrityError, MissingExtraError, NotFoundError, SecretInitError
from ...fields import Fields
from ..base import Backend, BackendContext, Fetched, KeyPath, Reference
from .formats import FORMATS, format_for_path
from .metadata import KEY_TYPES

log = logging.getLogger(__name__)

# An encrypted secrets file beyond this size is a mistake (a dump, a log), not secrets.
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SopsReference(Reference):
    """One encrypted file: a local path, or a value of another backend."""

    file_format: str
    path: str | None = None
    source: Reference | None = None
    source_key: KeyPath | None = None

    def describe(self) -> str:
        if self.path is not None:
            return f"{self.backend}:{self.path}"
        assert self.source is not None
        return f"{self.backend}:{self.source.describe()}"


@dataclass(frozen=True)
class _SourceSpec:
    backend: str
    reference: Reference
    key: KeyPath | None
    hint_name: str


class _CacheEntry:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Fetched | None = None
        self.error: SecretInitError | None = None


class SopsBackend(Backend):
    """Decrypts sops files (YAML, JSON, dotenv, INI, binary) with the MAC verified."""

    type_name = "sops"
    extra = "sops"
    requires = ("cryptography",)

    def __init__(self, name: str, config: Fields, context: BackendContext) -> None:
        super().__init__(name, config, context)
        config.exclusive("path", "source")
        path = config.string("path")
        self.path: Path | None = context.resolve_path(path) if path else None
        self.source_config: Fields | None = config.fields("source")
        self.format: str | None = config.string("format", choices=FORMATS)
        self.verify_mac: bool = config.boolean("verify_mac", True)
        order = config.string_list("decryption_order")
        if order is not None:
            unknown = [key_type for key_type in order if key_type not in KEY_TYPES]
            if unknown:
                raise config.error("decryption_order", f"unknown key type '{unknown[0]}'; "
                                                       f"known: {', '.join(KEY_TYPES)}")
        else:
            env_order = context.environ.get("SOPS_DECRYPTION_ORDER", "")
            order = [part.strip() for part in env_order.split(",") if part.strip()] or None
        self.decryption_order = order
        self._default_source: _SourceSpec | None = None
        self._cache: dict[Reference, _CacheEntry] = {}
        self._lock = threading.Lock()
        self._consumed: set[str] = set()
        self._age: Any = None
        # Files actually decrypted in this run; tests read it to prove one decryption per file.
        self.decryptions = 0

    # -- references -------------------------------------------------------------------------

    def reference(self, entry: Fields) -> tuple[Reference, KeyPath | None]:
        location = entry.exclusive("file", "source")
        file_format = entry.string("file_format", choices=FORMATS) or self.format
        if location == "file":
            path = str(self.context.resolve_path(entry.string("file")))
            return SopsReference(self.name, file_format or format_for_path(path), path=path), None
        if location == "source":
            source_fields = entry.fields("source")
            assert source_fields is not None
            spec = self._source(source_fields)
        elif self.path is not None:
            path = str(self.path)
            return SopsReference(self.name, file_format or format_for_path(path), path=path), None
        elif self.source_config is not None:
            if self._default_source is None:
                self._default_source = self._source(self.source_config)
            spec = self._default_source
        else:
            raise entry.error(None, f"backend '{self.name}' has no 'path' or 'source'; give this "
                                    "secret 'file: PATH' or 'source: {from: BACKEND, ...}'")
        if file_format is None:
            guessed = format_for_path(spec.hint_name)
            if guessed == "binary" and not spec.hint_name.lower().endswith((".bin", ".txt")):
                raise entry.error(None, f"the sops file from backend '{spec.backend}' has no "
                                        "known extension; set 'file_format' (yaml, json, dotenv, "
                                        "ini or binary) here or 'format' on the backend")
            file_format = guessed
        return SopsReference(self.name, file_format, source=spec.reference,
                             source_key=spec.key), None

    def _source(self, fields: Fields) -> _SourceSpec:
        other_name = fields.string("from", required=True)
        other = self.context.backends.get(other_name)
        if other is None:
            known = ", ".join(sorted(self.context.backends)) or "none"
            raise fields.error("from", f"no backend named '{other_name}'; configured: {known}")
        if other is self or other.type_name == self.type_name:
            raise fields.error("from", "a sops file cannot be read through a sops backend")
        hint = ""
        for name in ("id", "path", "file", "name", "secret_id"):
            value = fields.mapping.get(name)
            if isinstance(value, str):
                hint = value
                break
        reference, key = other.reference(fields)
        fields.finish()
        return _SourceSpec(other_name, reference, key, hint)

    # -- fetching ---------------------------------------------------------------------------

    def fetch(self, references: Sequence[Reference],
              deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
        results: dict[Reference, Fetched | SecretInitError] = {}
        for reference in references:
            assert isinstance(reference, SopsReference)
            try:
                results[reference] = self._cached(reference, deadline)
            except SecretInitError as error:
                results[reference] = error
        return results

    def _cached(self, reference: SopsReference, deadline: Deadline) -> Fetched:
        """Decrypt ``reference`` once; concurrent callers wait for the first one's result."""
        with self._lock:
            entry = self._cache.get(reference)
            owner = entry is None
            if entry is None:
                entry = _CacheEntry()
                self._cache[reference] = entry
        if owner:
            try:
                entry.value = self._decrypt_reference(reference, deadline)
            except SecretInitError as error:
                entry.error = error
            finally:
                entry.done.set()
        else:
            entry.done.wait()
        if entry.error is not None:
            raise entry.error
        assert entry.value is not None
        return entry.value

    def _decrypt_reference(self, reference: SopsReference, deadline: Deadline) -> Fetched:
        if reference.path is not None:
            data = _read_file(Path(reference.path))
            label = reference.path
        else:
            data = self._fetch_source(reference, deadline)
            label = f"the sops file from {reference.describe()}"
        started = time.monotonic()
        document = self.decrypt(data, reference.file_format, label, deadline)
        log.info("decrypted sops file %s (%s) in %.0f ms", label, reference.file_format,
                 (time.monotonic() - started) * 1000)
        return Fetched(value=document, document_format=reference.file_format)

    def _fetch_source(self, reference: SopsReference, deadline: Deadline) -> bytes:
        assert reference.source is not None
        other = self.context.backends[reference.source.backend]
        result = other.fetch([reference.source], deadline).get(reference.source)
        if isinstance(result, SecretInitError):
            raise result
        if result is None:
            raise NotFoundError(f"backend '{other.name}' returned nothing for "
                                f"{reference.source.describe()}")
        value = result.value
        for part in reference.source_key or ():
            if not isinstance(value, Mapping) or part not in value:
                raise DataError(f"{reference.source.describe()} has no key '{part}' holding a "
                                "sops file")
            value = value[part]
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes):
            return value
        raise DataError(f"backend '{other.name}' returned a parsed document for "
                        f"{reference.source.describe()}, not the text of a sops file; "
                        "configure it to return the file as it is (for the file backend: "
                        "format: raw)")

    def decrypt(self, data: bytes, file_format: str, label: str, deadline: Deadline) -> Any:
        """Decrypt the encrypted file ``data``; return its document (bytes for binary)."""
        from . import datakey, fallback, formats, tree
        from .cipher import CipherError, ValueCipher
        from .keysources import AgeIdentities, KeyContext
        from .metadata import parse_metadata

        self.decryptions += 1
        loaded = formats.load(data, file_format, label)
        metadata = parse_metadata(loaded.metadata, label)
        if not self.verify_mac:
            log.warning("MAC verification is OFF for %s (backend '%s' sets verify_mac: false): "
                        "a modified or damaged file is not detected", label, self.name)

        with self._lock:
            if self._age is None:
                self._age = AgeIdentities()
        context = KeyContext(self.context.environ, deadline, metadata.version_tuple)
        try:
            data_key = datakey.recover_data_key(
                metadata, context, self._age, datakey.decryption_order(self.decryption_order))
        except datakey.DataKeyError as error:
            binary = fallback.find_sops(self.context.environ)
            if error.needs_sops_binary and binary is not None:
                log.info("decrypting %s with %s: its key types (%s) have no native support",
                         label, binary, ", ".join(metadata.key_types()))
                return fallback.decrypt_with_sops(binary, data, file_format, self.context.environ,
                                                  deadline, label, self.verify_mac)
            note = ("GCP KMS, Azure Key Vault, HuaweiCloud KMS and post-quantum or plugin age "
                    "keys need the sops binary, which was not found on PATH; install sops or "
                    "add an age, PGP, AWS KMS or Vault transit key to the file")
            raise datakey.data_key_error(error, metadata, label, note) from None
        finally:
            with self._lock:
                self._consumed |= context.consumed

        try:
            cipher = ValueCipher(data_key)
        except CipherError as error:
            raise IntegrityError(f"{label}: {error}; the file's key entry is damaged") from None
        except ImportError:
            raise MissingExtraError(f"backend '{self.name}' needs the cryptography package; "
                                    "run: pip install 'secret-init[sops]'") from None
        del data_key  # NOTE: Python cannot wipe the bytes; this only drops the reference.

        decryptor = tree.TreeDecryptor(cipher, metadata, loaded.format, label)
        documents = decryptor.decrypt_documents(loaded.documents)
        if self.verify_mac:
            tree.verify_mac(decryptor, cipher, metadata, label)
        return _document_value(documents, loaded.format)

    def consumed_environment(self) -> set[str]:
        with self._lock:
            return set(self._consumed)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()


def _document_value(documents: list[dict[str, Any]], file_format: str) -> Any:
    from .emit import YamlDocuments

    if file_format == "binary":
        return documents[0]["data"]
    if len(documents) == 1:
        return documents[0]
    # NOTE: a multi-document YAML file comes back as a list of documents; 'key' paths then
    # start with the document index.
    return YamlDocuments(documents)


def _read_file(path: Path) -> bytes:
    from ..file import read_bytes

    return read_bytes(path, "sops file", MAX_FILE_BYTES)
