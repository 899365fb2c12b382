"""The local PayPal stand-in (mllab_dev.paypal_standin) and its development CA (mllab_dev.devca).

Every test runs a fresh stand-in in-process on an ephemeral port and talks to it over TLS with
httpx, trusting only the development CA. PayPal response bodies are validated against the schema
PayPal's published OpenAPI documents (tests/data/paypal-openapi/) give for that operation and status.
Webhooks go to a small local receiver, and every signature is checked the way a PayPal listener
does offline: certificate fetched from PAYPAL-CERT-URL, RSASSA-PKCS1-v1_5 SHA-256 over
`transmission_id|transmission_time|webhook_id|crc32(raw body)` (CRC unsigned).
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema_rs
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from mllab_dev import devca
from mllab_dev.paypal_standin import CERT_ID, StandIn
from tests.unit.helpers import REPO

OPENAPI_DIR = Path(os.environ.get("MLLAB_PAYPAL_OPENAPI_DIR") or REPO / "tests" / "data" / "paypal-openapi")
BILLING = "billing_subscriptions_v1.json"
NOTIFICATIONS = "notifications_webhooks_v1.json"
FAST_RETRIES = (0.02, 0.05, 0.1)


# --- OpenAPI validation ----------------------------------------------------------------------------

_docs: dict[str, dict[str, Any]] = {}
_validators: dict[tuple[str, str], Any] = {}


def _doc(name: str) -> dict[str, Any]:
    if name not in _docs:
        path = OPENAPI_DIR / name
        if not path.exists():
            pytest.fail(f"PayPal's OpenAPI document {path} is missing (set MLLAB_PAYPAL_OPENAPI_DIR)")
        _docs[name] = json.loads(path.read_text())
    return _docs[name]


def _validator(doc_name: str, schema: dict[str, Any]) -> Any:
    key = (doc_name, json.dumps(schema, sort_keys=True))
    if key not in _validators:
        # OpenAPI 3.0 schemas are (nearly) JSON Schema draft 4; keep the components beside the schema
        # so every "#/components/schemas/..." reference resolves inside one document.
        root = {"allOf": [schema], "components": _doc(doc_name)["components"]}
        _validators[key] = jsonschema_rs.Draft4Validator(root, validate_formats=True)
    return _validators[key]


def check_component(doc_name: str, component: str, instance: Any) -> None:
    _assert_valid(
        _validator(doc_name, {"$ref": f"#/components/schemas/{component}"}),
        instance,
        f"{doc_name} #/components/schemas/{component}",
    )


def check_response(doc_name: str, method: str, path: str, response: httpx.Response) -> Any:
    """Validate a response body against the schema the document gives for (path, method, status)."""
    responses = _doc(doc_name)["paths"][path][method.lower()]["responses"]
    spec = responses.get(str(response.status_code)) or responses["default"]
    if "$ref" in spec:
        spec = _doc(doc_name)["components"]["responses"][spec["$ref"].rsplit("/", 1)[-1]]
    schema = spec["content"]["application/json"]["schema"]
    body = response.json()
    _assert_valid(_validator(doc_name, schema), body, f"{method} {path} {response.status_code}")
    return body


def _assert_valid(validator: Any, instance: Any, what: str) -> None:
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, f"{what}: {errors}\n{json.dumps(instance, indent=1)[:3000]}"


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA and one credentials file for the module (key generation is the slow part)."""
    path = tmp_path_factory.mktemp("paypal-dev")
    devca.ensure(path)
    secrets_dir = path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "paypal-client").write_text(
        json.dumps({"client_id": "local-client-id", "client_secret": "s3cret-local-value"})
    )
    return path


@pytest.fixture
def standin(dev_dir: Path) -> Iterator[StandIn]:
    lines: list[str] = []
    server = StandIn(
        dev_dir,
        dev_dir / "secrets" / "paypal-client",
        port=0,
        retry_delays=FAST_RETRIES,
        delivery_timeout=2.0,
        log=lines.append,
    )
    server.log_lines = lines  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def trust_only(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture
def client(standin: StandIn) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standin.base_url, verify=trust_only(standin.ca_file), trust_env=False, timeout=5.0) as c:
        yield c


def get_token(client: httpx.Client) -> str:
    r = client.post(
        "/v1/oauth2/token", auth=("local-client-id", "s3cret-local-value"), data={"grant_type": "client_credentials"}
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture
def api(standin: StandIn, client: httpx.Client) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=standin.base_url,
        verify=trust_only(standin.ca_file),
        trust_env=False,
        timeout=5.0,
        headers={"Authorization": f"Bearer {get_token(client)}"},
    ) as c:
        yield c


class Receiver:
    """A webhook listener on 127.0.0.1: records every request; answers `statuses` first, then 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self._cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer._cond:
                    status = outer.statuses.pop(0) if outer.statuses else 200
                    outer.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "status": status,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                    outer._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/paypal/webhook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; received {[event_of(r)['event_type'] for r in self.requests]}"
                self._cond.wait(left)
            return list(self.requests)

    def wait_for(self, event_id: str, count: int = 1) -> list[dict[str, Any]]:
        got = self.wait(lambda rs: sum(1 for r in rs if event_of(r)["id"] == event_id and r["status"] == 200) >= count)
        return [r for r in got if event_of(r)["id"] == event_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def event_of(request: dict[str, Any]) -> dict[str, Any]:
    return json.loads(request["body"])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def billing(api: httpx.Client, receiver: Receiver) -> dict[str, Any]:
    """A product, a $15/month plan (payment_failure_threshold 2) and a webhook for every event."""
    product = api.post("/v1/catalogs/products", json={"name": "ML Lab PRO", "type": "SERVICE", "category": "SOFTWARE"})
    assert product.status_code == 201, product.text
    plan = api.post(
        "/v1/billing/plans",
        json={
            "product_id": product.json()["id"],
            "name": "ML Lab PRO monthly",
            "billing_cycles": [
                {
                    "frequency": {"interval_unit": "MONTH", "interval_count": 1},
                    "tenure_type": "REGULAR",
                    "sequence": 1,
                    "total_cycles": 0,
                    "pricing_scheme": {"fixed_price": {"value": "15", "currency_code": "USD"}},
                }
            ],
            "payment_preferences": {"auto_bill_outstanding": True, "payment_failure_threshold": 2},
        },
    )
    assert plan.status_code == 201, plan.text
    webhook = api.post("/v1/notifications/webhooks", json={"url": receiver.url, "event_types": [{"name": "*"}]})
    assert webhook.status_code == 201, webhook.text
    return {
        "product": product.json(),
        "plan": plan.json(),
        "webhook": webhook.json(),
        "plan_id": plan.json()["id"],
        "webhook_id": webhook.json()["id"],
    }


def create_subscription(api: httpx.Client, plan_id: str, custom_id: str = "uid-123", **headers: str) -> httpx.Response:
    return api.post(
        "/v1/billing/subscriptions",
        headers=headers,
        json={
            "plan_id": plan_id,
            "custom_id": custom_id,
            "application_context": {
                "brand_name": "ML Lab",
                "user_action": "SUBSCRIBE_NOW",
                "shipping_preference": "NO_SHIPPING",
                "return_url": "http://127.0.0.1:8080/billing/return?x=1",
                "cancel_url": "http://127.0.0.1:8080/billing/cancel",
            },
        },
    )


def active_subscription(api: httpx.Client, client: httpx.Client, billing: dict[str, Any]) -> str:
    sid = create_subscription(api, billing["plan_id"]).json()["id"]
    r = client.post(f"/_standin/subscriptions/{sid}/approve")
    assert r.status_code == 200, r.text
    return sid


def verify_signature(request: dict[str, Any], webhook_id: str, standin: StandIn, crc: int | None = None) -> None:
    """PayPal's offline verification, with the certificate fetched over TLS trusting only the dev CA."""
    h = request["headers"]
    assert h["paypal-auth-algo"] == "SHA256withRSA"
    assert h["content-type"] == "application/json"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["paypal-transmission-time"])
    cert_url = h["paypal-cert-url"]
    assert cert_url == f"{standin.base_url}/v1/notifications/certs/{CERT_ID}"
    cert_response = httpx.get(cert_url, verify=trust_only(standin.ca_file), trust_env=False, timeout=5.0)
    assert cert_response.status_code == 200
    assert cert_response.headers["content-type"].startswith("text/plain")
    cert = x509.load_pem_x509_certificate(cert_response.content)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == devca.SIGNING_CN
    crc = zlib.crc32(request["body"]) if crc is None else crc
    message = f"{h['paypal-transmission-id']}|{h['paypal-transmission-time']}|{webhook_id}|{crc}".encode()
    cert.public_key().verify(
        base64.b64decode(h["paypal-transmission-sig"]),
        message,  # type: ignore[union-attr]
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def check_event(event: dict[str, Any]) -> None:
    check_component(NOTIFICATIONS, "event", event)
    assert re.fullmatch(r"WH-[A-Z0-9]+-[A-Z0-9]+", event["id"])
    assert event["event_version"] == "1.0" and event["resource_version"] == "2.0"
    assert [link["rel"] for link in event["links"]] == ["self", "resend"]
    if event["resource_type"] == "subscription":
        check_component(BILLING, "subscription", event["resource"])


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- the development CA ----------------------------------------------------------------------------


def test_devca_creates_a_consistent_set_once_even_when_racing(tmp_path: Path) -> None:
    results: list[devca.DevCA] = []
    threads = [threading.Thread(target=lambda: results.append(devca.ensure(tmp_path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ca = results[0]
    assert all(r == ca for r in results)
    before = {p: p.read_bytes() for p in ca.directory.iterdir()}
    assert sorted(p.name for p in before) == [
        "ca.key",
        "ca.pem",
        "server.key",
        "server.pem",
        "webhook-signing.key",
        "webhook-signing.pem",
    ]
    assert devca.ensure(tmp_path) == ca
    assert {p: p.read_bytes() for p in ca.directory.iterdir()} == before  # nothing replaced, no temp files left
    for key in (ca.ca_key, ca.server_key, ca.signing_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    root = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(ca.server_cert.read_bytes())
    signing = x509.load_pem_x509_certificate(ca.signing_cert.read_bytes())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.not_valid_after_utc - root.not_valid_before_utc > timedelta(days=3640)
    for leaf in (server, signing):
        leaf.verify_directly_issued_by(root)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert (
        signing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "messageverificationcerts.sandbox.paypal.com"
    )
    assert signing.public_key().key_size == 2048  # type: ignore[union-attr]
    assert timedelta(days=364) < signing.not_valid_after_utc - signing.not_valid_before_utc < timedelta(days=367)
    # The keys on disk belong to the certificates on disk.
    signing_public = signing.public_key().public_numbers()  # type: ignore[union-attr]
    assert ca.load_signing_key().public_key().public_numbers() == signing_public
    ca.server_context()  # loads: server.key matches server.pem


def test_tls_is_trusted_only_through_the_dev_ca(standin: StandIn) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{standin.base_url}/_standin/health", trust_env=False, timeout=5.0)  # system roots only
    r = httpx.get(f"{standin.base_url}/_standin/health", verify=trust_only(standin.ca_file), trust_env=False)
    assert (r.status_code, r.json()) == (200, {"ok": True})
    r = httpx.get(
        f"https://localhost:{standin.port}/_standin/health", verify=trust_only(standin.ca_file), trust_env=False
    )
    assert r.status_code == 200


# --- OAuth -----------------------------------------------------------------------------------------


def test_oauth_token_with_good_and_bad_credentials(client: httpx.Client) -> None:
    r = client.post(
        "/v1/oauth2/token", auth=("local-client-id", "s3cret-local-value"), data={"grant_type": "client_credentials"}
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"scope", "access_token", "token_type", "app_id", "expires_in", "nonce"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 32400 and body["access_token"]

    for auth in (("local-client-id", "wrong"), ("someone-else", "s3cret-local-value")):
        r = client.post("/v1/oauth2/token", auth=auth, data={"grant_type": "client_credentials"})
        assert r.status_code == 401
        assert r.json() == {"error": "invalid_client", "error_description": "Client Authentication failed"}
    r = client.post("/v1/oauth2/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = client.post("/v1/oauth2/token", auth=("local-client-id", "s3cret-local-value"), data={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


def test_bearer_token_missing_unknown_or_expired_is_refused(standin: StandIn, client: httpx.Client) -> None:
    path = "/v1/billing/subscriptions/I-AAAAAAAAAAAA"
    r = client.get(path)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    check_response(BILLING, "GET", "/v1/billing/subscriptions/{id}", r)
    r = client.get(path, headers={"Authorization": "Bearer A21AAnot-a-token-it-issued"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    r = client.get(path, headers={"Authorization": "Basic bG9jYWw6eA=="})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"

    token = get_token(client)
    r = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404  # the token works: the subscription just does not exist
    real = time.time
    standin.now = lambda: real() + 32401  # past expires_in
    r = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    # The certificate download needs no token.
    assert client.get(f"/v1/notifications/certs/{CERT_ID}").status_code == 200


# --- catalog, plans, webhook registrations ---------------------------------------------------------


def test_product_plan_and_webhook_registration(api: httpx.Client, receiver: Receiver) -> None:
    product = api.post("/v1/catalogs/products", json={"name": "ML Lab PRO", "type": "SERVICE", "category": "SOFTWARE"})
    assert product.status_code == 201
    assert re.fullmatch(r"PROD-[A-Z0-9]+", product.json()["id"])

    request = {
        "product_id": product.json()["id"],
        "name": "ML Lab PRO monthly",
        "billing_cycles": [
            {
                "frequency": {"interval_unit": "MONTH", "interval_count": 1},
                "tenure_type": "REGULAR",
                "sequence": 1,
                "total_cycles": 0,
                "pricing_scheme": {"fixed_price": {"value": "15", "currency_code": "USD"}},
            }
        ],
        "payment_preferences": {
            "auto_bill_outstanding": True,
            "setup_fee_failure_action": "CANCEL",
            "payment_failure_threshold": 2,
        },
    }
    check_component(BILLING, "plan_request_POST", request)
    created = api.post("/v1/billing/plans", json=request)
    assert created.status_code == 201
    plan = check_response(BILLING, "POST", "/v1/billing/plans", created)
    assert re.fullmatch(r"P-[A-Z0-9]+", plan["id"]) and plan["status"] == "ACTIVE"
    fetched = api.get(f"/v1/billing/plans/{plan['id']}")
    assert check_response(BILLING, "GET", "/v1/billing/plans/{id}", fetched) == plan
    assert plan["payment_preferences"]["payment_failure_threshold"] == 2
    cycle = plan["billing_cycles"][0]
    assert cycle["frequency"] == {"interval_unit": "MONTH", "interval_count": 1}
    assert cycle["pricing_scheme"]["fixed_price"] == {"currency_code": "USD", "value": "15"}
    missing = api.get("/v1/billing/plans/P-NOSUCHPLAN")
    assert missing.status_code == 404
    check_response(BILLING, "GET", "/v1/billing/plans/{id}", missing)
    bad = api.post("/v1/billing/plans", json={**request, "billing_cycles": []})
    assert bad.status_code == 400
    check_response(BILLING, "POST", "/v1/billing/plans", bad)

    created = api.post(
        "/v1/notifications/webhooks",
        json={"url": receiver.url, "event_types": [{"name": "BILLING.SUBSCRIPTION.ACTIVATED"}, {"name": "*"}]},
    )
    assert created.status_code == 201
    webhook = check_response(NOTIFICATIONS, "POST", "/v1/notifications/webhooks", created)
    assert re.fullmatch(r"[A-Z0-9]{10,50}", webhook["id"]) and webhook["url"] == receiver.url
    assert [t["name"] for t in webhook["event_types"]] == ["BILLING.SUBSCRIPTION.ACTIVATED", "*"]
    listed = check_response(NOTIFICATIONS, "GET", "/v1/notifications/webhooks", api.get("/v1/notifications/webhooks"))
    assert listed == {"webhooks": [webhook]}
    duplicate = api.post("/v1/notifications/webhooks", json={"url": receiver.url, "event_types": [{"name": "*"}]})
    assert duplicate.status_code == 400
    check_response(NOTIFICATIONS, "POST", "/v1/notifications/webhooks", duplicate)


# --- subscriptions ---------------------------------------------------------------------------------


def test_create_subscription_is_idempotent_per_paypal_request_id(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], standin: StandIn
) -> None:
    first = create_subscription(api, billing["plan_id"], **{"PayPal-Request-Id": "sub-uid-123-1"})
    assert first.status_code == 201
    sub = check_response(BILLING, "POST", "/v1/billing/subscriptions", first)
    assert re.fullmatch(r"I-[A-Z0-9]{12}", sub["id"])
    assert (sub["status"], sub["plan_id"], sub["custom_id"], sub["quantity"]) == (
        "APPROVAL_PENDING",
        billing["plan_id"],
        "uid-123",
        "1",
    )
    for key in ("start_time", "create_time", "status_update_time"):
        assert key in sub
    links = {link["rel"]: link for link in sub["links"]}
    assert set(links) == {"approve", "edit", "self"}
    assert re.fullmatch(
        re.escape(standin.base_url) + r"/webapps/billing/subscriptions\?ba_token=BA-[A-Z0-9]+", links["approve"]["href"]
    )
    assert links["approve"]["method"] == "GET" and links["edit"]["method"] == "PATCH"

    again = create_subscription(api, billing["plan_id"], **{"PayPal-Request-Id": "sub-uid-123-1"})
    assert again.status_code == 201 and again.json() == sub
    other = create_subscription(api, billing["plan_id"], **{"PayPal-Request-Id": "sub-uid-123-2"})
    assert other.json()["id"] != sub["id"]
    created = client.get("/_standin/events", params={"event_type": "BILLING.SUBSCRIPTION.CREATED"}).json()["events"]
    assert sorted(e["subscription_id"] for e in created) == sorted([sub["id"], other.json()["id"]])


def test_create_subscription_rejects_bad_requests(api: httpx.Client, billing: dict[str, Any]) -> None:
    def post(body: dict[str, Any], status: int) -> dict[str, Any]:
        r = api.post("/v1/billing/subscriptions", json=body)
        assert r.status_code == status, r.text
        return check_response(BILLING, "POST", "/v1/billing/subscriptions", r)

    assert post({"custom_id": "u"}, 400)["details"][0]["issue"] == "MISSING_REQUIRED_PARAMETER"
    unknown = post({"plan_id": "P-NOSUCHPLAN000"}, 422)
    assert unknown["name"] == "UNPROCESSABLE_ENTITY" and unknown["details"][0]["field"] == "/plan_id"
    no_cancel = post(
        {"plan_id": billing["plan_id"], "application_context": {"return_url": "https://example.com/r"}}, 400
    )
    assert no_cancel["details"][0]["field"] == "/application_context/cancel_url"
    too_long = post({"plan_id": billing["plan_id"], "custom_id": "u" * 128}, 400)
    assert too_long["details"][0]["issue"] == "INVALID_STRING_MAX_LENGTH"
    assert (
        post(
            {
                "plan_id": billing["plan_id"],
                "application_context": {"return_url": "not a url at all", "cancel_url": "https://example.com/c"},
            },
            400,
        )["name"]
        == "INVALID_REQUEST"
    )
    r = api.post("/v1/billing/subscriptions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    check_response(BILLING, "POST", "/v1/billing/subscriptions", r)


def test_approve_page_activates_and_delivers_signed_webhooks(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver, standin: StandIn
) -> None:
    sub = create_subscription(api, billing["plan_id"]).json()
    before = check_response(
        BILLING, "GET", "/v1/billing/subscriptions/{id}", api.get(f"/v1/billing/subscriptions/{sub['id']}")
    )
    assert before["status"] == "APPROVAL_PENDING"
    assert "billing_info" not in before and "subscriber" not in before

    approve_href = next(link["href"] for link in sub["links"] if link["rel"] == "approve")
    page = client.get(approve_href)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "ML Lab PRO monthly" in page.text and "$15.00 USD" in page.text
    assert "Agree &amp; Subscribe" in page.text and "Cancel and return to merchant" in page.text
    action = re.search(r'<form method=post action=([^ >]+/approve)>', page.text).group(1)  # type: ignore[union-attr]
    ba_token = re.search(r'name=ba_token value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert ba_token == parse_qs(urlsplit(approve_href).query)["ba_token"][0]

    t0 = datetime.now().astimezone()
    done = client.post(action, data={"ba_token": ba_token})
    assert done.status_code == 302
    location = urlsplit(done.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://127.0.0.1:8080/billing/return"
    query = parse_qs(location.query)
    assert query["x"] == ["1"] and query["subscription_id"] == [sub["id"]] and query["ba_token"] == [ba_token]
    assert query["token"][0]

    after = check_response(
        BILLING, "GET", "/v1/billing/subscriptions/{id}", api.get(f"/v1/billing/subscriptions/{sub['id']}")
    )
    assert after["status"] == "ACTIVE" and after["custom_id"] == "uid-123"
    assert after["subscriber"]["email_address"] and after["subscriber"]["payer_id"]
    info = after["billing_info"]
    assert info["last_payment"]["amount"] == {"currency_code": "USD", "value": "15.00"}
    assert info["failed_payments_count"] == 0 and info["outstanding_balance"]["value"] == "0.00"
    assert info["cycle_executions"][0]["cycles_completed"] == 1
    next_billing = parse_time(info["next_billing_time"]) - parse_time(info["last_payment"]["time"])
    assert next_billing == timedelta(days=30)
    assert abs(parse_time(after["status_update_time"]) - t0) < timedelta(seconds=5)
    assert {link["rel"] for link in after["links"]} >= {"cancel", "self", "suspend"}

    got = receiver.wait(lambda rs: len(rs) >= 3)
    assert [event_of(r)["event_type"] for r in got] == [
        "BILLING.SUBSCRIPTION.CREATED",
        "BILLING.SUBSCRIPTION.ACTIVATED",
        "PAYMENT.SALE.COMPLETED",
    ]
    for request in got:
        assert request["path"] == "/paypal/webhook"
        verify_signature(request, billing["webhook_id"], standin)
        check_event(event_of(request))
    activated, sale = event_of(got[1]), event_of(got[2])
    assert activated["resource"]["id"] == sub["id"] and activated["resource"]["status"] == "ACTIVE"
    assert activated["summary"] == "Subscription activated"
    assert sale["resource_type"] == "sale"
    resource = sale["resource"]
    assert (resource["state"], resource["billing_agreement_id"], resource["custom"]) == (
        "completed",
        sub["id"],
        "uid-123",
    )
    assert resource["amount"] == {"total": "15.00", "currency": "USD", "details": {"subtotal": "15.00"}}
    # A tampered body no longer verifies.
    with pytest.raises(InvalidSignature):
        verify_signature(
            {**got[1], "body": got[1]["body"].replace(b"ACTIVE", b"ACTIVF")}, billing["webhook_id"], standin
        )
    # The page cannot approve twice.
    assert client.post(action, data={"ba_token": ba_token}).status_code == 409


def test_cancel_on_the_approve_page_returns_to_cancel_url(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any]
) -> None:
    sub = create_subscription(api, billing["plan_id"]).json()
    ba_token = parse_qs(urlsplit(sub["links"][0]["href"]).query)["ba_token"][0]
    r = client.post("/webapps/billing/subscriptions/cancel", data={"ba_token": ba_token})
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    assert location.path == "/billing/cancel"
    query = parse_qs(location.query)
    assert query["ba_token"] == [ba_token] and query["token"][0] and "subscription_id" not in query
    assert api.get(f"/v1/billing/subscriptions/{sub['id']}").json()["status"] == "APPROVAL_PENDING"
    assert client.get("/webapps/billing/subscriptions", params={"ba_token": "BA-NOPE"}).status_code == 404


def test_webhook_signature_uses_the_unsigned_crc32(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver, standin: StandIn
) -> None:
    """Bodies differ in their random ids, so about half have CRC32 >= 2**31: send until one does."""
    sid = active_subscription(api, client, billing)
    for _ in range(64):
        sent = client.post(
            "/_standin/events/send", json={"subscription_id": sid, "event_type": "BILLING.SUBSCRIPTION.UPDATED"}
        )
        assert sent.status_code == 201
        body = sent.json()["event"]["body"].encode()
        if zlib.crc32(body) >= 2**31:
            break
    else:
        pytest.fail("no event body with CRC32 >= 2**31 in 64 tries")
    request = receiver.wait_for(sent.json()["event"]["id"])[0]
    assert request["body"] == body
    crc = zlib.crc32(body)
    verify_signature(request, billing["webhook_id"], standin, crc=crc)
    with pytest.raises(InvalidSignature):  # what a signed-int32 CRC implementation would compute
        verify_signature(request, billing["webhook_id"], standin, crc=crc - 2**32)
    check_event(event_of(request))


def test_cancel_then_cancel_again_and_missing_reason(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver
) -> None:
    path = "/v1/billing/subscriptions/{id}/cancel"
    pending = create_subscription(api, billing["plan_id"]).json()["id"]
    r = api.post(f"/v1/billing/subscriptions/{pending}/cancel", json={"reason": "changed my mind"})
    assert r.status_code == 422
    assert check_response(BILLING, "POST", path, r)["details"][0]["issue"] == "SUBSCRIPTION_STATUS_INVALID"

    sid = active_subscription(api, client, billing)
    for bad in ({}, {"reason": ""}, {"reason": "x" * 129}):
        r = api.post(f"/v1/billing/subscriptions/{sid}/cancel", json=bad)
        assert r.status_code == 400, bad
        assert check_response(BILLING, "POST", path, r)["details"][0]["field"] == "/reason"
    r = api.post(f"/v1/billing/subscriptions/{sid}/cancel")  # no body at all
    assert r.status_code == 400
    check_response(BILLING, "POST", path, r)

    r = api.post(f"/v1/billing/subscriptions/{sid}/cancel", json={"reason": "Not needed any more"})
    assert r.status_code == 204 and r.content == b""
    sub = check_response(BILLING, "GET", "/v1/billing/subscriptions/{id}", api.get(f"/v1/billing/subscriptions/{sid}"))
    assert sub["status"] == "CANCELLED" and sub["status_change_note"] == "Not needed any more"
    assert "next_billing_time" not in sub["billing_info"] and sub["billing_info"]["last_payment"]
    r = api.post(f"/v1/billing/subscriptions/{sid}/cancel", json={"reason": "again"})
    assert r.status_code == 422
    body = check_response(BILLING, "POST", path, r)
    assert body["name"] == "UNPROCESSABLE_ENTITY" and body["details"][0]["issue"] == "SUBSCRIPTION_STATUS_INVALID"

    got = receiver.wait(lambda rs: any(event_of(x)["event_type"] == "BILLING.SUBSCRIPTION.CANCELLED" for x in rs))
    cancelled = [event_of(x) for x in got if event_of(x)["event_type"] == "BILLING.SUBSCRIPTION.CANCELLED"]
    assert len(cancelled) == 1 and cancelled[0]["resource"]["status"] == "CANCELLED"

    unknown = api.get("/v1/billing/subscriptions/I-NOSUCHSUB000")
    assert unknown.status_code == 404
    body = check_response(BILLING, "GET", "/v1/billing/subscriptions/{id}", unknown)
    assert body["name"] == "RESOURCE_NOT_FOUND" and body["details"][0]["issue"] == "INVALID_RESOURCE_ID"


def test_suspend_and_activate(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver
) -> None:
    sid = active_subscription(api, client, billing)
    assert api.post(f"/v1/billing/subscriptions/{sid}/suspend", json={"reason": "paused"}).status_code == 204
    assert api.get(f"/v1/billing/subscriptions/{sid}").json()["status"] == "SUSPENDED"
    r = api.post(f"/v1/billing/subscriptions/{sid}/suspend", json={"reason": "again"})
    assert r.status_code == 422
    check_response(BILLING, "POST", "/v1/billing/subscriptions/{id}/suspend", r)
    assert api.post(f"/v1/billing/subscriptions/{sid}/activate", json={"reason": "back"}).status_code == 204
    assert api.get(f"/v1/billing/subscriptions/{sid}").json()["status"] == "ACTIVE"
    got = receiver.wait(lambda rs: len(rs) >= 5)
    assert [event_of(r)["event_type"] for r in got][3:] == [
        "BILLING.SUBSCRIPTION.SUSPENDED",
        "BILLING.SUBSCRIPTION.RE-ACTIVATED",
    ]


def test_payment_failures_reach_the_threshold_and_suspend(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver
) -> None:
    sid = active_subscription(api, client, billing)
    first_billing = api.get(f"/v1/billing/subscriptions/{sid}").json()["billing_info"]["next_billing_time"]

    r = client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "payment-failed"})
    assert r.status_code == 200
    one = r.json()
    assert one["subscription"]["status"] == "ACTIVE" and len(one["events"]) == 1
    info = one["subscription"]["billing_info"]
    assert info["failed_payments_count"] == 1 and info["outstanding_balance"]["value"] == "15.00"
    failed = info["last_failed_payment"]
    assert failed["reason_code"] == "PAYMENT_DENIED" and failed["amount"]["value"] == "15.00"
    assert parse_time(failed["next_payment_retry_time"]) - parse_time(failed["time"]) == timedelta(days=5)

    two = client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "payment-failed"}).json()
    assert two["subscription"]["status"] == "SUSPENDED" and len(two["events"]) == 2
    sub = check_response(BILLING, "GET", "/v1/billing/subscriptions/{id}", api.get(f"/v1/billing/subscriptions/{sid}"))
    info = sub["billing_info"]
    assert info["failed_payments_count"] == 2 and info["outstanding_balance"]["value"] == "30.00"
    events = client.get("/_standin/events", params={"subscription_id": sid}).json()["events"]
    types = [e["event_type"] for e in events if e["id"] in one["events"] + two["events"]]
    assert types == [
        "BILLING.SUBSCRIPTION.PAYMENT.FAILED",
        "BILLING.SUBSCRIPTION.PAYMENT.FAILED",
        "BILLING.SUBSCRIPTION.SUSPENDED",
    ]
    receiver.wait_for(two["events"][1])
    assert (
        client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "payment-completed"}).status_code == 409
    )  # PayPal bills only ACTIVE ones

    client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "reactivated"})
    paid = client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "payment-completed"}).json()
    info = paid["subscription"]["billing_info"]
    assert info["failed_payments_count"] == 0 and info["outstanding_balance"]["value"] == "0.00"
    assert info["cycle_executions"][0]["cycles_completed"] == 2
    assert parse_time(info["next_billing_time"]) - parse_time(first_billing) == timedelta(days=30)
    sale = event_of(receiver.wait_for(paid["events"][0])[0])
    assert sale["event_type"] == "PAYMENT.SALE.COMPLETED" and sale["resource"]["billing_agreement_id"] == sid
    check_component(BILLING, "subscription", paid["subscription"])


def test_deliver_false_withholds_and_resend_delivers_later(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver, standin: StandIn
) -> None:
    sid = active_subscription(api, client, billing)
    withheld = client.post(
        f"/_standin/subscriptions/{sid}/simulate", json={"event": "suspended", "deliver": False}
    ).json()
    assert withheld["subscription"]["status"] == "SUSPENDED"
    (eid,) = withheld["events"]
    marker = client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "reactivated"}).json()["events"][0]
    got = receiver.wait_for(marker)  # deliveries are in order: a withheld one would have come first
    assert not any(event_of(r)["id"] == eid for r in receiver.requests)
    record = client.get(f"/_standin/events/{eid}").json()["event"]
    assert record["withheld"] is True and record["deliveries"] == []
    assert record["event_type"] == "BILLING.SUBSCRIPTION.SUSPENDED"
    assert record["event"]["resource"]["status"] == "SUSPENDED"
    assert got

    assert client.post(f"/_standin/events/{eid}/resend").status_code == 202
    request = receiver.wait_for(eid)[0]
    assert request["body"] == record["body"].encode()
    verify_signature(request, billing["webhook_id"], standin)


def test_resend_redelivers_the_same_event_with_a_new_signature(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver, standin: StandIn
) -> None:
    sid = active_subscription(api, client, billing)
    events = client.get(
        "/_standin/events", params={"subscription_id": sid, "event_type": "BILLING.SUBSCRIPTION.ACTIVATED"}
    ).json()["events"]
    eid = events[0]["id"]
    original = receiver.wait_for(eid)[0]
    r = client.post(f"/_standin/events/{eid}/resend", json={"count": 2})
    assert r.status_code == 202
    copies = receiver.wait_for(eid, count=3)
    assert len(copies) == 3
    assert all(c["body"] == original["body"] for c in copies)
    assert len({c["headers"]["paypal-transmission-id"] for c in copies}) == 3
    for c in copies:
        verify_signature(c, billing["webhook_id"], standin)
    # PayPal's own resend endpoint does the same.
    resent = api.post(f"/v1/notifications/webhooks-events/{eid}/resend", json={})
    assert resent.status_code == 202
    check_response(NOTIFICATIONS, "POST", "/v1/notifications/webhooks-events/{event_id}/resend", resent)
    receiver.wait_for(eid, count=4)
    deliveries = client.get(f"/_standin/events/{eid}").json()["event"]["deliveries"]
    assert [d["resend"] for d in deliveries] == [False, True, True, True]
    assert all(d["delivered"] and d["attempts"] == 1 and d["status"] == 200 for d in deliveries)


def test_failed_deliveries_are_retried_and_recorded(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver, standin: StandIn
) -> None:
    sid = create_subscription(api, billing["plan_id"]).json()["id"]
    receiver.wait(lambda rs: len(rs) == 1)  # CREATED
    receiver.statuses = [500, 503]
    eid = client.post(f"/_standin/subscriptions/{sid}/approve").json()["events"][0]
    attempts = receiver.wait_for(eid)
    assert [a["status"] for a in attempts] == [500, 503, 200]
    assert len({a["headers"]["paypal-transmission-id"] for a in attempts}) == 3
    for a in attempts:
        verify_signature(a, billing["webhook_id"], standin)
    deadline = time.monotonic() + 5
    while not (delivery := client.get(f"/_standin/events/{eid}").json()["event"]["deliveries"][0])["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (delivery["attempts"], delivery["status"], delivery["delivered"]) == (3, 200, True)
    assert [t["status"] for t in delivery["transmissions"]] == [500, 503, 200]
    assert delivery["url"] == receiver.url and delivery["webhook_id"] == billing["webhook_id"]

    # A listener that never answers 2xx: the first try and every retry are recorded, then it gives up.
    receiver.statuses = [500] * (1 + len(FAST_RETRIES))
    eid = client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "suspended"}).json()["events"][0]
    deadline = time.monotonic() + 5
    while not (delivery := client.get(f"/_standin/events/{eid}").json()["event"]["deliveries"][0])["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (delivery["attempts"], delivery["status"], delivery["delivered"]) == (4, 500, False)


def test_faults_answer_errors_then_recover(api: httpx.Client, client: httpx.Client, billing: dict[str, Any]) -> None:
    sid = create_subscription(api, billing["plan_id"]).json()["id"]
    path = f"/v1/billing/subscriptions/{sid}"
    r = client.post("/_standin/faults", json={"status": 500, "count": 1, "path_prefix": "/v1/billing/subscriptions"})
    assert r.status_code == 201
    assert api.get(f"/v1/billing/plans/{billing['plan_id']}").status_code == 200  # other prefixes unaffected
    failed = api.get(path)
    assert failed.status_code == 500
    body = check_response(BILLING, "GET", "/v1/billing/subscriptions/{id}", failed)
    assert body["name"] == "INTERNAL_SERVER_ERROR" and body["debug_id"]
    assert api.get(path).status_code == 200

    client.post("/_standin/faults", json={"status": 429, "count": 2, "path_prefix": "/v1/billing/subscriptions"})
    for _ in range(2):
        limited = api.get(path)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        assert limited.json()["name"] == "RATE_LIMIT_REACHED"
    assert api.get(path).status_code == 200

    client.post(
        "/_standin/faults",
        json={"status": 503, "count": 1, "path_prefix": "/v1/billing/subscriptions", "method": "POST"},
    )
    assert api.get(path).status_code == 200  # only POSTs match
    unavailable = create_subscription(api, billing["plan_id"])
    assert unavailable.status_code == 503
    check_response(BILLING, "POST", "/v1/billing/subscriptions", unavailable)

    client.post("/_standin/faults", json={"delay_s": 0.3, "count": 1, "path_prefix": "/v1/billing/subscriptions"})
    t0 = time.monotonic()
    assert api.get(path).status_code == 200
    assert time.monotonic() - t0 >= 0.3

    client.post("/_standin/faults", json={"status": 500, "count": 5})
    assert len(client.get("/_standin/faults").json()["faults"]) == 1
    assert client.delete("/_standin/faults").status_code == 204
    assert api.get(path).status_code == 200
    assert client.post("/_standin/faults", json={"status": 418}).status_code == 400


def test_control_patch_merges_billing_info(api: httpx.Client, client: httpx.Client, billing: dict[str, Any]) -> None:
    sid = active_subscription(api, client, billing)
    client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "payment-failed"})
    r = client.patch(
        f"/_standin/subscriptions/{sid}",
        json={
            "billing_info": {
                "next_billing_time": "2026-12-01T10:00:00Z",
                "last_failed_payment": None,
                "last_payment": {"time": "2026-11-01T10:00:00Z"},
            }
        },
    )
    assert r.status_code == 200
    sub = check_response(BILLING, "GET", "/v1/billing/subscriptions/{id}", api.get(f"/v1/billing/subscriptions/{sid}"))
    info = sub["billing_info"]
    assert info["next_billing_time"] == "2026-12-01T10:00:00Z" and "last_failed_payment" not in info
    assert info["last_payment"] == {
        "amount": {"currency_code": "USD", "value": "15.00"},
        "time": "2026-11-01T10:00:00Z",
    }
    assert info["failed_payments_count"] == 1  # untouched
    paid = client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "payment-completed"}).json()
    assert paid["subscription"]["billing_info"]["next_billing_time"] == "2026-12-31T10:00:00Z"
    assert client.patch("/_standin/subscriptions/I-NOSUCH", json={}).status_code == 404
    assert client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": "exploded"}).status_code == 400


def test_event_envelopes_match_the_notifications_schema(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver
) -> None:
    sid = active_subscription(api, client, billing)
    for what in ("payment-completed", "payment-failed", "suspended", "reactivated", "expired"):
        assert client.post(f"/_standin/subscriptions/{sid}/simulate", json={"event": what}).status_code == 200
    sale = client.post("/_standin/events/send", json={"subscription_id": sid, "event_type": "PAYMENT.SALE.REFUNDED"})
    assert sale.status_code == 201
    events = client.get("/_standin/events", params={"subscription_id": sid}).json()["events"]
    assert [e["event_type"] for e in events] == [
        "BILLING.SUBSCRIPTION.CREATED",
        "BILLING.SUBSCRIPTION.ACTIVATED",
        "PAYMENT.SALE.COMPLETED",
        "PAYMENT.SALE.COMPLETED",
        "BILLING.SUBSCRIPTION.PAYMENT.FAILED",
        "BILLING.SUBSCRIPTION.SUSPENDED",
        "BILLING.SUBSCRIPTION.RE-ACTIVATED",
        "BILLING.SUBSCRIPTION.EXPIRED",
        "PAYMENT.SALE.REFUNDED",
    ]
    for e in events:
        check_event(e["event"])
    assert events[-1]["event"]["resource"]["state"] == "refunded"
    assert events[-2]["event"]["resource"]["status"] == "EXPIRED"
    got = receiver.wait(lambda rs: len(rs) >= len(events))
    assert [event_of(r)["id"] for r in got] == [e["id"] for e in events]  # delivered in order
    one = api.get(f"/v1/notifications/webhooks-events/{events[1]['id']}")
    path = "/v1/notifications/webhooks-events/{event_id}"
    assert check_response(NOTIFICATIONS, "GET", path, one) == events[1]["event"]


def test_log_has_one_line_per_request_and_no_secrets(
    standin: StandIn, api: httpx.Client, client: httpx.Client, billing: dict[str, Any]
) -> None:
    sid = active_subscription(api, client, billing)
    token = api.headers["authorization"].split()[1]
    lines: list[str] = standin.log_lines  # type: ignore[attr-defined]
    assert "POST /v1/oauth2/token 200" in lines and f"POST /_standin/subscriptions/{sid}/approve 200" in lines
    text = "\n".join(lines)
    for secret in (token, "s3cret-local-value", "Authorization", "Bearer", "Basic"):
        assert secret not in text


def test_command_line_serves_until_terminated(dev_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mllab_dev.paypal_standin",
            "--port",
            "0",
            "--dev-dir",
            str(dev_dir),
            "--credentials",
            str(dev_dir / "secrets" / "paypal-client"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"serving (https://127\.0\.0\.1:\d+)", line)
        assert match, line
        r = httpx.get(
            f"{match.group(1)}/_standin/health",
            verify=trust_only(devca.paths(dev_dir).ca_cert),
            trust_env=False,
            timeout=5,
        )
        assert r.json() == {"ok": True}
        assert "GET /_standin/health 200" in proc.stdout.readline()  # type: ignore[union-attr]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_other_paypal_endpoints_answer_documented_shapes(api: httpx.Client, billing: dict[str, Any]) -> None:
    plan_id, webhook_id = billing["plan_id"], billing["webhook_id"]
    listed = check_response(BILLING, "GET", "/v1/billing/plans", api.get("/v1/billing/plans"))
    assert [p["id"] for p in listed["plans"]] == [plan_id]
    full = api.post("/v1/billing/subscriptions", json={"plan_id": plan_id}, headers={"Prefer": "return=representation"})
    assert full.status_code == 201
    assert check_response(BILLING, "POST", "/v1/billing/subscriptions", full)["plan_overridden"] is False

    assert api.post(f"/v1/billing/plans/{plan_id}/deactivate").status_code == 204
    again = api.post(f"/v1/billing/plans/{plan_id}/deactivate")
    assert again.status_code == 422
    check_response(BILLING, "POST", "/v1/billing/plans/{id}/deactivate", again)
    inactive = api.post("/v1/billing/subscriptions", json={"plan_id": plan_id})
    assert inactive.status_code == 422
    assert (
        check_response(BILLING, "POST", "/v1/billing/subscriptions", inactive)["details"][0]["issue"]
        == "PLAN_STATUS_INVALID"
    )
    assert api.post(f"/v1/billing/plans/{plan_id}/activate").status_code == 204

    path = "/v1/notifications/webhooks/{webhook_id}"
    assert (
        check_response(NOTIFICATIONS, "GET", path, api.get(f"/v1/notifications/webhooks/{webhook_id}"))["id"]
        == webhook_id
    )
    events = api.get("/v1/notifications/webhooks-events")
    assert check_response(NOTIFICATIONS, "GET", "/v1/notifications/webhooks-events", events)["count"] == 1
    assert api.delete(f"/v1/notifications/webhooks/{webhook_id}").status_code == 204
    gone = api.get(f"/v1/notifications/webhooks/{webhook_id}")
    assert gone.status_code == 404
    check_response(NOTIFICATIONS, "GET", path, gone)
    assert check_response(
        NOTIFICATIONS, "GET", "/v1/notifications/webhooks", api.get("/v1/notifications/webhooks")
    ) == {"webhooks": []}
    unknown = api.get("/v1/billing/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["name"] == "RESOURCE_NOT_FOUND"


# --- a delayed start (start_time) and PayPal's billing clock ------------------------------------


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_future_start_time_is_approved_without_a_sale_and_billed_when_it_comes(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver
) -> None:
    start = (datetime.now().astimezone() + timedelta(days=20)).replace(microsecond=0)
    created = api.post(
        "/v1/billing/subscriptions",
        json={
            "plan_id": billing["plan_id"],
            "custom_id": "uid-123",
            "start_time": _iso(start),
            "application_context": {"return_url": "http://127.0.0.1:8080/r", "cancel_url": "http://127.0.0.1:8080/c"},
        },
    )
    assert created.status_code == 201 and created.json()["start_time"] == _iso(start)
    sid = created.json()["id"]
    approve_href = next(link["href"] for link in created.json()["links"] if link["rel"] == "approve")
    page = client.get(approve_href)
    assert f"First payment: {start:%b %d, %Y}" in page.text

    assert client.post(f"/_standin/subscriptions/{sid}/approve").status_code == 200
    after = check_response(
        BILLING, "GET", "/v1/billing/subscriptions/{id}", api.get(f"/v1/billing/subscriptions/{sid}")
    )
    assert after["status"] == "ACTIVE" and after["start_time"] == _iso(start)
    info = after["billing_info"]
    assert "last_payment" not in info and info["next_billing_time"] == _iso(start)
    assert info["cycle_executions"][0]["cycles_completed"] == 0 and info["outstanding_balance"]["value"] == "0.00"
    got = receiver.wait(lambda rs: len(rs) >= 2)
    assert [event_of(r)["event_type"] for r in got] == [
        "BILLING.SUBSCRIPTION.CREATED",
        "BILLING.SUBSCRIPTION.ACTIVATED",
    ]

    # A day before the start nothing is due; at the start, one sale.
    early = client.post("/_standin/clock", json={"to": _iso(start - timedelta(days=1))}).json()
    assert early["events"] == [] and early["offset_s"] > 0
    due = client.post("/_standin/clock", json={"to": _iso(start)}).json()
    assert len(due["events"]) == 1 and due["now"] >= _iso(start)
    [sale_request] = receiver.wait_for(due["events"][0])
    sale = event_of(sale_request)
    check_event(sale)
    assert sale["event_type"] == "PAYMENT.SALE.COMPLETED" and sale["resource"]["billing_agreement_id"] == sid
    assert sale["resource"]["amount"]["total"] == "15.00"
    # Twenty days on, the old access token has expired (as it would at PayPal): ask for a new one.
    stale = api.get(f"/v1/billing/subscriptions/{sid}")
    assert stale.status_code == 401
    fresh = {"Authorization": f"Bearer {get_token(client)}"}
    paid = check_response(
        BILLING, "GET", "/v1/billing/subscriptions/{id}", api.get(f"/v1/billing/subscriptions/{sid}", headers=fresh)
    )
    assert paid["billing_info"]["last_payment"]["time"] == _iso(start)
    assert paid["billing_info"]["next_billing_time"] == _iso(start + timedelta(days=30))
    assert paid["billing_info"]["cycle_executions"][0]["cycles_completed"] == 1
    # Two more cycles pass at once: two sales, never one for the same cycle twice.
    later = client.post("/_standin/clock", json={"advance_s": 61 * 86400}).json()
    assert len(later["events"]) == 2
    assert client.post("/_standin/clock", json={"advance_s": 0}).json()["events"] == []


def test_the_clock_only_moves_forward_and_checks_its_input(client: httpx.Client) -> None:
    now = client.get("/_standin/clock").json()
    assert now["offset_s"] == 0
    assert client.post("/_standin/clock", json={"to": "2001-01-01T00:00:00Z"}).json()["offset_s"] == 0
    for bad in ({"advance_s": -1}, {"advance_s": "1"}, {"to": "tomorrow"}, {"advance_s": 1, "deliver": "yes"}):
        assert client.post("/_standin/clock", json=bad).status_code == 400, bad
    assert client.post("/_standin/clock", json={"advance_s": 3600}).json()["offset_s"] == 3600
    assert client.delete("/_standin/clock").status_code == 204
    assert client.get("/_standin/clock").json()["offset_s"] == 0


def test_an_immediate_start_is_charged_at_approval(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver
) -> None:
    sid = active_subscription(api, client, billing)
    got = receiver.wait(lambda rs: len(rs) >= 3)
    assert [event_of(r)["event_type"] for r in got][-1] == "PAYMENT.SALE.COMPLETED"
    assert (
        api.get(f"/v1/billing/subscriptions/{sid}").json()["billing_info"]["cycle_executions"][0]["cycles_completed"]
        == 1
    )


def test_an_inline_plan_override_is_billed_at_its_own_price(
    api: httpx.Client, client: httpx.Client, billing: dict[str, Any], receiver: Receiver
) -> None:
    cycle = {
        "frequency": {"interval_unit": "YEAR", "interval_count": 1},
        "tenure_type": "REGULAR",
        "sequence": 1,
        "total_cycles": 0,
        "pricing_scheme": {"fixed_price": {"value": "0.01", "currency_code": "USD"}},
    }
    created = api.post(
        "/v1/billing/subscriptions", json={"plan_id": billing["plan_id"], "plan": {"billing_cycles": [cycle]}}
    )
    assert created.status_code == 201 and created.json()["plan_overridden"] is True
    client.post(f"/_standin/subscriptions/{created.json()['id']}/approve")
    got = receiver.wait(lambda rs: len(rs) >= 3)
    assert event_of(got[-1])["resource"]["amount"]["total"] == "0.01"
