"""The deployment of ML Lab to one Google Cloud project, as an ordered list of gcloud steps.

`infra/deploy.py plan` prints the steps offline (no gcloud call, no network, no credentials);
`infra/deploy.py apply` runs them through an injectable runner, each step probing before it creates,
so a second run creates nothing. Modules, in the order the plan uses them:

    environment   PROJECT / REGION / DOMAIN (+ optional knobs) and every name derived from them
    steps         Step, Probe, the secret-value sources, plan/script rendering, apply
    sizing        memory, CPU, concurrency and instances per function, each with why
    access        which secrets, bucket role and Firestore access each function gets, and why
    urlmap        the load balancer's URL map, generated from mllab.api.routes.ROUTES
    lab           the static lab: staged files, /config.json, CSP and security headers
    files         the generated files (env vars, CORS, URL maps, alert policies, the staged lab)
    indexes       composite indexes and TTL fields from infra/firestore/, as gcloud arguments
    foundation    APIs, service accounts, project and bucket IAM, buckets (an S3 bucket's CORS), Pub/Sub, Firestore
    secret_steps  Secret Manager: secrets, first values, per-secret accessors
    function_steps  staging and `gcloud functions deploy`, invokers, dead letters, scheduler jobs
    edge          serverless NEGs, backend services, Cloud Armor, certificates, URL map, the lab
    monitoring    alert policies, the uptime check, the budget
    plan          all of the above in order

Standard library only, plus `mllab.api.routes` and `mllab.platform.config` (the route table and the settings the
functions read), `mllab.files.s3` and `mllab.files.completion` (an S3-compatible store's CORS rules and the
sweep's interval), and `mllab.identity.tokens` when a first key set is generated while applying.
"""
