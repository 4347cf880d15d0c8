"""Drop from root to the application's user before the command starts."""

from __future__ import annotations

import os

from .errors import PrivilegeDropError, os_reason
from .users import Account


def drop_privileges(account: Account) -> None:
    """Switch this process to ``account``: supplementary groups, then gid, then uid.

    The order matters: once the uid is no longer 0, the process may not change its groups.
    As root, ``setgid`` and ``setuid`` set the real, effective and saved ids, and leaving
    uid 0 clears the capabilities. Every step is checked afterwards, including that
    ``setuid(0)`` now fails, so a half-done switch never starts the command.

    A process that already runs as ``account`` (same uid, gid and groups) is left as it is,
    so this also works without root when no switch is needed.

    Raises PrivilegeDropError naming the failed step and the account.
    """
    if already_running_as(account):
        return
    failed = f"cannot switch to user {account.describe()}"
    steps = (
        ("setgroups", lambda: os.setgroups(list(account.groups))),
        ("setgid", lambda: os.setgid(account.gid)),
        ("setuid", lambda: os.setuid(account.uid)),
    )
    for call, step in steps:
        try:
            step()
        except OSError as error:
            hint = ""
            if os.geteuid() != 0:
                hint = f"; secret-init runs as uid {os.geteuid()}, and only root can switch users"
            raise PrivilegeDropError(f"{failed}: {call} failed: {os_reason(error)}{hint}") from None
    verify_dropped(account)


def already_running_as(account: Account) -> bool:
    """Return whether the ids already match ``account``, so there is nothing to switch.

    Without root the supplementary groups cannot be changed, so only a subset is required.
    """
    if os.getresuid() != (account.uid,) * 3 or os.getresgid() != (account.gid,) * 3:
        return False
    groups = set(os.getgroups())
    if os.geteuid() == 0:
        return groups == set(account.groups)
    return groups <= set(account.groups) | {account.gid}


def verify_dropped(account: Account) -> None:
    """Raise PrivilegeDropError unless this process now has exactly ``account``'s ids."""
    failed = f"cannot switch to user {account.describe()}"
    uids = os.getresuid()
    gids = os.getresgid()
    groups = set(os.getgroups())
    if uids != (account.uid,) * 3:
        raise PrivilegeDropError(f"{failed}: real, effective and saved uids are {uids} "
                                 "after setuid")
    if gids != (account.gid,) * 3:
        raise PrivilegeDropError(f"{failed}: real, effective and saved gids are {gids} "
                                 "after setgid")
    if groups != set(account.groups):
        raise PrivilegeDropError(f"{failed}: supplementary groups are {sorted(groups)} after "
                                 f"setgroups, expected {sorted(account.groups)}")
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PrivilegeDropError(f"{failed}: setuid(0) still succeeds after the switch, so "
                                 "root could be regained")
