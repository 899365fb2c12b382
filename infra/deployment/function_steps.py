"""The functions: staged sources, one `gcloud functions deploy` each, who may invoke them, the event
trigger's dead letters and the scheduler jobs.

HTTP functions take traffic only from the load balancer (`--ingress-settings=internal-and-gclb`),
except the PayPal webhook (`all`). A serverless NEG forwards requests without an identity token, so
those functions allow unauthenticated invocation: ingress, not IAM, is what keeps the run.app and
cloudfunctions.net URLs closed, and each function authenticates its callers itself (tokens, cookies,
PayPal's signature). Pub/Sub-triggered functions are the opposite: internal ingress, no public
invoker, and only the event invoker account may call them.
"""

from __future__ import annotations

import json

from deployment import access, sizing
from deployment.environment import Environment
from deployment.files import Files
from deployment.foundation import PUBSUB_AGENT
from deployment.steps import Probe, Step, gcloud, relative
from mllab.api import routes
from mllab.files import completion

RUNTIME = "python312"
SCHEDULES = {  # Settings field of the topic -> (cron in UTC, what the run does)
    "purge_topic": ("15 3 * * *", "removes accounts deleted more than 30 days ago"),
    "reconcile_topic": ("45 3 * * *", "re-reads subscriptions a missed webhook may have left wrong"),
}
# The upload sweep (S3-compatible store only) runs every SWEEP_EVERY: docs/operations.md states how late
# an upload whose completion never came is recorded.
SWEEP_SCHEDULE = (
    f"*/{int(completion.SWEEP_EVERY.total_seconds()) // 60} * * * *",
    "reports uploads whose completion never came (a tab closed mid-save) to the recorder",
)
MAX_DELIVERY_ATTEMPTS = 10
S3_EXTRA = "s3"  # pyproject.toml's optional dependencies of the S3 store: botocore and the Pub/Sub client


def schedules(env: Environment) -> dict[str, tuple[str, str]]:
    """Settings field of each scheduled topic -> (cron in UTC, what the run does) for this deployment."""
    return {**SCHEDULES, "sweep_topic": SWEEP_SCHEDULE} if env.s3 else dict(SCHEDULES)


def stage_command(env: Environment) -> tuple[str, ...]:
    # with the runtime's bytecode when the stager runs that Python (Cloud Build's stage step does)
    argv: tuple[str, ...] = ("python3", "infra/stage.py", "--out", "build", f"--bytecode-for={RUNTIME}")
    if env.s3:  # the S3 store's client library, in the functions that use the store and nowhere else
        argv += (f"--extra={S3_EXTRA}:{','.join(fn.name for fn in env.store_functions)}",)
    return argv


def stage(env: Environment) -> list[Step]:
    extra = f" (+ the `{S3_EXTRA}` extra's pins for the functions that use the S3 store)" if env.s3 else ""
    return [
        Step(
            "Stage",
            "Stage every function: build/<name>/ = functions/<name>/ + the mllab package + pinned "
            f"requirements{extra} + .gcloudignore (exactly what gcloud uploads), with the modules' bytecode "
            "when staged by the runtime's Python.",
            stage_command(env),
            group="stage",
        )
    ]


def ingress(fn: routes.Function) -> str:
    if fn.trigger is routes.Trigger.PUBSUB:
        return "internal-only"  # Pub/Sub pushes count as internal traffic
    return "all" if fn.name == "paypal_webhook" else "internal-and-gclb"


def deploy_command(env: Environment, fn: routes.Function, files: Files) -> tuple[str, ...]:
    size = sizing.SIZING[fn.name]
    mounts = [f"{access.mount_path(s)}={s}:latest" for s in access.reads(env, fn.name)]
    args = [
        "functions",
        "deploy",
        fn.name,
        "--gen2",
        f"--runtime={RUNTIME}",
        f"--region={env.region}",
        f"--source=build/{fn.name}",
        f"--entry-point={fn.name}",
        f"--service-account={env.service_account(fn.name)}",
        f"--build-service-account=projects/{env.project}/serviceAccounts/{env.build_account}",
        f"--memory={size.memory}",
        f"--cpu={size.cpu}",
        f"--concurrency={size.concurrency}",
        f"--min-instances={size.min_instances}",
        f"--max-instances={size.max_instances}",
        f"--timeout={size.timeout}",
        f"--env-vars-file={relative(files.function_env_vars[fn.name])}",
        f"--set-secrets={','.join(mounts)}" if mounts else "--clear-secrets",
        f"--ingress-settings={ingress(fn)}",
    ]
    if fn.trigger is routes.Trigger.HTTP:
        args += ["--trigger-http", "--allow-unauthenticated"]
    else:
        assert fn.topic, fn.name
        args += [
            f"--trigger-topic={env.topics[fn.topic]}",
            f"--trigger-service-account={env.invoker}",
            "--no-allow-unauthenticated",
        ]
        if fn.name in sizing.RETRY:
            args.append("--retry")
    return gcloud(env.project, *args, "--quiet")


def functions(env: Environment, files: Files) -> list[Step]:
    steps = []
    for fn in env.functions:
        size = sizing.SIZING[fn.name]
        trigger = "HTTP" if fn.trigger is routes.Trigger.HTTP else f"Pub/Sub {env.topics[fn.topic or '']}"
        steps.append(
            Step(
                "Functions",
                f"Deploy {fn.name} ({trigger}): {size.why}.",
                deploy_command(env, fn, files),
                group=f"function:{fn.name}",
            )
        )
        if fn.trigger is routes.Trigger.PUBSUB:
            steps.append(
                Step(
                    "Functions",
                    f"Only the event invoker may call {fn.name} (its trigger pushes as that account).",
                    gcloud(
                        env.project,
                        "functions",
                        "add-invoker-policy-binding",
                        fn.name,
                        f"--region={env.region}",
                        f"--member={env.member(env.invoker)}",
                    ),
                    group=f"function:{fn.name}",
                )
            )
    return steps


def dead_letters(env: Environment) -> list[Step]:
    """The recorder's trigger subscription (created by Eventarc) dead-letters after 10 attempts."""
    p, fn = env.project, "on_object_finalized"
    return [
        Step(
            "Event delivery",
            f"The Eventarc trigger {fn}'s deploy created.",
            gcloud(p, "functions", "describe", fn, f"--region={env.region}", "--format=value(eventTrigger.trigger)"),
            capture="TRIGGER",
            group="events",
        ),
        Step(
            "Event delivery",
            "Its Pub/Sub subscription, which pushes the bucket's events to the function.",
            gcloud(
                p,
                "eventarc",
                "triggers",
                "describe",
                "${TRIGGER}",
                f"--location={env.region}",
                "--format=value(transport.pubsub.subscription)",
            ),
            capture="TRIGGER_SUBSCRIPTION",
            group="events",
        ),
        Step(
            "Event delivery",
            "Pub/Sub's agent may move undeliverable messages off that subscription.",
            gcloud(
                p,
                "pubsub",
                "subscriptions",
                "add-iam-policy-binding",
                "${TRIGGER_SUBSCRIPTION}",
                f"--member=serviceAccount:{PUBSUB_AGENT}",
                "--role=roles/pubsub.subscriber",
            ),
            group="events",
        ),
        Step(
            "Event delivery",
            f"After {MAX_DELIVERY_ATTEMPTS} failed deliveries (with --retry's backoff) an event goes "
            "to the dead-letter topic instead of retrying for 24 hours and vanishing.",
            gcloud(
                p,
                "pubsub",
                "subscriptions",
                "update",
                "${TRIGGER_SUBSCRIPTION}",
                f"--dead-letter-topic={env.dead_letter_topic}",
                f"--max-delivery-attempts={MAX_DELIVERY_ATTEMPTS}",
            ),
            probe=Probe(
                gcloud(
                    p,
                    "pubsub",
                    "subscriptions",
                    "describe",
                    "${TRIGGER_SUBSCRIPTION}",
                    "--format=value(deadLetterPolicy.deadLetterTopic)",
                )
            ),
            group="events",
        ),
    ]


def scheduler(env: Environment) -> list[Step]:
    steps = []
    for field, (cron, what) in schedules(env).items():
        topic = env.topics[field]
        job = env.scheduler_job(topic)
        # The topic by its full name: a short one is resolved in gcloud's active project, not --project's.
        flags = (
            f"--location={env.region}",
            f"--schedule={cron}",
            "--time-zone=Etc/UTC",
            f"--topic=projects/{env.project}/topics/{topic}",
            f"--message-body={json.dumps({'job': topic})}",
            f"--description=ML Lab: {what}",
        )
        steps.append(
            Step(
                "Scheduler",
                f"{_when(cron)}, publish to {topic}: the function {what}.",
                gcloud(env.project, "scheduler", "jobs", "create", "pubsub", job, *flags),
                probe=Probe(
                    gcloud(
                        env.project,
                        "scheduler",
                        "jobs",
                        "describe",
                        job,
                        f"--location={env.region}",
                        "--format=value(name)",
                    )
                ),
                update=gcloud(env.project, "scheduler", "jobs", "update", "pubsub", job, *flags),
            )
        )
    return steps


def _when(cron: str) -> str:
    minute, hour = cron.split()[:2]
    return f"Every {minute[2:]} minutes" if minute.startswith("*/") else f"Daily at {hour}:{minute} UTC"
