"""Resolve user and group names or ids, for file owners and the privilege drop."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Account:
    """A resolved user: ids, supplementary groups and home directory."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str | None
    home: str

    def describe(self) -> str:
        return f"{self.name or self.uid} (uid {self.uid}, gid {self.gid})"


def _prefix(what: str) -> str:
    return f"{what}: " if what else ""


def resolve_group(spec: str | int, *, what: str = "group") -> int:
    """Return the gid of a group name or numeric id; numeric ids need not exist in /etc/group."""
    text = str(spec).strip()
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError(f"{_prefix(what)}'{text}' is not a known group name; use a numeric "
                          "gid or add the group to the image") from None


def resolve_user(spec: str | int, *, what: str = "user") -> Account:
    """Resolve ``NAME``, ``UID``, ``NAME:GROUP`` or ``UID:GID`` to an Account.

    A numeric uid that has no passwd entry is allowed (common in containers run with
    ``--user 10001``): its gid defaults to the uid's own number, its home to ``/``.
    """
    text = str(spec).strip()
    user_part, _, group_part = text.partition(":")
    if not user_part:
        raise ConfigError(f"{_prefix(what)}'{text}' has no user; write NAME, UID, NAME:GROUP "
                          "or UID:GID")

    entry: pwd.struct_passwd | None
    if user_part.isdigit():
        uid = int(user_part)
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            entry = None
    else:
        try:
            entry = pwd.getpwnam(user_part)
        except KeyError:
            raise ConfigError(f"{_prefix(what)}'{user_part}' is not a known user name; use a "
                              "numeric uid or add the user to the image") from None
        uid = entry.pw_uid

    if group_part:
        gid = resolve_group(group_part, what=what)
    elif entry is not None:
        gid = entry.pw_gid
    else:
        gid = uid

    name = entry.pw_name if entry is not None else None
    groups: list[int] = [gid]
    if name is not None:
        try:
            groups = sorted(set(os.getgrouplist(name, gid)))
        except OSError:
            groups = [gid]
    home = entry.pw_dir if entry is not None else "/"
    return Account(uid=uid, gid=gid, groups=tuple(groups), name=name, home=home)


def current_account() -> Account:
    """Return the account secret-init itself runs as."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        name, home = None, "/"
    return Account(uid=uid, gid=gid, groups=tuple(sorted(set(os.getgroups()) | {gid})),
                   name=name, home=home)
