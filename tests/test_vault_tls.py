"""The vault backend over HTTPS: CA certificates, skip_verify and client certificates.

The Vault emulator speaks plain HTTP, so these tests run a small HTTPS server on 127.0.0.1
with certificates made for each test module. It serves one KV version 2 secret.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from secret_init.backends.base import BackendContext, Fetched
from secret_init.backends.vault import VaultBackend
from secret_init.deadline import Deadline
from secret_init.errors import BackendUnavailableError
from secret_init.fields import Fields

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

TOKEN = "hvs.tls-test-token"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(ca_key, ca_name, subject: str, key, *, is_ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(ca_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """Create a CA, a server certificate for 127.0.0.1 and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(ca_key, _name("test CA"), "test CA", ca_key, is_ca=True)
    files = {"ca": folder / "ca.pem"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for role in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(ca_key, ca_cert.subject, f"{role}.test", key, server=role == "server")
        files[f"{role}_cert"] = folder / f"{role}.pem"
        files[f"{role}_key"] = folder / f"{role}-key.pem"
        files[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files[f"{role}_key"])
    return files


class _KvHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        if self.path != "/v1/secret/data/web/db" or self.headers.get("X-Vault-Token") != TOKEN:
            self._send(403, {"errors": ["permission denied"]})
            return
        self._send(200, {"data": {"data": {"password": "tls"}, "metadata": {"version": 1}},
                         "lease_id": "", "lease_duration": 0, "renewable": False})

    def _send(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature fixed by the base class
        pass


@pytest.fixture(params=[False, True], ids=["server-auth", "mutual"])
def https_server(request, pki):
    """Serve HTTPS on 127.0.0.1; the "mutual" variant requires a client certificate."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KvHandler)
    server.paths = []  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server_cert"], pki["server_key"])
    if request.param:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki["ca"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.mutual = request.param  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def fetch(server, config: dict, environ: dict | None = None, seconds: float = 5.0):
    address = f"https://127.0.0.1:{server.server_address[1]}"
    environ = {"VAULT_TOKEN": TOKEN, **(environ or {})}
    fields = Fields({"address": address, **config}, file="manifest.yaml", where="backends.vault")
    backend = VaultBackend("vault", fields, BackendContext(Path("/"), environ))
    fields.finish()
    entry = Fields({"path": "secret/web/db", "kv_version": 2}, file="manifest.yaml",
                   where="secrets.s")
    reference = backend.reference(entry)[0]
    result = backend.fetch([reference], Deadline.after(seconds))[reference]
    backend.close()
    return result


def client_config(server, pki) -> dict:
    if not server.mutual:
        return {}
    return {"client_cert": str(pki["client_cert"]), "client_key": str(pki["client_key"])}


def test_ca_cert_field(https_server, pki):
    result = fetch(https_server, {"ca_cert": str(pki["ca"]), **client_config(https_server, pki)})
    assert isinstance(result, Fetched)
    assert result.value == {"password": "tls"}


def test_ca_cert_variables(https_server, pki):
    environ = {"VAULT_CACERT": str(pki["ca"])}
    if https_server.mutual:
        environ |= {"VAULT_CLIENT_CERT": str(pki["client_cert"]),
                    "VAULT_CLIENT_KEY": str(pki["client_key"])}
    result = fetch(https_server, {}, environ)
    assert result.value == {"password": "tls"}


def test_unknown_ca_fails_without_retry(https_server, pki):
    result = fetch(https_server, client_config(https_server, pki))
    assert isinstance(result, BackendUnavailableError)
    assert "TLS" in str(result)
    assert "certificate verify failed" in str(result)
    assert "ca_cert" in str(result)
    assert https_server.paths == []


def test_skip_verify_warns(https_server, pki, caplog):
    with caplog.at_level(logging.WARNING):
        result = fetch(https_server, {"skip_verify": True, **client_config(https_server, pki)})
    assert result.value == {"password": "tls"}
    assert "verification" in caplog.text
    assert "skip_verify" in caplog.text


@pytest.mark.parametrize("https_server", [True], indirect=True, ids=["mutual"])
def test_missing_client_certificate_is_rejected(https_server, pki):
    result = fetch(https_server, {"ca_cert": str(pki["ca"])}, seconds=1.0)
    assert isinstance(result, BackendUnavailableError)
    assert "client_cert" in str(result)
    assert https_server.paths == []
