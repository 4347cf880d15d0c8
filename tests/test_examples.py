"""The deployment examples under examples/: each parses, each manifest passes the real
``secret-init check``, and each deployment agrees with the manifest it runs.

"Agrees" covers what would break a first deployment. The memory volume is mounted where the
manifest writes, and the container runs as the user that owns the files. The manifest is
mounted where secret-init looks for it, every ``*_FILE`` variable names a file the manifest
writes, and init and application containers share one volume. The runtime tests then run the
examples' manifests for real on a tmpfs in a private mount namespace.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from namespaces import in_tmpfs_namespace, require_mount_namespace

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PYTHON = sys.executable

DEFAULT_MANIFEST = "/etc/secret-init/manifest.yaml"
DEFAULT_OUTPUT_DIR = "/run/secrets"
DOCKERFILE_UID = 10001

COMPOSE = EXAMPLES / "compose"
KUBERNETES = EXAMPLES / "kubernetes"
ECS = EXAMPLES / "ecs"
SWARM = EXAMPLES / "swarm"
KUBERNETES_FILES = ["entrypoint-vault.yaml", "init-container.yaml", "aws-irsa.yaml"]

# Every file under examples/ and the test that covers it. A new example must be added here,
# so none is left untested by accident.
COVERED_FILES = {
    "README.md": "documentation",
    "quickstart/README.md": "documentation",
    "quickstart/manifest.yaml": "test_manifest_passes_check",
    "quickstart/dev-secrets.yaml": "scripts/demo and test_example_file_parses",
    "quickstart/show_secrets.py": "test_compose_dev_run_writes_files_on_tmpfs",
    "compose/README.md": "documentation",
    "compose/manifest.yaml": "test_compose_*",
    "compose/dev-secrets.yaml": "test_compose_fake_file_covers_fetched_secrets",
    "compose/compose.yaml": "test_compose_*",
    "compose/compose.sops.yaml": "test_compose_sops_override_mounts_backend_inputs",
    "compose/compose.init-service.yaml": "test_compose_init_service_*",
    "kubernetes/README.md": "documentation",
    "kubernetes/entrypoint-vault.yaml": "test_kubernetes_*",
    "kubernetes/init-container.yaml": "test_kubernetes_*",
    "kubernetes/aws-irsa.yaml": "test_kubernetes_*",
    "ecs/README.md": "documentation",
    "ecs/manifest.yaml": "test_ecs_*",
    "ecs/task-definition.json": "test_ecs_*",
    "swarm/README.md": "documentation",
    "swarm/manifest.yaml": "test_swarm_*",
    "swarm/stack.yaml": "test_swarm_*",
}


# -- helpers ----------------------------------------------------------------------------------

def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real command line as a subprocess."""
    return subprocess.run([PYTHON, "-m", "secret_init", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def load_documents(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as stream:
        return [document for document in yaml.safe_load_all(stream) if document is not None]


def owner_ids(manifest: dict[str, Any]) -> tuple[int, int]:
    """Return the numeric (uid, gid) of output.owner, which the examples write as UID:GID."""
    owner = str(manifest["output"]["owner"])
    uid, _, gid = owner.partition(":")
    return int(uid), int(gid or uid)


def output_dir(manifest: dict[str, Any]) -> str:
    return manifest.get("output", {}).get("dir", DEFAULT_OUTPUT_DIR)


def written_names(manifest: dict[str, Any]) -> set[str]:
    """Names of the files the manifest writes: every entry under secrets without write: false."""
    return {name for name, entry in manifest["secrets"].items() if entry.get("write", True)}


def unwritten_names(manifest: dict[str, Any]) -> set[str]:
    """Names of the secrets fetched for templates and env only (write: false)."""
    return set(manifest["secrets"]) - written_names(manifest)


def fetched_names(manifest: dict[str, Any]) -> set[str]:
    """Names of the secrets that come from a backend rather than a template."""
    return {name for name, entry in manifest["secrets"].items() if "template" not in entry}


def file_variables(env: dict[str, str], directory: str) -> dict[str, str]:
    """Variables ending in _FILE whose value is a path inside ``directory``."""
    return {name: value for name, value in env.items()
            if name.endswith("_FILE") and value.startswith(directory.rstrip("/") + "/")}


def parse_mount_options(text: str) -> dict[str, str]:
    options = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        options[key] = value
    return options


# -- Kubernetes helpers -----------------------------------------------------------------------

def kubernetes_objects(name: str) -> list[dict[str, Any]]:
    return load_documents(KUBERNETES / name)


def single(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def configmap_manifest(objects: list[dict[str, Any]]) -> tuple[str, dict[str, Any], str]:
    """Return (ConfigMap name, parsed manifest, manifest text) of the example's ConfigMap."""
    configmaps = [obj for obj in objects
                  if obj["kind"] == "ConfigMap" and "manifest.yaml" in obj.get("data", {})]
    assert len(configmaps) == 1, "each Kubernetes example has one ConfigMap with manifest.yaml"
    text = configmaps[0]["data"]["manifest.yaml"]
    return configmaps[0]["metadata"]["name"], yaml.safe_load(text), text


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return single(objects, "Deployment")["spec"]["template"]["spec"]


def all_containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def volume_by_name(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(volume for volume in spec["volumes"] if volume["name"] == name)


def mount_at(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"] == path:
            return mount
    return None


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def effective_security(spec: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A securityContext field as the kubelet applies it: the container's value wins."""
    container_context = container.get("securityContext", {})
    if key in container_context:
        return container_context[key]
    return spec.get("securityContext", {}).get(key)


def runs_secret_init(spec: dict[str, Any], container: dict[str, Any], configmap: str) -> bool:
    """Whether ``container`` runs secret-init: it mounts the manifest ConfigMap."""
    for mount in container.get("volumeMounts", []):
        volume = volume_by_name(spec, mount["name"])
        if volume.get("configMap", {}).get("name") == configmap:
            return True
    return False


# -- compose helpers --------------------------------------------------------------------------

# ${NAME:?message} or ${NAME:-default} in a compose value; its colons are not separators.
COMPOSE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")


def compose_volume(entry: str) -> tuple[str, str, bool]:
    """Split a short-syntax volume 'SOURCE:TARGET[:ro]' into (source, target, read_only).

    A variable in the source is kept as $NAME, because compose substitutes it before it
    splits the entry.
    """
    parts = COMPOSE_VARIABLE.sub(r"$\1", entry).split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2] == "ro"
    return parts[0], parts[1], False


def compose_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Return target -> (source, read_only) for a service's short-syntax volumes."""
    mounts = {}
    for entry in service.get("volumes", []):
        source, target, read_only = compose_volume(entry)
        mounts[target] = (source, read_only)
    return mounts


def compose_tmpfs(service: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Return path -> mount options of a service's 'tmpfs:' entries."""
    result = {}
    for entry in service.get("tmpfs", []):
        path, _, options = entry.partition(":")
        result[path] = parse_mount_options(options) if options else {}
    return result


def container_to_host(mounts: dict[str, tuple[str, bool]], container_path: str,
                      base: Path) -> Path:
    """Map a file inside the container to the host file a bind mount puts there."""
    for target, (source, _) in mounts.items():
        if container_path == target:
            return (base / source).resolve()
        if container_path.startswith(target.rstrip("/") + "/"):
            return (base / source / posixpath.relpath(container_path, target)).resolve()
    raise AssertionError(f"{container_path} is not mounted from the host")


# -- every example ----------------------------------------------------------------------------

def example_files() -> list[Path]:
    return sorted(path for path in EXAMPLES.rglob("*") if path.is_file()
                  and "__pycache__" not in path.parts)


def test_every_example_file_is_covered():
    present = {path.relative_to(EXAMPLES).as_posix() for path in example_files()}
    assert present - set(COVERED_FILES) == set(), "add new example files to COVERED_FILES"
    assert set(COVERED_FILES) - present == set(), "COVERED_FILES lists files that do not exist"


@pytest.mark.parametrize("path", [path for path in example_files()
                                  if path.suffix in (".yaml", ".yml", ".json")],
                         ids=lambda path: path.relative_to(EXAMPLES).as_posix())
def test_example_file_parses(path: Path):
    if path.suffix == ".json":
        document = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(document, dict)
    else:
        documents = load_documents(path)
        assert documents, f"{path} is empty"
        assert all(isinstance(document, dict) for document in documents)


def manifest_cases() -> list[tuple[str, str, Path | None]]:
    """(test id, manifest text, file it came from or None for an embedded manifest)."""
    cases = []
    for path in (EXAMPLES / "quickstart/manifest.yaml", COMPOSE / "manifest.yaml",
                 ECS / "manifest.yaml", SWARM / "manifest.yaml"):
        cases.append((path.relative_to(EXAMPLES).as_posix(), path.read_text(encoding="utf-8"), path))
    for name in KUBERNETES_FILES:
        _, _, text = configmap_manifest(kubernetes_objects(name))
        cases.append((f"kubernetes/{name}", text, None))
    return cases


@pytest.mark.parametrize("case_id, text, path", manifest_cases(),
                         ids=[case[0] for case in manifest_cases()])
def test_manifest_passes_check(case_id: str, text: str, path: Path | None, tmp_path: Path):
    if path is None:
        path = tmp_path / "manifest.yaml"
        path.write_text(text, encoding="utf-8")
    result = run_cli("check", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert ": valid," in result.stdout


@pytest.mark.parametrize("case_id, text, path", manifest_cases(),
                         ids=[case[0] for case in manifest_cases()])
def test_manifest_plan_lists_every_secret(case_id: str, text: str, path: Path | None,
                                          tmp_path: Path):
    if path is None:
        path = tmp_path / "manifest.yaml"
        path.write_text(text, encoding="utf-8")
    manifest = yaml.safe_load(text)
    result = run_cli("plan", "-f", str(path))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()}
    for name in written_names(manifest):
        assert name in rows, f"'{name}' missing from the plan"


def test_deployments_run_as_dockerfile_user():
    dockerfile_user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile.example").read_text(),
                                re.MULTILINE)
    assert dockerfile_user is not None
    assert int(dockerfile_user.group(1)) == DOCKERFILE_UID
    for path in (COMPOSE / "manifest.yaml", ECS / "manifest.yaml", SWARM / "manifest.yaml"):
        assert owner_ids(load_yaml(path)) == (DOCKERFILE_UID, DOCKERFILE_UID), path
    for name in KUBERNETES_FILES:
        _, manifest, _ = configmap_manifest(kubernetes_objects(name))
        assert owner_ids(manifest) == (DOCKERFILE_UID, DOCKERFILE_UID), name


# -- Docker Compose ---------------------------------------------------------------------------

def compose_app() -> dict[str, Any]:
    return load_yaml(COMPOSE / "compose.yaml")["services"]["app"]


def test_compose_tmpfs_matches_manifest_output():
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    tmpfs = compose_tmpfs(compose_app())
    assert output_dir(manifest) in tmpfs
    options = tmpfs[output_dir(manifest)]
    uid, gid = owner_ids(manifest)
    assert int(options["uid"]) == uid
    assert int(options["gid"]) == gid
    assert options["mode"] == "0700"
    assert "size" in options


def test_compose_service_user_matches_manifest_owner():
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    user, _, group = compose_app()["user"].partition(":")
    assert (int(user), int(group)) == owner_ids(manifest)
    assert compose_app()["read_only"] is True


def test_compose_manifest_mounted_read_only_at_default_path():
    mounts = compose_mounts(compose_app())
    source, read_only = mounts[DEFAULT_MANIFEST]
    assert read_only
    assert (COMPOSE / source).resolve() == (COMPOSE / "manifest.yaml").resolve()


def test_compose_fake_file_covers_fetched_secrets():
    app = compose_app()
    fake_in_container = app["environment"]["SECRET_INIT_FAKE"]
    fake = container_to_host(compose_mounts(app), fake_in_container, COMPOSE)
    assert fake.exists()
    assert compose_mounts(app)[fake_in_container][1], "the fake file is mounted read-only"
    values = load_yaml(fake)
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    assert fetched_names(manifest) <= set(values)


def test_compose_sops_override_mounts_backend_inputs():
    override = load_yaml(COMPOSE / "compose.sops.yaml")["services"]["app"]
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    targets = {target: read_only for target, (_, read_only) in compose_mounts(override).items()}
    # The sops path is relative to the manifest, which compose.yaml mounts in /etc/secret-init.
    sops_path = posixpath.normpath(posixpath.join(posixpath.dirname(DEFAULT_MANIFEST),
                                                  manifest["backends"]["sops"]["path"]))
    assert targets.get(sops_path) is True
    assert targets.get(override["environment"]["SOPS_AGE_KEY_FILE"]) is True
    assert override["environment"]["SECRET_INIT_FAKE"] == ""


GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
GO_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_seconds(text: str) -> float:
    """Parse a Compose or Swarm duration such as '15s' or '1m30s' (Go's format) into seconds."""
    parts = GO_DURATION_PART.findall(text)
    assert parts and "".join(number + unit for number, unit in parts) == text, \
        f"'{text}' is not a duration this test can read"
    return sum(float(number) * GO_DURATION_UNITS[unit] for number, unit in parts)


def secret_init_stop_timeout(environment: dict[str, Any]) -> float:
    """The stop timeout a service gives secret-init: its SECRET_INIT_STOP_TIMEOUT or the default."""
    from secret_init.handover import HandOverOptions

    value = environment.get("SECRET_INIT_STOP_TIMEOUT")
    return float(value) if value is not None else HandOverOptions().stop_timeout


@pytest.mark.parametrize("path, service", [(COMPOSE / "compose.yaml", "app"),
                                           (SWARM / "stack.yaml", "web")],
                         ids=["compose", "swarm"])
def test_stop_grace_period_exceeds_stop_timeout(path: Path, service: str):
    definition = load_yaml(path)["services"][service]
    grace = duration_seconds(str(definition["stop_grace_period"]))
    # Compose and Swarm wait 10 s by default, no longer than secret-init's own default.
    assert grace > secret_init_stop_timeout(definition.get("environment", {}))


def init_service_file() -> dict[str, Any]:
    return load_yaml(COMPOSE / "compose.init-service.yaml")


def test_compose_init_service_fetches_into_shared_volume():
    compose = init_service_file()
    fetch = compose["services"]["secrets"]
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    assert fetch["entrypoint"] == ["secret-init", "fetch"]
    mounts = compose_mounts(fetch)
    assert mounts[output_dir(manifest)] == ("secrets", False)
    assert mounts[DEFAULT_MANIFEST][1], "the manifest is mounted read-only"


def test_compose_init_service_app_reads_after_fetch():
    compose = init_service_file()
    app = compose["services"]["app"]
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    assert compose_mounts(app)[output_dir(manifest)] == ("secrets", True)
    assert app["depends_on"]["secrets"]["condition"] == "service_completed_successfully"
    assert "secret-init" not in " ".join(app["command"])


def test_compose_init_service_volume_is_tmpfs():
    volume = init_service_file()["volumes"]["secrets"]
    options = parse_mount_options(volume["driver_opts"]["o"])
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    assert volume["driver_opts"]["type"] == "tmpfs"
    assert (int(options["uid"]), int(options["gid"])) == owner_ids(manifest)
    assert options["mode"] == "0700"


def test_compose_init_service_volume_stays_mounted_between_services():
    # Docker unmounts a local volume with driver options when its last user stops, which
    # would empty the tmpfs between the fetch and the application.
    services = init_service_file()["services"]
    holders = [name for name, service in services.items()
               if name not in ("secrets", "app")
               and any(entry.split(":")[0] == "secrets" for entry in service.get("volumes", []))]
    assert holders, "a long-running service must keep the tmpfs volume mounted"
    for holder in holders:
        assert services["secrets"]["depends_on"][holder]["condition"] == "service_started"


def test_compose_init_service_app_paths_name_manifest_secrets():
    app = init_service_file()["services"]["app"]
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    paths = file_variables(app["environment"], output_dir(manifest))
    paths.update({name: value for name, value in app["environment"].items()
                  if name == "APP_ENV_FILE"})
    assert paths
    for variable, path in paths.items():
        assert posixpath.basename(path) in written_names(manifest), variable


def test_compose_dev_run_writes_files_on_tmpfs(tmp_path: Path):
    require_mount_namespace()
    app = compose_app()
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    mounts = compose_mounts(app)
    fake = container_to_host(mounts, app["environment"]["SECRET_INIT_FAKE"], COMPOSE)
    directory = output_dir(manifest)
    options = ",".join(f"{key}={value}" if value else key
                       for key, value in compose_tmpfs(app)[directory].items())
    child = textwrap.dedent("""
        import json, os, sys
        directory = sys.argv[1]
        report = {"env_file": os.environ.get("APP_ENV_FILE"), "api": os.environ.get("API_TOKEN"),
                  "files": {}}
        for name in sorted(os.listdir(directory)):
            if name.startswith(".."):
                continue
            info = os.stat(os.path.join(directory, name))
            report["files"][name] = [oct(info.st_mode & 0o7777), info.st_uid, info.st_gid]
        with open(report["env_file"]) as stream:
            report["app_env"] = stream.read()
        print(json.dumps(report))
    """)
    (tmp_path / "inspect.py").write_text(child)
    command = shlex.join([PYTHON, "-m", "secret_init", "-f", str(COMPOSE / "manifest.yaml"),
                          "--", PYTHON, str(tmp_path / "inspect.py"), directory])
    env = {**os.environ, "SECRET_INIT_FAKE": str(fake)}

    result = subprocess.run(in_tmpfs_namespace(f"exec {command}", mount_point=directory,
                                               options=options),
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    uid, gid = owner_ids(manifest)
    assert set(report["files"]) == written_names(manifest)
    for name, (mode, file_uid, file_gid) in report["files"].items():
        assert mode == "0o400", name
        assert (file_uid, file_gid) == (uid, gid), name
    assert report["env_file"] == posixpath.join(directory, "app.env")
    assert report["app_env"] == "DATABASE_URL=postgres://web:dev-db-password@db:5432/web\n"
    assert report["api"] == "dev-api-token-123"


def test_compose_init_service_fetch_then_app_reads(tmp_path: Path):
    require_mount_namespace()
    compose = init_service_file()
    fetch, app = compose["services"]["secrets"], compose["services"]["app"]
    manifest = load_yaml(COMPOSE / "manifest.yaml")
    directory = output_dir(manifest)
    fake = container_to_host(compose_mounts(fetch), fetch["environment"]["SECRET_INIT_FAKE"],
                             COMPOSE)
    app_script = container_to_host(compose_mounts(app), app["command"][1], COMPOSE)
    # fetch as the init service does, make the folder read-only as the application's mount
    # is, then start the application's command.
    script = "\n".join([
        shlex.join([PYTHON, "-m", "secret_init", "-f", str(COMPOSE / "manifest.yaml"), "fetch"]),
        f"mount -o remount,ro,bind {shlex.quote(directory)}",
        shlex.join([PYTHON, str(app_script), directory]),
    ])
    env = {**os.environ, "SECRET_INIT_FAKE": str(fake)}

    result = subprocess.run(in_tmpfs_namespace(script, mount_point=directory),
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)

    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")}
    assert listed == written_names(manifest)


# -- Kubernetes -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", KUBERNETES_FILES)
def test_kubernetes_secret_volume_is_memory_emptydir_at_output_dir(name: str):
    objects = kubernetes_objects(name)
    configmap, manifest, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    for container in all_containers(spec):
        mount = mount_at(container, output_dir(manifest))
        if not runs_secret_init(spec, container, configmap):
            continue
        assert mount is not None, f"{container['name']} does not mount {output_dir(manifest)}"
        volume = volume_by_name(spec, mount["name"])
        assert volume["emptyDir"]["medium"] == "Memory"
        assert not mount.get("readOnly", False)


@pytest.mark.parametrize("name", KUBERNETES_FILES)
def test_kubernetes_run_as_user_matches_manifest_owner(name: str):
    objects = kubernetes_objects(name)
    _, manifest, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    uid, gid = owner_ids(manifest)
    for container in all_containers(spec):
        assert effective_security(spec, container, "runAsUser") == uid, container["name"]
        assert effective_security(spec, container, "runAsGroup") == gid, container["name"]
        assert effective_security(spec, container, "runAsNonRoot") is True, container["name"]


@pytest.mark.parametrize("name", KUBERNETES_FILES)
def test_kubernetes_containers_are_locked_down(name: str):
    spec = pod_spec(kubernetes_objects(name))
    for container in all_containers(spec):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]


@pytest.mark.parametrize("name", KUBERNETES_FILES)
def test_kubernetes_manifest_configmap_at_default_path(name: str):
    objects = kubernetes_objects(name)
    configmap, _, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    users = [container for container in all_containers(spec)
             if runs_secret_init(spec, container, configmap)]
    assert users, "no container mounts the manifest"
    for container in users:
        path = container_env(container).get("SECRET_INIT_MANIFEST", DEFAULT_MANIFEST)
        mount = mount_at(container, posixpath.dirname(path))
        assert mount is not None and mount["readOnly"] is True
        assert volume_by_name(spec, mount["name"])["configMap"]["name"] == configmap


@pytest.mark.parametrize("name", KUBERNETES_FILES)
def test_kubernetes_entrypoint_keeps_image_entrypoint(name: str):
    objects = kubernetes_objects(name)
    configmap, _, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    for container in spec["containers"]:
        if runs_secret_init(spec, container, configmap):
            # 'command' would replace the image's ENTRYPOINT, secret-init itself.
            assert "command" not in container, container["name"]
            assert container["args"], container["name"]


@pytest.mark.parametrize("name", KUBERNETES_FILES)
def test_kubernetes_file_variables_name_manifest_secrets(name: str):
    objects = kubernetes_objects(name)
    _, manifest, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    checked = 0
    for container in all_containers(spec):
        for variable, path in file_variables(container_env(container), output_dir(manifest)).items():
            assert posixpath.basename(path) in written_names(manifest), f"{container['name']} {variable}"
            checked += 1
    assert checked, "the example shows no *_FILE variable"


@pytest.mark.parametrize("name", KUBERNETES_FILES)
def test_kubernetes_secret_volume_has_no_subpath(name: str):
    objects = kubernetes_objects(name)
    _, manifest, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    for container in all_containers(spec):
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"].startswith(output_dir(manifest)):
                assert "subPath" not in mount, container["name"]


@pytest.mark.parametrize("name", [name for name in KUBERNETES_FILES if name != "aws-irsa.yaml"])
def test_kubernetes_vault_token_is_projected_for_audience(name: str):
    objects = kubernetes_objects(name)
    configmap, manifest, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    vault = manifest["backends"]["vault"]
    auth = vault["auth"]
    assert auth["method"] == "kubernetes"
    assert auth["role"]
    assert single(objects, "ServiceAccount")["metadata"]["name"] == spec["serviceAccountName"]
    assert spec["automountServiceAccountToken"] is False
    token_dir, token_file = posixpath.split(auth["token_path"])
    ca_dir = posixpath.dirname(vault["ca_cert"])
    for container in all_containers(spec):
        if not runs_secret_init(spec, container, configmap):
            continue
        token_mount = mount_at(container, token_dir)
        assert token_mount is not None, f"{container['name']} does not mount {token_dir}"
        sources = volume_by_name(spec, token_mount["name"])["projected"]["sources"]
        token = next(source["serviceAccountToken"] for source in sources
                     if "serviceAccountToken" in source)
        assert token["path"] == token_file
        assert token["audience"]
        assert mount_at(container, ca_dir) is not None, f"{container['name']} lacks the CA"


def test_kubernetes_init_container_shares_volume_read_only():
    objects = kubernetes_objects("init-container.yaml")
    configmap, manifest, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    directory = output_dir(manifest)
    (init,) = spec["initContainers"]
    (app,) = spec["containers"]
    assert init["command"] == ["secret-init", "fetch"]
    assert runs_secret_init(spec, init, configmap)
    assert not runs_secret_init(spec, app, configmap)
    init_mount, app_mount = mount_at(init, directory), mount_at(app, directory)
    assert init_mount is not None and app_mount is not None
    assert init_mount["name"] == app_mount["name"]
    assert app_mount["readOnly"] is True
    assert "python" not in " ".join(app["command"])


def test_kubernetes_irsa_role_annotation_and_no_static_keys():
    objects = kubernetes_objects("aws-irsa.yaml")
    _, manifest, _ = configmap_manifest(objects)
    spec = pod_spec(objects)
    account = single(objects, "ServiceAccount")
    assert account["metadata"]["name"] == spec["serviceAccountName"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", role)
    assert {backend["type"] for backend in manifest["backends"].values()} == {"aws-secretsmanager"}
    for container in all_containers(spec):
        names = {item["name"] for item in container.get("env", [])}
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


# -- Amazon ECS -------------------------------------------------------------------------------

def ecs_task() -> dict[str, Any]:
    return json.loads((ECS / "task-definition.json").read_text(encoding="utf-8"))


def ecs_container() -> dict[str, Any]:
    (container,) = ecs_task()["containerDefinitions"]
    return container


def ecs_env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in ecs_container()["environment"]}


def test_ecs_tmpfs_is_at_output_dir_on_ec2():
    manifest = load_yaml(ECS / "manifest.yaml")
    tmpfs = ecs_container()["linuxParameters"]["tmpfs"]
    assert [mount["containerPath"] for mount in tmpfs] == [output_dir(manifest)]
    assert tmpfs[0]["size"] >= 1
    # linuxParameters.tmpfs is not supported on Fargate.
    assert "FARGATE" not in ecs_task()["requiresCompatibilities"]


def test_ecs_user_matches_manifest_owner():
    manifest = load_yaml(ECS / "manifest.yaml")
    user, _, group = ecs_container()["user"].partition(":")
    assert (int(user), int(group)) == owner_ids(manifest)
    assert ecs_container()["readonlyRootFilesystem"] is True


def test_ecs_manifest_volume_at_manifest_path():
    container = ecs_container()
    path = ecs_env().get("SECRET_INIT_MANIFEST", DEFAULT_MANIFEST)
    points = {point["containerPath"]: point for point in container["mountPoints"]}
    point = points[posixpath.dirname(path)]
    assert point["readOnly"] is True
    assert point["sourceVolume"] in {volume["name"] for volume in ecs_task()["volumes"]}


def test_ecs_task_role_without_static_keys():
    task = ecs_task()
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", task["taskRoleArn"])
    assert not set(ecs_env()) & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
    # secret-init must be PID 1 to supervise; ECS's own init would take that place.
    assert ecs_container()["linuxParameters"]["initProcessEnabled"] is False


def test_ecs_stop_timeout_exceeds_secret_init():
    assert ecs_container()["stopTimeout"] > secret_init_stop_timeout(ecs_env())


def test_ecs_file_variables_name_manifest_secrets():
    manifest = load_yaml(ECS / "manifest.yaml")
    paths = file_variables(ecs_env(), output_dir(manifest))
    assert paths
    for variable, path in paths.items():
        assert posixpath.basename(path) in written_names(manifest), variable


def test_ecs_value_from_arn_selects_json_key():
    result = run_cli("plan", "-f", str(ECS / "manifest.yaml"))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert "key password" in rows["db_password"]
    assert "key token" in rows["api_token"]


# -- Docker Swarm -----------------------------------------------------------------------------

LISTING_MARKER = "--- files ---"

def swarm_service() -> dict[str, Any]:
    return load_yaml(SWARM / "stack.yaml")["services"]["web"]


def test_swarm_secret_targets_match_file_backend():
    manifest = load_yaml(SWARM / "manifest.yaml")
    backend_dir = manifest["backends"]["swarm"]["dir"]
    targets = {secret["target"]: secret for secret in swarm_service()["secrets"]}
    uid, gid = owner_ids(manifest)
    for name, entry in manifest["secrets"].items():
        if entry.get("from") != "swarm":
            continue
        secret = targets[posixpath.join(backend_dir, entry["file"])]
        assert (int(secret["uid"]), int(secret["gid"])) == (uid, gid), name
        # YAML 1.1 reads the unquoted 0400 of a stack file as an octal number.
        assert secret["mode"] == 0o400, name


def test_swarm_secrets_stay_outside_output_dir():
    manifest = load_yaml(SWARM / "manifest.yaml")
    directory = output_dir(manifest).rstrip("/") + "/"
    for secret in swarm_service()["secrets"]:
        assert secret["target"].startswith("/"), "a relative target lands in /run/secrets"
        assert not secret["target"].startswith(directory)


def test_swarm_output_dir_is_tmpfs_volume():
    manifest = load_yaml(SWARM / "manifest.yaml")
    tmpfs = [volume for volume in swarm_service()["volumes"] if volume["type"] == "tmpfs"]
    assert [volume["target"] for volume in tmpfs] == [output_dir(manifest)]
    assert tmpfs[0]["tmpfs"]["size"] > 0


def test_swarm_manifest_config_at_default_path():
    stack = load_yaml(SWARM / "stack.yaml")
    (config,) = swarm_service()["configs"]
    assert config["target"] == DEFAULT_MANIFEST
    assert (SWARM / stack["configs"][config["source"]]["file"]).resolve() == \
        (SWARM / "manifest.yaml").resolve()


def test_swarm_user_matches_manifest_owner():
    manifest = load_yaml(SWARM / "manifest.yaml")
    user, _, group = swarm_service()["user"].partition(":")
    assert (int(user), int(group)) == owner_ids(manifest)


def test_swarm_template_renders_from_swarm_files(tmp_path: Path):
    require_mount_namespace()
    manifest = load_yaml(SWARM / "manifest.yaml")
    backend_dir = manifest["backends"]["swarm"]["dir"]
    directory = output_dir(manifest)
    # Swarm's files, created the way the stack's comment says: printf, no trailing newline.
    swarm_files = "\n".join([
        f"mkdir -p {backend_dir}",
        f"mount -t tmpfs -o size=1m tmpfs {backend_dir}",
        f"printf %s swarm-db-pass > {backend_dir}/db_password",
        f"printf %s swarm-smtp-pass > {backend_dir}/smtp_password",
        f"chmod 0400 {backend_dir}/db_password {backend_dir}/smtp_password",
    ])
    # The application prints the rendered file, then every name in the output folder and in
    # the published version folder that ..data points to.
    show = (f'cat "$APP_CONFIG_FILE"; echo {LISTING_MARKER}; '
            f'ls -A {shlex.quote(directory)} {shlex.quote(directory)}/..data/')
    command = shlex.join([PYTHON, "-m", "secret_init", "-f", str(SWARM / "manifest.yaml"),
                          "--", "sh", "-c", show])

    result = subprocess.run(in_tmpfs_namespace(f"{swarm_files}\nexec {command}",
                                               mount_point=directory),
                            capture_output=True, text=True, cwd=ROOT, timeout=60)

    assert result.returncode == 0, result.stderr
    rendered, _, listing = result.stdout.partition(f"{LISTING_MARKER}\n")
    assert "password = swarm-db-pass\n" in rendered
    assert "password = swarm-smtp-pass\n" in rendered
    assert "[smtp]" in rendered
    listed = {line for line in listing.splitlines() if line and not line.endswith(":")}
    assert "app.ini" in listed
    for name in ("db_password", "smtp_password"):
        assert name not in listed, f"{name} only feeds app.ini but was written"
    assert unwritten_names(manifest) == {"db_password", "smtp_password"}
