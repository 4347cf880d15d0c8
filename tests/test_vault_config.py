"""Offline checks of the vault backend: manifest fields, references, TLS and proxy settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from secret_init.backends.base import BackendContext
from secret_init.backends.vault import VaultBackend, VaultReference, normalize_path
from secret_init.backends.vault.config import select_proxy
from secret_init.errors import ConfigError, ManifestError
from secret_init.fields import Fields

ADDRESS = "http://127.0.0.1:8200"


def make_backend(config: dict, environ: dict | None = None, tmp_path: Path | None = None) -> VaultBackend:
    context = BackendContext(manifest_dir=tmp_path or Path("/nonexistent"),
                             environ=environ if environ is not None else {})
    return VaultBackend("vault", Fields(config, file="manifest.yaml", where="backends.vault"),
                        context)


def make_reference(backend: VaultBackend, entry: dict) -> VaultReference:
    fields = Fields(entry, file="manifest.yaml", where="secrets.db")
    reference, key_path = backend.reference(fields)
    fields.finish()
    assert key_path is None
    assert isinstance(reference, VaultReference)
    return reference


# -- connection ------------------------------------------------------------------------------

def test_address_from_vault_addr():
    backend = make_backend({}, {"VAULT_ADDR": "https://vault.example.com:8200/"})
    assert backend.settings.address == "https://vault.example.com:8200"


def test_address_field_wins_over_vault_addr():
    backend = make_backend({"address": ADDRESS}, {"VAULT_ADDR": "https://other:8200"})
    assert backend.settings.address == ADDRESS


def test_address_missing_fails_at_run_time():
    # check may run outside the container, where VAULT_ADDR is not set: the backend is
    # valid offline and every fetch fails with the configuration error.
    backend = make_backend({})

    assert backend.deferred_error is not None
    assert "VAULT_ADDR" in str(backend.deferred_error)
    assert backend.deferred_error.exit_code == 78


@pytest.mark.parametrize("address", ["vault:8200", "ftp://vault", "https://vault/v1/", "https://"])
def test_address_invalid_is_an_error(address):
    with pytest.raises(ManifestError, match="address"):
        make_backend({"address": address})


def test_invalid_vault_addr_names_the_variable():
    with pytest.raises(ConfigError, match="VAULT_ADDR"):
        make_backend({}, {"VAULT_ADDR": "vault.example.com"})


def test_namespace_from_environment():
    backend = make_backend({"address": ADDRESS}, {"VAULT_NAMESPACE": "team-a/"})
    assert backend.settings.namespace == "team-a"


def test_namespace_field_wins():
    backend = make_backend({"address": ADDRESS, "namespace": "team-b"},
                           {"VAULT_NAMESPACE": "team-a"})
    assert backend.settings.namespace == "team-b"


def test_concurrency_bounds():
    assert make_backend({"address": ADDRESS}).settings.concurrency == 8
    with pytest.raises(ManifestError, match="at least 1"):
        make_backend({"address": ADDRESS, "concurrency": 0})
    with pytest.raises(ManifestError, match="at most 64"):
        make_backend({"address": ADDRESS, "concurrency": 65})


# -- TLS -------------------------------------------------------------------------------------

def test_tls_fields_resolve_relative_to_manifest(tmp_path):
    backend = make_backend({"address": "https://vault:8200", "ca_cert": "ca.pem",
                            "client_cert": "c.pem", "client_key": "k.pem"}, tmp_path=tmp_path)
    tls = backend.settings.tls
    assert tls.verify() == str(tmp_path / "ca.pem")
    assert tls.cert() == (str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))


def test_tls_from_environment():
    backend = make_backend({"address": "https://vault:8200"},
                           {"VAULT_CACERT": "/etc/ca.pem", "VAULT_CAPATH": "/etc/cas",
                            "VAULT_CLIENT_CERT": "/c.pem", "VAULT_CLIENT_KEY": "/k.pem"})
    tls = backend.settings.tls
    # VAULT_CACERT takes precedence over VAULT_CAPATH, as in the Vault CLI.
    assert tls.verify() == "/etc/ca.pem"
    assert tls.cert() == ("/c.pem", "/k.pem")


def test_ca_path_from_environment():
    backend = make_backend({"address": "https://vault:8200"}, {"VAULT_CAPATH": "/etc/cas"})
    assert backend.settings.tls.verify() == "/etc/cas"


def test_ca_cert_and_ca_path_fields_conflict():
    with pytest.raises(ManifestError, match="cannot be used together"):
        make_backend({"address": "https://vault:8200", "ca_cert": "a", "ca_path": "b"})


def test_ca_cert_and_skip_verify_conflict():
    with pytest.raises(ManifestError, match="skip_verify"):
        make_backend({"address": "https://vault:8200", "ca_cert": "a", "skip_verify": True})


def test_client_cert_without_key_is_an_error():
    with pytest.raises(ManifestError, match="client_key"):
        make_backend({"address": "https://vault:8200", "client_cert": "c.pem"})


def test_client_key_without_cert_is_an_error():
    with pytest.raises(ManifestError, match="client_cert"):
        make_backend({"address": "https://vault:8200", "client_key": "k.pem"})


def test_client_cert_variable_without_key_is_an_error():
    with pytest.raises(ConfigError, match="VAULT_CLIENT_KEY"):
        make_backend({"address": "https://vault:8200"}, {"VAULT_CLIENT_CERT": "/c.pem"})


def test_skip_verify_must_be_boolean():
    with pytest.raises(ManifestError, match="true or false"):
        make_backend({"address": "https://vault:8200", "skip_verify": "yes"})


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False),
                                            ("false", False)])
def test_vault_skip_verify_variable(value, expected):
    backend = make_backend({"address": "https://vault:8200"}, {"VAULT_SKIP_VERIFY": value})
    assert backend.settings.tls.skip_verify is expected
    assert backend.settings.tls.verify() is (not expected)


def test_vault_skip_verify_invalid_value():
    with pytest.raises(ConfigError, match="VAULT_SKIP_VERIFY='maybe'"):
        make_backend({"address": "https://vault:8200"}, {"VAULT_SKIP_VERIFY": "maybe"})


def test_tls_settings_on_http_address_warn(caplog):
    make_backend({"address": ADDRESS, "ca_cert": "/ca.pem"})
    assert "plain http" in caplog.text


def test_tls_files_are_not_opened_when_loading():
    backend = make_backend({"address": "https://vault:8200", "ca_cert": "/missing/ca.pem"})
    assert backend.settings.tls.ca_cert == ("ca_cert", Path("/missing/ca.pem"))


# -- proxy -----------------------------------------------------------------------------------

def test_proxy_for_remote_https_address():
    environ = {"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://plain:80"}
    assert select_proxy("https://vault.example.com:8200", environ) == "http://proxy:3128"
    assert select_proxy("http://vault.example.com:8200", environ) == "http://plain:80"


def test_proxy_upper_case_wins():
    environ = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:1"}
    assert select_proxy("https://vault.example.com", environ) == "http://upper:1"


@pytest.mark.parametrize("address", ["http://127.0.0.1:8200", "http://localhost:8200",
                                     "http://[::1]:8200", "https://127.5.0.1"])
def test_proxy_never_used_for_loopback(address):
    assert select_proxy(address, {"HTTP_PROXY": "http://p:1", "HTTPS_PROXY": "http://p:1"}) is None


@pytest.mark.parametrize("address,no_proxy", [
    ("https://vault.example.com:8200", "vault.example.com"),
    ("https://vault.example.com:8200", ".example.com"),
    ("https://vault.example.com:8200", "*.example.com"),
    ("https://vault.example.com:8200", "example.com"),
    ("https://example.com:8200", "example.com"),
    ("https://vault.example.com:8200", "*"),
    ("https://vault.example.com:8200", "other, vault.example.com:8200"),
    ("https://vault.example.com", "vault.example.com:443"),
    ("https://10.1.2.3:8200", "10.0.0.0/8"),
    ("https://10.1.2.3:8200", "10.1.2.3"),
    ("https://[fd00::5]:8200", "[fd00::5]:8200"),
])
def test_no_proxy_matches(address, no_proxy):
    assert select_proxy(address, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": no_proxy}) is None


@pytest.mark.parametrize("address,no_proxy", [
    ("https://vault.example.com:8200", "other.com"),
    ("https://vault.example.com:8200", "vault.example.com:9999"),
    ("https://vault.example.com", "vault.example.com:8200"),
    ("https://vault.example.com:8200", "192.168.0.0/16"),
    ("https://vault.example.com:8200", "ample.com"),
    ("https://example.com:8200", ".example.com"),
    ("https://10.1.2.3:8200", "10.1.2.4"),
])
def test_no_proxy_does_not_match(address, no_proxy):
    assert select_proxy(address, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": no_proxy}) == "http://p:1"


# -- auth ------------------------------------------------------------------------------------

def test_default_auth_is_token_and_consumes_vault_token():
    backend = make_backend({"address": ADDRESS}, {"VAULT_TOKEN": "hvs.x"})
    assert backend.settings.auth.method == "token"
    assert backend.consumed_environment() == {"VAULT_TOKEN"}


def test_token_file_does_not_consume_vault_token(tmp_path):
    backend = make_backend({"address": ADDRESS, "auth": {"method": "token", "token_file": "t"}},
                           {"VAULT_TOKEN": "hvs.x"}, tmp_path=tmp_path)
    assert backend.settings.auth.token_file == tmp_path / "t"
    assert backend.consumed_environment() == set()


def test_approle_from_environment_consumes_both_variables():
    backend = make_backend({"address": ADDRESS, "auth": {"method": "approle"}},
                           {"VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"})
    assert backend.consumed_environment() == {"VAULT_ROLE_ID", "VAULT_SECRET_ID"}
    assert backend.settings.auth.mount == "approle"


def test_approle_needs_a_role_id():
    with pytest.raises(ManifestError, match="role ID"):
        make_backend({"address": ADDRESS, "auth": {"method": "approle"}})


def test_approle_role_id_and_file_conflict():
    with pytest.raises(ManifestError, match="cannot be used together"):
        make_backend({"address": ADDRESS, "auth": {"method": "approle", "role_id": "r",
                                                   "role_id_file": "f"}})


def test_remove_secret_id_file_needs_the_file():
    with pytest.raises(ManifestError, match="secret_id_file"):
        make_backend({"address": ADDRESS, "auth": {"method": "approle", "role_id": "r",
                                                   "remove_secret_id_file": True}})


def test_kubernetes_defaults():
    backend = make_backend({"address": ADDRESS, "auth": {"method": "kubernetes", "role": "web",
                                                         "mount": "/k8s-prod/"}})
    auth = backend.settings.auth
    assert auth.mount == "k8s-prod"
    assert auth.token_path == Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def test_kubernetes_needs_a_role():
    with pytest.raises(ManifestError, match="role"):
        make_backend({"address": ADDRESS, "auth": {"method": "kubernetes"}})


def test_jwt_needs_a_token_source():
    with pytest.raises(ManifestError, match="token_file"):
        make_backend({"address": ADDRESS, "auth": {"method": "jwt", "role": "ci"}})


def test_jwt_token_env_is_consumed():
    backend = make_backend({"address": ADDRESS, "auth": {"method": "jwt", "role": "ci",
                                                         "token_env": "CI_JOB_JWT"}})
    assert backend.consumed_environment() == {"CI_JOB_JWT"}


def test_unknown_auth_method():
    with pytest.raises(ManifestError, match="not one of"):
        make_backend({"address": ADDRESS, "auth": {"method": "ldap"}})


def test_unknown_auth_field_is_rejected():
    with pytest.raises(ManifestError, match="unknown field 'secret_id'"):
        make_backend({"address": ADDRESS, "auth": {"method": "approle", "role_id": "r",
                                                   "secret_id": "literal"}})


def test_loading_does_not_import_hvac():
    script = ("import sys\n"
              "from pathlib import Path\n"
              "from secret_init.backends.base import BackendContext\n"
              "from secret_init.backends.vault import VaultBackend\n"
              "from secret_init.fields import Fields\n"
              "backend = VaultBackend('v', Fields({'address': 'http://127.0.0.1:1'}, file='m', "
              "where='b'), BackendContext(Path('.'), {}))\n"
              "backend.reference(Fields({'path': 'secret/x'}, file='m', where='s'))\n"
              "print(sorted(name for name in ('hvac', 'requests') if name in sys.modules))\n")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "[]"


# -- references ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [("secret/web/db", "secret/web/db"),
                                          ("/secret//web/db/", "secret/web/db"),
                                          ("..", None), ("secret/../x", None), ("/", None)])
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == expected


def test_reference_fields():
    backend = make_backend({"address": ADDRESS})
    reference = make_reference(backend, {"path": "/secret/web/db", "version": 3})
    assert reference == VaultReference("vault", "secret/web/db", version=3)
    assert reference.describe() == "vault:secret/web/db version 3"


def test_equal_paths_give_equal_references():
    backend = make_backend({"address": ADDRESS})
    first = make_reference(backend, {"path": "secret/web/db"})
    second = make_reference(backend, {"path": "secret//web/db/"})
    assert first == second
    assert hash(first) == hash(second)


def test_params_are_canonical_and_hidden_in_describe():
    backend = make_backend({"address": ADDRESS})
    first = make_reference(backend, {"path": "pki/issue/web",
                                     "params": {"ttl": "1h", "common_name": "web.internal"}})
    second = make_reference(backend, {"path": "pki/issue/web",
                                      "params": {"common_name": "web.internal", "ttl": "1h"}})
    assert first == second
    assert "web.internal" not in first.describe()
    assert "common_name" in first.describe()


@pytest.mark.parametrize("entry,field", [
    ({"path": ".."}, "path"),
    ({"path": "secret/x", "version": 0}, "version"),
    ({"path": "secret/x", "kv_version": 3}, "kv_version"),
    ({"path": "secret/x", "mount": "other"}, "mount"),
    ({"path": "secret/x", "mount": "secret/x"}, "mount"),
    ({"path": "secret/x", "method": "DELETE"}, "method"),
    ({"path": "secret/x", "method": "GET", "version": 2}, "version"),
    ({"path": "secret/x", "kv_version": 2, "params": {"a": 1}}, "params"),
    ({"path": "secret/x", "kv_version": 1, "version": 2}, "version"),
    ({"path": "secret", "kv_version": 2}, "path"),
    ({"path": "pki/issue/web", "params": {"alt": {"nested": 1}}}, "params"),
])
def test_invalid_reference(entry, field):
    backend = make_backend({"address": ADDRESS})
    with pytest.raises(ManifestError, match=f"secrets.db.{field}"):
        make_reference(backend, entry)


def test_reference_with_mount_and_kv_version():
    backend = make_backend({"address": ADDRESS})
    reference = make_reference(backend, {"path": "team/kv/web/db", "mount": "team/kv",
                                         "kv_version": 2})
    assert reference.mount == "team/kv"
    assert reference.kv_version == 2
