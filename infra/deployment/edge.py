"""The HTTPS load balancer in front of everything, its Cloud Armor policy, and the static lab.

One global external Application Load Balancer serves api.<domain> (a serverless NEG and backend
service per HTTP function, routed by the URL map generated from the route table) and lab.<domain> (a
backend bucket with the lab's security headers). Port 80 only redirects to https.
"""

from __future__ import annotations

from deployment import lab
from deployment.environment import Environment
from deployment.files import Files
from deployment.steps import Probe, Step, gcloud, relative
from mllab.api import routes
from mllab.platform import config

# Cloud Armor per-IP throttles (the functions' own failure counters come first; this caps volume).
ARMOR_RULES = (  # priority, path prefix, requests per minute per IP, why
    (1000, "/auth/", 120, "sign-in, registration, reset and refresh (a shared NAT holds many users)"),
    (1100, "/promo/", 20, "promo codes must not be guessable by volume"),
    (1200, "/predict/", 600, "predictions: 10 a second from one address; a batch of 1,000 instances is one request"),
)
# Rules are evaluated by priority and the first match decides: a throttle under its threshold allows
# the request, so a deny must come before the throttles to be reached at all.
PREDICT_BODY_PRIORITY = 900
DEFAULT_PRIORITY = 2147483647  # the policy's default rule (lowest priority): allow


def digits_above(n: int) -> str:
    """An RE2 pattern matching the decimal integers greater than `n` (leading zeros allowed), for a
    header Cloud Armor can only match as text: longer numbers, or a larger digit after an equal prefix."""
    text = str(n)
    alternatives = [f"[1-9][0-9]{{{len(text)},}}"]
    for i, d in enumerate(text):
        if d == "9":
            continue
        rest = len(text) - i - 1
        alternatives.append(
            text[:i] + ("9" if d == "8" else f"[{int(d) + 1}-9]") + (f"[0-9]{{{rest}}}" if rest else "")
        )
    return f"^0*(?:{'|'.join(alternatives)})$"


def predict_body_expression() -> str:
    """A predict request whose declared body is over the API's limit (the function answers 413 for it
    anyway, and for a chunked body, which declares no length; this refuses it before any instance runs)."""
    limit = config.LIMITS.request_body_bytes
    length = f"request.headers['content-length'].matches('{digits_above(limit)}')"
    return f"request.path.startsWith('/predict/') && {length}"


def lab_files(env: Environment, files: Files) -> list[Step]:
    source = relative(files.lab or env.files / "lab")  # where lab.stage puts it, staged or not
    note = (
        ""
        if files.lab
        else (
            "frontend/vendor/ is missing here, so the lab was not staged: run `make dev` or "
            "`make test` once (npm installs it); `make deploy` refuses to upload a lab without it."
        )
    )
    return [
        Step(
            "The lab",
            f"Upload the lab (frontend/ with vendor/ and a /config.json naming {env.api_url}); "
            "removed files are removed; browsers revalidate every file.",
            gcloud(
                None,
                "storage",
                "rsync",
                source,
                f"gs://{env.lab_bucket}",
                "--recursive",
                "--delete-unmatched-destination-objects",
                "--cache-control=no-cache",
            ),
            group="lab",
            note=note,
        )
    ]


# Dynamic compression needs Cloud CDN on the backend bucket; every lab file is `no-cache`, so the CDN
# revalidates each request with the bucket and never serves a stale lab.
COMPRESSION = ("--enable-cdn", "--compression-mode=AUTOMATIC")


def _named(project: str, kind: str, name: str, *scope: str) -> Probe:
    """Does the compute resource `kind` called `name` exist (`describe` prints its name)?"""
    return Probe(gcloud(project, "compute", kind, "describe", name, *scope, "--format=value(name)"))


def _https_backends(env: Environment) -> list[Step]:
    p, steps = env.project, []
    for fn in routes.http_functions():
        neg, backend = env.neg(fn.name), env.backend(fn.name)
        steps += [
            Step(
                "Load balancer",
                f"Serverless NEG for {fn.name} (same project and region as the function).",
                gcloud(
                    p,
                    "compute",
                    "network-endpoint-groups",
                    "create",
                    neg,
                    f"--region={env.region}",
                    "--network-endpoint-type=serverless",
                    f"--cloud-function-name={fn.name}",
                ),
                probe=_named(p, "network-endpoint-groups", neg, f"--region={env.region}"),
            ),
            Step(
                "Load balancer",
                f"Backend service for {fn.name}.",
                gcloud(
                    p,
                    "compute",
                    "backend-services",
                    "create",
                    backend,
                    "--global",
                    "--load-balancing-scheme=EXTERNAL_MANAGED",
                ),
                probe=_named(p, "backend-services", backend, "--global"),
            ),
            Step(
                "Load balancer",
                "The NEG is the backend service's one backend.",
                gcloud(
                    p,
                    "compute",
                    "backend-services",
                    "add-backend",
                    backend,
                    "--global",
                    f"--network-endpoint-group={neg}",
                    f"--network-endpoint-group-region={env.region}",
                ),
                probe=Probe(
                    gcloud(
                        p,
                        "compute",
                        "backend-services",
                        "describe",
                        backend,
                        "--global",
                        "--format=value(backends[].group)",
                    )
                ),
            ),
        ]
    return steps


def _armor(env: Environment) -> list[Step]:
    p, policy = env.project, env.armor_policy
    steps = [
        Step(
            "Cloud Armor",
            "A security policy for the API's backend services.",
            gcloud(
                p,
                "compute",
                "security-policies",
                "create",
                policy,
                "--type=CLOUD_ARMOR",
                "--description=ML Lab API: per-IP rate limits",
            ),
            probe=_named(p, "security-policies", policy),
        )
    ]
    for priority, prefix, per_minute, why in ARMOR_RULES:
        flags = (
            f"--security-policy={policy}",
            f"--expression=request.path.startsWith('{prefix}')",
            "--action=throttle",
            f"--rate-limit-threshold-count={per_minute}",
            "--rate-limit-threshold-interval-sec=60",
            "--conform-action=allow",
            "--exceed-action=deny-429",
            "--enforce-on-key=IP",
            f"--description={prefix}*: {why}",
        )
        steps.append(
            Step(
                "Cloud Armor",
                f"{prefix}*: at most {per_minute} requests a minute per client IP, then 429 ({why}).",
                gcloud(p, "compute", "security-policies", "rules", "create", str(priority), *flags),
                probe=_rule_probe(env, priority),
                update=gcloud(p, "compute", "security-policies", "rules", "update", str(priority), *flags),
            )
        )
    steps += _predict_guards(env)
    for fn in routes.http_functions():
        steps.append(
            Step(
                "Cloud Armor",
                f"{fn.name}'s backend: the policy attached, every request logged (logs by request id).",
                gcloud(
                    p,
                    "compute",
                    "backend-services",
                    "update",
                    env.backend(fn.name),
                    "--global",
                    f"--security-policy={policy}",
                    "--enable-logging",
                    "--logging-sample-rate=1",
                ),
            )
        )
    return steps


def _rule_probe(env: Environment, priority: int) -> Probe:
    return Probe(
        gcloud(
            env.project,
            "compute",
            "security-policies",
            "rules",
            "describe",
            str(priority),
            f"--security-policy={env.armor_policy}",
            "--format=value(priority)",
        )
    )


def _predict_guards(env: Environment) -> list[Step]:
    """The body-size refusal for /predict/*, and the default rule stated (allow), so a rerun restores it."""
    p, policy = env.project, env.armor_policy
    mib = config.LIMITS.request_body_bytes / (1024 * 1024)
    flags = (
        f"--security-policy={policy}",
        f"--expression={predict_body_expression()}",
        "--action=deny-403",
        f"--description=/predict/*: a declared body over {mib:g} MiB",
    )
    default = (
        f"--security-policy={policy}",
        "--action=allow",
        "--description=default: allow (the functions judge every request)",
    )
    return [
        Step(
            "Cloud Armor",
            f"/predict/*: a request declaring a body over {mib:g} MiB (Content-Length) is refused with 403 "
            "before it reaches the function (which answers 413 for any body over the limit).",
            gcloud(p, "compute", "security-policies", "rules", "create", str(PREDICT_BODY_PRIORITY), *flags),
            probe=_rule_probe(env, PREDICT_BODY_PRIORITY),
            update=gcloud(p, "compute", "security-policies", "rules", "update", str(PREDICT_BODY_PRIORITY), *flags),
        ),
        Step(
            "Cloud Armor",
            "The default rule: allow what no rule above matched.",
            gcloud(p, "compute", "security-policies", "rules", "update", str(DEFAULT_PRIORITY), *default),
        ),
    ]


def _backend_bucket(env: Environment, name: str, why: str, *, embeddable: bool = False) -> Step:
    """A backend bucket on the lab's bucket adding the lab's security headers (the share page's when
    `embeddable`) to every file it serves."""
    p = env.project
    flags = (
        f"--gcs-bucket-name={env.lab_bucket}",
        *COMPRESSION,
        *(f"--custom-response-header={h}" for h in lab.response_headers(env, embeddable=embeddable)),
    )
    return Step(
        "Load balancer",
        why,
        gcloud(p, "compute", "backend-buckets", "create", name, *flags),
        probe=_named(p, "backend-buckets", name),
        update=gcloud(p, "compute", "backend-buckets", "update", name, *flags),
    )


def _frontend(env: Environment, files: Files) -> list[Step]:
    p = env.project
    steps = [
        _backend_bucket(
            env,
            env.lab_backend,
            "The lab's backend bucket, adding the lab's CSP and security headers to every file; Cloud CDN "
            "compresses its text files (gzip or Brotli per the browser), as the bucket stores them plain.",
        ),
        _backend_bucket(
            env,
            env.share_backend,
            "The share page's backend bucket (/m/<deployment id>, the same bucket): its CSP lets any site "
            "frame the page (the embed snippet), which every other lab page forbids.",
            embeddable=True,
        ),
        Step(
            "Load balancer",
            "The URL map, generated from mllab.api.routes.ROUTES (create or replace).",
            gcloud(
                p,
                "compute",
                "url-maps",
                "import",
                env.url_map,
                f"--source={relative(files.url_map)}",
                "--global",
                "--quiet",
            ),
        ),
    ]
    for host in (env.api_host, env.lab_host):
        steps.append(
            Step(
                "Load balancer",
                f"Google-managed certificate for {host} (issued once DNS points at the address).",
                gcloud(
                    p, "compute", "ssl-certificates", "create", env.certificate(host), f"--domains={host}", "--global"
                ),
                probe=_named(p, "ssl-certificates", env.certificate(host), "--global"),
            )
        )
    certs = f"--ssl-certificates={env.certificate(env.api_host)},{env.certificate(env.lab_host)}"
    proxy_flags = (f"--url-map={env.url_map}", certs, f"--ssl-policy={env.ssl_policy}", "--global")
    steps += [
        Step(
            "Load balancer",
            "TLS 1.2 or later with modern ciphers only.",
            gcloud(
                p,
                "compute",
                "ssl-policies",
                "create",
                env.ssl_policy,
                "--profile=MODERN",
                "--min-tls-version=1.2",
                "--global",
            ),
            probe=_named(p, "ssl-policies", env.ssl_policy, "--global"),
        ),
        Step(
            "Load balancer",
            "The HTTPS proxy: both certificates, the URL map, the TLS policy.",
            gcloud(p, "compute", "target-https-proxies", "create", env.https_proxy, *proxy_flags),
            probe=_named(p, "target-https-proxies", env.https_proxy, "--global"),
            update=gcloud(p, "compute", "target-https-proxies", "update", env.https_proxy, *proxy_flags),
        ),
        Step(
            "Load balancer",
            "One global IPv4 address for api. and lab. (point both DNS records at it).",
            gcloud(p, "compute", "addresses", "create", env.address, "--global", "--ip-version=IPV4"),
            probe=_named(p, "addresses", env.address, "--global"),
        ),
        _forwarding_rule(env, "HTTPS on port 443 of that address.", env.https_rule, "https", env.https_proxy, 443),
        Step(
            "Load balancer",
            "Port 80 answers with a redirect to https (create or replace).",
            gcloud(
                p,
                "compute",
                "url-maps",
                "import",
                env.http_redirect_map,
                f"--source={relative(files.http_redirect_map)}",
                "--global",
                "--quiet",
            ),
        ),
        Step(
            "Load balancer",
            "The HTTP proxy for that redirect.",
            gcloud(
                p,
                "compute",
                "target-http-proxies",
                "create",
                env.http_proxy,
                f"--url-map={env.http_redirect_map}",
                "--global",
            ),
            probe=_named(p, "target-http-proxies", env.http_proxy, "--global"),
        ),
        _forwarding_rule(env, "HTTP on port 80 of the same address.", env.http_rule, "http", env.http_proxy, 80),
    ]
    return steps


def _forwarding_rule(env: Environment, why: str, rule: str, scheme: str, proxy: str, port: int) -> Step:
    """A global forwarding rule sending `port` of the one address to the `scheme` target proxy."""
    return Step(
        "Load balancer",
        why,
        gcloud(
            env.project,
            "compute",
            "forwarding-rules",
            "create",
            rule,
            "--global",
            "--load-balancing-scheme=EXTERNAL_MANAGED",
            f"--address={env.address}",
            f"--target-{scheme}-proxy={proxy}",
            f"--ports={port}",
        ),
        probe=_named(env.project, "forwarding-rules", rule, "--global"),
    )


def load_balancer(env: Environment, files: Files) -> list[Step]:
    return _https_backends(env) + _frontend(env, files) + _armor(env)


def dns(env: Environment) -> list[Step]:
    return [
        Step(
            "DNS",
            f"The address {env.api_host} and {env.lab_host} must resolve to (A records; the "
            "certificates are issued within an hour of that).",
            gcloud(env.project, "compute", "addresses", "describe", env.address, "--global", "--format=value(address)"),
            capture="LB_ADDRESS",
        )
    ]
