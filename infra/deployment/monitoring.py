"""Alerting: the policies in infra/monitoring/ (5xx rate, p95 latency, webhook failures, dead-lettered
events, the uptime check failing; the predict function's 5xx rate, p95 latency and 429 surge), the
uptime check itself, and the budget alert."""

from __future__ import annotations

from deployment.environment import NO_BILLING_ACCOUNT, Environment
from deployment.files import Files
from deployment.steps import Probe, Step, gcloud, relative

UPTIME_PATH = "/.well-known/jwks.json"  # public, cheap, and it exercises the load balancer and a function
BUDGET_THRESHOLDS = ("0.5", "0.9", "1.0")


def _channel(env: Environment) -> list[Step]:
    p = env.project
    flags = (
        f"--display-name={env.alert_channel_name}",
        "--type=email",
        f"--channel-labels=email_address={env.alert_email or '<ALERT_EMAIL>'}",
    )
    return [
        Step(
            "Alerting",
            f"Alerts are mailed to {env.alert_email or 'ALERT_EMAIL'}.",
            gcloud(p, "beta", "monitoring", "channels", "create", *flags, "--format=value(name)"),
            probe=Probe(
                gcloud(
                    p,
                    "beta",
                    "monitoring",
                    "channels",
                    "list",
                    f'--filter=displayName="{env.alert_channel_name}"',
                    "--format=value(name)",
                ),
                capture="ALERT_CHANNEL",
            ),
            capture="ALERT_CHANNEL",
            skip="" if env.alert_email else "no ALERT_EMAIL given (the policies still show in the console)",
        )
    ]


def policies(env: Environment, files: Files) -> list[Step]:
    p = env.project
    notify = ("--notification-channels=${ALERT_CHANNEL}",) if env.alert_email else ()
    renotify = ("--set-notification-channels=${ALERT_CHANNEL}",) if env.alert_email else ()  # update's spelling
    steps = []
    for n, (name, path) in enumerate(sorted(files.alerts.items()), 1):
        var = f"POLICY_{n}"
        source = f"--policy-from-file={relative(path)}"
        steps.append(
            Step(
                "Alerting",
                f"Alert policy \"{name}\" ({relative(path)}).",
                gcloud(p, "alpha", "monitoring", "policies", "create", source, *notify),
                probe=Probe(
                    gcloud(
                        p,
                        "alpha",
                        "monitoring",
                        "policies",
                        "list",
                        f'--filter=displayName="{name}"',
                        "--format=value(name)",
                    ),
                    capture=var,
                ),
                update=gcloud(p, "alpha", "monitoring", "policies", "update", f"${{{var}}}", source, *renotify),
            )
        )
    return steps


def uptime(env: Environment) -> list[Step]:
    p = env.project
    flags = ("--protocol=https", f"--path={UPTIME_PATH}", "--port=443", "--period=5", "--timeout=10")
    return [
        Step(
            "Alerting",
            f"Uptime check: GET {env.api_url}{UPTIME_PATH} from several regions every 5 minutes.",
            gcloud(
                p,
                "monitoring",
                "uptime",
                "create",
                env.uptime_check,
                "--resource-type=uptime-url",
                f"--resource-labels=host={env.api_host},project_id={p}",
                *flags,
            ),
            probe=Probe(
                gcloud(
                    p,
                    "monitoring",
                    "uptime",
                    "list-configs",
                    f'--filter=displayName="{env.uptime_check}"',
                    "--format=value(name)",
                ),
                capture="UPTIME_CHECK",
            ),
            update=gcloud(p, "monitoring", "uptime", "update", "${UPTIME_CHECK}", *flags[1:]),
        )
    ]


def budget(env: Environment) -> list[Step]:
    account = env.billing_account or NO_BILLING_ACCOUNT
    # The Budget API bills its quota to a project: this one, never whichever gcloud has active.
    quota = f"--billing-project={env.project}"
    amount = f"--budget-amount={env.budget_usd}USD"
    rules = [f"--threshold-rule=percent={t}" for t in BUDGET_THRESHOLDS]
    return [
        Step(
            "Alerting",
            f"Budget alert: mail the billing admins at 50%, 90% and 100% of ${env.budget_usd} a month "
            f"(and when the forecast passes 100%) for this project's spend.",
            gcloud(
                None,
                "billing",
                "budgets",
                "create",
                f"--billing-account={account}",
                f"--display-name={env.budget_name}",
                amount,
                *rules,
                "--threshold-rule=percent=1.0,basis=forecasted-spend",
                f"--filter-projects=projects/{env.project}",
                quota,
            ),
            probe=Probe(
                gcloud(
                    None,
                    "billing",
                    "budgets",
                    "list",
                    f"--billing-account={account}",
                    f'--filter=displayName="{env.budget_name}"',
                    "--format=value(name)",
                    quota,
                ),
                capture="BUDGET",
            ),
            update=gcloud(
                None, "billing", "budgets", "update", "${BUDGET}", f"--billing-account={account}", amount, quota
            ),
            skip="" if env.billing_account else "no BILLING_ACCOUNT given (pass BILLING_ACCOUNT=XXXXXX-XXXXXX-XXXXXX)",
        )
    ]


def alerting(env: Environment, files: Files) -> list[Step]:
    return _channel(env) + uptime(env) + policies(env, files) + budget(env)
