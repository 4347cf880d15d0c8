"""A moto server on 127.0.0.1 for the AWS backend tests, and the environment they run in.

One server runs per test session on an ephemeral port. The ``moto`` fixture resets its state
through ``/moto-api/reset`` before each test, and the server counts the AWS requests it serves. The
``aws_env`` fixture gives every test dummy keys, a temporary HOME with no AWS files, and
AWS_EC2_METADATA_DISABLED=true, so that no request leaves the loopback interface.

Test modules import the fixtures they use: ``from tests.moto_server import aws_env, moto``.
The helpers at the end build a backend and its references from plain dicts, and run the
``secret_init`` CLI in a subprocess with the test's environment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from secret_init.backends.base import Backend, BackendContext, Fetched, Reference
from secret_init.deadline import Deadline
from secret_init.errors import SecretInitError
from secret_init.fields import Fields

ACCOUNT_ID = "123456789012"
DUMMY_ACCESS_KEY = "AKIATESTTESTTESTTEST"
DUMMY_SECRET_KEY = "dummy-secret-access-key"


class RequestCounter:
    """Counts AWS operations served, by ``X-Amz-Target`` (JSON protocols) or ``Action``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.operations: list[str] = []

    def record(self, operation: str) -> None:
        with self._lock:
            self.operations.append(operation)

    def clear(self) -> None:
        with self._lock:
            self.operations.clear()

    def count(self, operation: str | None = None) -> int:
        """Return how many requests were served for ``operation`` (all when None)."""
        with self._lock:
            if operation is None:
                return len(self.operations)
            return sum(1 for name in self.operations if name == operation)

    def summary(self) -> Counter:
        with self._lock:
            return Counter(self.operations)


def _operation_of(environ: dict[str, Any]) -> str | None:
    """Return the AWS operation of a WSGI request, or None for moto's own API."""
    if environ.get("PATH_INFO", "").startswith("/moto-api"):
        return None
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.rsplit(".", 1)[-1]
    # Query protocol (STS): the Action is in the form body. Read it and put it back.
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    import io
    from urllib.parse import parse_qs

    environ["wsgi.input"] = io.BytesIO(body)
    action = parse_qs(body.decode("utf-8", "replace")).get("Action", ["?"])[0]
    return action


def start_moto_server(counter: RequestCounter | None = None):
    """Start a ThreadedMotoServer on 127.0.0.1 and an ephemeral port; return (server, endpoint).

    With ``counter``, every AWS request the server handles is recorded in it.
    """
    from moto.server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                               create_backend_app)
    from werkzeug.serving import make_server

    # werkzeug logs one line per request; keep test and benchmark output readable.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    class CountingMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)

            def counting_app(environ, start_response):
                operation = _operation_of(environ)
                if operation is not None and counter is not None:
                    counter.record(operation)
                return app(environ, start_response)

            self._server = make_server(self._ip_address, self._port, counting_app, True,
                                       request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    server = CountingMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@dataclass
class Moto:
    """A running moto server: its endpoint, request counter, and client helpers for seeding."""

    endpoint: str
    requests: RequestCounter = field(default_factory=RequestCounter)

    def reset(self) -> None:
        request = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        self.requests.clear()

    def client(self, service: str, region: str = "eu-central-1"):
        """Return a boto3 client on this server for seeding data (counted like any request)."""
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id=DUMMY_ACCESS_KEY,
                            aws_secret_access_key=DUMMY_SECRET_KEY)


@pytest.fixture(scope="session")
def moto_session_server() -> Iterator[Moto]:
    counter = RequestCounter()
    server, endpoint = start_moto_server(counter)
    try:
        yield Moto(endpoint=endpoint, requests=counter)
    finally:
        server.stop()


AWS_VARIABLE_PREFIXES = ("AWS_",)


@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Isolate the process environment for AWS: dummy keys, temporary HOME, no IMDS.

    Removes every AWS_* variable first, so a developer's profile, Region or endpoint cannot
    leak in, and resets the backends' shared botocore session before and after the test.
    Returns the temporary HOME.
    """
    from secret_init.backends.aws import session

    for name in list(os.environ):
        if name.startswith(AWS_VARIABLE_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET_KEY)
    # Keep everything on loopback: no proxy from the developer's environment.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    session.reset()
    yield home
    session.reset()


@pytest.fixture
def moto(moto_session_server: Moto, aws_env: Path) -> Moto:
    """The session's moto server, reset, with its request counter cleared."""
    moto_session_server.reset()
    return moto_session_server


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# -- building backends and running the CLI -------------------------------------------------

REPOSITORY = Path(__file__).resolve().parent.parent
# Generic secret fields the core reads before calling a backend.
GENERIC_FIELDS = ("from", "key", "format", "encoding", "optional", "mode", "env")


def make_backend(cls: type[Backend], config: dict[str, Any], name: str = "aws") -> Backend:
    context = BackendContext(manifest_dir=Path("."), environ=dict(os.environ))
    return cls(name, Fields(config, file="manifest.yaml", where=f"backends.{name}"), context)


def make_reference(backend: Backend, entry: dict[str, Any]) -> tuple[Reference, Any]:
    fields = Fields(entry, file="manifest.yaml", where="secrets.example")
    result = backend.reference(fields)
    fields.finish(GENERIC_FIELDS)
    return result


def fetch_entries(backend: Backend, entries: list[dict[str, Any]],
                  seconds: float = 10.0) -> list[Fetched | SecretInitError]:
    """Fetch the references of ``entries`` in one call; return the results in entry order."""
    references = [make_reference(backend, entry)[0] for entry in entries]
    distinct = list(dict.fromkeys(references))
    results = backend.fetch(distinct, Deadline.after(seconds))
    assert set(results) == set(distinct)
    return [results[reference] for reference in references]


def run_secret_init(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m secret_init ARGUMENTS`` with the test's environment."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPOSITORY)
    return subprocess.run([sys.executable, "-m", "secret_init", *arguments], cwd=cwd, env=env,
                          capture_output=True, timeout=120)


def fetch_with_cli(tmp_path: Path, manifest: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Write ``manifest``, run ``secret_init fetch`` into tmp_path/out; return (result, out)."""
    manifest_path = tmp_path / "manifest.yaml"
    manifest_path.write_text(manifest)
    output = tmp_path / "out"
    result = run_secret_init(["fetch", "-f", str(manifest_path), "--allow-disk",
                              "--output-dir", str(output)], cwd=tmp_path)
    return result, output
