"""Deploy ML Lab to one Google Cloud project (staging and production are two projects).

    python infra/deploy.py plan   --project=P --region=R --domain=D   # print every command, offline
    python infra/deploy.py apply  --project=P --region=R --domain=D --oauth-client-id=ID [--secrets-from=DIR]
    python infra/deploy.py script --project=P --region=R --domain=D --only=function:jwks,lab
    python infra/deploy.py functions --project=P --region=R --domain=D   # the functions it deploys

`make deploy-plan` and `make deploy` call the first two. `plan` runs no command and needs no
credentials; `apply` runs the same steps with gcloud, probing before each create, so it can be run
again at any time. `script` writes the selected steps as a bash script (Cloud Build's deploy steps);
`functions` lists the deployment's functions, one a line (its file store's: Cloud Build's stage step).
The steps live in infra/deployment/ (see its __init__ for the map).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deployment import environment, plan, steps
from deployment.environment import UsageError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infra/deploy.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("plan", "apply", "script", "functions"))
    parser.add_argument("--project", default="", help="the Google Cloud project id (one per environment)")
    parser.add_argument("--region", default="", help="where functions, Firestore and the buckets live")
    parser.add_argument("--domain", default="", help="the API is api.DOMAIN, the lab lab.DOMAIN")
    parser.add_argument("--billing-account", default="", help="for the budget alert (optional)")
    parser.add_argument("--oauth-client-id", default="", help="Google sign-in's OAuth client id (needed by apply)")
    parser.add_argument("--paypal", default="sandbox", help="sandbox (default) or live")
    parser.add_argument("--alert-email", default="", help="where alerts are mailed (optional)")
    parser.add_argument("--budget", default="100", help="monthly budget in US dollars (default 100)")
    parser.add_argument("--secrets-from", default="", help="a folder of secret values, one file per secret (apply)")
    parser.add_argument("--storage", default="gcs", help="the file store: gcs (default) or s3 (S3-compatible)")
    parser.add_argument("--s3-endpoint", default="", help="s3: the bucket's S3 API endpoint, https://host[:port]")
    parser.add_argument("--s3-bucket", default="", help="s3: the bucket (made by the operator)")
    parser.add_argument("--s3-region", default="", help="s3: its region (default auto, as R2 takes)")
    parser.add_argument("--s3-addressing", default="", help="s3: path (default) or virtual")
    parser.add_argument("--out", default=str(environment.DEFAULT_OUT), help="where generated files go")
    parser.add_argument("--only", default="", help="comma-separated step groups (function:NAME, functions, lab, ...)")
    parser.add_argument("--output", default="", help="script: write here instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None, runner: steps.Runner = steps.subprocess_runner) -> int:
    args = _parser().parse_args(argv)
    try:
        env = environment.make(
            args.project,
            args.region,
            args.domain,
            billing_account=args.billing_account,
            oauth_client_id=args.oauth_client_id,
            paypal=args.paypal,
            alert_email=args.alert_email,
            budget_usd=args.budget,
            secrets_from=args.secrets_from or None,
            out=args.out,
            storage=args.storage,
            s3_endpoint=args.s3_endpoint,
            s3_bucket=args.s3_bucket,
            s3_region=args.s3_region,
            s3_addressing=args.s3_addressing,
        )
        if args.command == "functions":
            sys.stdout.write("".join(f"{fn.name}\n" for fn in env.functions))
            return 0
        if args.command in ("apply", "script"):
            environment.deployable(env)
        all_steps, written = plan.build(env)
        chosen = steps.select(all_steps, [g for g in args.only.split(",") if g]) if args.only else all_steps
        if args.command in ("apply", "script") and any(s.group == "lab" for s in chosen) and written.lab is None:
            raise UsageError(
                "frontend/vendor/ is missing: run `make dev` or `make test` once (npm installs the lab's "
                "libraries), then deploy again"
            )
        script = (
            steps.render_script(chosen, plan.script_header(env, args.only or "all")) if args.command == "script" else ""
        )
    except (UsageError, steps.DeployError) as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    if args.command == "plan":
        sys.stdout.write(steps.render_plan(chosen, plan.header(env)))
        return 0
    if args.command == "script":
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(script)
        else:
            sys.stdout.write(script)
        return 0
    ctx = steps.Context(env=env, runner=runner)
    try:
        steps.apply(chosen, ctx)
    except steps.DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    address = ctx.values.get("LB_ADDRESS")
    if address:
        print(
            f"\nDone. Point DNS A records {env.api_host} and {env.lab_host} at {address}; the managed certificates "
            "are issued once they resolve (up to an hour)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
