"""Memory, CPU, concurrency, instances and timeout per function, each with the reason.

Ground rules (the cold-start and load figures in docs/operations.md):
- every function gets a whole vCPU: Cloud Run allows concurrency above 1 only from 1 vCPU, and a cold
  start is mostly import CPU (0.5-0.8 s of CPU here; at the 256 MiB default's 0.167 vCPU that would be
  3-5 s of wall time);
- 512 MiB holds a function with the Firestore client and its gRPC channel with room to spare;
- min instances cost money while idle (about $10 a month each at 1 vCPU + 512 MiB), so only the two
  calls every page load makes stay warm;
- max instances cap what a burst (or an attack past Cloud Armor) can spend.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizing:
    memory: str
    cpu: str
    concurrency: int
    min_instances: int
    max_instances: int
    timeout: str
    why: str


SIZING: dict[str, Sizing] = {
    "jwks": Sizing(
        "256Mi", "1", 80, 0, 3, "30s", "serves a small cached key set without Firestore; clients cache it 5 minutes"
    ),
    "auth_google_login": Sizing(
        "512Mi", "1", 40, 0, 5, "30s", "one Firestore write and a redirect; sign-ins are rare per user"
    ),
    "auth_google_callback": Sizing(
        "512Mi", "1", 20, 0, 5, "30s", "waits on Google's token endpoint (I/O), then a session write"
    ),
    "auth_password": Sizing(
        "1Gi",
        "1",
        8,
        0,
        10,
        "30s",
        "Argon2id takes 19 MiB and ~56 ms of CPU per hash: 8 at once fit and keep latency flat",
    ),
    "auth_refresh": Sizing(
        "512Mi", "1", 40, 1, 20, "30s", "every page load and every 10 minutes per signed-in tab: kept warm"
    ),
    "auth_logout": Sizing("512Mi", "1", 40, 0, 5, "30s", "rare, short transactions"),
    "account": Sizing(
        "512Mi", "1", 40, 1, 20, "30s", "/me runs on every page load: kept warm; account deletion waits on PayPal"
    ),
    "catalog": Sizing(
        "512Mi",
        "1",
        40,
        0,
        20,
        "120s",
        "short Firestore reads and writes; deleting a project walks its files, hence 120 s",
    ),
    "signed_urls": Sizing("512Mi", "1", 40, 0, 20, "30s", "a quota read and one IAM signBlob call per URL (I/O bound)"),
    "on_object_finalized": Sizing(
        "512Mi",
        "1",
        8,
        0,
        10,
        "120s",
        "reads metrics.json (up to 2 MiB) and contends on one version document: "
        "few at once per instance; retried on failure",
    ),
    "purge_accounts": Sizing(
        "512Mi", "1", 1, 0, 1, "540s", "one daily run; one instance, so two runs never purge the same account at once"
    ),
    "billing": Sizing(
        "512Mi", "1", 20, 0, 5, "60s", "waits on PayPal (8 s per call, retried): I/O bound, rare per user"
    ),
    "paypal_webhook": Sizing(
        "512Mi", "1", 20, 0, 5, "60s", "PayPal retries any failure, so a cold start is harmless; a resync calls PayPal"
    ),
    "promo_apply": Sizing("512Mi", "1", 20, 0, 5, "30s", "rare; a precondition-guarded batch on one code"),
    "reconcile_subscriptions": Sizing(
        "512Mi", "1", 1, 0, 1, "540s", "one daily run over the subscriptions that need a re-read"
    ),
    "sweep_uploads": Sizing(
        "512Mi", "1", 1, 0, 1, "540s", "a run every 10 minutes over the bucket's users/ listing (S3 store only)"
    ),
    "deployments": Sizing(
        "512Mi", "1", 40, 0, 10, "60s", "short Firestore reads and writes; deploying reads and checks the model's files"
    ),
    "predict": Sizing(
        "1Gi",
        "1",
        20,
        0,
        20,
        "30s",
        "CPU-bound inference (numpy, BLAS on one thread) with a 64 MB model cache per process; "
        "a request is at most 10^9 multiply-adds",
    ),
}

# Only the finalize recorder retries: a failed daily job runs again the next day, while a lost object
# event would leave a version pending for good.
RETRY = frozenset({"on_object_finalized"})
