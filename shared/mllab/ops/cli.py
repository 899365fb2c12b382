"""`mllab`: the operator's command line. It talks to Firestore directly (no HTTP, no tokens).

Without --project it works on the local Firestore emulator: FIRESTORE_EMULATOR_HOST if set, else
127.0.0.1:8081, with project demo-mllab (or MLLAB_PROJECT / GOOGLE_CLOUD_PROJECT when the emulator
host is set). `--project P` targets a real project with Application Default Credentials.

    mllab user create EMAIL --password-stdin [--verified] [--role admin] [--name NAME]
    mllab user list
    mllab user disable EMAIL | mllab user enable EMAIL
    mllab sessions revoke EMAIL
    mllab accounts purge
    mllab promo create CODE [--kind trial|comp] [--days N] --uses N [--per-user N] [--starts DATE]
                            [--expires DATE] [--new-users-only]
    mllab promo list | mllab promo disable CODE
    mllab access grant EMAIL [--days N] | mllab access revoke EMAIL
    mllab billing resync [EMAIL]
    mllab billing bootstrap --webhook-url URL [--write-local]
    mllab keys rotate | mllab keys list | mllab keys prune

Billing commands also talk to PayPal: locally the stand-in (https://127.0.0.1:9500, trusted through
.dev/paypal/ca.pem), with --project the API that MLLAB_PAYPAL_API_BASE names (sandbox by default).

Key commands work on the access-token key sets: locally the files in .dev/secrets, with --project new
Secret Manager versions. They print kids and dates, never key material.

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
from datetime import UTC
from typing import Any, NoReturn

from mllab.platform.queries import Query

LOCAL_EMULATOR = "127.0.0.1:8081"
LOCAL_PROJECT = "demo-mllab"
LOCAL_PAYPAL = "https://127.0.0.1:9500"
OPERATOR = "operator"
QUERIES: tuple[Query, ...] = (Query("users", ("email",)),)  # find_user's fallback (for infra's index file)

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
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


# --- target --------------------------------------------------------------------------------------


def configure_target(project: str | None, environ: dict[str, str] | None = None) -> tuple[str, str | None]:
    """Point mllab's settings and Firestore client at the target; returns (project, emulator host)."""
    from mllab.platform import clients, config

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
    if emulator == LOCAL_EMULATOR and not env.get("MLLAB_PAYPAL_API_BASE"):  # the local stack's PayPal stand-in
        dev_dir = env.get("MLLAB_DEV_DIR") or ".dev"
        env["MLLAB_PAYPAL_API_BASE"] = LOCAL_PAYPAL
        env.setdefault("MLLAB_PAYPAL_CA_FILE", os.path.join(dev_dir, "paypal", "ca.pem"))
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
        raise Refused(
            f"the Firestore emulator at {hostport} is not reachable: start the local stack, "
            "or pass --project to target a real project"
        ) from None


# --- finding users -------------------------------------------------------------------------------


def normalize(email: str) -> str:
    from mllab.identity import users
    from mllab.platform.problems import Problem

    try:
        return users.normalize_email(email)
    except Problem:
        raise UsageError(f"{email!r} is not a valid email address") from None


def find_user(email: str) -> dict[str, Any] | None:
    """By the password identity, else (Google-only users) by the users' `email` field."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from mllab.identity import users
    from mllab.platform import clients

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
    from mllab.platform import jsonvalues

    return {
        "email": user.get("email", ""),
        "uid": user["uid"],
        "role": user.get("role", "user"),
        "verified": bool(user.get("email_verified")),
        "disabled": bool(user.get("disabled")),
        "providers": list(user.get("providers") or []),
        "created": jsonvalues.jsonable(user.get("created_at")),
        "deleted_at": jsonvalues.jsonable(user.get("deleted_at")),
    }


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
    from mllab.identity import passwords, users
    from mllab.platform import audit

    email = normalize(args.email)
    password = read_password(args)
    problem = passwords.policy_problem(password, email=email)
    if problem:
        raise Refused(f"password refused: {problem}")
    if find_user(email) is not None:
        raise Refused(f"a user with the email {email} already exists")
    uid = users.create_password_user(
        email, passwords.hash_password(password), name=args.name or "", verified=args.verified, role=args.role
    )
    if uid is None:
        raise Refused(f"a user with the email {email} already exists")
    audit.record("user.create", actor=OPERATOR, target=f"user:{uid}", role=args.role, verified=args.verified)
    row = user_row(users.get(uid) or {"uid": uid, "email": email})
    out.result(
        row, f"created user {email} (uid {uid}, role {args.role}, {'verified' if args.verified else 'not verified'})"
    )
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace, out: Output) -> int:
    from mllab.identity import users
    from mllab.platform import clients

    snaps = clients.firestore().collection(users.USERS).stream(**clients.opts())
    rows = sorted((user_row({**s.to_dict(), "uid": s.id}) for s in snaps), key=lambda r: r["created"] or "")

    def text() -> str:
        shown = [
            {
                **r,
                "providers": ",".join(r["providers"]),
                "verified": "yes" if r["verified"] else "no",
                "disabled": "deleted" if r["deleted_at"] else ("yes" if r["disabled"] else "no"),
            }
            for r in rows
        ]
        return table(shown, ("email", "uid", "role", "verified", "disabled", "providers", "created"))

    out.result({"users": rows}, text)
    return EXIT_OK


def cmd_user_disable(args: argparse.Namespace, out: Output) -> int:
    from mllab.identity import sessions, users
    from mllab.platform import audit, clock

    user = require_user(args.email)
    now = clock.now()
    users.update(user["uid"], disabled=True, tokens_valid_after=now)
    revoked = sessions.revoke_all(user["uid"], "user_disabled")
    audit.record("user.disable", actor=OPERATOR, target=f"user:{user['uid']}", sessions_revoked=revoked)
    out.result(
        {"uid": user["uid"], "email": user["email"], "disabled": True, "sessions_revoked": revoked},
        f"disabled {user['email']}; revoked {revoked} session{'s' if revoked != 1 else ''}",
    )
    return EXIT_OK


def cmd_user_enable(args: argparse.Namespace, out: Output) -> int:
    from mllab.identity import users
    from mllab.platform import audit, jsonvalues

    user = require_user(args.email)
    if user.get("deleted_at"):
        raise Refused(
            f"{user['email']} deleted the account on {jsonvalues.jsonable(user['deleted_at'])}; it cannot be re-enabled"
        )
    users.update(user["uid"], disabled=False)
    audit.record("user.enable", actor=OPERATOR, target=f"user:{user['uid']}")
    out.result(
        {"uid": user["uid"], "email": user["email"], "disabled": False},
        f"enabled {user['email']} (they sign in again to get a session)",
    )
    return EXIT_OK


def cmd_sessions_revoke(args: argparse.Namespace, out: Output) -> int:
    from mllab.identity import sessions
    from mllab.platform import audit

    user = require_user(args.email)
    revoked = sessions.revoke_all(user["uid"], "operator_revoked")
    audit.record("sessions.revoke_all", actor=OPERATOR, target=f"user:{user['uid']}", sessions_revoked=revoked)
    out.result(
        {"uid": user["uid"], "email": user["email"], "sessions_revoked": revoked},
        f"revoked {revoked} session{'s' if revoked != 1 else ''} of {user['email']}",
    )
    return EXIT_OK


def cmd_accounts_purge(args: argparse.Namespace, out: Output) -> int:
    from mllab import account
    from mllab.platform import clock

    count = account.purge(clock.now())
    out.result({"purged": count}, f"purged {count} account{'s' if count != 1 else ''}")
    return EXIT_OK


# --- promo codes, access, billing ----------------------------------------------------------------


def parse_when(value: str) -> Any:
    """DATE (YYYY-MM-DD, midnight UTC) or an RFC 3339 time."""
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD) or time (RFC 3339)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def code_row(doc: dict[str, Any], now: Any) -> dict[str, Any]:
    from mllab.platform import jsonvalues

    state = (
        "disabled"
        if not doc.get("active")
        else (
            "expired"
            if doc.get("expires_at") and doc["expires_at"] <= now
            else (
                "scheduled"
                if doc.get("starts_at") and doc["starts_at"] > now
                else ("used up" if doc.get("redemptions", 0) >= doc["max_redemptions"] else "active")
            )
        )
    )
    return {
        "code": doc["code"],
        "kind": doc["kind"],
        "days": doc.get("days") or ("forever" if doc["kind"] == "comp" else ""),
        "used": f"{doc.get('redemptions', 0)}/{doc['max_redemptions']}",
        "per_user": doc.get("per_user_limit", 1),
        "new_users_only": bool(doc.get("new_users_only")),
        "starts": jsonvalues.jsonable(doc.get("starts_at")),
        "expires": jsonvalues.jsonable(doc.get("expires_at")),
        "state": state,
    }


def cmd_promo_create(args: argparse.Namespace, out: Output) -> int:
    from mllab.billing import promo
    from mllab.platform import clock

    new = promo.NewCode(
        code=promo.normalize(args.code),
        kind=args.kind,
        uses=args.uses,
        days=args.days,
        per_user=args.per_user,
        starts_at=args.starts,
        expires_at=args.expires,
        new_users_only=args.new_users_only,
        created_by=OPERATOR,
    )
    try:
        new.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        doc = promo.create(new)
    except ValueError as exc:  # it exists
        raise Refused(str(exc)) from None
    row = code_row(doc, clock.now())
    what = (
        f"{doc['days']}-day trial"
        if doc["kind"] == "trial"
        else (f"{doc['days']}-day comp" if doc.get("days") else "comp (PRO for good)")
    )
    out.result(
        row,
        f"created {doc['code']}: {what}, {args.uses} use{'s' if args.uses != 1 else ''}, "
        f"{args.per_user} per user{', new users only' if args.new_users_only else ''}",
    )
    return EXIT_OK


def cmd_promo_list(args: argparse.Namespace, out: Output) -> int:
    from mllab.billing import promo
    from mllab.platform import clock

    now = clock.now()
    rows = [code_row(doc, now) for doc in promo.all_codes()]
    out.result(
        {"codes": rows},
        lambda: table(
            rows, ("code", "kind", "days", "used", "per_user", "new_users_only", "starts", "expires", "state")
        ),
    )
    return EXIT_OK


def cmd_promo_disable(args: argparse.Namespace, out: Output) -> int:
    from mllab.billing import promo

    code = promo.normalize(args.code)
    if not promo.disable(code, actor=OPERATOR):
        raise Refused(f"there is no promo code {code}")
    out.result({"code": code, "active": False}, f"disabled {code}; it can no longer be redeemed")
    return EXIT_OK


def entitlement_row(user: dict[str, Any], doc: dict[str, Any] | None) -> dict[str, Any]:
    from mllab.billing import entitlements
    from mllab.platform import clock

    view = entitlements.view(doc, clock.now())
    return {"email": user["email"], "uid": user["uid"], **view.model_dump()}


def cmd_access_grant(args: argparse.Namespace, out: Output) -> int:
    from mllab.billing import entitlements, subscriptions

    user = require_user(args.email)
    doc = subscriptions.set_grant(
        user["uid"], lambda d, now: entitlements.with_grant(d, args.days, now), actor=OPERATOR
    )
    row = entitlement_row(user, doc)
    out.result(row, f"{user['email']} has PRO until {row['pro_until']} (status {row['status']})")
    return EXIT_OK


def cmd_access_revoke(args: argparse.Namespace, out: Output) -> int:
    from mllab.billing import entitlements, subscriptions

    user = require_user(args.email)
    doc = subscriptions.set_grant(
        user["uid"], lambda d, now: entitlements.without_grants(d), actor=OPERATOR, action="access.revoke"
    )
    row = entitlement_row(user, doc)
    paid = (
        " (their PayPal subscription still gives PRO; cancel it at PayPal to end that)" if row["plan"] == "pro" else ""
    )
    out.result(
        row, f"revoked trials, comps and grants of {user['email']}: now {row['plan']}, status {row['status']}{paid}"
    )
    return EXIT_OK


def cmd_billing_resync(args: argparse.Namespace, out: Output) -> int:
    from mllab.billing import entitlements, subscriptions

    if args.email:
        ids = [
            s["id"]
            for s in subscriptions.subscriptions_of(require_user(args.email)["uid"])
            if s.get("status") != subscriptions.ABANDONED
        ]
    else:
        ids = subscriptions.subscription_ids((*entitlements.LIVE, "APPROVAL_PENDING"))
    results = {sub_id: subscriptions.resync(sub_id) for sub_id in ids}
    out.result(
        {"resynced": results}, lambda: "\n".join(f"{k}  {v}" for k, v in results.items()) or "(no subscriptions)"
    )
    return EXIT_OK


def cmd_billing_bootstrap(args: argparse.Namespace, out: Output) -> int:
    from mllab.billing import subscriptions
    from mllab.platform import config

    if not args.webhook_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise UsageError("--webhook-url must be https (PayPal delivers only to https URLs)")
    ids = subscriptions.bootstrap(
        args.webhook_url,
        price=args.price,
        failure_threshold=args.failure_threshold or config.PAYPAL_PAYMENT_FAILURE_THRESHOLD,
    )
    if args.write_local:
        settings = config.settings()
        if settings.is_production:
            raise Refused("--write-local is for the local stack; store the ids in Secret Manager")
        path = config.local_secrets_dir(settings) / config.PAYPAL_IDS
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ids, indent=1))
        out.note(f"wrote {path}")
    out.result(
        ids,
        lambda: (
            json.dumps(ids, indent=1) + f"\n\nStore it: printf '%s' '{json.dumps(ids)}' | "
            f"gcloud secrets versions add {config.PAYPAL_IDS} --data-file=-"
        ),
    )
    return EXIT_OK


# --- access-token keys ---------------------------------------------------------------------------


def _key_lines(rows: list[dict[str, Any]]) -> str:
    shown = [{k: "-" if v is None else v for k, v in row.items()} for row in rows]
    return table(shown, ("kid", "state", "created", "retired", "published_until"))


def cmd_keys_rotate(args: argparse.Namespace, out: Output) -> int:
    from mllab.identity import tokens
    from mllab.ops import keys

    result = keys.rotate(keys.store(args.project))

    def text() -> str:
        lines = [
            f"new signing key {result['signing']['kid']} (created {result['signing']['created']}) in {result['where']}"
        ]
        lines += [
            f"retired {k['kid']}: its public key stays published until {k['published_until']}"
            for k in result["retired"]
        ]
        lines += [
            f"dropped {k['kid']} (retired {k['retired']}; every token it signed has expired)" for k in result["dropped"]
        ]
        lines.append(f"Signing functions switch to the new key within {int(tokens.SIGNER_REFRESH_S)} s.")
        return "\n".join(lines)

    out.result(result, text)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace, out: Output) -> int:
    from mllab.ops import keys

    rows = keys.listing(keys.store(args.project))
    out.result({"keys": rows}, lambda: _key_lines(rows))
    return EXIT_OK


def cmd_keys_prune(args: argparse.Namespace, out: Output) -> int:
    from mllab.ops import keys

    result = keys.prune(keys.store(args.project))
    out.result(
        result,
        lambda: (
            "\n".join(
                [f"dropped {k['kid']} (retired {k['retired']})" for k in result["dropped"]] or ["nothing to drop"]
            )
            + "\n"
            + _key_lines(result["kept"])
        ),
    )
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's exit code for usage errors is 2 already
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common() -> argparse.ArgumentParser:
    """--json and --project, accepted before or after the command. A fresh parser each time: parents
    share their action objects, and the main parser's defaults must not leak into the subcommands,
    whose SUPPRESS default keeps an earlier `mllab --json ...` from being overwritten."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument(
        "--project",
        default=argparse.SUPPRESS,
        help="a real Google Cloud project (Application Default Credentials); default: the local Firestore emulator",
    )
    return common


def _group(groups: Any, name: str, help: str) -> Any:
    """`mllab NAME ACTION ...`: a command group whose action is required."""
    actions = groups.add_parser(name, help=help).add_subparsers(dest="command", metavar="ACTION", parser_class=Parser)
    actions.required = True
    return actions


def _action(
    actions: Any, name: str, run: Callable[[argparse.Namespace, Output], int], help: str, *, email: bool = False
) -> argparse.ArgumentParser:
    action = actions.add_parser(name, parents=[_common()], help=help)
    if email:
        action.add_argument("email")
    action.set_defaults(run=run)
    return action


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mllab", description="ML Lab operator tools (Firestore, directly).", parents=[_common()])
    parser.set_defaults(json=False, project=None)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)
    groups.required = True

    user = _group(groups, "user", "create, list, disable and enable users")
    create = _action(user, "create", cmd_user_create, "create a password user", email=True)
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    create.add_argument("--verified", action="store_true", help="mark the email as verified")
    create.add_argument("--role", choices=("user", "admin"), default="user")
    create.add_argument("--name", default="")
    _action(user, "list", cmd_user_list, "list users")
    _action(user, "disable", cmd_user_disable, "disable a user and revoke their sessions", email=True)
    _action(user, "enable", cmd_user_enable, "enable a disabled user", email=True)

    sess = _group(groups, "sessions", "sign users out")
    _action(sess, "revoke", cmd_sessions_revoke, "revoke every live session of a user", email=True)

    acc = _group(groups, "accounts", "account maintenance")
    _action(acc, "purge", cmd_accounts_purge, "hard-delete accounts deleted more than 30 days ago (the daily job, now)")

    promo = _group(groups, "promo", "create, list and disable promo codes")
    pc = _action(promo, "create", cmd_promo_create, "create a promo code")
    pc.add_argument("code")
    pc.add_argument("--kind", choices=("trial", "comp"), default="trial")
    pc.add_argument("--days", type=positive, help="trial length, or comp length (comp without it: for good)")
    pc.add_argument("--uses", type=positive, required=True, help="total redemptions allowed")
    pc.add_argument("--per-user", type=positive, default=1, help="redemptions per user (default 1)")
    pc.add_argument("--starts", type=parse_when, help="first valid day (YYYY-MM-DD, UTC) or time")
    pc.add_argument("--expires", type=parse_when, help="no longer valid from this day (YYYY-MM-DD, UTC) or time")
    pc.add_argument("--new-users-only", action="store_true", help="only for users who never had PRO")
    _action(promo, "list", cmd_promo_list, "list promo codes with their use")
    _action(promo, "disable", cmd_promo_disable, "switch a code off").add_argument("code")

    access = _group(groups, "access", "grant or revoke PRO by hand")
    _action(access, "grant", cmd_access_grant, "give a user PRO (for N days, or for good)", email=True).add_argument(
        "--days", type=positive
    )
    _action(access, "revoke", cmd_access_revoke, "remove trials, comps and grants (not PayPal)", email=True)

    bill = _group(groups, "billing", "PayPal: resync subscriptions, bootstrap an environment")
    _action(bill, "resync", cmd_billing_resync, "re-read subscriptions from PayPal and repair").add_argument(
        "email", nargs="?", help="one user's subscriptions (default: every live one)"
    )
    bs = _action(
        bill,
        "bootstrap",
        cmd_billing_bootstrap,
        "create the PayPal product, the PRO plan and the webhook; print their ids",
    )
    bs.add_argument("--webhook-url", required=True, help="https://api.<domain>/payments/paypal/webhook")
    bs.add_argument("--price", default=None, help="monthly price (default: the plans table's)")
    bs.add_argument(
        "--failure-threshold", type=positive, default=None, help="failed payments before PayPal suspends (default 2)"
    )
    bs.add_argument("--write-local", action="store_true", help="also write .dev/secrets/paypal-ids (local stack)")

    keys = _group(groups, "keys", "access-token signing keys (no Firestore needed)")
    for name, run, what in (
        (
            "rotate",
            cmd_keys_rotate,
            "add a key that signs at once; the old one stays published until its tokens expire",
        ),
        ("list", cmd_keys_list, "the keys with their dates (never key material)"),
        ("prune", cmd_keys_prune, "drop retired keys whose tokens have all expired"),
    ):
        _action(keys, name, run, what).set_defaults(firestore=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mllab.platform import log

    args = build_parser().parse_args(argv)
    out = Output(args.json)
    # The library logs JSON lines to stdout (Cloud Logging); here stdout is the command's output.
    log.stream, log.min_level = sys.stderr, "WARNING"
    try:
        project, emulator = configure_target(args.project)
        if emulator and getattr(args, "firestore", True):
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
        from mllab.api import http
        from mllab.platform import config

        if type(exc).__module__ == "mllab.billing.paypal":
            return out.error(f"PayPal: {exc}", EXIT_REFUSED)
        if isinstance(exc, config.ConfigError):
            return out.error(str(exc), EXIT_REFUSED)

        if http.dependency_outage(exc):
            where = (
                f"the emulator at {os.environ.get('FIRESTORE_EMULATOR_HOST')}"
                if os.environ.get("FIRESTORE_EMULATOR_HOST")
                else f"project {args.project}"
            )
            return out.error(f"Firestore did not answer ({where}); is it running? ({type(exc).__name__})", EXIT_REFUSED)
        module = type(exc).__module__
        if module.startswith(("google.api_core", "google.auth")):
            return out.error(f"Firestore refused: {type(exc).__name__}: {str(exc)[:300]}", EXIT_REFUSED)
        raise


if __name__ == "__main__":
    sys.exit(main())
