"""`mllab`: the operator's command line. It talks to Firestore directly (no HTTP, no tokens).

Without --project it works on the local Firestore emulator: FIRESTORE_EMULATOR_HOST if set, else
127.0.0.1:8081, with project demo-mllab (or MLLAB_PROJECT / GOOGLE_CLOUD_PROJECT when the emulator
host is set). `--project P` targets a real project with Application Default Credentials.

    mllab user create EMAIL --password-stdin [--verified] [--role admin] [--name NAME]
    mllab user list
    mllab user disable EMAIL | mllab user enable EMAIL
    mllab sessions revoke EMAIL
    mllab accounts purge

Every command takes --json for machine-readable output. Exit codes: 0 ok, 1 not found or refused
(also: Firestore unreachable), 2 usage. Passwords are read from stdin only and never printed.
Standard library + `mllab`; Google libraries are imported on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

LOCAL_EMULATOR = "127.0.0.1:8081"
LOCAL_PROJECT = "demo-mllab"
OPERATOR = "operator"

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class Refused(Exception):
    """Not found or refused: exit 1 with the message."""


class UsageError(Exception):
    """Bad arguments or input: exit 2 with the message."""


# --- output --------------------------------------------------------------------------------------

class Output:
    def __init__(self, as_json: bool, out: Any = None, err: Any = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def result(self, data: Any, text: str | Callable[[], str]) -> None:
        if self.as_json:
            self.out.write(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
        else:
            self.out.write((text() if callable(text) else text) + "\n")

    def note(self, message: str) -> None:
        self.err.write(f"mllab: {message}\n")

    def error(self, message: str, code: int) -> int:
        if self.as_json:
            self.out.write(json.dumps({"error": message, "exit_code": code}) + "\n")
        self.err.write(f"mllab: {message}\n")
        return code


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


# --- target --------------------------------------------------------------------------------------

def configure_target(project: str | None, environ: dict[str, str] | None = None) -> tuple[str, str | None]:
    """Point mllab's settings and Firestore client at the target; returns (project, emulator host)."""
    from mllab import clients, config

    env = os.environ if environ is None else environ
    if project:
        emulator = env.get("FIRESTORE_EMULATOR_HOST") or None
    elif env.get("FIRESTORE_EMULATOR_HOST"):
        emulator = env["FIRESTORE_EMULATOR_HOST"]
        project = env.get("MLLAB_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT") or LOCAL_PROJECT
    else:
        emulator, project = LOCAL_EMULATOR, LOCAL_PROJECT
        env["FIRESTORE_EMULATOR_HOST"] = emulator
    env["MLLAB_PROJECT"] = project
    env.setdefault("GOOGLE_CLOUD_PROJECT", project)
    config.reload()
    clients.reset()
    return project, emulator


def check_reachable(hostport: str, timeout: float = 3.0) -> None:
    """Fail fast when the emulator is down (the client would retry a query for minutes)."""
    import socket

    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError):
        raise Refused(f"the Firestore emulator at {hostport} is not reachable: start the local stack, "
                      "or pass --project to target a real project") from None


# --- finding users -------------------------------------------------------------------------------

def normalize(email: str) -> str:
    from mllab import users
    from mllab.problems import Problem

    try:
        return users.normalize_email(email)
    except Problem:
        raise UsageError(f"{email!r} is not a valid email address") from None


def find_user(email: str) -> dict[str, Any] | None:
    """By the password identity, else (Google-only users) by the users' `email` field."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from mllab import clients, users

    ident = users.password_identity(email)
    if ident:
        user = users.get(ident["uid"])
        if user:
            return user
    query = clients.firestore().collection(users.USERS).where(filter=FieldFilter("email", "==", email)).limit(2)
    found = [{**s.to_dict(), "uid": s.id} for s in query.stream(**clients.opts())]
    if len(found) > 1:
        raise Refused(f"more than one user has the email {email}; use the Firestore console")
    return found[0] if found else None


def require_user(email: str) -> dict[str, Any]:
    email = normalize(email)
    user = find_user(email)
    if user is None:
        raise Refused(f"no user with the email {email}")
    return user


def user_row(user: dict[str, Any]) -> dict[str, Any]:
    from mllab import schemas

    return {"email": user.get("email", ""), "uid": user["uid"], "role": user.get("role", "user"),
            "verified": bool(user.get("email_verified")), "disabled": bool(user.get("disabled")),
            "providers": list(user.get("providers") or []), "created": schemas.jsonable(user.get("created_at")),
            "deleted_at": schemas.jsonable(user.get("deleted_at"))}


# --- commands ------------------------------------------------------------------------------------

def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        data = sys.stdin.read()
        password = data[:-1] if data.endswith("\n") else data
        password = password[:-1] if password.endswith("\r") else password
        if "\n" in password or "\r" in password:
            raise UsageError("--password-stdin takes one line")
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise UsageError("the passwords differ")
    else:
        raise UsageError("pass the password on stdin with --password-stdin (never as an argument)")
    if not password:
        raise UsageError("the password is empty")
    return password


def cmd_user_create(args: argparse.Namespace, out: Output) -> int:
    from mllab import audit, passwords, users

    email = normalize(args.email)
    password = read_password(args)
    problem = passwords.policy_problem(password, email=email)
    if problem:
        raise Refused(f"password refused: {problem}")
    if find_user(email) is not None:
        raise Refused(f"a user with the email {email} already exists")
    uid = users.create_password_user(email, passwords.hash_password(password), name=args.name or "",
                                     verified=args.verified, role=args.role)
    if uid is None:
        raise Refused(f"a user with the email {email} already exists")
    audit.record("user.create", actor=OPERATOR, target=f"user:{uid}", role=args.role, verified=args.verified)
    row = user_row(users.get(uid) or {"uid": uid, "email": email})
    out.result(row, f"created user {email} (uid {uid}, role {args.role}, "
                    f"{'verified' if args.verified else 'not verified'})")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace, out: Output) -> int:
    from mllab import clients, users

    snaps = clients.firestore().collection(users.USERS).stream(**clients.opts())
    rows = sorted((user_row({**s.to_dict(), "uid": s.id}) for s in snaps), key=lambda r: r["created"] or "")

    def text() -> str:
        shown = [{**r, "providers": ",".join(r["providers"]),
                  "verified": "yes" if r["verified"] else "no",
                  "disabled": "deleted" if r["deleted_at"] else ("yes" if r["disabled"] else "no")} for r in rows]
        return table(shown, ("email", "uid", "role", "verified", "disabled", "providers", "created"))

    out.result({"users": rows}, text)
    return EXIT_OK


def cmd_user_disable(args: argparse.Namespace, out: Output) -> int:
    from mllab import audit, clock, sessions, users

    user = require_user(args.email)
    now = clock.now()
    users.update(user["uid"], disabled=True, tokens_valid_after=now)
    revoked = sessions.revoke_all(user["uid"], "user_disabled")
    audit.record("user.disable", actor=OPERATOR, target=f"user:{user['uid']}", sessions_revoked=revoked)
    out.result({"uid": user["uid"], "email": user["email"], "disabled": True, "sessions_revoked": revoked},
               f"disabled {user['email']}; revoked {revoked} session{'s' if revoked != 1 else ''}")
    return EXIT_OK


def cmd_user_enable(args: argparse.Namespace, out: Output) -> int:
    from mllab import audit, schemas, users

    user = require_user(args.email)
    if user.get("deleted_at"):
        raise Refused(f"{user['email']} deleted the account on {schemas.jsonable(user['deleted_at'])}; "
                      "it cannot be re-enabled")
    users.update(user["uid"], disabled=False)
    audit.record("user.enable", actor=OPERATOR, target=f"user:{user['uid']}")
    out.result({"uid": user["uid"], "email": user["email"], "disabled": False},
               f"enabled {user['email']} (they sign in again to get a session)")
    return EXIT_OK


def cmd_sessions_revoke(args: argparse.Namespace, out: Output) -> int:
    from mllab import audit, sessions

    user = require_user(args.email)
    revoked = sessions.revoke_all(user["uid"], "operator_revoked")
    audit.record("sessions.revoke_all", actor=OPERATOR, target=f"user:{user['uid']}", sessions_revoked=revoked)
    out.result({"uid": user["uid"], "email": user["email"], "sessions_revoked": revoked},
               f"revoked {revoked} session{'s' if revoked != 1 else ''} of {user['email']}")
    return EXIT_OK


def cmd_accounts_purge(args: argparse.Namespace, out: Output) -> int:
    from mllab import accounts, clock

    count = accounts.purge(clock.now())
    out.result({"purged": count}, f"purged {count} account{'s' if count != 1 else ''}")
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's exit code for usage errors is 2 already
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common() -> argparse.ArgumentParser:
    """--json and --project, accepted before or after the command. A fresh parser each time: parents
    share their action objects, and the main parser's defaults must not leak into the subcommands,
    whose SUPPRESS default keeps an earlier `mllab --json ...` from being overwritten."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    common.add_argument("--project", default=argparse.SUPPRESS,
                        help="a real Google Cloud project (Application Default Credentials); "
                             "default: the local Firestore emulator")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mllab", description="ML Lab operator tools (Firestore, directly).",
                    parents=[_common()])
    parser.set_defaults(json=False, project=None)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)
    groups.required = True

    user = groups.add_parser("user", help="create, list, disable and enable users")
    user_cmds = user.add_subparsers(dest="command", metavar="ACTION", parser_class=Parser)
    user_cmds.required = True
    create = user_cmds.add_parser("create", parents=[_common()], help="create a password user")
    create.add_argument("email")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    create.add_argument("--verified", action="store_true", help="mark the email as verified")
    create.add_argument("--role", choices=("user", "admin"), default="user")
    create.add_argument("--name", default="")
    create.set_defaults(run=cmd_user_create)
    lst = user_cmds.add_parser("list", parents=[_common()], help="list users")
    lst.set_defaults(run=cmd_user_list)
    disable = user_cmds.add_parser("disable", parents=[_common()], help="disable a user and revoke their sessions")
    disable.add_argument("email")
    disable.set_defaults(run=cmd_user_disable)
    enable = user_cmds.add_parser("enable", parents=[_common()], help="enable a disabled user")
    enable.add_argument("email")
    enable.set_defaults(run=cmd_user_enable)

    sess = groups.add_parser("sessions", help="sign users out")
    sess_cmds = sess.add_subparsers(dest="command", metavar="ACTION", parser_class=Parser)
    sess_cmds.required = True
    revoke = sess_cmds.add_parser("revoke", parents=[_common()], help="revoke every live session of a user")
    revoke.add_argument("email")
    revoke.set_defaults(run=cmd_sessions_revoke)

    acc = groups.add_parser("accounts", help="account maintenance")
    acc_cmds = acc.add_subparsers(dest="command", metavar="ACTION", parser_class=Parser)
    acc_cmds.required = True
    purge = acc_cmds.add_parser("purge", parents=[_common()],
                                help="hard-delete accounts deleted more than 30 days ago (the daily job, now)")
    purge.set_defaults(run=cmd_accounts_purge)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mllab import log

    args = build_parser().parse_args(argv)
    out = Output(args.json)
    # The library logs JSON lines to stdout (Cloud Logging); here stdout is the command's output.
    log.stream, log.min_level = sys.stderr, "WARNING"
    try:
        project, emulator = configure_target(args.project)
        if emulator:
            out.note(f"using the Firestore emulator at {emulator} (project {project})")
            check_reachable(emulator)
        return args.run(args, out)
    except Refused as exc:
        return out.error(str(exc), EXIT_REFUSED)
    except UsageError as exc:
        return out.error(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return out.error("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - one readable line instead of a traceback
        from mllab import http

        if http.dependency_outage(exc):
            where = f"the emulator at {os.environ.get('FIRESTORE_EMULATOR_HOST')}" if os.environ.get(
                "FIRESTORE_EMULATOR_HOST") else f"project {args.project}"
            return out.error(f"Firestore did not answer ({where}); is it running? ({type(exc).__name__})",
                             EXIT_REFUSED)
        module = type(exc).__module__
        if module.startswith(("google.api_core", "google.auth")):
            return out.error(f"Firestore refused: {type(exc).__name__}: {str(exc)[:300]}", EXIT_REFUSED)
        raise


if __name__ == "__main__":
    sys.exit(main())
