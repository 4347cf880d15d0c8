"""Plan a run: which files to write, with which owner and mode, from which references.

The plan is everything the manifest and options decide before any network call: the
``plan`` subcommand prints it, and the later steps follow it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from .backends.base import Backend, Reference
from .errors import ConfigError, ManifestError
from .manifest import Manifest, SecretSpec, key_path_text
from .render import template_order
from .users import Account, current_account, resolve_group, resolve_user

T = TypeVar("T")


@dataclass
class PlannedSecret:
    """One secret as it will be written."""

    spec: SecretSpec
    path: str
    mode: int
    uid: int
    gid: int

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Plan:
    """The whole run, decided offline."""

    manifest: Manifest
    output_dir: str
    secrets: list[PlannedSecret]
    templates: list[SecretSpec]
    # Distinct references per backend name: each is fetched once however many secrets use it.
    references: dict[str, list[Reference]] = field(default_factory=dict)
    # Owner of the version directory and of files that set no owner of their own.
    default_owner: Account | None = None

    def source_of(self, spec: SecretSpec) -> str:
        if spec.template is not None:
            return "template"
        assert spec.reference is not None
        text = spec.reference.describe()
        if spec.key is not None:
            text += f" key {key_path_text(spec.key)}"
        return text


def build_plan(manifest: Manifest, *, output_dir: str | None = None,
               user: str | None = None) -> Plan:
    """Resolve owners, modes, paths and the distinct references of ``manifest``."""
    directory = output_dir or manifest.output.dir
    run_as: Account | None = None
    if user:
        run_as = resolve_user(user, what="--user")
    elif manifest.user:
        run_as = _located(manifest.user_error, resolve_user, manifest.user, what="user")

    default_owner: Account
    if manifest.output.owner:
        default_owner = _located(manifest.output.owner_error, resolve_user, manifest.output.owner,
                                 what="output.owner")
    elif run_as is not None:
        default_owner = run_as
    else:
        default_owner = current_account()

    planned: list[PlannedSecret] = []
    references: dict[str, list[Reference]] = defaultdict(list)
    seen: set[Reference] = set()
    for spec in manifest.secrets:
        uid, gid = default_owner.uid, default_owner.gid
        if spec.owner:
            account = _located(lambda m: spec.error("owner", m), resolve_user, spec.owner,
                               what=f"secrets.{spec.name}.owner")
            uid, gid = account.uid, account.gid
        if spec.group:
            gid = _located(lambda m: spec.error("group", m), resolve_group, spec.group,
                           what=f"secrets.{spec.name}.group")
        mode = spec.mode if spec.mode is not None else manifest.output.mode
        planned.append(PlannedSecret(spec=spec, path=os.path.join(directory, spec.name),
                                     mode=mode, uid=uid, gid=gid))
        if spec.reference is not None and spec.reference not in seen:
            seen.add(spec.reference)
            references[spec.reference.backend].append(spec.reference)

    try:
        templates = template_order(manifest.secrets)
    except ConfigError as error:
        spec = manifest.secret(error.secret) if error.secret else None
        if spec is None:
            raise
        raise spec.error("template", error.message) from None

    return Plan(manifest=manifest, output_dir=directory, secrets=planned, templates=templates,
                references=dict(references), default_owner=default_owner)


def _located(make_error: Callable[[str], ManifestError] | None, resolve: Callable[..., T],
             value: str, *, what: str) -> T:
    """Call ``resolve(value)``; re-raise its ConfigError at the manifest field, when known."""
    try:
        return resolve(value, what=what if make_error is None else "")
    except ConfigError as error:
        if make_error is None:
            raise
        raise make_error(error.message) from None


def backends_in_use(plan: Plan) -> dict[str, Backend]:
    """Return the configured backends that at least one secret reads from."""
    return {name: plan.manifest.backends[name] for name in plan.references}
