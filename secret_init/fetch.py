"""Fetch every distinct reference of a plan, each backend in its own thread, within the deadline."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from . import redact
from .backends import require_installed
from .backends.base import Backend, Fetched, Reference
from .deadline import Deadline
from .errors import DeadlineExceededError, SecretInitError

log = logging.getLogger(__name__)

# Time a backend gets to release what it acquired (revoke a login token) after the fetch.
CLOSE_TIMEOUT_SECONDS = 5.0


@dataclass
class FetchResult:
    """Results by reference, and how long each backend's batch took."""

    values: dict[Reference, Fetched | SecretInitError]
    milliseconds: dict[str, int]


def start_without_signals(threads: Iterable[threading.Thread]) -> None:
    """Start ``threads`` with every signal blocked in them, so only the main thread takes signals.

    The kernel may deliver a process signal to any thread that does not block it. A SIGTERM
    taken by a fetch thread would wait for the main thread's next check, which may be the
    end of the deadline, and one taken in the hand-over's fork window would be lost. Threads
    inherit the mask of the thread that starts them, and so do the pools they start.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        for thread in threads:
            thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _fetch_backend(backend: Backend, references: list[Reference],
                   deadline: Deadline) -> dict[Reference, Fetched | SecretInitError]:
    try:
        results = backend.fetch(references, deadline)
    except SecretInitError as error:
        return {reference: error for reference in references}
    # Register values for log redaction as soon as they exist, before anything could log them.
    for result in results.values():
        if isinstance(result, Fetched):
            redact.register(result.value)
    return results


def fetch_all(backends: dict[str, Backend], references: dict[str, list[Reference]],
              deadline: Deadline) -> FetchResult:
    """Fetch all ``references`` (grouped by backend name) in parallel across backends."""
    for name, backend in backends.items():
        require_installed(type(backend), name)

    values: dict[Reference, Fetched | SecretInitError] = {}
    milliseconds: dict[str, int] = {}
    lock = threading.Lock()

    def run(name: str, refs: list[Reference]) -> None:
        begin = time.monotonic()
        deferred = backends[name].deferred_error
        if deferred is not None:
            with lock:
                values.update({reference: deferred for reference in refs})
                milliseconds[name] = 0
            return
        try:
            results = _fetch_backend(backends[name], refs, deadline)
        except Exception as error:  # a bug in an adapter must not lose the other results
            log.debug("backend %s failed unexpectedly", name, exc_info=True)
            results = {reference: SecretInitError(
                f"backend '{name}' failed unexpectedly ({type(error).__name__}); "
                "rerun with --log-level debug for details") for reference in refs}
        with lock:
            values.update(results)
            milliseconds[name] = int((time.monotonic() - begin) * 1000)

    # Daemon threads: when the deadline passes, the run fails and exits without waiting for a
    # backend that hangs.
    threads = {name: threading.Thread(target=run, args=(name, refs), daemon=True,
                                      name=f"fetch-{name}")
               for name, refs in references.items()}
    start_without_signals(threads.values())
    for thread in threads.values():
        thread.join(max(0.0, deadline.remaining()) + 0.5)

    with lock:
        for name, thread in threads.items():
            if not thread.is_alive():
                continue
            milliseconds[name] = int(deadline.seconds * 1000)
            for reference in references[name]:
                values.setdefault(reference, DeadlineExceededError(
                    f"backend '{name}' did not respond within the {deadline.seconds:g} s deadline "
                    f"for {reference.describe()}; raise 'timeout' or check the backend"))
        # Copies under a new name: ``run`` refers to ``values`` and ``milliseconds`` by name,
        # so a backend that responds after the deadline writes only into the originals.
        final_values = dict(values)
        final_milliseconds = dict(milliseconds)

    for name, refs in references.items():
        for reference in refs:
            if reference not in final_values:
                final_values[reference] = SecretInitError(
                    f"backend '{name}' returned no result for {reference.describe()}")
    return FetchResult(values=final_values, milliseconds=final_milliseconds)


def close_backends(backends: dict[str, Backend]) -> None:
    """Call each backend's close() (revoking login tokens), bounded in time, logging failures."""
    def close(name: str, backend: Backend) -> None:
        try:
            backend.close()
        except Exception as error:  # a failed revoke must not fail a run whose secrets are written
            log.warning("backend %s: releasing credentials failed: %s", name, error)

    threads = [threading.Thread(target=close, args=(name, backend), daemon=True)
               for name, backend in backends.items()]
    start_without_signals(threads)
    end = time.monotonic() + CLOSE_TIMEOUT_SECONDS
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
