"""The whole deployment, in order. Each section needs only what the sections above it made:
APIs -> identities -> buckets and topics -> Firestore -> secrets -> functions -> their event
delivery and schedules -> the lab's files -> load balancer and Cloud Armor -> alerting -> DNS."""

from __future__ import annotations

import importlib.util

from mllab import routes

from deployment import edge, files, foundation, function_steps, monitoring, secret_steps
from deployment.environment import ROOT, Environment
from deployment.steps import Step, relative


def _staged_functions() -> list[str]:
    """infra/stage.py's list (the functions/ folders), loaded by path: it is a script, not a package."""
    spec = importlib.util.spec_from_file_location("mllab_stage", ROOT / "infra" / "stage.py")
    assert spec and spec.loader
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage.functions()


def build(env: Environment) -> tuple[list[Step], files.Files]:
    """Write the generated files, then list every step. No command runs here."""
    declared, folders = sorted(fn.name for fn in routes.FUNCTIONS), _staged_functions()
    if folders != declared:
        raise RuntimeError(f"functions/ ({folders}) and mllab.routes.FUNCTIONS ({declared}) disagree")
    written = files.write(env)
    steps = [
        *function_steps.stage(env),
        *foundation.apis(env),
        *foundation.identities(env),
        *foundation.buckets(env, written),
        *foundation.events(env),
        *foundation.firestore(env),
        *secret_steps.secret_steps(env),
        *function_steps.functions(env, written),
        *function_steps.dead_letters(env),
        *function_steps.scheduler(env),
        *edge.lab_files(env, written),
        *edge.load_balancer(env, written),
        *monitoring.alerting(env, written),
        *edge.dns(env),
    ]
    return steps, written


def header(env: Environment) -> list[str]:
    return [
        f"ML Lab deployment plan: project {env.project}, region {env.region}, API {env.api_url}, lab {env.lab_url}",
        "",
        "Printed offline: nothing below has run. `make deploy` runs these steps in this order. A step inside",
        "`if [ -z ... ]` runs only when its probe (a describe or list command) finds nothing, so a second run",
        "creates nothing; commands outside an `if` are idempotent updates. ${NAME} is a value an earlier step",
        "printed. Secret values never appear: <...> marks a value produced in memory or read from a file while",
        "applying, and passed on stdin.",
        "",
        f"Generated files (no secrets): {relative(env.files)}/ (env.yaml, storage-cors.json, url-map.yaml,",
        "http-redirect-map.yaml, alerts/*.json, lab/). Static ones: infra/storage-lifecycle.json,",
        "infra/firestore/ (indexes, TTL fields, rules), infra/monitoring/ (alert policy templates).",
    ]
