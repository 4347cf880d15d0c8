"""One run of secret-init, as its steps: load manifest, plan, fetch, render, write, hand over."""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from . import redact
from .backends.base import Fetched
from .deadline import Deadline
from .environment import check_env_value, child_environment, process_environment
from .errors import ConfigError, KeyNotFoundError, NotFoundError, SecretInitError, StoppedBySignalError
from .fetch import close_backends, fetch_all
from .handover import HandOverOptions, hand_over, preflight_command
from .manifest import Manifest, SecretSpec, load_manifest
from .plan import Plan, PlannedSecret, backends_in_use, build_plan
from .publish import OutputFile, check_memory_filesystem, publish
from .render import fill_template, render_value, template_references

log = logging.getLogger("secret_init")

# Signals that stop a run before the hand-over; each exits 128+signal with nothing started.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class RunOptions:
    """Settings from the command line and SECRET_INIT_* variables; None means "use the manifest"."""

    manifest_path: str
    fake_path: str | None = None
    allow_disk: bool = False
    output_dir: str | None = None
    timeout: float | None = None
    user: str | None = None
    cleanup: bool | None = None
    handover: HandOverOptions = field(default_factory=HandOverOptions)


@dataclass
class Rendered:
    """The content of every secret that will be written, and what could not be rendered."""

    content: dict[str, bytes]
    errors: list[SecretInitError]
    missing_optional: list[str]


def _stop(signum: int, frame: Any) -> None:
    raise StoppedBySignalError(signum)


def install_stop_handlers() -> None:
    """Turn SIGTERM, SIGINT and SIGHUP into a clean abort until the hand-over."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)


# -- step 1 and 2: load and plan --------------------------------------------------------------

def load_and_plan(options: RunOptions) -> Plan:
    manifest = load_manifest(options.manifest_path)
    return build_plan(manifest, output_dir=options.output_dir, user=options.user)


# -- step 3: fetch ----------------------------------------------------------------------------

def load_fake_values(path: str) -> dict[str, Any]:
    """Read the --fake file: a YAML or JSON mapping of secret name to value."""
    from pathlib import Path

    from .backends.file import parse_document, read_bytes

    document = parse_document(read_bytes(Path(path), "fake secrets file"), Path(path), "auto")
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"fake secrets file {path} must be a mapping of secret name to value")
    redact.register(document)
    return {str(name): value for name, value in document.items()}


def fetch_values(plan: Plan, options: RunOptions) -> dict[str, Fetched | SecretInitError]:
    """Fetch every non-template secret, by name; with --fake, read them from the fake file."""
    sources = [planned.spec for planned in plan.secrets if planned.spec.template is None]

    if options.fake_path is not None:
        fake = load_fake_values(options.fake_path)
        values: dict[str, Fetched | SecretInitError] = {}
        for spec in sources:
            if spec.name in fake:
                values[spec.name] = Fetched(value=fake[spec.name])
                log.info("using fake value for %s from %s", spec.name, options.fake_path)
            else:
                values[spec.name] = NotFoundError(
                    f"no value in fake file {options.fake_path}; add a line '{spec.name}: ...'",
                    secret=spec.name)
        return values

    timeout = options.timeout if options.timeout is not None else plan.manifest.timeout
    deadline = Deadline.after(timeout)
    backends = backends_in_use(plan)
    try:
        result = fetch_all(backends, plan.references, deadline)
    finally:
        close_backends(backends)

    values = {}
    for spec in sources:
        assert spec.reference is not None
        outcome = result.values[spec.reference]
        values[spec.name] = outcome
        if isinstance(outcome, Fetched):
            version = f" version {outcome.version}" if outcome.version else ""
            milliseconds = result.milliseconds.get(spec.reference.backend, 0)
            log.info("fetched %s from %s%s in %d ms", spec.name, plan.source_of(spec), version,
                     milliseconds, extra={"secret": spec.name, "backend": spec.reference.backend,
                                          "source": spec.reference.describe(),
                                          "version": outcome.version, "ms": milliseconds,
                                          "event": "fetched"})
    return values


# -- step 4: render ---------------------------------------------------------------------------

def _tolerated(error: SecretInitError) -> bool:
    """Tell whether an optional secret may be skipped after ``error``: only absence, not failure."""
    return isinstance(error, (NotFoundError, KeyNotFoundError))


def render_all(plan: Plan, values: dict[str, Fetched | SecretInitError], *, fake: bool) -> Rendered:
    content: dict[str, bytes] = {}
    errors: list[SecretInitError] = []
    missing: list[str] = []

    for planned in plan.secrets:
        spec = planned.spec
        if spec.template is not None:
            continue
        outcome = values[spec.name]
        source = "the fake file" if fake else spec.reference.describe()
        if isinstance(outcome, Fetched):
            render_spec = replace(spec, key=None, encoding=None) if fake else spec
            try:
                content[spec.name] = render_value(outcome, render_spec, source)
                redact.register(content[spec.name])
                continue
            except SecretInitError as error:
                outcome = error
        outcome = outcome.for_secret(spec.name)
        if spec.optional and _tolerated(outcome):
            missing.append(spec.name)
            log.warning("optional secret %s is missing, no file written: %s", spec.name, outcome.message)
        else:
            errors.append(outcome)

    for spec in plan.templates:
        assert spec.template is not None
        absent = [name for name in template_references(spec.template) if name not in content]
        if absent:
            # The plan lets only optional templates use optional secrets. Any other absent
            # secret failed, and its own error is already listed.
            if spec.optional and all(name in missing for name in absent):
                missing.append(spec.name)
                log.warning("optional template %s is skipped: it uses missing secret(s) %s",
                            spec.name, ", ".join(absent))
            continue
        content[spec.name] = fill_template(spec.template, content)
        redact.register(content[spec.name])

    return Rendered(content=content, errors=errors, missing_optional=missing)


# -- step 5: write ----------------------------------------------------------------------------

def write_all(plan: Plan, rendered: Rendered, *, allow_disk: bool, fake: bool) -> str:
    manifest = plan.manifest
    check_memory_filesystem(plan.output_dir, allow_disk=allow_disk or manifest.output.allow_disk,
                            fake_only=fake)
    files = [OutputFile(name=planned.name, content=rendered.content[planned.name],
                        mode=planned.mode, uid=planned.uid, gid=planned.gid)
             for planned in plan.secrets
             if planned.name in rendered.content and planned.spec.write]
    # The version directory stays owned by secret-init's own user, so the application can
    # read the files but not add, rename or swap entries next to them. Its group is the
    # application's, for a dir_mode such as 0750.
    dir_uid, dir_gid = os.geteuid(), plan.default_owner.gid

    # A developer running --fake without root cannot give files other owners; fake values
    # protect nothing, so write them as the current user instead of failing.
    uid, gid = os.geteuid(), os.getegid()
    foreign = [f.name for f in files if (f.uid, f.gid) != (uid, gid)]
    if fake and uid != 0 and (foreign or (dir_uid, dir_gid) != (uid, gid)):
        log.warning("not root, so fake values are written as uid %d gid %d instead of the "
                    "manifest's owners (%s)", uid, gid, ", ".join(foreign) or "output directory")
        files = [replace(f, uid=uid, gid=gid) for f in files]
        dir_uid, dir_gid = uid, gid

    # The swap is short; keep stop signals pending across it so no run ends between the
    # ..data rename and the links, then let them act.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        version_path = publish(plan.output_dir, files, dir_mode=manifest.output.dir_mode,
                               dir_uid=dir_uid, dir_gid=dir_gid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return version_path


# -- step 6: hand over ------------------------------------------------------------------------

def command_environment(plan: Plan, rendered: Rendered) -> dict[str, str]:
    exports: dict[str, str] = {}
    for planned in plan.secrets:
        spec = planned.spec
        if planned.name not in rendered.content:
            continue
        if spec.env:
            exports[spec.env] = check_env_value(spec.name, spec.env, rendered.content[planned.name])
        if spec.env_file:
            exports[spec.env_file] = planned.path
    # child_environment also removes CREDENTIAL_VARIABLES, the ones secret-init may read itself.
    consumed: set[str] = set()
    for backend in backends_in_use(plan).values():
        consumed |= backend.consumed_environment()
    return child_environment(process_environment(), remove=consumed,
                             keep=plan.manifest.keep_env, exports=exports)


def prepare(options: RunOptions, *, plan: Plan | None = None,
            for_command: bool = False) -> tuple[Plan, Rendered, dict[str, str]]:
    """Run every step up to the hand-over; raise the first failure after logging them all.

    With ``for_command``, also build the command's environment, before anything is written,
    so an export that cannot work (a NUL byte, an oversized value) leaves no files behind.
    """
    started = time.monotonic()
    if plan is None:
        plan = load_and_plan(options)
    fake = options.fake_path is not None

    values = fetch_values(plan, options)
    rendered = render_all(plan, values, fake=fake)
    if rendered.errors:
        for error in rendered.errors:
            log.error("%s", error)
        failed = len(rendered.errors)
        log.error("%d of %d secrets failed; nothing was written and the command was not started",
                  failed, len(plan.secrets))
        first = rendered.errors[0]
        first.logged = True
        raise first

    env = command_environment(plan, rendered) if for_command else {}
    version_path = write_all(plan, rendered, allow_disk=options.allow_disk, fake=fake)
    skipped = f", {len(rendered.missing_optional)} optional missing" if rendered.missing_optional else ""
    written = sum(1 for planned in plan.secrets
                  if planned.name in rendered.content and planned.spec.write)
    log.info("wrote %d secret%s to %s in %d ms%s", written, "" if written == 1 else "s",
             plan.output_dir,
             (time.monotonic() - started) * 1000, skipped,
             extra={"event": "written", "count": written})
    log.debug("current version directory: %s", version_path)
    return plan, rendered, env


def run(options: RunOptions, command: list[str]) -> NoReturn:
    plan = load_and_plan(options)
    user = options.user or plan.manifest.user
    # A mistyped or unreachable command fails before any secret is fetched or written.
    preflight_command(command, process_environment(), user)
    plan, rendered, env = prepare(options, plan=plan, for_command=True)
    handover = options.handover
    cleanup = options.cleanup if options.cleanup is not None else plan.manifest.cleanup
    handover = replace(handover, user=user, cleanup_dir=plan.output_dir if cleanup else None)
    # Drop this process's reference to the values before it becomes (or starts) the application.
    del rendered
    hand_over(command, env, handover)


def warn_run_time_problems(plan: Plan) -> None:
    """Warn about backends that could not run here: missing libraries or run-time settings.

    Warnings, not errors, because check may run outside the image, in CI.
    """
    from .backends import missing_modules

    for name, backend in backends_in_use(plan).items():
        if backend.deferred_error is not None:
            log.warning("backend %s: %s (needed at run time)", name, backend.deferred_error.message)
        missing = missing_modules(type(backend))
        if missing:
            log.warning("backend %s needs %s, which is not installed here; a run would fail "
                        "until you run: pip install 'secret-init[%s]'", name, ", ".join(missing),
                        type(backend).extra)


def manifest_summary(manifest: Manifest) -> str:
    kinds = sorted({type(b).type_name for b in manifest.backends.values()})
    return (f"{manifest.path}: valid, {_count(len(manifest.secrets), 'secret')}, "
            f"{_count(len(manifest.backends), 'backend')} ({', '.join(kinds) or 'none'})")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def secret_row(plan: Plan, planned: PlannedSecret, *, fake_path: str | None = None) -> dict[str, Any]:
    """Describe one planned secret for the plan table: never a value."""
    spec: SecretSpec = planned.spec
    source = plan.source_of(spec)
    if fake_path is not None and spec.template is None:
        source = f"fake: {fake_path}"
    return {
        "name": planned.name,
        "source": source,
        "file": planned.path if spec.write else "- (not written)",
        "mode": f"{planned.mode:04o}",
        "owner": f"{planned.uid}:{planned.gid}",
        "env": ", ".join(v for v in (spec.env, spec.env_file and f"{spec.env_file} (path)") if v) or "-",
        "optional": spec.optional,
    }
