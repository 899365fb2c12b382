"""The deployment plan (infra/deploy.py + infra/deployment/): every function with its flags, every
resource kind, the order, no secret value anywhere, offline, one environment per project, clear usage
errors, idempotent apply through a fake runner, the URL map agreeing with the local gateway, and the
Cloud Build file."""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from werkzeug.test import Client

from mllab.api import http, routes
from mllab.files import storage
from mllab.identity import schemas, tokens
from mllab.platform import config
from tests.unit.helpers import REPO

sys.path.insert(0, str(REPO / "infra"))

import deploy as deploy_cli  # noqa: E402  (infra/deploy.py)
from deployment import access, environment, files, function_steps, lab, plan, sizing, steps, urlmap  # noqa: E402
from deployment.steps import Completed, Step  # noqa: E402

PROJECT, REGION, DOMAIN = "demo-proj", "europe-west1", "example.com"
ARGS = [f"--project={PROJECT}", f"--region={REGION}", f"--domain={DOMAIN}"]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def env(out: Path) -> environment.Environment:
    return environment.make(PROJECT, REGION, DOMAIN, out=out)


@pytest.fixture(scope="module")
def built(env: environment.Environment) -> tuple[list[Step], files.Files]:
    return plan.build(env)


@pytest.fixture(scope="module")
def all_steps(built: tuple[list[Step], files.Files]) -> list[Step]:
    return built[0]


@pytest.fixture(scope="module")
def text(env: environment.Environment, all_steps: list[Step]) -> str:
    return steps.render_plan(all_steps, plan.header(env))


def commands(all_steps: Sequence[Step]) -> list[tuple[str, ...]]:
    """Every command the plan may run: the steps', their probes' and their updates'."""
    found = []
    for step in all_steps:
        found += [step.argv] if step.argv else []
        found += [step.probe.argv] if step.probe else []
        found += [step.update] if step.update else []
    return found


def first(all_steps: Sequence[Step], *words: str, flag: str = "") -> int:
    """Index of the first step whose command has these words in order (and, if given, this flag)."""
    for n, step in enumerate(all_steps):
        if _has(step.argv, words) and (not flag or flag in step.argv):
            return n
    raise AssertionError(f"no step runs {' '.join(words)} {flag}")


def _has(argv: Sequence[str], words: Sequence[str]) -> bool:
    return any(tuple(argv[i : i + len(words)]) == tuple(words) for i in range(len(argv)))


def deploy_step(all_steps: Sequence[Step], name: str) -> tuple[str, ...]:
    return all_steps[first(all_steps, "functions", "deploy", name)].argv


def flag(argv: Sequence[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) <= 1, (name, values)
    return values[0] if values else None


# --- every function, with its flags ---------------------------------------------------------------


@pytest.mark.parametrize("fn", environment.FUNCTIONS, ids=lambda f: f.name)
def test_every_function_is_deployed_gen2_from_its_staged_folder(all_steps: list[Step], fn: routes.Function) -> None:
    argv = deploy_step(all_steps, fn.name)
    assert "--gen2" in argv and flag(argv, "runtime") == "python312" and flag(argv, "region") == REGION
    assert flag(argv, "source") == f"build/{fn.name}" and flag(argv, "entry-point") == fn.name
    assert flag(argv, "service-account") == f"fn-{fn.name.replace('_', '-')}@{PROJECT}.iam.gserviceaccount.com"
    assert flag(argv, "project") == PROJECT
    size = sizing.SIZING[fn.name]
    assert (
        flag(argv, "memory"),
        flag(argv, "cpu"),
        flag(argv, "concurrency"),
        flag(argv, "min-instances"),
        flag(argv, "max-instances"),
        flag(argv, "timeout"),
    ) == (size.memory, size.cpu, str(size.concurrency), str(size.min_instances), str(size.max_instances), size.timeout)
    # concurrency above 1 needs a whole vCPU on Cloud Run
    assert size.concurrency == 1 or float(size.cpu) >= 1
    assert size.min_instances <= size.max_instances and size.why


@pytest.mark.parametrize("fn", environment.FUNCTIONS, ids=lambda f: f.name)
def test_ingress_and_invokers_follow_the_trigger(all_steps: list[Step], fn: routes.Function) -> None:
    argv = deploy_step(all_steps, fn.name)
    if fn.trigger is routes.Trigger.HTTP:
        # a serverless NEG sends no identity token: ingress (load balancer only) is what closes run.app
        assert "--trigger-http" in argv and "--allow-unauthenticated" in argv
        assert flag(argv, "ingress-settings") == ("all" if fn.name == "paypal_webhook" else "internal-and-gclb")
        assert "--retry" not in argv
    else:
        settings = config.Settings()
        assert flag(argv, "trigger-topic") == getattr(settings, fn.topic or "")
        assert flag(argv, "ingress-settings") == "internal-only" and "--no-allow-unauthenticated" in argv
        invoker = f"mllab-events-invoker@{PROJECT}.iam.gserviceaccount.com"
        assert flag(argv, "trigger-service-account") == invoker
        binding = all_steps[first(all_steps, "functions", "add-invoker-policy-binding", fn.name)].argv
        assert flag(binding, "member") == f"serviceAccount:{invoker}"
        assert ("--retry" in argv) == (fn.name == "on_object_finalized")


def test_secrets_are_mounted_per_function_as_files(all_steps: list[Step]) -> None:
    for fn in environment.FUNCTIONS:
        argv = deploy_step(all_steps, fn.name)
        mounted = flag(argv, "set-secrets")
        expected = {f"/secrets/{s}/{s}={s}:latest" for s in access.READS[fn.name]}
        assert (set(mounted.split(",")) if mounted else set()) == expected
        assert ("--clear-secrets" in argv) == (not expected)


def _routes_of(name: str) -> tuple[routes.Route, ...]:
    return routes.for_function(name)


def test_signing_keys_go_only_to_the_functions_that_sign_tokens() -> None:
    signers = {r.function for r in routes.ROUTES if r.response is schemas.AccessTokenResponse}
    assert signers and set(access.readers(_env(), config.SIGNING_KEYS)) == signers


def test_every_function_gets_the_keys_its_routes_check() -> None:
    for fn in environment.FUNCTIONS:
        reads, table = set(access.READS[fn.name]), _routes_of(fn.name)
        if any(r.auth is routes.Auth.ACCESS_TOKEN for r in table) or fn.name == "jwks":
            assert config.PUBLIC_KEYS in reads, fn.name
        if any(r.csrf is routes.Csrf.SESSION or r.auth is routes.Auth.REFRESH_COOKIE for r in table):
            assert config.SESSION_KEYS in reads, fn.name


def _imports(tree: ast.AST) -> set[str]:
    """mllab modules a file imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mllab":
            # `from mllab.platform import config` names the module mllab.platform.config
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mllab"}
    return found


def _secrets_read(tree: ast.AST) -> set[str]:
    """Secret names passed as config.secret(config.NAME) in a module."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "secret"
            and node.args
            and isinstance(node.args[0], ast.Attribute)
        ):
            names.add(getattr(config, node.args[0].attr))
    return names


def _reachable_secrets(function: str) -> set[str]:
    library = REPO / "shared" / "mllab"
    trees = {
        ".".join(("mllab", *p.relative_to(library).with_suffix("").parts)): ast.parse(p.read_text())
        for p in library.rglob("*.py")
    }
    seen: set[str] = set()
    todo = list(_imports(ast.parse((REPO / "functions" / function / "main.py").read_text())))
    while todo:
        module = todo.pop()
        if module in seen or module not in trees:
            continue
        seen.add(module)
        todo += _imports(trees[module])
    return set().union(*(_secrets_read(trees[m]) for m in seen))


@pytest.mark.parametrize("fn", environment.FUNCTIONS, ids=lambda f: f.name)
def test_a_function_gets_only_secrets_its_code_can_read(fn: routes.Function) -> None:
    """Over-mounting check: every secret granted is read by a module the function can reach."""
    assert set(access.READS[fn.name]) <= _reachable_secrets(fn.name)


def test_the_secret_tables_cover_every_function_and_secret() -> None:
    assert set(access.READS) == {fn.name for fn in routes.FUNCTIONS} == set(sizing.SIZING)
    declared = {s.name for s in access.SECRETS}
    assert set().union(*map(set, access.READS.values())) <= declared
    local_only = {config.DEV_SIGNER}  # the local V4 signer: production signs through IAM signBlob
    readable = {
        getattr(config, n)
        for n in (
            "SIGNING_KEYS",
            "PUBLIC_KEYS",
            "SESSION_KEYS",
            "OAUTH_CLIENT_SECRET",
            "SMTP_URL",
            "PAYPAL_CLIENT",
            "PAYPAL_IDS",
        )
    }
    assert declared == readable and not declared & local_only


def test_a_mounted_secret_is_read_from_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud Run shadows a secret's whole mount folder, so each sits at /secrets/<name>/<name>."""
    mount = tmp_path / "secrets"
    (mount / config.SMTP_URL).mkdir(parents=True)
    (mount / config.SMTP_URL / config.SMTP_URL).write_text("smtps://u:p@mail.example.com:465")
    monkeypatch.setenv("MLLAB_SECRETS_DIR", str(mount))
    config.reload()
    assert config.secret(config.SMTP_URL) == "smtps://u:p@mail.example.com:465"
    assert access.mount_path(config.SMTP_URL) == f"/secrets/{config.SMTP_URL}/{config.SMTP_URL}"
    assert config.Settings().secrets_dir == Path("/secrets")


# --- every resource kind -----------------------------------------------------------------------------


def test_the_plan_enables_the_apis_first(all_steps: list[Step]) -> None:
    gcloud = [n for n, s in enumerate(all_steps) if s.argv[:1] == ("gcloud",)]
    enable = all_steps[gcloud[0]].argv
    assert enable[1:3] == ("services", "enable")
    for api in (
        "cloudfunctions",
        "run",
        "eventarc",
        "pubsub",
        "firestore",
        "secretmanager",
        "cloudscheduler",
        "compute",
        "monitoring",
        "iamcredentials",
        "billingbudgets",
        "firebaserules",
    ):
        assert f"{api}.googleapis.com" in enable


def test_the_serving_functions_only_read_the_bucket() -> None:
    assert access.BUCKET_ROLES["predict"] == access.BUCKET_ROLES["deployments"] == "roles/storage.objectViewer"
    assert routes.function("predict").uses == {"firestore", "storage"} and not access.READS["predict"]
    assert "predict" not in access.SIGNERS


def test_one_service_account_per_function_with_least_privilege(all_steps: list[Step]) -> None:
    bindings = [s.argv for s in all_steps if "add-iam-policy-binding" in s.argv]
    for fn in environment.FUNCTIONS:
        email = f"fn-{fn.name.replace('_', '-')}@{PROJECT}.iam.gserviceaccount.com"
        assert first(all_steps, "iam", "service-accounts", "create", f"fn-{fn.name.replace('_', '-')}") >= 0
        mine = [b for b in bindings if f"--member=serviceAccount:{email}" in b]
        roles = {flag(b, "role") for b in mine}
        project_roles = {flag(b, "role") for b in mine if b[1:3] == ("projects", "add-iam-policy-binding")}
        assert project_roles == ({"roles/datastore.user"} if "firestore" in fn.uses else set())
        bucket_roles = {(b[4], flag(b, "role")) for b in mine if b[1:3] == ("storage", "buckets")}
        assert bucket_roles == (
            {(f"gs://{PROJECT}-mllab-data", access.BUCKET_ROLES[fn.name])} if "storage" in fn.uses else set()
        )
        token_creator = [b for b in mine if flag(b, "role") == "roles/iam.serviceAccountTokenCreator"]
        if fn.name in access.SIGNERS:  # signBlob as itself: the binding is on its own account only
            assert [b[4] for b in token_creator] == [email]
        else:
            assert not token_creator
        secrets = {b[3] for b in mine if b[1:3] == ("secrets", "add-iam-policy-binding")}
        assert secrets == set(access.READS[fn.name])
        assert all(
            flag(b, "role") == "roles/secretmanager.secretAccessor"
            for b in mine
            if b[1:3] == ("secrets", "add-iam-policy-binding")
        )
        assert roles <= {
            "roles/datastore.user",
            "roles/storage.objectAdmin",
            "roles/storage.objectViewer",
            "roles/iam.serviceAccountTokenCreator",
            "roles/secretmanager.secretAccessor",
        }
    assert not [b for b in bindings if "roles/owner" in b or "roles/editor" in b]


def test_functions_are_built_by_a_dedicated_build_account_that_may_only_build(all_steps: list[Step]) -> None:
    builder = f"mllab-builder@{PROJECT}.iam.gserviceaccount.com"
    created = first(all_steps, "iam", "service-accounts", "create", "mllab-builder")
    for fn in environment.FUNCTIONS:
        assert (
            flag(deploy_step(all_steps, fn.name), "build-service-account")
            == f"projects/{PROJECT}/serviceAccounts/{builder}"
        )
    grants = [s.argv for s in all_steps if f"--member=serviceAccount:{builder}" in s.argv]
    assert all(g[1:3] == ("projects", "add-iam-policy-binding") for g in grants)
    assert {flag(g, "role") for g in grants} == {
        "roles/logging.logWriter",
        "roles/artifactregistry.writer",
        "roles/storage.objectViewer",
    }
    reader = [g for g in grants if flag(g, "role") == "roles/storage.objectViewer"][0]
    assert "gcf-v2-sources-" in (flag(reader, "condition") or ""), "source reads only, never the data bucket"
    assert created < first(all_steps, "functions", "deploy")
    role = all_steps[first(all_steps, "iam", "roles", "create", "mllabInvokerPolicy")].argv
    assert flag(role, "permissions") == "run.services.getIamPolicy,run.services.setIamPolicy"


def test_the_buckets_topics_and_notification(all_steps: list[Step], built: Any) -> None:
    data, site = f"gs://{PROJECT}-mllab-data", f"gs://{PROJECT}-mllab-lab"
    create = all_steps[first(all_steps, "storage", "buckets", "create", data)].argv
    assert "--uniform-bucket-level-access" in create and "--public-access-prevention" in create
    update = all_steps[first(all_steps, "storage", "buckets", "update", data)].argv
    cors = _path(flag(update, "cors-file")).read_text()
    assert cors == storage.cors_file(f"https://lab.{DOMAIN}")
    lifecycle = json.loads(_path(flag(update, "lifecycle-file")).read_text())
    assert {"type": "AbortIncompleteMultipartUpload"} in [r["action"] for r in lifecycle["rule"]]
    assert first(all_steps, "storage", "buckets", "create", site) >= 0
    public = [s.argv for s in all_steps if "--member=allUsers" in s.argv]
    assert [p[4] for p in public] == [site]  # the lab's files only, never the data bucket
    settings = config.Settings()
    for topic in (settings.events_topic, settings.purge_topic, settings.reconcile_topic, "gcs-events-dead-letter"):
        assert first(all_steps, "pubsub", "topics", "create", topic) >= 0
    hold = all_steps[first(all_steps, "pubsub", "subscriptions", "create", "gcs-events-dead-letter-hold")].argv
    assert flag(hold, "topic") == "gcs-events-dead-letter"
    notification = all_steps[first(all_steps, "storage", "buckets", "notifications", "create", data)]
    note = notification.argv
    assert (
        flag(note, "project") == PROJECT and notification.probe and flag(notification.probe.argv, "project") == PROJECT
    )
    assert flag(note, "event-types") == "OBJECT_FINALIZE,OBJECT_DELETE"
    assert flag(note, "topic") == f"projects/{PROJECT}/topics/{settings.events_topic}"
    dead = all_steps[first(all_steps, "pubsub", "subscriptions", "update")].argv
    assert flag(dead, "dead-letter-topic") == "gcs-events-dead-letter" and flag(dead, "max-delivery-attempts")


def test_firestore_database_ttl_indexes_rules_and_recovery(all_steps: list[Step]) -> None:
    create = all_steps[first(all_steps, "firestore", "databases", "create")].argv
    assert flag(create, "type") == "firestore-native" and flag(create, "location") == REGION
    assert "--enable-pitr" in all_steps[first(all_steps, "firestore", "databases", "update")].argv
    assert first(all_steps, "firestore", "backups", "schedules", "create") >= 0
    ttl = json.loads((REPO / "infra" / "firestore" / "ttl.json").read_text())["ttl"]
    planned_ttl = {(s.argv[5], flag(s.argv, "collection-group")) for s in all_steps if _has(s.argv, ("ttls", "update"))}
    assert planned_ttl == {(t["field"], t["collectionGroup"]) for t in ttl}
    ttl_probes = [s.probe.argv for s in all_steps if _has(s.argv, ("ttls", "update")) and s.probe]
    assert len(ttl_probes) == len(ttl) and all(
        p[1:5] == ("firestore", "indexes", "fields", "describe") for p in ttl_probes
    )
    index_file = json.loads((REPO / "infra" / "firestore" / "firestore.indexes.json").read_text())["indexes"]
    planned = [s.argv for s in all_steps if _has(s.argv, ("indexes", "composite", "create"))]
    assert len(planned) == len(index_file)
    for index, argv in zip(index_file, planned, strict=True):
        assert flag(argv, "collection-group") == index["collectionGroup"]
        assert [a for a in argv if a.startswith("--field-config=")] == [
            f"--field-config=field-path={f['fieldPath']},order={f['order'].lower()}" for f in index["fields"]
        ]
    rules = all_steps[first(all_steps, "python3", "infra/firestore/rules.py")].argv
    assert flag(rules, "project") == PROJECT


def test_secrets_are_created_if_missing_and_filled_from_stdin(all_steps: list[Step]) -> None:
    for secret in access.SECRETS:
        create = all_steps[first(all_steps, "secrets", "create", secret.name)]
        assert create.probe and create.probe.argv[1:4] == ("secrets", "describe", secret.name)
        add = all_steps[first(all_steps, "secrets", "versions", "add", secret.name)]
        assert "--data-file=-" in add.argv and add.stdin is not None and add.probe is not None
        assert add.stdin.placeholder.startswith("<")


def test_the_load_balancer_cloud_armor_and_the_lab(all_steps: list[Step], built: Any) -> None:
    for fn in routes.http_functions():
        neg = all_steps[first(all_steps, "network-endpoint-groups", "create", f"mllab-{fn.name.replace('_', '-')}-neg")]
        assert "--network-endpoint-type=serverless" in neg.argv and flag(neg.argv, "cloud-function-name") == fn.name
        backend = f"mllab-{fn.name.replace('_', '-')}-backend"
        assert first(all_steps, "backend-services", "create", backend) < first(
            all_steps, "backend-services", "add-backend", backend
        )
        attach = all_steps[first(all_steps, "backend-services", "update", backend)].argv
        assert flag(attach, "security-policy") == "mllab-api-armor"
    assert not [
        s
        for s in all_steps
        if _has(s.argv, ("network-endpoint-groups", "create"))
        and flag(s.argv, "cloud-function-name") not in {f.name for f in routes.http_functions()}
    ]
    rules = [s.argv for s in all_steps if _has(s.argv, ("security-policies", "rules", "create"))]
    throttles = [r for r in rules if flag(r, "action") == "throttle"]
    assert {flag(r, "expression") for r in throttles} == {
        f"request.path.startsWith('{prefix}')" for prefix in ("/auth/", "/promo/", "/predict/")
    }
    assert all(flag(r, "enforce-on-key") == "IP" and flag(r, "exceed-action") == "deny-429" for r in throttles)
    certs = {flag(s.argv, "domains") for s in all_steps if _has(s.argv, ("ssl-certificates", "create"))}
    assert certs == {f"api.{DOMAIN}", f"lab.{DOMAIN}"}
    url_map = all_steps[first(all_steps, "url-maps", "import", "mllab-lb")].argv
    assert yaml.safe_load(_path(flag(url_map, "source")).read_text()) == urlmap.url_map(_env())
    proxy = all_steps[first(all_steps, "target-https-proxies", "create")].argv
    assert flag(proxy, "url-map") == "mllab-lb"
    assert first(all_steps, "addresses", "create") >= 0
    rule = all_steps[first(all_steps, "forwarding-rules", "create", "mllab-https-rule")].argv
    assert flag(rule, "ports") == "443" and flag(rule, "target-https-proxy") == "mllab-https-proxy"
    bucket = all_steps[first(all_steps, "backend-buckets", "create")].argv
    headers = [a.split("=", 1)[1] for a in bucket if a.startswith("--custom-response-header=")]
    assert f"Content-Security-Policy: {lab.csp(_env())}" in headers
    # the bucket stores the lab plain: Cloud CDN compresses it on the way out (the first-load budget is gzipped)
    assert {"--enable-cdn", "--compression-mode=AUTOMATIC"} <= set(bucket)
    sync = all_steps[first(all_steps, "storage", "rsync")].argv
    assert _path(sync[3]) == built[1].lab and sync[4] == f"gs://{PROJECT}-mllab-lab"


def _armor_rules(all_steps: list[Step]) -> dict[int, tuple[str, ...]]:
    """priority -> the rule's create command (the default rule, which exists already, by its update)."""
    return {
        int(s.argv[5]): s.argv
        for s in all_steps
        if _has(s.argv, ("security-policies", "rules")) and s.argv[4] in ("create", "update")
    }


def test_predict_is_throttled_per_address_with_429_and_the_policy_is_on_its_backend(all_steps: list[Step]) -> None:
    rules = _armor_rules(all_steps)
    (throttle,) = [r for r in rules.values() if flag(r, "expression") == "request.path.startsWith('/predict/')"]
    assert flag(throttle, "action") == "throttle" and flag(throttle, "enforce-on-key") == "IP"
    assert flag(throttle, "rate-limit-threshold-count") == "600"
    assert flag(throttle, "rate-limit-threshold-interval-sec") == "60"
    assert (flag(throttle, "conform-action"), flag(throttle, "exceed-action")) == ("allow", "deny-429")
    attach = all_steps[first(all_steps, "backend-services", "update", "mllab-predict-backend")].argv
    assert flag(attach, "security-policy") == flag(throttle, "security-policy") == "mllab-api-armor"
    # the throttle's rule exists before the backend takes the policy
    assert first(all_steps, "rules", "create", "1200") < first(all_steps, "backend-services", "update")


def test_a_predict_body_over_the_limit_is_refused_before_any_throttle_lets_it_through(all_steps: list[Step]) -> None:
    rules = _armor_rules(all_steps)
    (guard,) = [r for r in rules.values() if "content-length" in (flag(r, "expression") or "")]
    assert flag(guard, "action") == "deny-403"
    expression = flag(guard, "expression") or ""
    assert expression.startswith("request.path.startsWith('/predict/') && ")
    pattern = re.search(r"\.matches\('([^']+)'\)", expression)
    assert pattern is not None
    over = re.compile(pattern.group(1))
    limit = config.LIMITS.request_body_bytes
    for length in (0, 1, 999, limit - 1, limit, 10**6, *range(limit - 2000, limit + 1, 7)):
        assert not over.fullmatch(str(length)), length
    for length in (limit + 1, limit + 9, 2 * limit, 9_999_999, 10**7, 10**12, *range(limit + 1, limit + 3000, 11)):
        assert over.fullmatch(str(length)) and over.fullmatch(f"00{length}"), length
    assert not over.fullmatch("1e9") and not over.fullmatch("-5") and not over.fullmatch("")
    guard_priority = next(p for p, r in rules.items() if r is guard)
    throttles = [p for p, r in rules.items() if flag(r, "action") == "throttle"]
    assert guard_priority < min(throttles)  # Cloud Armor stops at the first match: a conforming throttle allows


def test_the_policy_default_rule_is_allow(all_steps: list[Step]) -> None:
    default = _armor_rules(all_steps)[2147483647]
    assert default[4] == "update" and flag(default, "action") == "allow"
    assert flag(default, "security-policy") == "mllab-api-armor"


@pytest.mark.parametrize("n", [0, 7, 9, 10, 99, 100, 1048576, 999, 1000, 123456789, 8888, 1999])
def test_the_digits_above_pattern_matches_exactly_the_larger_numbers(n: int) -> None:
    from deployment import edge

    over = re.compile(edge.digits_above(n))
    for m in {*range(max(0, n - 300), n + 300), n * 10, n * 10 + 9, 10 ** len(str(n)), 10 ** len(str(n)) - 1}:
        assert bool(over.fullmatch(str(m))) == (m > n), (n, m)


def test_the_share_page_has_a_backend_bucket_that_other_sites_may_frame(all_steps: list[Step]) -> None:
    def headers(name: str) -> dict[str, str]:
        argv = all_steps[first(all_steps, "backend-buckets", "create", name)].argv
        assert flag(argv, "gcs-bucket-name") == f"{PROJECT}-mllab-lab"  # the same files as the lab
        pairs = [a.split("=", 1)[1].split(": ", 1) for a in argv if a.startswith("--custom-response-header=")]
        return dict(pairs)

    lab_headers, share = headers("mllab-lab-backend"), headers("mllab-share-backend")
    assert _directives(lab_headers["Content-Security-Policy"])["frame-ancestors"] == "'none'"
    assert lab_headers["X-Frame-Options"] == "DENY"
    assert _directives(share["Content-Security-Policy"])["frame-ancestors"] == "*"
    assert "X-Frame-Options" not in share
    # apart from who may frame it, the share page is held to the lab's own policy
    same = lambda csp: {k: v for k, v in _directives(csp).items() if k != "frame-ancestors"}  # noqa: E731
    assert same(share["Content-Security-Policy"]) == same(lab_headers["Content-Security-Policy"])
    assert {k: v for k, v in share.items() if k != "Content-Security-Policy"} == {
        k: v for k, v in lab_headers.items() if k not in ("Content-Security-Policy", "X-Frame-Options")
    }
    update = all_steps[first(all_steps, "backend-buckets", "create", "mllab-share-backend")].update
    assert update and "--custom-response-header=X-Frame-Options: DENY" not in update


def _env() -> environment.Environment:
    return environment.make(PROJECT, REGION, DOMAIN)


def _path(value: str | None) -> Path:
    assert value
    return Path(value) if Path(value).is_absolute() else REPO / value


def test_scheduler_jobs_publish_daily_to_the_function_topics(all_steps: list[Step]) -> None:
    settings = config.Settings()
    for topic in (settings.purge_topic, settings.reconcile_topic):
        step = all_steps[first(all_steps, "scheduler", "jobs", "create", "pubsub", f"mllab-{topic}")]
        # the full name: a bare topic would be resolved in gcloud's active project
        assert (
            flag(step.argv, "topic") == f"projects/{PROJECT}/topics/{topic}" and flag(step.argv, "location") == REGION
        )
        minute, hour, day, month, weekday = (flag(step.argv, "schedule") or "").split()
        assert (day, month, weekday) == ("*", "*", "*")
        assert step.update and step.update[1:5] == ("scheduler", "jobs", "update", "pubsub")
        assert flag(step.update, "topic") == flag(step.argv, "topic")


def test_alerting_uptime_and_budget(all_steps: list[Step], built: Any) -> None:
    policies = [s for s in all_steps if _has(s.argv, ("monitoring", "policies", "create"))]
    documents = [json.loads(_path(flag(s.argv, "policy-from-file")).read_text()) for s in policies]
    metrics = " ".join(
        (c.get("conditionThreshold") or c["conditionMatchedLog"])["filter"] for d in documents for c in d["conditions"]
    )
    for metric in (
        "loadbalancing.googleapis.com/https/request_count",  # 5xx rate
        "loadbalancing.googleapis.com/https/backend_latencies",  # p95 latency
        "run.googleapis.com/request_count",  # webhook failures
        "pubsub.googleapis.com/subscription/num_undelivered_messages",
    ):  # dead-lettered events
        assert metric in metrics
    for policy in documents:
        assert policy["displayName"].startswith("ML Lab: ") and "${" not in json.dumps(policy)
    assert '"paypal-webhook"' in metrics and '"gcs-events-dead-letter-hold"' in metrics and '"mllab-lb"' in metrics
    uptime = all_steps[first(all_steps, "monitoring", "uptime", "create")].argv
    assert f"--resource-labels=host=api.{DOMAIN},project_id={PROJECT}" in uptime
    budget = all_steps[first(all_steps, "billing", "budgets", "create")]
    assert flag(budget.argv, "billing-account") == "<BILLING_ACCOUNT>" and "BILLING_ACCOUNT" in budget.skip
    assert flag(budget.argv, "filter-projects") == f"projects/{PROJECT}"
    # the Budget API's quota is billed to this project in every budget command, never gcloud's active one
    for argv in (budget.argv, budget.probe.argv if budget.probe else (), budget.update or ()):
        assert flag(argv, "billing-project") == PROJECT


def _policies(all_steps: list[Step]) -> dict[str, dict]:
    """displayName -> the alert policy document each create step reads."""
    found = [s for s in all_steps if _has(s.argv, ("monitoring", "policies", "create"))]
    documents = [json.loads(_path(flag(s.argv, "policy-from-file")).read_text()) for s in found]
    return {d["displayName"]: d for d in documents}


def _predict_condition(policy: dict) -> dict:
    (condition,) = policy["conditions"]
    threshold = condition["conditionThreshold"]
    assert 'resource.type = "cloud_run_revision" AND resource.labels.service_name = "predict"' in threshold["filter"]
    return threshold


def test_predict_alerts_on_its_5xx_ratio(all_steps: list[Step]) -> None:
    ratio = _predict_condition(_policies(all_steps)["ML Lab: predict 5xx rate"])
    assert ratio["filter"].endswith(
        'metric.type = "run.googleapis.com/request_count" AND metric.labels.response_code_class = "5xx"'
    )
    # over every predict answer: the same metric and service without the class
    assert ratio["denominatorFilter"] == ratio["filter"].rsplit(" AND metric.labels", 1)[0]
    assert (ratio["comparison"], ratio["thresholdValue"], ratio["duration"]) == ("COMPARISON_GT", 0.02, "300s")


def test_predict_alerts_on_its_p95_latency_over_budget(all_steps: list[Step]) -> None:
    latency = _predict_condition(_policies(all_steps)["ML Lab: predict p95 latency"])
    assert 'metric.type = "run.googleapis.com/request_latencies"' in latency["filter"]
    assert latency["aggregations"][0]["crossSeriesReducer"] == "REDUCE_PERCENTILE_95"
    assert (latency["comparison"], latency["thresholdValue"]) == ("COMPARISON_GT", 2000)  # ms, the metric's unit


def test_predict_alerts_on_a_surge_of_429(all_steps: list[Step]) -> None:
    policy = _policies(all_steps)["ML Lab: predict 429 surge"]
    surge = _predict_condition(policy)
    assert surge["filter"].endswith('metric.labels.response_code = "429"')
    assert surge["aggregations"][0]["perSeriesAligner"] == "ALIGN_DELTA"
    assert surge["thresholdValue"] == 200 and surge["aggregations"][0]["alignmentPeriod"] == "600s"
    assert "quota-exceeded" in policy["documentation"]["content"]


def test_unwritten_prediction_counts_alert_on_the_metering_log_line(all_steps: list[Step]) -> None:
    from mllab.serving import metering

    policy = _policies(all_steps)["ML Lab: prediction counts not written"]
    (condition,) = policy["conditions"]
    query = condition["conditionMatchedLog"]["filter"]
    assert 'resource.labels.service_name = "predict"' in query and "severity >= WARNING" in query
    assert f'jsonPayload.message : "{metering.FLUSH_FAILED}"' in query  # the line metering writes, and its at-exit form


def test_alert_policy_updates_set_their_channel_with_the_update_flag(tmp_path: Path) -> None:
    env = environment.make(PROJECT, REGION, DOMAIN, out=tmp_path, alert_email="ops@example.com")
    policies = [s for s in plan.build(env)[0] if _has(s.argv, ("monitoring", "policies", "create"))]
    assert policies
    for step in policies:
        assert flag(step.argv, "notification-channels") == "${ALERT_CHANNEL}"
        assert step.update and flag(step.update, "set-notification-channels") == "${ALERT_CHANNEL}"
        assert flag(step.update, "notification-channels") is None


def test_a_billing_account_makes_the_budget_real(tmp_path: Path) -> None:
    env = environment.make(PROJECT, REGION, DOMAIN, out=tmp_path, billing_account="012345-6789AB-CDEF01")
    budget = [s for s in plan.build(env)[0] if _has(s.argv, ("budgets", "create"))][0]
    assert flag(budget.argv, "billing-account") == "012345-6789AB-CDEF01" and not budget.skip


# --- order ---------------------------------------------------------------------------------------


def test_order_constraints(all_steps: list[Step]) -> None:
    at = lambda *words, **kw: first(all_steps, *words, **kw)  # noqa: E731
    stage = at("python3", "infra/stage.py")
    apis = at("services", "enable")
    assert stage < apis and all(s.argv[:1] != ("gcloud",) for s in all_steps[:apis])
    bindings = [n for n, s in enumerate(all_steps) if "add-iam-policy-binding" in s.argv]
    accounts = [n for n, s in enumerate(all_steps) if _has(s.argv, ("service-accounts", "create"))]
    assert max(accounts) < min(bindings)
    data = f"gs://{PROJECT}-mllab-data"
    notification = at("notifications", "create")
    assert at("buckets", "create", data) < notification and at("topics", "create", "gcs-events") < notification
    assert at("topics", "create", "gcs-events-dead-letter") < at("subscriptions", "create")
    db = at("firestore", "databases", "create")
    assert db < at("indexes", "composite", "create") and db < at("ttls", "update")
    secrets_done = max(n for n, s in enumerate(all_steps) if s.section == "Secrets")
    deploys = [n for n, s in enumerate(all_steps) if _has(s.argv, ("functions", "deploy"))]
    assert secrets_done < min(deploys)
    gate = [n for n, s in enumerate(all_steps) if s.gate]
    assert len(gate) == 1 and gate[0] < min(deploys)
    for fn in routes.http_functions():
        assert at("functions", "deploy", fn.name) < at(
            "network-endpoint-groups", "create", f"mllab-{fn.name.replace('_', '-')}-neg"
        )
    negs = [n for n, s in enumerate(all_steps) if _has(s.argv, ("network-endpoint-groups", "create"))]
    url_map = at("url-maps", "import", "mllab-lb")
    assert max(negs) < url_map and at("backend-buckets", "create") < url_map
    assert max(n for n, s in enumerate(all_steps) if _has(s.argv, ("add-backend",))) < url_map
    proxy = at("target-https-proxies", "create")
    assert url_map < proxy and at("ssl-certificates", "create") < proxy and at("ssl-policies", "create") < proxy
    assert proxy < at("forwarding-rules", "create", "mllab-https-rule") and at("addresses", "create") < at(
        "forwarding-rules", "create", "mllab-https-rule"
    )
    armor = at("security-policies", "create")
    assert armor < at("security-policies", "rules", "create") < at("backend-services", "update")
    assert at("functions", "deploy", "on_object_finalized") < at("pubsub", "subscriptions", "update")
    for topic in ("account-purge", "billing-reconcile"):
        assert at("topics", "create", topic) < at("scheduler", "jobs", "create", "pubsub", f"mllab-{topic}")
    assert at("buckets", "create", f"gs://{PROJECT}-mllab-lab") < at("storage", "rsync")


# --- no secret value anywhere ----------------------------------------------------------------------


def _local_secret_values() -> list[str]:
    """Every development secret value, and the private parts inside the JSON ones."""
    folder = config.ensure_local_secrets()
    values = []
    for path in folder.iterdir():
        raw = path.read_text()
        values.append(raw.strip())
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        for key in doc.get("keys", []) if isinstance(doc.get("keys"), list) else []:
            values += [key[m] for m in ("d",) if m in key]
        if isinstance(doc.get("keys"), dict):
            values += list(doc["keys"].values())
        values += [doc[k] for k in ("client_secret", "private_key") if k in doc]
    return [v for v in values if len(v) >= 12]


def test_no_secret_value_appears_in_the_plan_or_its_files(env: environment.Environment, text: str) -> None:
    values = _local_secret_values()
    assert values
    written = [p.read_text(errors="replace") for p in env.files.rglob("*") if p.is_file() and "vendor" not in p.parts]
    for value in values:
        assert value not in text
        assert not [w for w in written if value in w]
    for secret in access.SECRETS:  # each value a plan mentions is a placeholder
        assert f"| gcloud secrets versions add {secret.name} --data-file=-" in text


def test_the_plan_makes_no_network_or_subprocess_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the plan must stay offline: {args[:1]}")

    for target, name in (
        (subprocess, "run"),
        (subprocess, "Popen"),
        (subprocess, "check_output"),
        (socket, "create_connection"),
        (socket.socket, "connect"),
        (urllib.request, "urlopen"),
        (httpx, "request"),
        (httpx.Client, "send"),
    ):
        monkeypatch.setattr(target, name, refuse)
    assert deploy_cli.main(["plan", *ARGS, f"--out={tmp_path}"]) == 0
    printed = capsys.readouterr().out
    assert "gcloud functions deploy jwks" in printed and "gcloud compute url-maps import mllab-lb" in printed


# --- one environment per project -------------------------------------------------------------------


def test_two_projects_share_no_resource(env: environment.Environment, all_steps: list[Step], tmp_path: Path) -> None:
    other = environment.make("prod-lab-1", REGION, DOMAIN, out=tmp_path)
    other_steps = plan.build(other)[0]
    for mine, project in ((all_steps, PROJECT), (other_steps, "prod-lab-1")):
        scoped = (
            f"--project={project}",
            f"gs://{project}-",
            f"projects/{project}",
            f"@{project}.",
            f"={project}",
            f"{project}/",
            f"{project}\"",
        )  # a budget is found by its display name
        foreign = "prod-lab-1" if project == PROJECT else PROJECT
        for argv in commands(mine):
            if argv[:1] != ("gcloud",):
                continue
            joined = " ".join(argv)
            # (a ${NAME} is what a project-scoped probe found: the budget's update uses the probed budget)
            assert project in argv or any(s in joined for s in scoped) or "${" in joined, joined
            assert foreign not in joined, joined
    buckets = lambda s: {a for argv in commands(s) for a in argv if a.startswith("gs://")}  # noqa: E731
    assert buckets(all_steps) and not buckets(all_steps) & buckets(other_steps)
    assert env.files != other.files


# --- usage ---------------------------------------------------------------------------------------


def test_missing_arguments_fail_with_a_clear_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert deploy_cli.main(["plan", f"--project={PROJECT}", f"--out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "missing REGION, DOMAIN" in err and "make deploy-plan PROJECT=" in err
    assert deploy_cli.main(["plan", *ARGS[:2], "--domain=Example.com/x", f"--out={tmp_path}"]) == 2
    assert "DOMAIN 'Example.com/x'" in capsys.readouterr().err
    assert deploy_cli.main(["plan", *ARGS, "--billing-account=nope", f"--out={tmp_path}"]) == 2
    assert "BILLING_ACCOUNT" in capsys.readouterr().err
    assert deploy_cli.main(["apply", "--project=real-proj-1", *ARGS[1:], f"--out={tmp_path}"]) == 2
    assert "OAUTH_CLIENT_ID is needed" in capsys.readouterr().err
    assert deploy_cli.main(["apply", *ARGS, "--oauth-client-id=x.apps", f"--out={tmp_path}"]) == 2
    assert "demo- ids are emulator-only" in capsys.readouterr().err


def test_make_deploy_plan_prints_the_plan(tmp_path: Path) -> None:
    # -o: never rebuild .venv from here, even if the pins changed since it was built
    make = ["make", "--no-print-directory", "-o", ".venv/.installed", "deploy-plan"]
    done = subprocess.run(
        [*make, f"PROJECT={PROJECT}", f"REGION={REGION}", f"DOMAIN={DOMAIN}", f"DEPLOY_OUT={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for fn in environment.FUNCTIONS:
        assert f"gcloud functions deploy {fn.name} --gen2" in done.stdout
    assert (tmp_path / PROJECT / "url-map.yaml").is_file()
    missing = subprocess.run([*make, f"PROJECT={PROJECT}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "missing REGION DOMAIN" in missing.stderr and not missing.stdout


# --- apply: idempotent, through a fake runner -------------------------------------------------------


@dataclass
class Call:
    argv: tuple[str, ...]
    stdin: bytes | None


def _pattern(template: Sequence[str]) -> list[re.Pattern[str]]:
    return [re.compile(re.sub(r"\\\$\\\{[A-Z0-9_]+\\\}", ".+", re.escape(a))) for a in template]


def _matches(patterns: list[re.Pattern[str]], argv: Sequence[str]) -> bool:
    return len(patterns) == len(argv) and all(p.fullmatch(a) for p, a in zip(patterns, argv, strict=True))


CAPTURED = {
    "PROJECT_NUMBER": "123456789012",
    "GCS_AGENT": "service-123456789012@gs-project-accounts.iam.gserviceaccount.com",
    "TRIGGER": f"projects/{PROJECT}/locations/{REGION}/triggers/on-object-finalized-1",
    "TRIGGER_SUBSCRIPTION": f"projects/{PROJECT}/subscriptions/eventarc-{REGION}-on-object-finalized-1-sub-1",
    "ALERT_CHANNEL": f"projects/{PROJECT}/notificationChannels/42",
    "LB_ADDRESS": "203.0.113.7",
}


class FakeCloud:
    """Records every command; probes answer "not found" in round 1 and "exists" in round 2."""

    def __init__(self, plan_steps: Sequence[Step], private_set: dict[str, Any]) -> None:
        self.round = 1
        self.calls: list[Call] = []
        self.probes = [(_pattern(s.probe.argv), s.probe) for s in plan_steps if s.probe]
        self.captures = [(_pattern(s.argv), s.capture) for s in plan_steps if s.capture]
        self.private_set = private_set

    def __call__(self, argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False) -> Completed:
        self.calls.append(Call(tuple(argv), stdin))
        found = [probe for patterns, probe in self.probes if _matches(patterns, argv)]
        if found and self.round == 1:
            return Completed(1, "", "NOT_FOUND")
        if found and found[0].matches:  # one list command probes every index: it lists them all
            return Completed(0, json.dumps([i for p in found for i in json.loads(p.example)]))
        if found:
            return Completed(0, found[0].example + "\n")
        for patterns, name in self.captures:
            if _matches(patterns, argv):
                return Completed(0, CAPTURED[name or ""] + "\n")
        if tuple(argv[1:4]) == ("secrets", "versions", "access"):
            return Completed(0, json.dumps(self.private_set))
        return Completed(0, "")


@pytest.fixture
def operator_secrets(tmp_path: Path) -> dict[str, str]:
    values = {
        config.OAUTH_CLIENT_SECRET: "oauth-secret-value-0123456789",
        config.SMTP_URL: "smtps://mailer:smtp-password-0123456789@mail.example.com:465",
        config.PAYPAL_CLIENT: json.dumps(
            {"client_id": "paypal-client-id-42", "client_secret": "paypal-client-secret-0123456789"}
        ),
        config.PAYPAL_IDS: json.dumps({"product_id": "PROD-1", "plan_id": "P-1", "webhook_id": "WH-1"}),
    }
    folder = tmp_path / "held"
    folder.mkdir()
    for name, value in values.items():
        (folder / name).write_text(value)
    return values


def _apply_env(tmp_path: Path, operator_secrets: dict[str, str]) -> environment.Environment:
    return environment.make(
        "real-proj-1",
        REGION,
        DOMAIN,
        out=tmp_path / "out",
        oauth_client_id="1234-abc.apps",
        billing_account="012345-6789AB-CDEF01",
        alert_email="ops@example.com",
        secrets_from=tmp_path / "held",
    )


def test_a_second_apply_creates_nothing(
    tmp_path: Path, operator_secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"a real command ran: {a[:1]}"))
    env = _apply_env(tmp_path, operator_secrets)
    plan_steps = plan.build(env)[0]
    cloud = FakeCloud(plan_steps, tokens.new_key_set())
    steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    created = [c.argv for c in cloud.calls if "create" in c.argv]
    assert any(_has(a, ("functions", "deploy")) for a in (c.argv for c in cloud.calls))
    for kind in (
        ("iam", "service-accounts"),
        ("storage", "buckets"),
        ("pubsub", "topics"),
        ("firestore", "databases"),
        ("secrets",),
        ("scheduler", "jobs"),
        ("network-endpoint-groups",),
        ("security-policies",),
        ("monitoring", "policies"),
        ("billing", "budgets"),
        ("monitoring", "channels"),
    ):
        assert any(_has(a, kind) for a in created), kind
    first_round = len(cloud.calls)

    cloud.round = 2
    steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    second = [c.argv for c in cloud.calls[first_round:]]
    assert not [a for a in second if "create" in a or "add-backend" in a or _has(a, ("versions", "add"))]
    # what changed is still updated: functions redeployed, scheduler jobs and armor rules updated
    assert len([a for a in second if _has(a, ("functions", "deploy"))]) == len(environment.FUNCTIONS)
    assert [a for a in second if _has(a, ("scheduler", "jobs", "update"))]
    assert [a for a in second if _has(a, ("security-policies", "rules", "update"))]
    assert [a for a in second if _has(a, ("policies", "update")) and "exists" in a]  # the probed policy's id


def test_apply_passes_secret_values_only_on_stdin(
    tmp_path: Path, operator_secrets: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = _apply_env(tmp_path, operator_secrets)
    plan_steps = plan.build(env)[0]
    private = tokens.new_key_set()
    cloud = FakeCloud(plan_steps, private)
    lines: list[str] = []
    steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lines.append)
    added = {c.argv[4]: c.stdin for c in cloud.calls if _has(c.argv, ("secrets", "versions", "add"))}
    assert set(added) == {s.name for s in access.SECRETS}
    assert all("--data-file=-" in c.argv for c in cloud.calls if _has(c.argv, ("versions", "add")))
    for name, value in operator_secrets.items():
        assert added[name] == value.encode()
    assert json.loads(added[config.PUBLIC_KEYS] or b"") == tokens.public_key_set(private)  # derived from the stored set
    generated = json.loads(added[config.SIGNING_KEYS] or b"")
    assert generated["keys"][0]["d"] and json.loads(added[config.SESSION_KEYS] or b"")["keys"]["1"]
    secret_values = [
        *operator_secrets.values(),
        "paypal-client-secret-0123456789",
        "smtp-password-0123456789",
        generated["keys"][0]["d"],
        private["keys"][0]["d"],
        json.loads(added[config.SESSION_KEYS] or b"")["keys"]["1"],
    ]
    argv_text = "\n".join(" ".join(c.argv) for c in cloud.calls)
    shown = "\n".join(lines) + capsys.readouterr().out
    for value in secret_values:
        assert value not in argv_text and value not in shown


def test_apply_stops_before_the_functions_when_a_secret_has_no_value(tmp_path: Path) -> None:
    env = environment.make("real-proj-1", REGION, DOMAIN, out=tmp_path / "out", oauth_client_id="1234-abc.apps")
    plan_steps = plan.build(env)[0]
    cloud = FakeCloud(plan_steps, tokens.new_key_set())
    with pytest.raises(steps.DeployError) as refused:
        steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    message = str(refused.value)
    for name in (config.OAUTH_CLIENT_SECRET, config.SMTP_URL, config.PAYPAL_CLIENT, config.PAYPAL_IDS):
        assert name in message
    assert (
        "mllab billing bootstrap --project real-proj-1 --webhook-url https://api.example.com/payments/paypal/webhook"
        in message
    )
    assert not [c for c in cloud.calls if _has(c.argv, ("functions", "deploy"))]


def test_optional_steps_are_skipped_without_their_values(tmp_path: Path, operator_secrets: dict[str, str]) -> None:
    env = environment.make(
        "real-proj-1",
        REGION,
        DOMAIN,
        out=tmp_path / "out",
        oauth_client_id="1234-abc.apps",
        secrets_from=tmp_path / "held",
    )
    plan_steps = plan.build(env)[0]
    cloud = FakeCloud(plan_steps, tokens.new_key_set())
    steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    assert [c for c in cloud.calls if _has(c.argv, ("monitoring", "policies", "create"))]
    assert not [c for c in cloud.calls if _has(c.argv, ("budgets",)) or _has(c.argv, ("channels",))]
    assert not [c for c in cloud.calls if any(a.startswith("--notification-channels") for a in c.argv)]


def test_a_failed_step_stops_apply_and_names_it(tmp_path: Path, operator_secrets: dict[str, str]) -> None:
    env = _apply_env(tmp_path, operator_secrets)
    plan_steps = plan.build(env)[0]
    cloud = FakeCloud(plan_steps, tokens.new_key_set())

    def failing(argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False) -> Completed:
        if _has(argv, ("functions", "deploy", "catalog")):
            return Completed(1, "", "ERROR: (gcloud.functions.deploy) build failed")
        return cloud(argv, stdin=stdin, capture=capture)

    with pytest.raises(steps.DeployError, match=r"Deploy catalog .*\n\$ gcloud functions deploy catalog .*\nERROR"):
        steps.apply(plan_steps, steps.Context(env=env, runner=failing), log=lambda line: None)
    assert not [c for c in cloud.calls if _has(c.argv, ("functions", "deploy", "signed_urls"))]


def _grant_step(env: environment.Environment) -> Step:
    return [s for s in plan.build(env)[0] if _has(s.argv, ("projects", "add-iam-policy-binding"))][0]


def test_a_grant_to_a_new_account_is_tried_again_with_backoff_until_iam_knows_it(tmp_path: Path) -> None:
    env = environment.make("real-proj-1", REGION, DOMAIN, out=tmp_path / "out")
    grant, calls, waits, lines = _grant_step(env), [], [], []

    def propagating(argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False) -> Completed:
        calls.append(tuple(argv))
        if len(calls) < 3:
            return Completed(1, "", "ERROR: INVALID_ARGUMENT: Service account fn-x@real-proj-1.iam... does not exist.")
        return Completed(0, "bindings: ...")

    steps.apply(
        [grant], steps.Context(env=env, runner=propagating, sleep=waits.append, log=lines.append), log=lines.append
    )
    assert calls == [grant.argv] * 3 and waits == [5, 10]
    assert sum("again in" in line for line in lines) == 2


def test_retries_are_bounded_and_only_for_propagation_errors(tmp_path: Path) -> None:
    env = environment.make("real-proj-1", REGION, DOMAIN, out=tmp_path / "out")
    grant, waits = _grant_step(env), []
    never = lambda argv, *, stdin=None, capture=False: Completed(1, "", "NOT_FOUND: does not exist")  # noqa: E731
    with pytest.raises(steps.DeployError, match="does not exist"):
        steps.apply(
            [grant], steps.Context(env=env, runner=never, sleep=waits.append, log=lambda _: None), log=lambda _: None
        )
    assert waits == list(steps.PROPAGATION_DELAYS_S) and sum(waits) <= 120
    waits.clear()
    denied = lambda argv, *, stdin=None, capture=False: Completed(1, "", "PERMISSION_DENIED: not allowed")  # noqa: E731
    with pytest.raises(steps.DeployError, match="PERMISSION_DENIED"):
        steps.apply(
            [grant], steps.Context(env=env, runner=denied, sleep=waits.append, log=lambda _: None), log=lambda _: None
        )
    assert waits == []
    creates = [s for s in plan.build(env)[0] if _has(s.argv, ("pubsub", "topics", "create"))][:1]
    fails = lambda argv, *, stdin=None, capture=False: Completed(1, "", "NOT_FOUND")  # noqa: E731
    with pytest.raises(steps.DeployError):
        steps.apply(
            creates, steps.Context(env=env, runner=fails, sleep=waits.append, log=lambda _: None), log=lambda _: None
        )
    assert waits == [], "only grants are retried"


# --- the URL map and the gateway come from the same route table -----------------------------------


def _sample(template: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "0123456789abcdef0123456789abcdef", template)


def _url_map_service(document: dict[str, Any], host: str, path: str) -> str:
    """The URL map's documented matching: host rule, then an exact path, else the longest `/prefix/*`."""
    matcher_name = next((r["pathMatcher"] for r in document["hostRules"] if host in r["hosts"]), None)
    if matcher_name is None:
        return document["defaultService"]
    matcher = next(m for m in document["pathMatchers"] if m["name"] == matcher_name)
    best, length = matcher["defaultService"], -1
    for rule in matcher.get("pathRules", []):
        for pattern in rule["paths"]:
            exact = pattern == path
            prefix = pattern.endswith("/*") and path.startswith(pattern[:-1])
            size = len(pattern) + (1000 if exact else 0)
            if (exact or prefix) and size > length:
                best, length = rule["service"], size
    return best


def _backend_function(env: environment.Environment, service: str) -> str:
    for fn in environment.FUNCTIONS:
        if service == env.backend_url(fn.name):
            return fn.name
    return service


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Client, list[str]]]:
    module = _gateway_module()
    ports = {fn.name: 9100 + n for n, fn in enumerate(environment.FUNCTIONS)}
    (tmp_path / "index.html").write_text("<!doctype html><title>lab</title>")
    app = module.Gateway({"frontend": str(tmp_path), "functions": ports, "components": []})
    reached: list[str] = []
    by_port = {port: name for name, port in ports.items()}

    def upstream(port: int, method: str, target: str, headers: Any, body: bytes) -> Any:
        reached.append(by_port[port])
        return module.upstream.Answer(200, [("Content-Type", "application/json")], b"{}")

    app.upstreams.request = upstream  # type: ignore[method-assign]
    yield Client(app), reached


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_the_url_map_and_the_gateway_route_each_route_to_its_function(
    route: routes.Route, gateway: tuple[Client, list[str]]
) -> None:
    env = _env()
    path = _sample(route.path)
    service = _url_map_service(urlmap.url_map(env), env.api_host, path)
    client, reached = gateway
    client.open(path, method=route.method, headers={"Content-Type": "application/json"}, data=b"{}")
    assert reached == [route.function]
    assert _backend_function(env, service) == route.function


def test_the_url_map_is_generated_from_the_route_table() -> None:
    env = _env()
    extra = routes.Route("GET", "/widgets/{id}/parts", "catalog", "a route only this test has")
    document = urlmap.url_map(env, (*routes.ROUTES, extra))
    assert _backend_function(env, _url_map_service(document, env.api_host, "/widgets/x/parts")) == "catalog"
    assert _url_map_service(urlmap.url_map(env), env.api_host, "/widgets/x/parts") == env.backend_url("jwks")
    clash = routes.Route("GET", "/models/{id}/other", "billing", "claims catalog's prefix")
    with pytest.raises(ValueError, match="both catalog and billing"):
        urlmap.path_rules((*routes.ROUTES, clash))
    served = {_backend_function(env, r["service"]) for r in document["pathMatchers"][0]["pathRules"]}
    assert served == {fn.name for fn in routes.http_functions()}


def _share_route(document: dict[str, Any], host: str, path: str) -> tuple[str, str] | None:
    """(service, rewritten path) when a route rule of the host's path matcher takes `path`: a
    `pathTemplateMatch` with single-segment variables ({name=*}: one non-empty segment) or a
    `fullPathMatch`, rewritten as the rule says (a template rewrite without variables is the path)."""
    matcher_name = next((r["pathMatcher"] for r in document["hostRules"] if host in r["hosts"]), None)
    matcher = next((m for m in document["pathMatchers"] if m["name"] == matcher_name), {})
    for rule in sorted(matcher.get("routeRules", []), key=lambda r: r["priority"]):
        for match in rule["matchRules"]:
            template = match.get("pathTemplateMatch")
            pattern = re.escape(template or "").replace(re.escape("{id=*}"), "[^/]+") if template else None
            if (pattern and re.fullmatch(pattern, path)) or match.get("fullPathMatch") == path:
                rewrite = rule["routeAction"]["urlRewrite"]
                return rule["service"], rewrite.get("pathTemplateRewrite") or rewrite["pathPrefixRewrite"]
    return None


def test_the_share_page_path_is_its_page_on_the_embeddable_backend() -> None:
    env = _env()
    document = urlmap.url_map(env)
    page = (env.share_backend_url, "/m/index.html")
    for path in ("/m/0123abcdEF", "/m/", "/m/index.html"):
        assert _share_route(document, env.lab_host, path) == page, path
    for path in ("/", "/index.html", "/m/a/b", "/lab.css", "/js/share.js", "/mx/0123"):
        assert _share_route(document, env.lab_host, path) is None, path
        assert _url_map_service(document, env.lab_host, path) == env.lab_backend_url
    assert _share_route(document, env.api_host, "/m/0123abcdEF") is None  # the API host has no share page
    # every path the URL map sends to the share page is one the local gateway serves it at, and back
    assert all(
        bool(http.SHARE_PAGE.fullmatch(p)) == (_share_route(document, env.lab_host, p) is not None)
        for p in ("/m/0123abcdEF", "/m/", "/m/a/b", "/m", "/x/m/1")
    )


def test_the_gateway_serves_the_share_page_at_its_path_with_the_embeddable_csp(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>lab</title>")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "index.html").write_text("<!doctype html><title>share</title>")
    client = Client(_gateway_module().Gateway({"frontend": str(tmp_path), "functions": {}, "components": []}))
    for path in ("/m/0123abcdEF", "/m/", "/m/?id=0123abcdEF", "/m/index.html"):
        r = client.get(path)
        assert r.status_code == 200 and b"<title>share</title>" in r.data, path
        assert _directives(r.headers["Content-Security-Policy"])["frame-ancestors"] == "*", path
        assert "X-Frame-Options" not in r.headers, path
    for path in ("/", "/lab.css", "/m/a/b"):
        r = client.get(path)
        assert _directives(r.headers["Content-Security-Policy"])["frame-ancestors"] == "'none'", path
        assert r.headers["X-Frame-Options"] == "DENY", path


def test_the_lab_host_and_unknown_hosts_get_the_lab() -> None:
    env = _env()
    document = urlmap.url_map(env)
    assert _url_map_service(document, env.lab_host, "/me") == env.lab_backend_url
    assert _url_map_service(document, "203.0.113.7", "/me") == env.lab_backend_url
    redirect = urlmap.http_redirect_map(env)["defaultUrlRedirect"]
    assert redirect["httpsRedirect"] is True


# --- the lab ---------------------------------------------------------------------------------------


def _directives(csp: str) -> dict[str, str]:
    return {part.split()[0]: " ".join(part.split()[1:]) for part in csp.split(";") if part.strip()}


def _gateway_module() -> Any:
    import importlib

    return importlib.import_module("mllab_dev.gateway")


def test_the_production_csp_differs_from_the_local_one_only_in_connect_src() -> None:
    local = _directives(_gateway_module().LAB_CSP)
    production = _directives(lab.csp(_env()))
    assert {k: v for k, v in local.items() if k != "connect-src"} == {
        k: v for k, v in production.items() if k != "connect-src"
    }
    assert production["connect-src"].split() == ["'self'", f"https://api.{DOMAIN}", "https://storage.googleapis.com"]
    # 'wasm-unsafe-eval' lets TF.js's WASM backend compile WebAssembly; JavaScript eval stays forbidden
    assert production["script-src"].split() == ["'self'", "'wasm-unsafe-eval'"]
    assert "'unsafe-eval'" not in lab.csp(_env()) and "unsafe-inline" not in production["script-src"]


def test_the_staged_lab_is_the_site_with_its_production_config(built: Any) -> None:
    staged = built[1].lab
    assert staged is not None, "frontend/vendor/ is missing: run make test (npm installs it)"
    assert json.loads((staged / "config.json").read_text()) == {
        "api_base": f"https://api.{DOMAIN}",
        "env": "production",
    }
    names = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert {"index.html", "lab.js", "config.json", "vendor/tf.es2017.min.js"} <= names
    assert not [n for n in names if n.split("/")[0] in lab.NOT_SERVED or "/." in f"/{n}"]
    assert lab.NOT_SERVED == _gateway_module().NOT_SERVED


# --- the functions' settings -------------------------------------------------------------------------


def test_the_env_file_is_a_valid_production_configuration(tmp_path: Path) -> None:
    env = environment.make("real-proj-1", REGION, DOMAIN, out=tmp_path, oauth_client_id="1234-abc.apps")
    values = yaml.safe_load(files.write(env).env_vars.read_text())
    settings = config.load({**{k: str(v) for k, v in values.items()}, "K_SERVICE": "catalog"})
    assert settings.is_production and settings.project == "real-proj-1" and settings.bucket == "real-proj-1-mllab-data"
    assert settings.oidc_client_id == "1234-abc.apps"
    assert settings.public_url == f"https://api.{DOMAIN}" and settings.cors_origins == (f"https://lab.{DOMAIN}",)
    assert (
        settings.oidc_issuer == "https://accounts.google.com" and settings.paypal_api_base == config.PAYPAL_SANDBOX_API
    )
    assert settings.mail_from == f"ML Lab <no-reply@{DOMAIN}>"
    live = environment.make(PROJECT, REGION, DOMAIN, paypal="live")
    assert files.function_env(live)["MLLAB_PAYPAL_API_BASE"] == config.PAYPAL_LIVE_API


def test_each_function_serves_as_many_requests_at_once_as_cloud_run_sends_it(tmp_path: Path) -> None:
    """functions-framework's THREADS (default 4 per CPU) must match --concurrency, or requests queue."""
    env = environment.make("real-proj-1", REGION, DOMAIN, out=tmp_path, oauth_client_id="1234-abc.apps")
    written = files.write(env)
    shared = yaml.safe_load(written.env_vars.read_text())
    for fn in environment.FUNCTIONS:
        values = yaml.safe_load(written.function_env_vars[fn.name].read_text())
        assert values == {**shared, "THREADS": str(sizing.SIZING[fn.name].concurrency)}, fn.name
        command = function_steps.deploy_command(env, fn, written)
        assert [a for a in command if a.startswith("--env-vars-file=")] == [
            f"--env-vars-file={function_steps.relative(written.function_env_vars[fn.name])}"
        ]
        assert f"--concurrency={sizing.SIZING[fn.name].concurrency}" in command


# --- scripts for Cloud Build -------------------------------------------------------------------------


def test_a_script_is_refused_for_steps_that_need_python(all_steps: list[Step]) -> None:
    with pytest.raises(steps.DeployError, match="not scriptable"):
        steps.render_script(steps.select(all_steps, ["secrets"]), [])
    with pytest.raises(steps.DeployError, match="PROJECT_NUMBER"):
        steps.render_script(steps.select(all_steps, ["events"]), [])
    with pytest.raises(steps.DeployError, match="unknown group"):
        steps.select(all_steps, ["function:nope"])


def test_the_function_and_lab_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    written = []
    for group in [f"function:{fn.name}" for fn in environment.FUNCTIONS] + ["lab", "stage"]:
        script = tmp_path / f"{group.replace(':', '-')}.sh"
        assert (
            deploy_cli.main(
                [
                    "script",
                    "--project=real-proj-1",
                    *ARGS[1:],
                    "--oauth-client-id=1234-abc.apps",
                    f"--out={tmp_path / 'out'}",
                    f"--only={group}",
                    f"--output={script}",
                ]
            )
            == 0
        )
        written.append(str(script))
    done = subprocess.run([str(shellcheck), "--format=gcc", *written], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cloudbuild_tests_stages_and_deploys_every_function_in_parallel() -> None:
    build = yaml.safe_load((REPO / "cloudbuild.yaml").read_text())
    by_id = {s["id"]: s for s in build["steps"]}
    test_script = " ".join(by_id["test"]["args"])
    # a Python 3.12 image (Debian packages no 3.12), Google's apt repository for gcloud and the emulators,
    # and .ci/run, whose `make test` installs the rest
    assert by_id["test"]["name"] == by_id["stage"]["name"] == "python:3.12-bookworm"
    assert "packages.cloud.google.com/apt cloud-sdk main" in test_script and ".ci/run" in test_script
    assert "make test" in (REPO / ".ci" / "run").read_text()
    stage = " ".join(by_id["stage"]["args"])
    assert by_id["stage"]["waitFor"] == ["test"]
    # staged as the plan stages, with the build's store (a CI redeploy must not move an S3 deployment to GCS)
    assert "deploy --only=stage --output=build/ci/stage.sh" in stage and "bash build/ci/stage.sh" in stage
    flat = " ".join(stage.split())
    assert '--storage="$_STORAGE" --s3-endpoint="$_S3_ENDPOINT" --s3-bucket="$_S3_BUCKET"' in flat
    assert {"_STORAGE", "_S3_ENDPOINT", "_S3_BUCKET", "_S3_REGION", "_S3_ADDRESSING"} <= set(build["substitutions"])
    assert build["substitutions"]["_STORAGE"] == "gcs"
    # one script per function of the deployment (never per functions/ folder: the S3 store's sweep is one)
    assert 'for name in $$(.venv/bin/python infra/deploy.py functions "$${target[@]}")' in stage
    sweep = by_id["deploy-sweep_uploads"]
    assert sweep["waitFor"] == ["stage"] and "bash build/ci/function-sweep_uploads.sh" in " ".join(sweep["args"])
    assert "if [ -f build/ci/function-sweep_uploads.sh ]" in " ".join(sweep["args"])  # only an S3 build has it
    assert 'build/ci/function-$$name.sh' in stage and "--only=lab --output=build/ci/lab.sh" in stage
    for fn in environment.FUNCTIONS:
        step = by_id[f"deploy-{fn.name}"]
        assert step["waitFor"] == ["stage"] and step["args"] == [f"build/ci/function-{fn.name}.sh"]
    assert by_id["deploy-lab"]["waitFor"] == ["stage"] and by_id["deploy-lab"]["args"] == ["build/ci/lab.sh"]
    deploys = {i for i in by_id if i.startswith("deploy-")}
    assert deploys == {f"deploy-{fn.name}" for fn in routes.for_store("s3")} | {"deploy-lab"}
    assert {"_REGION", "_DOMAIN"} <= set(build["substitutions"]) and "$PROJECT_ID" in stage


def test_a_gcs_deployment_deploys_no_function_of_the_s3_store(text: str) -> None:
    assert [fn.name for fn in routes.FUNCTIONS if fn.store == "s3"] == ["sweep_uploads"]
    assert "functions deploy on_object_finalized" in text
    assert "sweep_uploads" not in text and "sweep-uploads" not in text


# --- an S3-compatible file store (STORAGE=s3) ------------------------------------------------------

S3_ENDPOINT, S3_BUCKET = "https://0123abcd.r2.cloudflarestorage.com", "mllab-models"
S3_ARGS = ["--storage=s3", f"--s3-endpoint={S3_ENDPOINT}", f"--s3-bucket={S3_BUCKET}"]
# The functions whose paths read or write the users' files (the routes' handlers and the event functions).
STORE_USERS = {
    "catalog",
    "signed_urls",
    "on_object_finalized",
    "purge_accounts",
    "sweep_uploads",
    "deployments",
    "predict",
}


def _s3_env(out: Path, **more: Any) -> environment.Environment:
    return environment.make(
        PROJECT, REGION, DOMAIN, out=out, storage="s3", s3_endpoint=S3_ENDPOINT, s3_bucket=S3_BUCKET, **more
    )


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> environment.Environment:
    return _s3_env(tmp_path_factory.mktemp("deploy-s3"))


@pytest.fixture(scope="module")
def s3_built(s3_env: environment.Environment) -> tuple[list[Step], files.Files]:
    return plan.build(s3_env)


@pytest.fixture(scope="module")
def s3_steps(s3_built: tuple[list[Step], files.Files]) -> list[Step]:
    return s3_built[0]


@pytest.fixture(scope="module")
def s3_text(s3_env: environment.Environment, s3_steps: list[Step]) -> str:
    return steps.render_plan(s3_steps, plan.header(s3_env))


def _deployed(all_steps: Sequence[Step]) -> set[str]:
    return {s.argv[3] for s in all_steps if _has(s.argv, ("functions", "deploy"))}


def test_an_s3_deployment_deploys_the_s3_stores_functions_with_the_upload_sweep(
    s3_steps: list[Step], all_steps: list[Step]
) -> None:
    assert _deployed(s3_steps) == {fn.name for fn in routes.for_store("s3")} == {*_deployed(all_steps), "sweep_uploads"}
    sweep = deploy_step(s3_steps, "sweep_uploads")
    assert flag(sweep, "trigger-topic") == config.Settings().sweep_topic == "upload-sweep"
    assert flag(sweep, "ingress-settings") == "internal-only" and "--no-allow-unauthenticated" in sweep
    assert first(s3_steps, "functions", "add-invoker-policy-binding", "sweep_uploads") >= 0


def test_the_store_functions_are_those_whose_paths_use_the_file_store() -> None:
    assert {fn.name for fn in routes.store_functions("s3")} == STORE_USERS
    assert {fn.name for fn in routes.store_functions("gcs")} == STORE_USERS - {"sweep_uploads"}
    # each of them can reach the S3 store's credentials (the over-mounting check below holds them to it)
    assert all(config.S3_CREDENTIALS in _reachable_secrets(name) for name in STORE_USERS)


@pytest.mark.parametrize("fn", routes.for_store("s3"), ids=lambda f: f.name)
def test_the_s3_credentials_are_mounted_only_into_the_functions_that_use_the_store(
    s3_steps: list[Step], fn: routes.Function
) -> None:
    mounted = set((flag(deploy_step(s3_steps, fn.name), "set-secrets") or "").split(",")) - {""}
    credentials = f"/secrets/{config.S3_CREDENTIALS}/{config.S3_CREDENTIALS}={config.S3_CREDENTIALS}:latest"
    others = {f"/secrets/{s}/{s}={s}:latest" for s in access.READS[fn.name]}
    assert mounted == (others | {credentials} if fn.name in STORE_USERS else others)
    assert set(access.reads(_s3_env(Path("unused")), fn.name)) <= _reachable_secrets(fn.name)
    grants = [
        s.argv
        for s in s3_steps
        if _has(s.argv, ("secrets", "add-iam-policy-binding", config.S3_CREDENTIALS))
        and flag(s.argv, "member") == f"serviceAccount:fn-{fn.name.replace('_', '-')}@{PROJECT}.iam.gserviceaccount.com"
    ]
    assert len(grants) == (fn.name in STORE_USERS)
    assert all(flag(g, "role") == "roles/secretmanager.secretAccessor" for g in grants)


def test_the_s3_credentials_are_stored_from_stdin_and_never_in_a_command(
    s3_steps: list[Step], s3_text: str, built: tuple[list[Step], files.Files]
) -> None:
    create = s3_steps[first(s3_steps, "secrets", "create", config.S3_CREDENTIALS)]
    assert create.probe and create.probe.argv[1:4] == ("secrets", "describe", config.S3_CREDENTIALS)
    add = s3_steps[first(s3_steps, "secrets", "versions", "add", config.S3_CREDENTIALS)]
    assert "--data-file=-" in add.argv and add.stdin and add.probe
    assert f"| gcloud secrets versions add {config.S3_CREDENTIALS} --data-file=-" in s3_text
    assert config.S3_CREDENTIALS not in built[1].env_vars.read_text()
    assert not [s for s in built[0] if config.S3_CREDENTIALS in " ".join(s.argv)]


def test_an_s3_deployment_has_no_gcs_data_bucket_notification_or_bucket_iam(s3_steps: list[Step]) -> None:
    gcs_data = f"gs://{PROJECT}-mllab-data"
    assert not [a for a in commands(s3_steps) if gcs_data in a or _has(a, ("notifications",))]
    assert not [s for s in s3_steps if _has(s.argv, ("storage", "service-agent")) or "${GCS_AGENT}" in " ".join(s.argv)]
    bucket_grants = [s.argv for s in s3_steps if _has(s.argv, ("storage", "buckets", "add-iam-policy-binding"))]
    assert [(g[4], flag(g, "member")) for g in bucket_grants] == [(f"gs://{PROJECT}-mllab-lab", "allUsers")]
    # presigned with the store's secret key: nobody signs through IAM signBlob
    assert not [s for s in s3_steps if "roles/iam.serviceAccountTokenCreator" in s.argv and "fn-" in " ".join(s.argv)]
    assert first(s3_steps, "storage", "buckets", "create", f"gs://{PROJECT}-mllab-lab") >= 0  # the lab's site stays


def test_on_s3_the_functions_that_write_the_store_publish_its_object_events(s3_steps: list[Step]) -> None:
    publishers = {
        flag(s.argv, "member")
        for s in s3_steps
        if _has(s.argv, ("pubsub", "topics", "add-iam-policy-binding", "gcs-events"))
    }
    writers = STORE_USERS - {"deployments", "predict"}  # completion, sweep, and every delete publish
    assert publishers == {f"serviceAccount:fn-{n.replace('_', '-')}@{PROJECT}.iam.gserviceaccount.com" for n in writers}
    assert all(
        flag(s.argv, "role") == "roles/pubsub.publisher"
        for s in s3_steps
        if _has(s.argv, ("topics", "add-iam-policy-binding"))
    )
    dead_letter = [
        s.argv for s in s3_steps if _has(s.argv, ("topics", "add-iam-policy-binding", "gcs-events-dead-letter"))
    ]
    assert len(dead_letter) == 1 and "gcp-sa-pubsub" in (flag(dead_letter[0], "member") or "")


def test_the_sweep_is_scheduled_as_often_as_the_docs_say(s3_steps: list[Step], all_steps: list[Step]) -> None:
    from mllab.files import completion

    at = first(s3_steps, "scheduler", "jobs", "create", "pubsub", "mllab-upload-sweep")
    job = s3_steps[at]
    assert flag(job.argv, "topic") == f"projects/{PROJECT}/topics/upload-sweep"
    minutes = int(completion.SWEEP_EVERY.total_seconds() // 60)
    assert flag(job.argv, "schedule") == f"*/{minutes} * * * *" == "*/10 * * * *"
    assert job.update and flag(job.update, "schedule") == flag(job.argv, "schedule")
    assert first(s3_steps, "pubsub", "topics", "create", "upload-sweep") < at
    assert "`*/10 * * * *`" in (REPO / "docs" / "operations.md").read_text()
    for topic in ("account-purge", "billing-reconcile"):  # the daily jobs are still there
        assert first(s3_steps, "scheduler", "jobs", "create", "pubsub", f"mllab-{topic}") >= 0
    assert "upload-sweep" not in " ".join(a for argv in commands(all_steps) for a in argv)


def test_the_lab_csp_allows_the_s3_endpoint_instead_of_gcs(
    s3_env: environment.Environment, s3_steps: list[Step]
) -> None:
    connect = _directives(lab.csp(s3_env))["connect-src"].split()
    assert connect == ["'self'", f"https://api.{DOMAIN}", S3_ENDPOINT]
    bucket = s3_steps[first(s3_steps, "backend-buckets", "create")].argv
    assert f"--custom-response-header=Content-Security-Policy: {lab.csp(s3_env)}" in bucket
    assert "storage.googleapis.com" not in lab.csp(s3_env)


@pytest.mark.parametrize("addressing", ["path", "virtual"])
def test_the_csp_origin_is_where_the_functions_presigned_urls_point(tmp_path: Path, addressing: str) -> None:
    from mllab.files import s3

    env = _s3_env(tmp_path, s3_addressing=addressing)
    credentials = json.dumps({"access_key_id": "AKTEST", "secret_access_key": "not-a-secret"})
    client = s3.store_client(env.s3_endpoint, env.s3_region, env.s3_addressing, credentials)
    url = client.generate_presigned_url("get_object", Params={"Bucket": S3_BUCKET, "Key": "users/x"}, ExpiresIn=60)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    assert origin == env.storage_origin and origin in _directives(lab.csp(env))["connect-src"].split()
    expected = "https://mllab-models.0123abcd.r2.cloudflarestorage.com" if addressing == "virtual" else S3_ENDPOINT
    assert origin == expected


def test_the_s3_functions_settings_are_a_valid_production_configuration(tmp_path: Path) -> None:
    env = environment.make(
        "real-proj-1", REGION, DOMAIN, out=tmp_path, oauth_client_id="1234-abc.apps",
        storage="s3", s3_endpoint=S3_ENDPOINT + "/", s3_bucket=S3_BUCKET, s3_region="weur", s3_addressing="virtual",
    )  # fmt: skip
    values = yaml.safe_load(files.write(env).env_vars.read_text())
    settings = config.load({**{k: str(v) for k, v in values.items()}, "K_SERVICE": "signed_urls"})
    assert settings.is_production and settings.storage == "s3" and settings.bucket == S3_BUCKET
    assert (settings.s3_endpoint, settings.s3_region, settings.s3_addressing) == (S3_ENDPOINT, "weur", "virtual")
    gcs = yaml.safe_load(
        files.write(environment.make(PROJECT, REGION, DOMAIN, out=tmp_path / "gcs")).env_vars.read_text()
    )
    assert not [k for k in gcs if k.startswith(("MLLAB_STORAGE", "MLLAB_S3_"))]  # GCS is the default


def test_the_bucket_cors_is_set_through_the_s3_api_with_gcs_rules(
    s3_env: environment.Environment, s3_built: tuple[list[Step], files.Files]
) -> None:
    from mllab.files import s3

    all_steps, written = s3_built
    step = all_steps[first(all_steps, ".venv/bin/python", "infra/s3_cors.py")]
    assert (flag(step.argv, "endpoint"), flag(step.argv, "bucket")) == (S3_ENDPOINT, S3_BUCKET)
    assert (flag(step.argv, "region"), flag(step.argv, "addressing")) == ("auto", "path")
    rules = json.loads(_path(flag(step.argv, "rules")).read_text())
    assert _path(flag(step.argv, "rules")) == written.cors and rules == s3.bucket_cors(f"https://lab.{DOMAIN}")
    gcs = json.loads(storage.cors_file(f"https://lab.{DOMAIN}"))[0]  # infra/storage-cors.json for this domain
    [rule] = rules["CORSRules"]
    assert (rule["AllowedOrigins"], rule["AllowedMethods"], rule["MaxAgeSeconds"]) == (
        gcs["origin"], gcs["method"], gcs["maxAgeSeconds"]
    )  # fmt: skip
    # the token arrives on stdin, read from Secret Manager after the secrets' gate, before any function
    assert step.stdin and step.stdin.placeholder.startswith("<s3-credentials")
    gate = next(n for n, s in enumerate(all_steps) if s.gate)
    assert gate < all_steps.index(step) < first(all_steps, "functions", "deploy")
    assert "creates" in step.note and "lifecycle" in step.note


def test_the_cors_step_sets_the_rules_on_an_s3_server(s3_built: tuple[list[Step], files.Files], tmp_path: Path) -> None:
    """The step's own command, against moto's S3 server: it sets the rules and reads them back."""
    from moto.server import ThreadedMotoServer

    from mllab.files import s3

    all_steps, written = s3_built
    step = all_steps[first(all_steps, ".venv/bin/python", "infra/s3_cors.py")]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = json.dumps({"access_key_id": "AKTEST", "secret_access_key": "moto-secret-0123456789"})
        client = s3.store_client(endpoint, "us-east-1", "path", credentials)
        client.create_bucket(Bucket=S3_BUCKET)
        argv = [sys.executable if a == ".venv/bin/python" else a for a in step.argv]
        argv = [f"--endpoint={endpoint}" if a.startswith("--endpoint=") else a for a in argv]
        argv = ["--region=us-east-1" if a.startswith("--region=") else a for a in argv]
        done = subprocess.run(argv, cwd=REPO, input=credentials, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"CORS of bucket {S3_BUCKET} set: https://lab.{DOMAIN}" in done.stdout
        assert "moto-secret" not in done.stdout + done.stderr
        stored = client.get_bucket_cors(Bucket=S3_BUCKET)["CORSRules"]
        assert [r["AllowedOrigins"] for r in stored] == [[f"https://lab.{DOMAIN}"]]
        assert sorted(stored[0]["AllowedHeaders"]) == ["content-type", "if-none-match"]
        missing = [a.replace(f"--bucket={S3_BUCKET}", "--bucket=no-such-bucket") for a in argv]
        refused = subprocess.run(missing, cwd=REPO, input=credentials, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "no-such-bucket: NoSuchBucket" in refused.stderr
        garbled = subprocess.run(argv, cwd=REPO, input="not json", capture_output=True, text=True, timeout=120)
        assert garbled.returncode == 2 and "access_key_id" in garbled.stderr
    finally:
        server.stop()


def test_the_s3_extra_is_staged_only_into_the_store_functions(
    s3_steps: list[Step], all_steps: list[Step], tmp_path: Path
) -> None:
    import tomllib

    stage_argv = s3_steps[first(s3_steps, "python3", "infra/stage.py")].argv
    assert stage_argv[-1] == f"--extra=s3:{','.join(fn.name for fn in routes.store_functions('s3'))}"
    assert not [a for a in all_steps[0].argv if a.startswith("--extra")]  # a GCS deployment: none
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["s3"]
    assert any(pin.startswith("botocore==") for pin in extra)
    done = subprocess.run(
        [sys.executable, *stage_argv[1:3], str(tmp_path), *stage_argv[4:], "signed_urls", "account", "sweep_uploads"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name in ("signed_urls", "account", "sweep_uploads"):
        lines = [ln for ln in (tmp_path / name / "requirements.txt").read_text().splitlines() if not ln.startswith("#")]
        own = (REPO / "functions" / name / "requirements.txt").read_text().splitlines()
        added = [pin for pin in extra if pin not in own] if name in STORE_USERS else []
        assert lines == [*own, *added, "-c constraints.txt"], name
        assert any(ln.startswith("botocore==") for ln in lines) == (name in STORE_USERS)


def test_an_s3_plan_names_its_store_in_the_header_and_writes_no_gcs_cors_file(
    s3_env: environment.Environment, s3_text: str
) -> None:
    assert f"# File store: S3-compatible bucket {S3_BUCKET} at {S3_ENDPOINT}" in s3_text
    assert (s3_env.files / "s3-cors.json").is_file() and not (s3_env.files / "storage-cors.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--storage=s3"], "STORAGE=s3 needs S3_ENDPOINT and S3_BUCKET: STORAGE=s3 S3_ENDPOINT=https://"),
        (["--storage=s3", f"--s3-bucket={S3_BUCKET}"], "STORAGE=s3 needs S3_ENDPOINT:"),
        (["--storage=s3", f"--s3-endpoint={S3_ENDPOINT}"], "STORAGE=s3 needs S3_BUCKET:"),
        ([*S3_ARGS[:2], "--s3-bucket=My_Bucket"], "S3_BUCKET 'My_Bucket' is not a bucket name"),
        (["--storage=s3", "--s3-endpoint=http://r2.example.com", f"--s3-bucket={S3_BUCKET}"], "is not https://host"),
        (["--storage=s3", f"--s3-endpoint={S3_ENDPOINT}/bucket", f"--s3-bucket={S3_BUCKET}"], "is not https://host"),
        ([*S3_ARGS, "--s3-addressing=dns"], "S3_ADDRESSING must be one of path, virtual, got 'dns'"),
        ([*S3_ARGS, "--s3-region=EU West"], "S3_REGION 'EU West' is not a region name"),
        (["--storage=azure"], "STORAGE must be one of gcs, s3, got 'azure'"),
        ([f"--s3-endpoint={S3_ENDPOINT}"], "S3_ENDPOINT only apply with STORAGE=s3"),
    ],
)
def test_bad_storage_arguments_fail_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str], message: str
) -> None:
    assert deploy_cli.main(["plan", *ARGS, *extra, f"--out={tmp_path}"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and not captured.out
    assert not list(tmp_path.iterdir()), "nothing is written for a refused plan"


def test_make_deploy_plan_takes_the_s3_store(tmp_path: Path) -> None:
    make = ["make", "--no-print-directory", "-o", ".venv/.installed", "deploy-plan"]
    base = [f"PROJECT={PROJECT}", f"REGION={REGION}", f"DOMAIN={DOMAIN}", f"DEPLOY_OUT={tmp_path}"]
    s3 = [f"S3_ENDPOINT={S3_ENDPOINT}", f"S3_BUCKET={S3_BUCKET}", "S3_ADDRESSING=virtual"]
    done = subprocess.run([*make, *base, "STORAGE=s3", *s3], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "gcloud functions deploy sweep_uploads --gen2" in done.stdout
    assert f"--bucket={S3_BUCKET} --region=auto --addressing=virtual" in done.stdout
    refused = subprocess.run([*make, *base, "STORAGE=s3"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "STORAGE=s3 needs S3_ENDPOINT and S3_BUCKET" in refused.stderr


def test_an_s3_apply_takes_the_token_from_the_environment_and_passes_it_only_on_stdin(
    tmp_path: Path, operator_secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "r2-key-id-0123456789")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "r2-secret-access-key-0123456789")
    env = _s3_apply_env(tmp_path)
    plan_steps = plan.build(env)[0]
    stored = json.dumps(
        {"access_key_id": "r2-key-id-0123456789", "secret_access_key": "r2-secret-access-key-0123456789"}
    )
    cloud = FakeCloud(plan_steps, tokens.new_key_set())
    ran: list[Call] = []

    def runner(argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False) -> Completed:
        if tuple(argv[1:4]) == ("secrets", "versions", "access") and f"--secret={config.S3_CREDENTIALS}" in argv:
            ran.append(Call(tuple(argv), stdin))
            return Completed(0, stored)
        return cloud(argv, stdin=stdin, capture=capture)

    lines: list[str] = []
    steps.apply(plan_steps, steps.Context(env=env, runner=runner), log=lines.append)
    added = {c.argv[4]: c.stdin for c in cloud.calls if _has(c.argv, ("secrets", "versions", "add"))}
    assert json.loads(added[config.S3_CREDENTIALS] or b"") == json.loads(stored)
    cors = [c for c in cloud.calls if c.argv[:2] == (".venv/bin/python", "infra/s3_cors.py")]
    assert len(cors) == 1 and cors[0].stdin == stored.encode() and ran
    shown = "\n".join(lines) + "\n".join(" ".join(c.argv) for c in cloud.calls)
    assert "r2-secret-access-key" not in shown and "r2-key-id" not in shown


def _s3_apply_env(tmp_path: Path) -> environment.Environment:
    return environment.make(
        "real-proj-1", REGION, DOMAIN, out=tmp_path / "out", oauth_client_id="1234-abc.apps",
        secrets_from=tmp_path / "held", storage="s3", s3_endpoint=S3_ENDPOINT, s3_bucket=S3_BUCKET,
    )  # fmt: skip


def test_a_malformed_s3_token_stops_apply_without_showing_it(tmp_path: Path, operator_secrets: dict[str, str]) -> None:
    (tmp_path / "held" / config.S3_CREDENTIALS).write_text('{"access_key_id": "only-the-id-0123456789"}')
    env = _s3_apply_env(tmp_path)
    plan_steps = plan.build(env)[0]
    cloud = FakeCloud(plan_steps, tokens.new_key_set())
    with pytest.raises(steps.DeployError, match="non-empty access_key_id and secret_access_key") as refused:
        steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    assert "only-the-id" not in str(refused.value)
    assert not [c for c in cloud.calls if _has(c.argv, ("versions", "add", config.S3_CREDENTIALS))]


def test_an_s3_apply_without_a_token_lists_it_at_the_secrets_check(tmp_path: Path) -> None:
    env = environment.make(
        "real-proj-1", REGION, DOMAIN, out=tmp_path / "out", oauth_client_id="1234-abc.apps",
        storage="s3", s3_endpoint=S3_ENDPOINT, s3_bucket=S3_BUCKET,
    )  # fmt: skip
    plan_steps = plan.build(env)[0]
    cloud = FakeCloud(plan_steps, tokens.new_key_set())
    with pytest.raises(steps.DeployError) as refused:
        steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    assert f"{config.S3_CREDENTIALS}: " in str(refused.value) and "S3_ACCESS_KEY_ID" in str(refused.value)
    assert not [c for c in cloud.calls if _has(c.argv, ("functions", "deploy")) or "infra/s3_cors.py" in c.argv]


def test_a_second_s3_apply_creates_nothing(tmp_path: Path, operator_secrets: dict[str, str]) -> None:
    (tmp_path / "held" / config.S3_CREDENTIALS).write_text(
        json.dumps({"access_key_id": "k-0123456789", "secret_access_key": "s-0123456789abcdef"})
    )
    env = _s3_apply_env(tmp_path)
    plan_steps = plan.build(env)[0]
    cloud = FakeCloud(plan_steps, tokens.new_key_set())
    steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    first_round = len(cloud.calls)
    cloud.round = 2
    steps.apply(plan_steps, steps.Context(env=env, runner=cloud), log=lambda line: None)
    second = [c.argv for c in cloud.calls[first_round:]]
    assert not [a for a in second if "create" in a or _has(a, ("versions", "add"))]
    assert len([a for a in second if _has(a, ("functions", "deploy"))]) == len(routes.for_store("s3"))
    assert [a for a in second if "infra/s3_cors.py" in a]  # CORS is set again: a put is idempotent


def test_the_functions_command_lists_the_deployments_functions(capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy_cli.main(["functions", *ARGS]) == 0
    assert capsys.readouterr().out.split() == [fn.name for fn in routes.for_store("gcs")]
    assert deploy_cli.main(["functions", *ARGS, *S3_ARGS]) == 0
    assert capsys.readouterr().out.split() == [fn.name for fn in routes.for_store("s3")]
    assert deploy_cli.main(["functions", *ARGS, "--storage=s3"]) == 2
    assert "S3_ENDPOINT" in capsys.readouterr().err


class _Store:
    """An S3 store's CORS calls: keeps what is put, reports `reported(put)` back."""

    def __init__(self, reported: Any) -> None:
        self.reported = reported
        self.put: Any = None

    def put_bucket_cors(self, Bucket: str, CORSConfiguration: dict[str, Any]) -> None:
        self.put = CORSConfiguration

    def get_bucket_cors(self, Bucket: str) -> dict[str, Any]:
        return {"CORSRules": self.reported(self.put["CORSRules"])}


@pytest.mark.parametrize(
    ("reported", "code"),
    [
        (lambda rules: [{**r, "ID": "r2-rule-1", "AllowedMethods": r["AllowedMethods"][::-1]} for r in rules], 0),
        (lambda rules: [{**r, "AllowedOrigins": ["*"]} for r in rules], 1),
        (lambda rules: [], 1),
    ],
    ids=["same rules, the store's own id and order", "another origin", "no rules"],
)
def test_the_cors_step_fails_when_the_store_reports_other_rules(
    s3_built: tuple[list[Step], files.Files],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reported: Any,
    code: int,
) -> None:
    import io

    from mllab.files import s3

    s3_cors = _infra_script("s3_cors")
    store = _Store(reported)
    monkeypatch.setattr(s3, "store_client", lambda *args: store)
    monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
    argv = [a for a in s3_built[0][first(s3_built[0], ".venv/bin/python", "infra/s3_cors.py")].argv[2:]]
    assert s3_cors.main(argv) == code
    assert store.put == json.loads(s3_built[1].cors.read_text())
    assert ("reports other CORS rules" in capsys.readouterr().err) == bool(code)


def _infra_script(name: str) -> Any:
    import importlib

    return importlib.import_module(name)  # infra/ is on sys.path (above)


def test_the_stage_script_stages_the_s3_extra_where_the_store_is_used(tmp_path: Path) -> None:
    """Cloud Build's stage step, as it runs for an S3 build: the plan's stage group as a script."""
    script = tmp_path / "stage.sh"
    common = ["script", "--project=real-proj-1", *ARGS[1:], "--oauth-client-id=1234-abc.apps", f"--out={tmp_path}/out"]
    assert deploy_cli.main([*common, *S3_ARGS, "--only=stage", f"--output={script}"]) == 0
    (tmp_path / "infra").symlink_to(REPO / "infra")
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    staged = {p.parent.name: p.read_text() for p in (tmp_path / "build").glob("*/requirements.txt")}
    assert set(staged) == {fn.name for fn in routes.FUNCTIONS}
    assert {name for name, text in staged.items() if "\nbotocore==" in f"\n{text}"} == STORE_USERS


def test_the_local_stack_pushes_events_at_the_deploy_concurrency() -> None:
    """mllab_dev.pusher delivers as many events at once as one deployed instance takes."""
    from mllab_dev import stack

    assert stack.PUSHED and all(stack.PUSHED[name] == sizing.SIZING[name].concurrency for name in stack.PUSHED)
    assert all(routes.function(name).trigger is routes.Trigger.PUBSUB for name in stack.PUSHED)
