"""The files a deployment reads, generated into build/deploy/<project>/ from the code and infra/.

They are written when the plan is built (so a reviewer can read exactly what will be imported), and
hold no secret: secret values never touch a file here.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from deployment import lab, sizing, urlmap
from deployment.environment import NO_OAUTH_CLIENT_ID, PAYPAL_APIS, ROOT, Environment
from mllab.files import s3

INFRA = ROOT / "infra"
CORS_TEMPLATE = INFRA / "storage-cors.json"  # written by mllab.files.storage for "https://lab.${DOMAIN}"
LIFECYCLE = INFRA / "storage-lifecycle.json"
FIRESTORE = INFRA / "firestore"
INDEXES = FIRESTORE / "firestore.indexes.json"
TTL = FIRESTORE / "ttl.json"
RULES = FIRESTORE / "firestore.rules"
ALERT_TEMPLATES = INFRA / "monitoring"
GOOGLE_ISSUER = "https://accounts.google.com"


@dataclass(frozen=True)
class Files:
    env_vars: Path  # the settings every function shares
    function_env_vars: dict[str, Path]  # function name -> env_vars + its own THREADS
    cors: Path  # the data bucket's CORS: storage-cors.json (gcloud's format) or s3-cors.json (the S3 API's)
    url_map: Path
    http_redirect_map: Path
    alerts: dict[str, Path]  # displayName -> policy file
    lab: Path | None  # None: frontend/vendor/ is missing (run `make dev` or `make test` once)


def function_env(env: Environment) -> dict[str, str]:
    """The MLLAB_* settings every function runs with (mllab.platform.config reads them; none is a secret)."""
    return {
        "MLLAB_ENV": "production",
        "MLLAB_PROJECT": env.project,
        "MLLAB_BUCKET": env.data_bucket,
        **{f"MLLAB_{field.upper()}": topic for field, topic in env.topics.items()},
        "MLLAB_PUBLIC_URL": env.api_url,
        "MLLAB_LAB_URL": env.lab_url,
        "MLLAB_CORS_ORIGINS": env.lab_url,
        "MLLAB_OIDC_ISSUER": GOOGLE_ISSUER,
        "MLLAB_OIDC_CLIENT_ID": env.oauth_client_id or NO_OAUTH_CLIENT_ID,
        "MLLAB_MAIL_FROM": f"ML Lab <no-reply@{env.domain}>",
        "MLLAB_PAYPAL_API_BASE": PAYPAL_APIS[env.paypal],
        **(s3_settings(env) if env.s3 else {}),
    }


def s3_settings(env: Environment) -> dict[str, str]:
    """The S3-compatible store's settings (the bucket is MLLAB_BUCKET; the token is a secret, never here)."""
    return {
        "MLLAB_STORAGE": "s3",
        "MLLAB_S3_ENDPOINT": env.s3_endpoint,
        "MLLAB_S3_REGION": env.s3_region,
        "MLLAB_S3_ADDRESSING": env.s3_addressing,
    }


def alert_values(env: Environment) -> dict[str, str]:
    return {
        "PROJECT": env.project,
        "URL_MAP": env.url_map,
        "API_HOST": env.api_host,
        "WEBHOOK_SERVICE": env.run_service("paypal_webhook"),
        "PREDICT_SERVICE": env.run_service("predict"),
        "DEAD_LETTER_HOLD": env.dead_letter_hold,
    }


def render_alerts(env: Environment) -> dict[str, str]:
    """file name -> policy JSON, from the templates in infra/monitoring/."""
    values = alert_values(env)
    return {
        path.name: string.Template(path.read_text()).substitute(values)
        for path in sorted(ALERT_TEMPLATES.glob("*.json"))
    }


def write(env: Environment) -> Files:
    root = env.files
    root.mkdir(parents=True, exist_ok=True)
    env_vars = root / "env.yaml"
    # YAML accepts JSON-quoted strings; --env-vars-file keeps values with commas and spaces intact.
    shared = "".join(f"{k}: {json.dumps(v)}\n" for k, v in function_env(env).items())
    env_vars.write_text(shared)
    # functions-framework serves with THREADS threads (default 4 per CPU it sees): without this an
    # instance Cloud Run sends `concurrency` requests at once would queue all but a few of them.
    per_function = {}
    for name, size in sizing.SIZING.items():
        per_function[name] = root / f"env-{name}.yaml"
        per_function[name].write_text(shared + f"THREADS: {json.dumps(str(size.concurrency))}\n")
    if env.s3:  # the same origin, methods and lifetime as GCS's rules, in the S3 API's shape
        cors = root / "s3-cors.json"
        cors.write_text(json.dumps(s3.bucket_cors(env.lab_url), indent=2) + "\n")
    else:
        cors = root / "storage-cors.json"
        cors.write_text(string.Template(CORS_TEMPLATE.read_text()).substitute(DOMAIN=env.domain))
    url_map = root / "url-map.yaml"
    url_map.write_text(urlmap.as_yaml(urlmap.url_map(env)))
    redirect = root / "http-redirect-map.yaml"
    redirect.write_text(urlmap.as_yaml(urlmap.http_redirect_map(env)))
    alerts = {}
    (root / "alerts").mkdir(exist_ok=True)
    for name, text in render_alerts(env).items():
        path = root / "alerts" / name
        path.write_text(text)
        alerts[json.loads(text)["displayName"]] = path
    staged_lab = lab.stage(env) if lab.vendored() else None
    return Files(env_vars, per_function, cors, url_map, redirect, alerts, staged_lab)
