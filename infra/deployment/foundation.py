"""APIs, identities and their grants, the buckets, the event topics and Firestore."""

from __future__ import annotations

from deployment import access, indexes, secret_steps
from deployment.environment import Environment
from deployment.files import LIFECYCLE, RULES, Files
from deployment.steps import Probe, Step, gcloud, relative

APIS = (
    "cloudresourcemanager.googleapis.com",  # project number lookups, project IAM
    "iam.googleapis.com",  # service accounts
    "iamcredentials.googleapis.com",  # signBlob for signed URLs
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",  # gen2 functions are Cloud Run services
    "cloudbuild.googleapis.com",  # builds the functions from source
    "artifactregistry.googleapis.com",  # holds the built images
    "eventarc.googleapis.com",  # Pub/Sub triggers
    "pubsub.googleapis.com",
    "storage.googleapis.com",
    "firestore.googleapis.com",
    "firebaserules.googleapis.com",  # Firestore security rules
    "secretmanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",  # the load balancer, Cloud Armor
    "monitoring.googleapis.com",
    "logging.googleapis.com",
    "billingbudgets.googleapis.com",
)
DATABASE = "--database=(default)"
# What the build account needs to turn a function's source into an image (Cloud Functions' guide to a
# custom build service account): write build logs, push images, read the uploaded source. Source reads
# are limited by condition to Cloud Functions' own source buckets, so it never reads the data bucket.
SOURCE_BUCKETS = (
    'resource.name.startsWith("projects/_/buckets/gcf-v2-sources-") || '
    'resource.name.startsWith("projects/_/buckets/gcf-v2-uploads-")'
)
BUILD_ROLES = (
    ("roles/logging.logWriter", "writes its build logs", "None"),
    ("roles/artifactregistry.writer", "pushes the built images", "None"),
    (
        "roles/storage.objectViewer",
        "reads the uploaded source (Cloud Functions' source buckets only)",
        f"expression={SOURCE_BUCKETS},title=gcf-source-buckets",
    ),
)
# A CI account redeploying the functions sets their invoker policies (--allow-unauthenticated and
# add-invoker-policy-binding set a Cloud Run service's IAM policy): these two permissions and no more.
INVOKER_POLICY_ROLE = "mllabInvokerPolicy"
INVOKER_POLICY_PERMISSIONS = ("run.services.getIamPolicy", "run.services.setIamPolicy")
PUBSUB_AGENT = "service-${PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"


def apis(env: Environment) -> list[Step]:
    return [
        Step(
            "APIs",
            "Enable every API the deployment uses (enabling an enabled API is a no-op).",
            gcloud(env.project, "services", "enable", *APIS),
        )
    ]


def identities(env: Environment) -> list[Step]:
    p = env.project
    steps = [
        Step(
            "Identities",
            "The project number names Google's service agents (Pub/Sub, below).",
            gcloud(None, "projects", "describe", p, "--format=value(projectNumber)"),
            capture="PROJECT_NUMBER",
        )
    ]
    for fn in env.functions:
        email = env.service_account(fn.name)
        steps.append(
            Step(
                "Identities",
                f"{fn.name} runs as its own service account, which holds only what it needs.",
                gcloud(
                    p,
                    "iam",
                    "service-accounts",
                    "create",
                    env.service_account_id(fn.name),
                    f"--display-name=ML Lab {fn.name}",
                    f"--description=Runtime identity of the {fn.name} function",
                ),
                probe=Probe(gcloud(p, "iam", "service-accounts", "describe", email, "--format=value(email)")),
            )
        )
    steps.append(
        Step(
            "Identities",
            "Cloud Build builds the functions as this account (new projects no longer give the default "
            "one the builder role; this one may only build).",
            gcloud(
                p, "iam", "service-accounts", "create", env.build_account_id, "--display-name=ML Lab function builds"
            ),
            probe=Probe(gcloud(p, "iam", "service-accounts", "describe", env.build_account, "--format=value(email)")),
        )
    )
    steps.append(
        Step(
            "Identities",
            "A role that may only set the functions' invoker policies, for a CI account that redeploys "
            "them (cloudbuild.yaml says what else it holds).",
            gcloud(
                p,
                "iam",
                "roles",
                "create",
                INVOKER_POLICY_ROLE,
                "--title=ML Lab invoker policy",
                "--description=Set the functions' invoker policies (Cloud Run services)",
                f"--permissions={','.join(INVOKER_POLICY_PERMISSIONS)}",
                "--stage=GA",
            ),
            probe=Probe(gcloud(p, "iam", "roles", "describe", INVOKER_POLICY_ROLE, "--format=value(name)")),
        )
    )
    steps.append(
        Step(
            "Identities",
            "Pub/Sub pushes to the event-triggered functions as this account (it may only invoke them).",
            gcloud(p, "iam", "service-accounts", "create", env.invoker_id, "--display-name=ML Lab event invoker"),
            probe=Probe(gcloud(p, "iam", "service-accounts", "describe", env.invoker, "--format=value(email)")),
        )
    )
    steps.append(
        Step(
            "Identities",
            "Pub/Sub's service agent mints the invoker's OIDC tokens for those pushes (on that account only).",
            gcloud(
                p,
                "iam",
                "service-accounts",
                "add-iam-policy-binding",
                env.invoker,
                f"--member=serviceAccount:{PUBSUB_AGENT}",
                "--role=roles/iam.serviceAccountTokenCreator",
            ),
        )
    )
    for role, what, condition in BUILD_ROLES:
        steps.append(
            Step(
                "Identities",
                f"The build account {what}.",
                gcloud(
                    None,
                    "projects",
                    "add-iam-policy-binding",
                    p,
                    f"--member={env.member(env.build_account)}",
                    f"--role={role}",
                    f"--condition={condition}",
                ),
            )
        )
    for name in sorted(access.signers(env)):
        email = env.service_account(name)
        steps.append(
            Step(
                "Identities",
                f"{name} signs URLs with IAM signBlob as itself: token creator on its own account only.",
                gcloud(
                    p,
                    "iam",
                    "service-accounts",
                    "add-iam-policy-binding",
                    email,
                    f"--member={env.member(email)}",
                    "--role=roles/iam.serviceAccountTokenCreator",
                ),
            )
        )
    for name in access.firestore_users(env):
        steps.append(
            Step(
                "Identities",
                f"{name} reads and writes Firestore (IAM has no narrower grant than the database).",
                gcloud(
                    None,
                    "projects",
                    "add-iam-policy-binding",
                    p,
                    f"--member={env.member(env.service_account(name))}",
                    f"--role={access.FIRESTORE_ROLE}",
                    "--condition=None",
                ),
            )
        )
    return steps


def buckets(env: Environment, files: Files) -> list[Step]:
    steps = [] if env.s3 else data_bucket(env, files)
    return steps + lab_bucket(env)


def data_bucket(env: Environment, files: Files) -> list[Step]:
    """The GCS data bucket (an S3-compatible one is the operator's: s3_bucket sets its CORS)."""
    p, data = env.project, f"gs://{env.data_bucket}"
    steps = [
        Step(
            "Buckets",
            "The private data bucket: uniform access (IAM only, no ACLs), never public.",
            gcloud(
                p,
                "storage",
                "buckets",
                "create",
                data,
                f"--location={env.region}",
                "--uniform-bucket-level-access",
                "--public-access-prevention",
            ),
            probe=Probe(gcloud(p, "storage", "buckets", "describe", data, "--format=value(name)")),
        ),
        Step(
            "Buckets",
            "Its CORS lets only the lab origin PUT/GET through signed URLs; its lifecycle aborts "
            "multipart uploads abandoned for a day (the one upload GCS can leave half-done).",
            gcloud(
                p,
                "storage",
                "buckets",
                "update",
                data,
                f"--cors-file={relative(files.cors)}",
                f"--lifecycle-file={relative(LIFECYCLE)}",
                "--uniform-bucket-level-access",
                "--public-access-prevention",
            ),
        ),
    ]
    for name, role in access.bucket_roles(env).items():
        steps.append(
            Step(
                "Buckets",
                f"{name} {'reads' if role == access.VIEWER_ROLE else 'creates, reads and deletes'} objects in the "
                "data bucket only.",
                gcloud(
                    p,
                    "storage",
                    "buckets",
                    "add-iam-policy-binding",
                    data,
                    f"--member={env.member(env.service_account(name))}",
                    f"--role={role}",
                ),
            )
        )
    return steps


# The deploying machine's interpreter (`make deploy` builds .venv, which has botocore: the `s3` extra).
VENV_PYTHON = ".venv/bin/python"


def s3_bucket(env: Environment, files: Files) -> list[Step]:
    """An S3-compatible bucket's CORS, set through the S3 API with the token stored a step before."""
    if not env.s3:
        return []
    return [
        Step(
            "S3 bucket",
            f"The bucket {env.data_bucket}'s CORS, through the S3 API: only the lab origin may PUT/GET through "
            "presigned URLs, with exactly the headers they pin.",
            (
                VENV_PYTHON,
                "infra/s3_cors.py",
                f"--endpoint={env.s3_endpoint}",
                f"--bucket={env.data_bucket}",
                f"--region={env.s3_region}",
                f"--addressing={env.s3_addressing}",
                f"--rules={relative(files.cors)}",
            ),
            stdin=secret_steps.STORED_S3_CREDENTIALS,
            note=(
                "The bucket is the operator's (made in the provider's console, with a token scoped to it: "
                "docs/operations.md);\nthe plan neither creates nor deletes it. It stays private (the store's "
                "default); IAM does not reach it,\nso its token is the one grant. No lifecycle rule: upload URLs "
                "are single PUTs, so no multipart upload is\nleft half-done (GCS's lifecycle rule aborts those)."
            ),
        )
    ]


def lab_bucket(env: Environment) -> list[Step]:
    p, site = env.project, f"gs://{env.lab_bucket}"
    return [
        Step(
            "Buckets",
            "The lab's bucket: static files behind the load balancer (a backend bucket reads them "
            "as a public site, so it is the one bucket without public access prevention).",
            gcloud(
                p, "storage", "buckets", "create", site, f"--location={env.region}", "--uniform-bucket-level-access"
            ),
            probe=Probe(gcloud(p, "storage", "buckets", "describe", site, "--format=value(name)")),
        ),
        Step(
            "Buckets",
            "A directory path serves its index.html.",
            gcloud(p, "storage", "buckets", "update", site, "--web-main-page-suffix=index.html"),
        ),
        Step(
            "Buckets",
            "Anyone may read the lab's files (the page is public; it holds no data).",
            gcloud(
                p,
                "storage",
                "buckets",
                "add-iam-policy-binding",
                site,
                "--member=allUsers",
                "--role=roles/storage.objectViewer",
            ),
        ),
    ]


TOPIC_WHY = {  # Settings field of a topic -> what it carries
    "events_topic": "the bucket's object events",
    "purge_topic": "the daily account purge (Cloud Scheduler publishes)",
    "reconcile_topic": "the daily billing reconciliation (Cloud Scheduler publishes)",
    "sweep_topic": "the upload sweep, every few minutes (Cloud Scheduler publishes)",
}


def events(env: Environment) -> list[Step]:
    p = env.project
    steps = (
        []
        if env.s3
        else [
            Step(
                "Events",
                "Cloud Storage's service agent, which publishes the bucket's notifications.",
                gcloud(p, "storage", "service-agent"),
                capture="GCS_AGENT",
            )
        ]
    )
    topics = [(topic, TOPIC_WHY[field]) for field, topic in env.topics.items()]
    for topic, why in (*topics, (env.dead_letter_topic, "object events the recorder failed 10 times")):
        steps.append(
            Step(
                "Events",
                f"Topic {topic}: {why}.",
                gcloud(p, "pubsub", "topics", "create", topic),
                probe=Probe(gcloud(p, "pubsub", "topics", "describe", topic, "--format=value(name)")),
            )
        )
    steps.append(
        Step(
            "Events",
            "Dead-lettered events wait here (7 days) for an operator; an alert fires while any does.",
            gcloud(
                p,
                "pubsub",
                "subscriptions",
                "create",
                env.dead_letter_hold,
                f"--topic={env.dead_letter_topic}",
                "--message-retention-duration=7d",
                "--expiration-period=never",
            ),
            probe=Probe(gcloud(p, "pubsub", "subscriptions", "describe", env.dead_letter_hold, "--format=value(name)")),
        )
    )
    steps += _s3_event_publishers(env) if env.s3 else _gcs_event_publisher(env)
    steps.append(
        Step(
            "Events",
            "Pub/Sub's agent may forward undeliverable events to the dead-letter topic.",
            gcloud(
                p,
                "pubsub",
                "topics",
                "add-iam-policy-binding",
                env.dead_letter_topic,
                f"--member=serviceAccount:{PUBSUB_AGENT}",
                f"--role={access.PUBLISHER_ROLE}",
            ),
        )
    )
    return steps + ([] if env.s3 else [_bucket_notification(env)])


def _gcs_event_publisher(env: Environment) -> list[Step]:
    return [
        Step(
            "Events",
            "The storage agent may publish to the events topic (and nowhere else).",
            gcloud(
                env.project,
                "pubsub",
                "topics",
                "add-iam-policy-binding",
                env.events_topic,
                "--member=serviceAccount:${GCS_AGENT}",
                f"--role={access.PUBLISHER_ROLE}",
            ),
        )
    ]


def _s3_event_publishers(env: Environment) -> list[Step]:
    """An S3-compatible bucket notifies nobody here: the functions that write it publish its events."""
    return [
        Step(
            "Events",
            f"{name} publishes the object events of the files it reports or deletes (an S3-compatible bucket "
            "sends none to Pub/Sub), to the events topic only.",
            gcloud(
                env.project,
                "pubsub",
                "topics",
                "add-iam-policy-binding",
                env.events_topic,
                f"--member={env.member(env.service_account(name))}",
                f"--role={access.PUBLISHER_ROLE}",
            ),
        )
        for name in access.event_publishers(env)
    ]


def _bucket_notification(env: Environment) -> Step:
    p, data = env.project, f"gs://{env.data_bucket}"
    return Step(
        "Events",
        "The bucket notifies OBJECT_FINALIZE and OBJECT_DELETE (JSON object resource) to the topic.",
        gcloud(
            p,
            "storage",
            "buckets",
            "notifications",
            "create",
            data,
            f"--topic=projects/{p}/topics/{env.events_topic}",
            "--event-types=OBJECT_FINALIZE,OBJECT_DELETE",
            "--payload-format=json",
            "--skip-topic-setup",
        ),
        probe=Probe(
            gcloud(
                p,
                "storage",
                "buckets",
                "notifications",
                "list",
                data,
                f"--filter=topic~/topics/{env.events_topic}$",
                "--format=value(topic)",
            )
        ),
    )


def firestore(env: Environment) -> list[Step]:
    p = env.project
    steps = [
        Step(
            "Firestore",
            "The database, native mode, in the functions' region, protected from deletion.",
            gcloud(
                p,
                "firestore",
                "databases",
                "create",
                DATABASE,
                f"--location={env.region}",
                "--type=firestore-native",
                "--delete-protection",
            ),
            probe=Probe(gcloud(p, "firestore", "databases", "describe", DATABASE, "--format=value(name)")),
        ),
        Step(
            "Firestore",
            "Point-in-time recovery: any minute of the last 7 days can be read back.",
            gcloud(p, "firestore", "databases", "update", DATABASE, "--enable-pitr"),
        ),
        Step(
            "Firestore",
            "A daily backup kept 14 days (restores into a new database).",
            gcloud(p, "firestore", "backups", "schedules", "create", DATABASE, "--recurrence=daily", "--retention=14d"),
            probe=Probe(gcloud(p, "firestore", "backups", "schedules", "list", DATABASE, "--format=value(name)")),
        ),
    ]
    for entry in indexes.load_ttl():
        group, field = entry["collectionGroup"], entry["field"]
        steps.append(
            Step(
                "Firestore",
                f"TTL on {group}.{field}: {entry['why']} (reads check expiry; TTL only cleans up).",
                gcloud(
                    p,
                    "firestore",
                    "fields",
                    "ttls",
                    "update",
                    field,
                    f"--collection-group={group}",
                    "--enable-ttl",
                    "--async",
                ),
                probe=Probe(
                    gcloud(
                        p,
                        "firestore",
                        "indexes",
                        "fields",
                        "describe",
                        field,
                        f"--collection-group={group}",
                        "--format=value(ttlConfig.state)",
                    )
                ),
            )
        )
    for index in indexes.load_indexes():
        steps.append(
            Step(
                "Firestore",
                f"Composite index {indexes.describe(index)} (infra/firestore/firestore.indexes.json).",
                gcloud(
                    p,
                    "firestore",
                    "indexes",
                    "composite",
                    "create",
                    f"--collection-group={index['collectionGroup']}",
                    f"--query-scope={index.get('queryScope', 'COLLECTION')}",
                    *indexes.field_configs(index),
                    "--async",
                ),
                probe=Probe(
                    gcloud(p, "firestore", "indexes", "composite", "list", "--format=json"),
                    matches=indexes.in_listing(index),
                    shown_as="the list already has this index",
                    example=indexes.listed_example(index, p),
                ),
            )
        )
    steps.append(
        Step(
            "Firestore",
            "Security rules: deny every client read and write (only the functions' IAM identities reach Firestore).",
            ("python3", "infra/firestore/rules.py", f"--project={p}", f"--rules={relative(RULES)}"),
            note=(
                "No gcloud command deploys Firestore rules: this uses the Firebase Rules REST API (a ruleset, then "
                "the\ncloud.firestore release), with a token from `gcloud auth print-access-token` kept in memory, "
                "and\nchanges nothing when the released rules already equal the file."
            ),
        )
    )
    return steps
