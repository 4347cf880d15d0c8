"""Command line: ``secret-init [options] [check|plan|fetch] [-- COMMAND [ARGS...]]``.

Every option can also be set by a SECRET_INIT_* environment variable; the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from . import __version__, logsetup
from .errors import EX_OK, EX_SOFTWARE, SecretInitError, UsageError
from .fields import parse_duration
from .handover import HandOverOptions
from .manifest import DEFAULT_MANIFEST

log = logging.getLogger("secret_init")

SUBCOMMANDS = ("run", "check", "plan", "fetch")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")

DESCRIPTION = """\
Fetch the secrets a manifest names onto tmpfs, then start COMMAND.

subcommands:
  (none) -- COMMAND   fetch, write, then run COMMAND (exec, or supervise as PID 1)
  check               validate the manifest offline and exit
  plan                list what would be written (never a value) and exit
  fetch               fetch and write, then exit (for init containers)
"""

EXIT_CODES = """\
exit codes: 0 ok, 64 usage, 65 value cannot be rendered, 66 secret or file not found,
69 backend unavailable, 70 internal error, 73 cannot write files, 75 fetch deadline passed,
77 permission denied, 78 invalid manifest or configuration, 126 command not executable,
127 command not found, 128+N stopped by signal N; otherwise the command's own exit code.
"""


def _env(name: str) -> str | None:
    value = os.environ.get(f"SECRET_INIT_{name}")
    return value if value not in (None, "") else None


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(f"SECRET_INIT_{name}")
    if value is None:
        return None
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UsageError(f"SECRET_INIT_{name}={value!r} is not a boolean; use true or false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secret-init", description=DESCRIPTION, epilog=EXIT_CODES,
        usage="%(prog)s [options] -- COMMAND [ARGS...]\n"
              "       %(prog)s [options] {check,plan,fetch}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("subcommand", nargs="?", choices=SUBCOMMANDS, metavar="SUBCOMMAND",
                        help="run (default), check, plan or fetch")

    parser.add_argument("--version", action="version", version=f"secret-init {__version__}")
    parser.add_argument("-f", "--manifest", metavar="FILE",
                        help=f"manifest file [SECRET_INIT_MANIFEST, default {DEFAULT_MANIFEST}]")

    parser.add_argument("--fake", metavar="FILE",
                        help="serve every secret from FILE, a mapping of secret name to value, "
                             "instead of the backends (local development) [SECRET_INIT_FAKE]")
    parser.add_argument("--output-dir", metavar="DIR",
                        help="write the secrets here instead of output.dir [SECRET_INIT_OUTPUT_DIR]")
    parser.add_argument("--allow-disk", action="store_true", default=None,
                        help="allow an output directory that is not tmpfs or ramfs [SECRET_INIT_ALLOW_DISK]")

    parser.add_argument("--timeout", metavar="SECONDS",
                        help="deadline for the whole fetch phase, default 60 [SECRET_INIT_TIMEOUT]")
    parser.add_argument("--log-level", choices=logsetup.LOG_LEVELS,
                        help="log level, default info [SECRET_INIT_LOG_LEVEL]")
    parser.add_argument("--log-format", choices=logsetup.LOG_FORMATS,
                        help="text (default) or json lines [SECRET_INIT_LOG_FORMAT]")

    init = parser.add_argument_group("starting the command")
    mode = init.add_mutually_exclusive_group()
    mode.add_argument("--init", dest="mode", action="store_const", const="init",
                      help="stay as a minimal init that supervises COMMAND, even when not PID 1 "
                           "[SECRET_INIT_MODE=init]")
    mode.add_argument("--no-init", dest="mode", action="store_const", const="exec",
                      help="exec COMMAND even as PID 1 (another init runs) [SECRET_INIT_MODE=exec]")

    init.add_argument("--subreaper", action="store_true", default=None,
                      help="when supervising outside PID 1, adopt orphaned descendants "
                           "[SECRET_INIT_SUBREAPER]")
    init.add_argument("--kill-process-group", action="store_true", default=None,
                      help="forward signals to the command's whole process group "
                           "[SECRET_INIT_KILL_PROCESS_GROUP]")
    init.add_argument("--stop-timeout", metavar="SECONDS",
                      help="after forwarding SIGTERM or SIGINT, SIGKILL the command after this "
                           "long, default 10 [SECRET_INIT_STOP_TIMEOUT]")
    init.add_argument("--grace-period", metavar="SECONDS",
                      help="after the command exits, time left descendants have between SIGTERM "
                           "and SIGKILL, default 5 [SECRET_INIT_GRACE_PERIOD]")
    init.add_argument("--remap-exit", metavar="FROM:TO", action="append",
                      help="exit with TO when the command exits with FROM; repeatable "
                           "[SECRET_INIT_REMAP_EXIT, comma-separated]")

    init.add_argument("--user", metavar="NAME|UID[:GID]",
                      help="run COMMAND as this user; files default to it as owner [SECRET_INIT_USER]")
    init.add_argument("--cleanup", action="store_true", default=None,
                      help="remove the secret files when the command exits (supervise mode) "
                           "[SECRET_INIT_CLEANUP]")

    return parser


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Split at the first ``--``: options before, the command after (None without ``--``)."""
    argv = list(argv)
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1:]
    return argv, None


def _duration_option(value: str | None, name: str, option: str) -> float | None:
    text = value if value is not None else _env(name)
    if text is None:
        return None
    source = option if value is not None else f"SECRET_INIT_{name}"
    try:
        return parse_duration(text)
    except ValueError as error:
        raise UsageError(f"invalid {source} value: {error}") from None


def _remap_exit(values: list[str] | None) -> dict[int, int]:
    items = list(values or [])
    if not items:
        items = [part for part in (_env("REMAP_EXIT") or "").split(",") if part.strip()]
    mapping: dict[int, int] = {}
    for item in items:
        source, _, target = item.strip().partition(":")
        if not (source.isdigit() and target.isdigit() and int(source) <= 255 and int(target) <= 255):
            raise UsageError(f"invalid --remap-exit value '{item}'; write FROM:TO with exit codes "
                             "0-255, such as 143:0")
        mapping[int(source)] = int(target)
    return mapping


def _options(args: argparse.Namespace):
    from .run import RunOptions

    mode = args.mode or _env("MODE") or "auto"
    if mode not in ("auto", "init", "exec"):
        raise UsageError(f"SECRET_INIT_MODE={mode!r} is invalid; use auto, init or exec")
    handover = HandOverOptions(
        mode=mode,
        subreaper=bool(args.subreaper if args.subreaper is not None else _env_flag("SUBREAPER")),
        kill_process_group=bool(args.kill_process_group if args.kill_process_group is not None
                                else _env_flag("KILL_PROCESS_GROUP")),
        remap_exit=_remap_exit(args.remap_exit),
    )
    stop_timeout = _duration_option(args.stop_timeout, "STOP_TIMEOUT", "--stop-timeout")
    if stop_timeout is not None:
        handover.stop_timeout = stop_timeout
    grace_period = _duration_option(args.grace_period, "GRACE_PERIOD", "--grace-period")
    if grace_period is not None:
        handover.grace_period = grace_period

    timeout = _duration_option(args.timeout, "TIMEOUT", "--timeout")
    if timeout is not None and timeout <= 0:
        source = "--timeout" if args.timeout is not None else "SECRET_INIT_TIMEOUT"
        raise UsageError(f"{source} must be greater than 0")
    allow_disk = args.allow_disk if args.allow_disk is not None else _env_flag("ALLOW_DISK")
    cleanup = args.cleanup if args.cleanup is not None else _env_flag("CLEANUP")
    return RunOptions(
        manifest_path=args.manifest or _env("MANIFEST") or DEFAULT_MANIFEST,
        fake_path=args.fake or _env("FAKE"),
        allow_disk=bool(allow_disk),
        output_dir=args.output_dir or _env("OUTPUT_DIR"),
        timeout=timeout,
        user=args.user or _env("USER"),
        cleanup=cleanup,
        handover=handover,
    )


def _print_plan(options) -> None:
    from .run import load_and_plan, secret_row

    plan = load_and_plan(options)
    rows = [secret_row(plan, planned, fake_path=options.fake_path) for planned in plan.secrets]
    for row in rows:
        if row["optional"]:
            row["name"] += " (optional)"
    columns = ("name", "source", "file", "mode", "owner", "env")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        cells = [str(row[c]) for c in columns]
        print("  ".join(cell.ljust(widths[c]) for c, cell in zip(columns, cells)).rstrip())
    if options.fake_path:
        origin = f"fake values in {options.fake_path}"
    else:
        origin = f"{len(plan.references)} backend" + ("" if len(plan.references) == 1 else "s")
    written = sum(1 for planned in plan.secrets if planned.spec.write)
    print(f"\n{written} file{'' if written == 1 else 's'} to {plan.output_dir}, from {origin}")


def run_cli(argv: Sequence[str]) -> int:
    """Run secret-init with ``argv`` (without the program name); return the exit code."""
    before, command = split_command(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(before)
    except SystemExit as exit_:
        return int(exit_.code or 0) and 64

    level = args.log_level or _env("LOG_LEVEL") or "info"
    log_format = args.log_format or _env("LOG_FORMAT") or "text"
    if level not in logsetup.LOG_LEVELS or log_format not in logsetup.LOG_FORMATS:
        logsetup.configure("info", "text")
        log.error("invalid SECRET_INIT_LOG_LEVEL or SECRET_INIT_LOG_FORMAT; levels: %s; formats: %s",
                  ", ".join(logsetup.LOG_LEVELS), ", ".join(logsetup.LOG_FORMATS))
        return 64
    logsetup.configure(level, log_format)

    from . import run as run_module

    try:
        subcommand = args.subcommand or "run"
        if subcommand == "run" and not command:
            raise UsageError("no command given; write 'secret-init [options] -- COMMAND [ARGS...]', "
                             "or use 'secret-init fetch' to write the secrets and exit")
        if subcommand != "run" and command:
            raise UsageError(f"'{subcommand}' takes no command; remove everything after '--'")
        options = _options(args)
        run_module.install_stop_handlers()

        if subcommand == "check":
            plan = run_module.load_and_plan(options)
            run_module.warn_run_time_problems(plan)
            print(run_module.manifest_summary(plan.manifest))
            return EX_OK
        if subcommand == "plan":
            _print_plan(options)
            return EX_OK
        if subcommand == "fetch":
            run_module.prepare(options)
            return EX_OK
        assert command is not None
        run_module.run(options, command)
    except SecretInitError as error:
        if not getattr(error, "logged", False):
            log.error("%s", error)
        return error.exit_code
    except Exception:  # a bug: report it without a value-bearing traceback at normal levels
        log.error("internal error; rerun with --log-level debug and report the traceback")
        log.debug("traceback", exc_info=True)
        return EX_SOFTWARE
    return EX_OK


def main() -> None:
    """Console entry point: exit with run_cli's code without waiting for stuck backend threads."""
    code = run_cli(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
