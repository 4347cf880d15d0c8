"""The botocore session, clients, Region and credentials shared by the AWS backends.

One ``botocore.session.Session`` serves every AWS backend of a run, so credentials are
resolved once (one web-identity STS call, one container-credentials request) and each
(service, Region, endpoint) gets one client, created on first use. botocore is imported
here only inside functions: ``import botocore.session`` costs tens of milliseconds, and
``boto3`` more, so ``check`` and manifests without AWS backends never pay for it.

NOTE: botocore reads credentials, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE`` and the
``AWS_ENDPOINT_URL*`` variables from ``os.environ`` itself, while Region and consumed
variables here are read from ``BackendContext.environ``. The two agree when the core builds
the context from the process environment, which is the default.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Mapping

from ...deadline import Deadline
from ...errors import BackendUnavailableError, ConfigError, CredentialsError

if TYPE_CHECKING:
    import botocore.client
    import botocore.session

log = logging.getLogger("secret_init.backends.aws")

# Retry policy. botocore makes exactly one attempt per call and ``retry.call_with_retry``
# retries instead. botocore's own loop does not see the run's deadline (it would sleep and
# retry past it) and does not share the run's full-jitter schedule, and stacking both would multiply
# attempts. In client Config, botocore counts ``max_attempts`` as retries after the first
# attempt (botocore/args.py adds one), so 0 means a single attempt. NOTE: this gives up
# botocore's adaptive-mode client-side rate limiter, which matters only for far more
# requests than one run sends.
BOTOCORE_RETRIES = {"mode": "standard", "max_attempts": 0}

# Per-attempt socket timeouts, each also cut to the time the deadline leaves when the client
# is created. Secrets Manager and SSM usually return reads in well under a second.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
# Lower bound so that a client created just before the deadline can still try once.
MIN_TIMEOUT_SECONDS = 0.1

# Credential variables whose values are secrets; the core removes those a backend read from
# the application's environment. AWS_SECURITY_TOKEN is the boto2-era name of the session
# token that botocore still reads.
SECRET_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)

REGION_SOURCES = ("the secret's ARN", "'region' in the backend configuration", "AWS_REGION",
                  "AWS_DEFAULT_REGION", "the AWS config file (~/.aws/config or AWS_CONFIG_FILE)")

_lock = threading.Lock()
_session: "botocore.session.Session | None" = None
_clients: dict[tuple[str, str, str | None], "botocore.client.BaseClient"] = {}
_credentials_method: str | None = None


def get_session() -> "botocore.session.Session":
    """Return the process's botocore session, creating it on first use."""
    global _session
    with _lock:
        if _session is None:
            import botocore.session

            # botocore logs whole response bodies, secret values included, at DEBUG level
            # (botocore.parsers, botocore.endpoint). Keep its loggers at WARNING whatever
            # the root logger's level is.
            logging.getLogger("botocore").setLevel(logging.WARNING)
            _session = botocore.session.Session()
            _register_fast_loader(_session)
        return _session


def _register_fast_loader(session: "botocore.session.Session") -> None:
    """Replace the session's model loader with one that checks service names one at a time.

    botocore's Loader.load_service_model checks a service name against
    list_available_services, which lists all of the 400-odd model folders (botocore 1.44:
    about 900 stat calls, 25 ms per client on a 2-CPU machine, about a tenth of a one-secret
    run). The replacement evaluates ``name in services`` by looking in that service's folder
    only, and still lists everything when iterated (for botocore's "unknown service" message).
    """
    from botocore.loaders import create_loader

    loader = create_loader(session.get_config_variable("data_path"))
    loader.file_loader = _plain_json_file_loader()
    list_all = loader.list_available_services
    cache: dict[str, "_ServiceNames"] = {}

    def list_available_services(type_name: str) -> "_ServiceNames":
        if type_name not in cache:
            cache[type_name] = _ServiceNames(loader, type_name, list_all)
        return cache[type_name]

    loader.list_available_services = list_available_services  # type: ignore[method-assign]
    session.register_component("data_loader", loader)


def _plain_json_file_loader() -> Any:
    """Return a botocore JSONFileLoader that parses into dicts instead of OrderedDicts.

    botocore parses its data files with ``object_pairs_hook=OrderedDict``, which makes
    json.loads more than twice as slow: 14 ms instead of 5 ms for the 1.2 MB endpoints.json
    that every client reads (botocore 1.44, CPython 3.11, 2 CPUs). A dict keeps insertion
    order too, and botocore 1.44 calls no OrderedDict-only method (move_to_end, popitem) on
    loaded data. If botocore renames ``_load_file``, the override goes unused and its own
    loader applies, which test_fast_loader_parses_into_dicts detects.
    """
    from botocore.loaders import JSONFileLoader

    class PlainJSONFileLoader(JSONFileLoader):
        def _load_file(self, full_path: str, open_method: Any) -> Any:
            if not os.path.isfile(full_path):
                return None
            with open_method(full_path, "rb") as file:
                return json.loads(file.read().decode("utf-8"))

    return PlainJSONFileLoader()


class _ServiceNames:
    """The services that have a ``type_name`` model, tested per name, listed on demand."""

    def __init__(self, loader: Any, type_name: str, list_all: Any) -> None:
        self._loader = loader
        self._type_name = type_name
        self._list_all = list_all
        self._known: dict[str, bool] = {}

    def __contains__(self, service_name: object) -> bool:
        if not isinstance(service_name, str):
            return False
        if service_name not in self._known:
            self._known[service_name] = self._has_model(service_name)
        return self._known[service_name]

    def _has_model(self, service_name: str) -> bool:
        for search_path in self._loader.search_paths:
            folder = os.path.join(search_path, service_name)
            if not os.path.isdir(folder):
                continue
            for api_version in os.listdir(folder):
                path = os.path.join(folder, api_version, self._type_name)
                if self._loader.file_loader.exists(path):
                    return True
        return False

    def __iter__(self):
        return iter(self._list_all(self._type_name))

    def __len__(self) -> int:
        return len(self._list_all(self._type_name))


def reset() -> None:
    """Drop the shared session, its clients and resolved credentials (for tests and reuse)."""
    global _session, _credentials_method
    with _lock:
        _session = None
        _clients.clear()
        _credentials_method = None


def resolve_region(arn_region: str | None, configured: str | None,
                   environ: Mapping[str, str]) -> str:
    """Return the Region for one request, in the documented order of sources.

    botocore itself reads only AWS_DEFAULT_REGION and the config file, not AWS_REGION,
    which ECS, Lambda and EKS set; hence the explicit order here.
    """
    for candidate in (arn_region, configured, environ.get("AWS_REGION"),
                      environ.get("AWS_DEFAULT_REGION")):
        if candidate:
            return candidate
    from_file = get_session().get_config_variable("region")
    if from_file:
        return from_file
    raise ConfigError("no AWS Region is set; checked, in order: " + ", ".join(REGION_SOURCES)
                      + ". Set 'region' in the backend or AWS_REGION, or use a full ARN")


def ensure_credentials() -> str:
    """Resolve credentials once per session and return the provider's method name.

    Resolving here, before any request, turns every credential failure into one
    CredentialsError that lists the sources tried, and makes the web-identity STS call
    happen once instead of in each worker thread.
    """
    global _credentials_method
    session = get_session()
    with _lock:
        if _credentials_method is not None:
            return _credentials_method
        _credentials_method = _resolve_credentials(session)
        log.debug("using AWS credentials from %s", _credentials_method)
        return _credentials_method


def _resolve_credentials(session: "botocore.session.Session") -> str:
    import botocore.exceptions as bce

    from .retry import aws_message

    try:
        credentials = session.get_credentials()
        if credentials is None:
            raise CredentialsError("no AWS credentials found; tried: " + _tried_sources())
        # Web-identity and container credentials are fetched lazily; force it now.
        credentials.get_frozen_credentials()
        return credentials.method or "unknown"
    except OSError as error:
        # A missing or unreadable web-identity or container-authorization token file.
        reason = error.strerror or type(error).__name__
        raise CredentialsError(
            f"cannot read AWS credential file '{error.filename}': {reason}; check "
            "AWS_WEB_IDENTITY_TOKEN_FILE or AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") from None
    except ValueError as error:
        # Raised by the container provider for an invalid host or authorization token.
        raise CredentialsError(f"invalid container credentials configuration: {error}") from None
    except bce.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        message = f"obtaining AWS credentials failed: {code}: {aws_message(error)}"
        if status >= 500 or code in ("Throttling", "ThrottlingException"):
            raise BackendUnavailableError(message) from None
        raise CredentialsError(message) from None
    except (bce.ConnectionError, bce.HTTPClientError) as error:
        raise BackendUnavailableError(
            f"obtaining AWS credentials failed, the credential endpoint could not be reached: "
            f"{error}") from None
    except bce.BotoCoreError as error:
        raise CredentialsError(f"obtaining AWS credentials failed: {error}; tried: "
                               + _tried_sources()) from None


def _tried_sources() -> str:
    """Describe each source of botocore's default chain and whether it was configured."""
    env = os.environ

    def state(*names: str) -> str:
        present = [name for name in names if env.get(name)]
        return "set" if len(present) == len(names) else "not set"

    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    credentials_file = env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    config_file = env.get("AWS_CONFIG_FILE", "~/.aws/config")
    container = ("set" if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
                 or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") else "not set")
    imds = ("disabled by AWS_EC2_METADATA_DISABLED"
            if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true" else "no credentials returned")
    return "; ".join([
        f"environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({state('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY')})",
        f"web identity AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE ({state('AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE')})",
        f"profile '{profile}' in {credentials_file} and {config_file} (no credentials there)",
        f"ECS or EKS Pod Identity container credentials AWS_CONTAINER_CREDENTIALS_RELATIVE_URI "
        f"or AWS_CONTAINER_CREDENTIALS_FULL_URI ({container})",
        f"EC2 instance metadata ({imds})",
    ])


def get_client(service: str, region: str, endpoint_url: str | None, deadline: Deadline,
               max_pool_connections: int) -> "botocore.client.BaseClient":
    """Return the shared client for (service, Region, endpoint), creating it on first use.

    With no ``endpoint_url``, botocore applies AWS_ENDPOINT_URL_SECRETS_MANAGER,
    AWS_ENDPOINT_URL_SSM and AWS_ENDPOINT_URL itself (since botocore 1.31), so they are not
    read here. NOTE: a client keeps the timeouts computed when it was created, so a late
    attempt may outlive the deadline by up to READ_TIMEOUT_SECONDS.
    """
    key = (service, region, endpoint_url)
    session = get_session()
    with _lock:
        client = _clients.get(key)
        if client is None:
            from botocore.config import Config

            remaining = max(MIN_TIMEOUT_SECONDS, deadline.remaining())
            config = Config(
                retries=dict(BOTOCORE_RETRIES),
                connect_timeout=min(CONNECT_TIMEOUT_SECONDS, remaining),
                read_timeout=min(READ_TIMEOUT_SECONDS, remaining),
                max_pool_connections=max_pool_connections,
            )
            # botocore sessions are not thread-safe while creating clients, hence the lock;
            # the clients themselves are safe to share between threads.
            client = session.create_client(service, region_name=region,
                                           endpoint_url=endpoint_url, config=config)
            _clients[key] = client
        return client


def consumed_variables(environ: Mapping[str, str]) -> set[str]:
    """Return the secret credential variables present in ``environ``."""
    return {name for name in SECRET_CREDENTIAL_VARIABLES if environ.get(name)}
