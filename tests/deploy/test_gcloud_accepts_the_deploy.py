"""Every gcloud command the deployment can run, run through the installed gcloud CLI against a fake
Google API (tests/deploy/fake_google_api.py), with another project active in a throwaway gcloud
config: the steps, their probes and update branches, the command that reads the signing keys, the
Cloud Build scripts' commands and cloudbuild.yaml's documented submit; then the same for a deployment
on an S3-compatible store (STORAGE=s3), whose commands of a shape the first run did not cover run too.

gcloud parses every flag and resolves every resource name itself, so a command it would reject, or a
request naming the active project instead of the target, fails here as it would on a first deploy.
Nothing exists in the fake API and every write is denied, so each command stops at its first write;
that request's body is what gcloud would send, and the important ones are checked (function ingress,
secrets and trigger, the scheduler's topic, the bucket notification, the URL map).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mllab.api import routes
from mllab.platform import config
from tests.deploy.fake_google_api import PROJECT_NUMBER, FakeGoogleApi, Request

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "infra"))

import deploy as deploy_cli  # noqa: E402  (infra/deploy.py)
import stage as stage_cli  # noqa: E402  (infra/stage.py)
from deployment import access, environment, function_steps, plan, secret_steps, steps  # noqa: E402

TARGET, ACTIVE, REGION, DOMAIN = "mllab-target", "some-other-project", "europe-west1", "example.com"
BILLING_ACCOUNT = "012345-6789AB-CDEF01"
WORKERS = 3  # gcloud spends ~1-2 s of CPU starting up; 2 cores, so a few at a time
# gcloud's own refusals: a flag, choice or command it does not know, or a resource it cannot name.
PARSE_ERRORS = re.compile(
    r"unrecognized arguments|Invalid choice|is required but was not provided|"
    r"is not currently set|argument .*: expected|must be specified|Invalid value for"
)

# What earlier steps capture, as gcloud prints them for the target project.
CAPTURED = {
    "PROJECT_NUMBER": PROJECT_NUMBER,
    "GCS_AGENT": f"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com",
    "TRIGGER": f"projects/{TARGET}/locations/{REGION}/triggers/on-object-finalized-123456",
    "TRIGGER_SUBSCRIPTION": f"projects/{TARGET}/subscriptions/eventarc-{REGION}-on-object-finalized-123456-sub-1",
    "ALERT_CHANNEL": f"projects/{TARGET}/notificationChannels/1234567890",
    "UPTIME_CHECK": f"projects/{TARGET}/uptimeCheckConfigs/ml-lab-api-1234",
    "BUDGET": f"billingAccounts/{BILLING_ACCOUNT}/budgets/0a1b2c3d-4e5f",
}


@dataclass(frozen=True)
class Ran:
    argv: tuple[str, ...]
    returncode: int
    stderr: str
    requests: list[Request]

    def __str__(self) -> str:
        return f"$ {steps.command_line(self.argv)}\n  exit {self.returncode}: {self.stderr.strip()[-600:]}"


def _value(name: str) -> str:
    if name in CAPTURED:
        return CAPTURED[name]
    if re.fullmatch(r"POLICY_[0-9]+", name):
        return f"projects/{TARGET}/alertPolicies/{name[7:]}0123"
    raise AssertionError(f"${{{name}}}: add what gcloud prints for it to CAPTURED")


def _substitute(argv: Sequence[str]) -> tuple[str, ...]:
    return tuple(re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", lambda m: _value(m.group(1)), a) for a in argv)


def _gcloud_commands(all_steps: Sequence[steps.Step]) -> list[tuple[str, ...]]:
    found = []
    for step in all_steps:
        for argv in (step.argv, step.probe.argv if step.probe else (), step.update or ()):
            if argv and argv[0] == "gcloud":
                found.append(_substitute(argv))
    return found


# infra/firestore/rules.py's one gcloud call (the token it sends to the Firebase Rules API): it answers
# from the credentials gcloud holds, without a request.
RULES_TOKEN = ("gcloud", "auth", "print-access-token")


# Records each gcloud command a script runs (bash does the parsing) instead of running it; with
# STUB_EXISTS set, every probe finds its resource, so the update branches run.
RECORDER = """#!/bin/bash
printf '%s\\037' "$@" >> "$GCLOUD_LOG"; printf '\\036' >> "$GCLOUD_LOG"
if [ -n "${STUB_EXISTS:-}" ]; then echo exists; fi
"""


def _script_commands(script: Path, bin_dir: Path) -> list[tuple[str, ...]]:
    """The gcloud commands a generated bash script runs: every branch, as bash parses them."""
    found = []
    for exists in ("", "1"):
        log = script.with_suffix(f".log{exists}")
        done = subprocess.run(
            ["bash", str(script)],
            env={
                **os.environ,
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "GCLOUD_LOG": str(log),
                "STUB_EXISTS": exists,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        found += [("gcloud", *record.split("\x1f")[:-1]) for record in log.read_text().split("\x1e")[:-1]]
    return found


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as `make deploy` sees it: the staged functions and infra/'s static files."""
    root = tmp_path_factory.mktemp("deploy-root")
    for name in stage_cli.functions():
        stage_cli.stage(name, root / "build")
    (root / "infra").symlink_to(REPO / "infra")
    (root / "cloudbuild.yaml").symlink_to(REPO / "cloudbuild.yaml")
    return root


def _environment(out: Path, **store: str) -> environment.Environment:
    """The target's environment as `make deploy-plan` builds it (`store`: the S3 settings, if any)."""
    return environment.make(
        TARGET,
        REGION,
        DOMAIN,
        billing_account=BILLING_ACCOUNT,
        alert_email="ops@example.com",
        oauth_client_id="1234-abc.apps.googleusercontent.com",
        out=out,
        **store,
    )


@pytest.fixture(scope="module")
def env(workdir: Path) -> environment.Environment:
    return _environment(workdir / "deploy")


@pytest.fixture(scope="module")
def all_steps(env: environment.Environment) -> list[steps.Step]:
    return plan.build(env)[0]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGoogleApi]:
    api = FakeGoogleApi().start()
    yield api
    api.stop()


def _clean_environ(config: Path) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLOUDSDK_", "GOOGLE_", "GCLOUD_")) and k not in ("HTTP_PROXY", "HTTPS_PROXY")
    }
    return {
        **keep,
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_AUTH_ACCESS_TOKEN": "fake-access-token",
        "CLOUDSDK_CORE_PROJECT": ACTIVE,
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "1",
        # Nothing reaches Google: an API without an override goes to a proxy that is not there.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }


# gcloud has no endpoint override for the Budget API: these commands' requests are read from --log-http
# (gcloud logs each request before sending it; the proxy then refuses it).
LOGGED = (("billing", "budgets"),)
_LOGGED_REQUEST = re.compile(
    r"^uri: https://([a-z]+)\.googleapis\.com(\S*)\nmethod: (\w+)\n== headers start ==\n"
    r"(.*?)== headers end ==\n== body start ==\n(.*?)\n?== body end ==",
    re.M | re.S,
)


def _logged_requests(tag: str, stderr: str) -> list[Request]:
    found = []
    for api, path, method, headers, body in _LOGGED_REQUEST.findall(stderr):
        pairs = dict(re.findall(r"^b'([^']+)': b'([^']*)'$", headers, re.M))
        found.append(Request(tag, api, method, path, pairs, body.encode()))
    return list({(r.method, r.path, r.body): r for r in found}.values())  # gcloud retries refused requests


def _command_tree() -> dict[str, Any] | None:
    """gcloud's own command tree (the one its shell completion reads), or None if this install lacks it."""
    gcloud = shutil.which("gcloud")
    tree = Path(os.path.realpath(gcloud)).parents[1] / "data" / "cli" / "gcloud_completions.py" if gcloud else None
    if not tree or not tree.is_file():
        return None
    scope: dict[str, Any] = {}
    exec(compile(tree.read_text(), str(tree), "exec"), scope)  # a literal dict: the CLI's groups and commands
    return scope["STATIC_COMPLETION_CLI_TREE"]


# Commands whose every instance runs: their requests are checked one by one below (each Cloud Armor
# rule's match and limits, each alert policy file as gcloud parses it).
EACH_ONE = (
    ("functions", "deploy"),
    ("compute", "url-maps", "import"),
    ("scheduler", "jobs"),
    ("compute", "security-policies", "rules", "create"),
    ("alpha", "monitoring", "policies", "create"),
)


def shape(argv: Sequence[str], tree: dict[str, Any] | None) -> tuple[str, ...]:
    """A command with its resource names and flag values left out: commands of one shape differ only in
    names, so gcloud parses them alike, and one of them stands for all (EACH_ONE excepted). Without the
    tree every command is its own shape."""
    if tree is None or any(tuple(argv[1 : 1 + len(words)]) == words for words in EACH_ONE):
        return tuple(argv)
    path, node = [], tree
    for word in (a for a in argv[1:] if not a.startswith("-")):
        if word not in node.get("commands", {}):
            break
        path.append(word)
        node = node["commands"][word]
    flags = sorted({a.split("=", 1)[0] for a in argv if a.startswith("--")})
    return (*path, "|", *flags)


def _run_all(
    commands: Sequence[tuple[str, ...]],
    fake: FakeGoogleApi,
    cwd: Path,
    config: Path,
    stdin: dict[tuple[str, ...], bytes],
) -> dict[tuple[str, ...], Ran]:
    gcloud = shutil.which("gcloud")
    assert gcloud, "the gcloud CLI is missing: `make test` needs it for the emulators too (README: Prerequisites)"
    base = _clean_environ(config)
    tree = _command_tree()
    unique = list({shape(argv, tree): argv for argv in reversed(commands)}.values())
    # the logged ones wait out gcloud's retries against the missing proxy: start them first
    unique.sort(key=lambda argv: not any(tuple(argv[1 : 1 + len(w)]) == w for w in LOGGED))

    def one(item: tuple[int, tuple[str, ...]]) -> Ran:
        n, argv = item
        tag = f"c{n}"
        logged = any(tuple(argv[1 : 1 + len(words)]) == words for words in LOGGED)
        for _ in range(2):  # once more if something outside the test killed it
            done = subprocess.run(
                [gcloud, *argv[1:], *(["--log-http"] if logged else [])],
                cwd=cwd,
                env={**base, **fake.overrides(tag)},
                input=stdin.get(argv, b""),
                capture_output=True,
                timeout=300,
                check=False,
            )
            if done.returncode >= 0:
                break
        stderr = done.stderr.decode(errors="replace")
        return Ran(argv, done.returncode, stderr, _logged_requests(tag, stderr) if logged else fake.of(tag))

    with ThreadPoolExecutor(WORKERS) as pool:
        return {ran.argv: ran for ran in pool.map(one, enumerate(unique))}


def _scripts(env: environment.Environment, workdir: Path, *storage: str) -> list[tuple[str, ...]]:
    """The gcloud commands of the scripts `infra/deploy.py script` writes for each function and the lab
    (what Cloud Build's deploy steps run)."""
    bin_dir = workdir / "recorder"
    if not bin_dir.is_dir():
        bin_dir.mkdir()
        (bin_dir / "gcloud").write_text(RECORDER)
        (bin_dir / "gcloud").chmod(0o755)
    found = []
    for group in [f"function:{fn.name}" for fn in env.functions] + ["lab"]:
        out = workdir / f"ci-{env.storage}" / f"{group.replace(':', '-')}.sh"
        assert (
            deploy_cli.main(
                [
                    "script",
                    f"--project={TARGET}",
                    f"--region={REGION}",
                    f"--domain={DOMAIN}",
                    "--oauth-client-id=1234-abc.apps.googleusercontent.com",
                    f"--out={env.out}",
                    *storage,
                    f"--only={group}",
                    f"--output={out}",
                ]
            )
            == 0
        )
        found += _script_commands(out, bin_dir)
    return found


@pytest.fixture(scope="module")
def script_commands(env: environment.Environment, workdir: Path) -> list[tuple[str, ...]]:
    """What Cloud Build's deploy steps run."""
    assert env.functions == tuple(routes.for_store("gcs"))
    return _scripts(env, workdir)


def _cloudbuild_submit() -> tuple[str, ...]:
    """cloudbuild.yaml's documented `gcloud builds submit`, for the target project."""
    comments = "\n".join(
        line.lstrip("#") for line in (REPO / "cloudbuild.yaml").read_text().splitlines() if line.startswith("#")
    )
    line = re.search(r"^\s+(gcloud builds submit (?:.*\\\n)*.*)$", comments, re.M)
    assert line, "cloudbuild.yaml documents how to submit it"
    return (*shlex.split(line.group(1).replace("\\\n", " ")), f"--project={TARGET}", "--async")


@pytest.fixture(scope="module")
def ran(
    all_steps: list[steps.Step],
    script_commands: list[tuple[str, ...]],
    fake: FakeGoogleApi,
    workdir: Path,
    env: environment.Environment,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, ...], Ran]:
    commands = _gcloud_commands(all_steps)
    commands.append(secret_steps.read_signing_keys(env))
    commands.append(_cloudbuild_submit())
    commands.append(RULES_TOKEN)
    stdin = {_substitute(s.argv): b"not-a-real-secret" for s in all_steps if s.stdin}
    assert set(script_commands) <= set(commands), "the Cloud Build scripts run only commands of the plan"
    return _run_all(commands, fake, workdir, tmp_path_factory.mktemp("gcloud-config"), stdin)


# --- every command ---------------------------------------------------------------------------------


def test_gcloud_accepts_every_command_of_the_deployment(ran: dict[tuple[str, ...], Ran]) -> None:
    refused = [str(r) for r in ran.values() if r.returncode == 2 or PARSE_ERRORS.search(r.stderr)]
    assert not refused, "gcloud refused these commands:\n" + "\n".join(refused)


def test_every_command_reaches_the_api(ran: dict[tuple[str, ...], Ran]) -> None:
    """A command that stops before its first request (a missing file, a local check) proves nothing."""
    silent = [str(r) for r in ran.values() if not r.requests and r.argv != RULES_TOKEN]
    assert not silent, "these commands sent no request:\n" + "\n".join(silent)


# A project id (or number) after projects/, or in a service account's address (Google's service agents,
# service-NUMBER@..., live in Google's projects). Not a collection group called "projects", and not the
# API's own paths in the URL map (/projects/*).
_PROJECT_REFERENCE = re.compile(
    r"(?<!collectionGroups/)(?<!\w)projects/([a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{6,})\b"
    r"|(?<![\w.-])(?!service-)[\w.-]+@([a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com"
)


def _projects_named(request: Request) -> set[str]:
    text = request.path + " " + request.body.decode(errors="replace")
    named = {a or b for a, b in _PROJECT_REFERENCE.findall(text)}
    named |= set(re.findall(r"[?&]userProject=([^&]+)", request.path))
    named |= {v for k, v in request.headers.items() if k.lower() == "x-goog-user-project"}
    named |= {ACTIVE} if ACTIVE in request.text() else set()
    return named


def _other_projects(runs: Iterable[Ran]) -> list[str]:
    """Each request of these runs that names a project other than the target, with the names."""
    return [
        f"{r}\n  {q.method} {q.api}{q.path} names {sorted(_projects_named(q) - {TARGET, PROJECT_NUMBER})}"
        for r in runs
        for q in r.requests
        if _projects_named(q) - {TARGET, PROJECT_NUMBER}
    ]


def test_no_request_names_any_project_but_the_target(ran: dict[tuple[str, ...], Ran]) -> None:
    wrong = _other_projects(ran.values())
    assert not wrong, "requests for another project:\n" + "\n".join(wrong)


# --- what gcloud would send ------------------------------------------------------------------------


def _sent(ran: dict[tuple[str, ...], Ran], *words: str, method: str = "POST") -> list[tuple[Ran, Any]]:
    """(command, JSON body of its first `method` request) for each command containing `words` in order."""
    found = []
    for r in ran.values():
        if any(r.argv[i : i + len(words)] == words for i in range(len(r.argv))):
            bodies = [q.json() for q in r.requests if q.method == method and q.body[:1] == b"{"]
            assert bodies, f"no {method} request with a body:\n{r}"
            found.append((r, bodies[0]))
    assert found, f"no command runs {' '.join(words)}"
    return found


def _created_function(ran: dict[tuple[str, ...], Ran], name: str) -> dict[str, Any]:
    for r in ran.values():
        if r.argv[1:4] == ("functions", "deploy", name):
            creates = [q.json() for q in r.requests if q.method == "POST" and f"functionId={name}" in q.path]
            assert creates, f"gcloud did not get as far as creating {name}:\n{r}"
            return creates[0]
    raise AssertionError(f"{name} is never deployed")


@pytest.mark.parametrize("fn", routes.for_store("gcs"), ids=lambda f: f.name)
def test_each_function_is_created_with_its_ingress_secrets_trigger_and_build_account(
    ran: dict[tuple[str, ...], Ran], env: environment.Environment, fn: routes.Function
) -> None:
    body = _created_function(ran, fn.name)
    service = body["serviceConfig"]
    expected_ingress = {
        "internal-only": "ALLOW_INTERNAL_ONLY",
        "internal-and-gclb": "ALLOW_INTERNAL_AND_GCLB",
        "all": "ALLOW_ALL",
    }[function_steps.ingress(fn)]
    assert service["ingressSettings"] == expected_ingress
    assert service.get("serviceAccountEmail", env.service_account(fn.name)) == env.service_account(fn.name)
    mounted = {v["secret"]: v["mountPath"] for v in service.get("secretVolumes", [])}
    assert mounted == {s: access.mount_path(s).rsplit("/", 1)[0] for s in access.READS[fn.name]}
    assert not service.get("secretEnvironmentVariables"), "secrets are files, never environment variables"
    assert body["buildConfig"]["serviceAccount"] == f"projects/{TARGET}/serviceAccounts/{env.build_account}"
    assert body["buildConfig"]["runtime"] == function_steps.RUNTIME
    if fn.trigger is routes.Trigger.PUBSUB:
        trigger = body["eventTrigger"]
        assert trigger["pubsubTopic"] == f"projects/{TARGET}/topics/{env.topics[fn.topic or '']}"
        assert trigger["serviceAccountEmail"] == env.invoker
    else:
        assert "eventTrigger" not in body


def test_the_scheduler_jobs_publish_to_the_target_projects_topics(
    ran: dict[tuple[str, ...], Ran], env: environment.Environment
) -> None:
    sent = _sent(ran, "scheduler", "jobs", "create", "pubsub")
    assert sorted(body["pubsubTarget"]["topicName"] for _, body in sent) == sorted(
        f"projects/{TARGET}/topics/{env.topics[field]}" for field in function_steps.SCHEDULES
    )
    updated = _sent(ran, "scheduler", "jobs", "update", "pubsub", method="PATCH")
    assert {body["pubsubTarget"]["topicName"] for _, body in updated} == {
        body["pubsubTarget"]["topicName"] for _, body in sent
    }


def test_the_bucket_notifies_the_events_topic_of_the_target(
    ran: dict[tuple[str, ...], Ran], env: environment.Environment
) -> None:
    [(_, body)] = _sent(ran, "storage", "buckets", "notifications", "create")
    assert body["topic"].endswith(f"projects/{TARGET}/topics/{env.events_topic}")
    assert sorted(body["event_types"]) == ["OBJECT_DELETE", "OBJECT_FINALIZE"]
    assert body["payload_format"] == "JSON_API_V1"


def test_the_url_map_sent_is_the_generated_one(ran: dict[tuple[str, ...], Ran], env: environment.Environment) -> None:
    sent = {body["name"]: body for _, body in _sent(ran, "compute", "url-maps", "import")}
    generated = yaml.safe_load((env.files / "url-map.yaml").read_text())
    api = sent[env.url_map]
    assert api["hostRules"] == generated["hostRules"] and api["defaultService"] == generated["defaultService"]
    assert api["pathMatchers"] == generated["pathMatchers"]
    assert sent[env.http_redirect_map]["defaultUrlRedirect"]["httpsRedirect"] is True


def test_alert_policies_update_keeps_their_notification_channel(ran: dict[tuple[str, ...], Ran]) -> None:
    for _, body in _sent(ran, "alpha", "monitoring", "policies", "update", method="PATCH"):
        assert body["notificationChannels"] == [CAPTURED["ALERT_CHANNEL"]]


def test_the_budget_is_for_the_target_project_and_bills_its_quota_there(ran: dict[tuple[str, ...], Ran]) -> None:
    [(_, body)] = _sent(ran, "billing", "budgets", "create")
    assert body["budgetFilter"]["projects"] == [f"projects/{TARGET}"]
    budget_requests = [q for r in ran.values() if r.argv[1:3] == ("billing", "budgets") for q in r.requests]
    assert {r.argv[3] for r in ran.values() if r.argv[1:3] == ("billing", "budgets")} == {"create", "list", "update"}
    assert budget_requests and all(q.headers.get("X-Goog-User-Project") == TARGET for q in budget_requests)


def _armor_rule(ran: dict[tuple[str, ...], Ran], verb: str, priority: int) -> dict[str, Any]:
    (body,) = [
        b for r, b in _sent(ran, "security-policies", "rules", verb) if r.argv[r.argv.index(verb) + 1] == str(priority)
    ]
    return body


def test_the_predict_armor_rules_reach_the_api_as_planned(ran: dict[tuple[str, ...], Ran]) -> None:
    from deployment import edge

    throttle = _armor_rule(ran, "create", 1200)
    assert throttle["match"]["expr"]["expression"] == "request.path.startsWith('/predict/')"
    assert throttle["action"] == "throttle"
    limit = throttle["rateLimitOptions"]
    assert limit["rateLimitThreshold"] == {"count": 600, "intervalSec": 60}
    assert (limit["conformAction"], limit["exceedAction"], limit["enforceOnKey"]) == ("allow", "deny(429)", "IP")
    guard = _armor_rule(ran, "create", edge.PREDICT_BODY_PRIORITY)
    assert guard["match"]["expr"]["expression"] == edge.predict_body_expression()  # sent as written, quotes and all
    assert guard["action"] == "deny(403)"
    assert _armor_rule(ran, "update", edge.DEFAULT_PRIORITY)["action"] == "allow"


def test_the_predict_alert_policies_reach_the_api_as_written(ran: dict[tuple[str, ...], Ran]) -> None:
    sent = {body["displayName"]: body for _, body in _sent(ran, "alpha", "monitoring", "policies", "create")}
    for name in (
        "ML Lab: predict 5xx rate",
        "ML Lab: predict p95 latency",
        "ML Lab: predict 429 surge",
        "ML Lab: prediction counts not written",
    ):
        (condition,) = sent[name]["conditions"]
        query = (condition.get("conditionThreshold") or condition["conditionMatchedLog"])["filter"]
        assert 'resource.labels.service_name = "predict"' in query, name


# --- a deployment on an S3-compatible store (STORAGE=s3) ---------------------------------------------

S3_ENDPOINT, S3_BUCKET = "https://0123abcd.r2.cloudflarestorage.com", "mllab-models"
S3_ARGS = ("--storage=s3", f"--s3-endpoint={S3_ENDPOINT}", f"--s3-bucket={S3_BUCKET}")


@pytest.fixture(scope="module")
def s3_env(workdir: Path) -> environment.Environment:
    return _environment(workdir / "deploy-s3", storage="s3", s3_endpoint=S3_ENDPOINT, s3_bucket=S3_BUCKET)


@pytest.fixture(scope="module")
def s3_steps(s3_env: environment.Environment) -> list[steps.Step]:
    return plan.build(s3_env)[0]


@pytest.fixture(scope="module")
def s3_ran(
    s3_steps: list[steps.Step],
    s3_env: environment.Environment,
    ran: dict[tuple[str, ...], Ran],
    fake: FakeGoogleApi,
    workdir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, ...], Ran]:
    """Each gcloud command of the S3 plan -> its run: its own, or that of the GCS plan's command of the
    same shape (gcloud parses them alike), so only what is new here runs again."""
    commands = _gcloud_commands(s3_steps)
    commands.append(secret_steps.read_secret(s3_env, config.S3_CREDENTIALS))  # the CORS step's token
    assert set(_scripts(s3_env, workdir, *S3_ARGS)) <= set(commands), "the scripts run only commands of the plan"
    tree = _command_tree()
    covered = {shape(argv, tree): r for argv, r in ran.items()}
    new = [argv for argv in commands if shape(argv, tree) not in covered]
    stdin = {_substitute(s.argv): b"not-a-real-secret" for s in s3_steps if s.stdin}
    fresh = _run_all(new, fake, workdir, tmp_path_factory.mktemp("gcloud-config-s3"), stdin)
    by_shape = {**covered, **{shape(argv, tree): r for argv, r in fresh.items()}}
    return {argv: by_shape[shape(argv, tree)] for argv in commands}


def test_gcloud_accepts_every_command_of_the_s3_deployment(s3_ran: dict[tuple[str, ...], Ran]) -> None:
    refused = [str(r) for r in s3_ran.values() if r.returncode == 2 or PARSE_ERRORS.search(r.stderr)]
    assert not refused, "gcloud refused these commands:\n" + "\n".join(refused)
    silent = [str(r) for r in s3_ran.values() if not r.requests and r.argv != RULES_TOKEN]
    assert not silent, "these commands sent no request:\n" + "\n".join(silent)
    wrong = _other_projects(s3_ran.values())
    assert not wrong, "requests for another project:\n" + "\n".join(wrong)


def test_the_s3_plan_runs_no_gcs_data_bucket_command(s3_ran: dict[tuple[str, ...], Ran]) -> None:
    assert not [
        a for a in s3_ran if "notifications" in a or "service-agent" in a or f"{TARGET}-mllab-data" in " ".join(a)
    ]
    assert [a for a in s3_ran if "gs://mllab-target-mllab-lab" in a]  # the lab's bucket is still made


def _environment_of(body: dict[str, Any]) -> dict[str, str]:
    return body["serviceConfig"].get("environmentVariables", {})


@pytest.mark.parametrize("fn", routes.for_store("s3"), ids=lambda f: f.name)
def test_each_s3_function_is_created_with_the_stores_settings_and_its_credentials_only_where_used(
    s3_ran: dict[tuple[str, ...], Ran], s3_env: environment.Environment, fn: routes.Function
) -> None:
    body = _created_function(s3_ran, fn.name)
    service = body["serviceConfig"]
    mounted = {v["secret"]: v["mountPath"] for v in service.get("secretVolumes", [])}
    assert mounted == {s: access.mount_path(s).rsplit("/", 1)[0] for s in access.reads(s3_env, fn.name)}
    store_user = fn in routes.store_functions("s3")
    assert (config.S3_CREDENTIALS in mounted) == store_user, fn.name
    assert not service.get("secretEnvironmentVariables"), "secrets are files, never environment variables"
    settings = _environment_of(body)
    assert settings["MLLAB_STORAGE"] == "s3" and settings["MLLAB_S3_ENDPOINT"] == S3_ENDPOINT
    assert settings["MLLAB_BUCKET"] == S3_BUCKET and settings["MLLAB_S3_REGION"] == "auto"
    assert not [v for v in settings.values() if "secret_access_key" in v]
    if fn.trigger is routes.Trigger.PUBSUB:
        trigger = body["eventTrigger"]
        assert trigger["pubsubTopic"] == f"projects/{TARGET}/topics/{s3_env.topics[fn.topic or '']}"
        assert trigger["serviceAccountEmail"] == s3_env.invoker


def _job_created(r: Ran) -> dict[str, Any]:
    """The job a `scheduler jobs create` command sends (its POST to .../jobs)."""
    posts = [q.json() for q in r.requests if q.method == "POST" and q.path.split("?")[0].endswith("/jobs")]
    assert posts, f"no job was sent:\n{r}\n" + "\n".join(f"{q.method} {q.api}{q.path}" for q in r.requests)
    return posts[0]


def test_the_sweep_is_scheduled_on_the_target_projects_topic(
    s3_ran: dict[tuple[str, ...], Ran], s3_env: environment.Environment
) -> None:
    jobs = {
        argv[5]: _job_created(r) for argv, r in s3_ran.items() if argv[1:5] == ("scheduler", "jobs", "create", "pubsub")
    }
    sweep = jobs["mllab-upload-sweep"]
    assert sweep["pubsubTarget"]["topicName"] == f"projects/{TARGET}/topics/upload-sweep"
    assert sweep["schedule"] == function_steps.SWEEP_SCHEDULE[0] == "*/10 * * * *"
    assert sweep["timeZone"] == "Etc/UTC"
    assert sorted(job["pubsubTarget"]["topicName"] for job in jobs.values()) == sorted(
        f"projects/{TARGET}/topics/{s3_env.topics[f]}" for f in function_steps.schedules(s3_env)
    )
