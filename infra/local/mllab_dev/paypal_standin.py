"""A local stand-in for PayPal's REST API (Subscriptions v1, Webhooks v1). Development only.

PayPal has no emulator, so the local stack runs this on https://127.0.0.1:9500 with a development CA
(`mllab_dev.devca`) that only the local configuration trusts. It speaks PayPal's wire format (the
shapes of PayPal's published OpenAPI documents), keeps its state in memory and signs the webhooks it
sends exactly as PayPal does (CRC32 of the raw body, SHA256withRSA, a certificate served from
`PAYPAL-CERT-URL`).

    python -m mllab_dev.paypal_standin --port 9500 --dev-dir .dev --credentials .dev/secrets/paypal-client

PayPal endpoints (Bearer token from /v1/oauth2/token on all but the token and certificate ones):

    POST /v1/oauth2/token                          HTTP Basic client_id:client_secret
    POST /v1/catalogs/products                     GET /v1/catalogs/products/{id}
    POST /v1/billing/plans                         GET /v1/billing/plans[/{id}]  POST .../{id}/activate|deactivate
    POST /v1/notifications/webhooks                GET /v1/notifications/webhooks[/{id}]  DELETE .../{id}
    GET  /v1/notifications/webhooks-events[/{id}]  POST .../{id}/resend
    POST /v1/billing/subscriptions                 GET /v1/billing/subscriptions/{id}
    POST /v1/billing/subscriptions/{id}/cancel|suspend|activate
    GET  /v1/notifications/certs/{cert_id}         the webhook signing certificate (no auth)
    GET  /webapps/billing/subscriptions?ba_token=  the buyer's approval page

Control API (not PayPal's; no auth), under /_standin/:

    GET    /_standin/health                          {"ok": true}
    GET    /_standin/subscriptions/{id}              {"subscription", "ba_token", "approve_url", "return_url",
                                                      "cancel_url"}
    POST   /_standin/subscriptions/{id}/approve      as the approval page: {"subscription", "events"}
    POST   /_standin/subscriptions/{id}/simulate     {"event": payment-completed|payment-failed|suspended|
                                                      expired|cancelled|reactivated, "deliver": true}
                                                      -> {"subscription", "events"}
    PATCH  /_standin/subscriptions/{id}              JSON merged into the stored subscription (billing_info
                                                      deep-merged; null deletes a key) -> {"subscription"}
    POST   /_standin/faults                          {"status": 500|503|429 | "delay_s": X, "count": N,
                                                      "path_prefix": "/v1/...", "method": "POST"?} -> 201 {"faults"}
    GET    /_standin/faults   DELETE /_standin/faults
    GET    /_standin/events[?event_type=&subscription_id=]   every event, sent or withheld, with its deliveries
    GET    /_standin/events/{id}
    POST   /_standin/events/{id}/resend              {"count": N}? -> 202 {"event"}: same id and body, new signatures
    POST   /_standin/events/send                     {"subscription_id", "event_type", "deliver": true} -> 201 {"event"}
    GET    /_standin/clock                           {"now", "offset_s"}: the stand-in's clock
    POST   /_standin/clock                           {"advance_s": N} or {"to": RFC 3339}, "deliver": true}: move the
                                                      clock forward, then bill every cycle now due, as PayPal's
                                                      scheduler would -> {"now", "offset_s", "events"}
    DELETE /_standin/clock                           back to real time (between tests; nothing is billed)

A subscription created with a future `start_time` is approved without a payment (ACTIVE, no
`last_payment`, `next_billing_time` = `start_time`, no PAYMENT.SALE.COMPLETED): its first sale happens
when the clock reaches `start_time`, as PayPal documents for a delayed start (only a setup fee, which
our plans have none of, is charged at sign-up).
"""

from __future__ import annotations

import argparse
import base64
import copy
import hmac
import html
import json
import queue
import secrets
import signal
import socket
import ssl
import string
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from mllab_dev import devca

CERT_ID = "CERT-360caa42-fca2a594-local"
DEFAULT_PORT = 9500
DEFAULT_TOKEN_TTL = 32400
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
DELIVERY_TIMEOUT_S = 10.0
APP_ID = "APP-80W284485P519543T"
SCOPE = (
    "https://uri.paypal.com/services/subscriptions https://uri.paypal.com/services/applications/webhooks "
    "https://api.paypal.com/v1/payments/.* https://uri.paypal.com/services/billing-agreements openid"
)
INFO_BASE = "https://developer.paypal.com/docs/api/"

ERROR_MESSAGES = {
    "INVALID_REQUEST": "Request is not well-formed, syntactically incorrect, or violates schema.",
    "UNPROCESSABLE_ENTITY": (
        "The requested action could not be performed, semantically incorrect, or failed business validation."
    ),
    "RESOURCE_NOT_FOUND": "The specified resource does not exist.",
    "INVALID_RESOURCE_ID": "Resource id is invalid.",
    "INTERNAL_SERVER_ERROR": "An internal server error occurred.",
    "SERVICE_UNAVAILABLE": "Service Unavailable.",
    "RATE_LIMIT_REACHED": "Too many requests. Blocked due to rate limiting.",
    "METHOD_NOT_SUPPORTED": "The server does not implement the requested HTTP method.",
    "WEBHOOK_URL_ALREADY_EXISTS": "Webhook URL already exists.",
    "WEBHOOK_NUMBER_LIMIT_EXCEEDED": "Maximum number of webhooks exceeded.",
}
FAULT_ERRORS = {500: "INTERNAL_SERVER_ERROR", 503: "SERVICE_UNAVAILABLE", 429: "RATE_LIMIT_REACHED"}

SUMMARIES = {
    "BILLING.SUBSCRIPTION.CREATED": "Subscription created",
    "BILLING.SUBSCRIPTION.ACTIVATED": "Subscription activated",
    "BILLING.SUBSCRIPTION.UPDATED": "Subscription updated",
    "BILLING.SUBSCRIPTION.EXPIRED": "Subscription expired",
    "BILLING.SUBSCRIPTION.CANCELLED": "Subscription cancelled",
    "BILLING.SUBSCRIPTION.SUSPENDED": "Subscription suspended",
    "BILLING.SUBSCRIPTION.RE-ACTIVATED": "Subscription re-activated",
    "BILLING.SUBSCRIPTION.PAYMENT.FAILED": "Subscription payment failed",
}
SALE_STATES = {
    "PAYMENT.SALE.COMPLETED": "completed",
    "PAYMENT.SALE.DENIED": "denied",
    "PAYMENT.SALE.REFUNDED": "refunded",
    "PAYMENT.SALE.REVERSED": "reversed",
    "PAYMENT.SALE.PENDING": "pending",
}
SIMULATIONS = ("payment-completed", "payment-failed", "suspended", "expired", "cancelled", "reactivated")
INTERVAL_DAYS = {"DAY": 1, "WEEK": 7, "MONTH": 30, "YEAR": 365}
PAYER_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
ALNUM = string.ascii_uppercase + string.digits


# --- small helpers ---------------------------------------------------------------------------------


def _rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def iso(t: float) -> str:
    """PayPal's timestamps: RFC 3339, seconds, UTC, `Z`."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("z", "Z")).timestamp()
    except ValueError:
        return None


def money_str(value: Any) -> str:
    try:
        return str(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        return "0.00"


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def crc32_message(transmission_id: str, transmission_time: str, webhook_id: str, body: bytes) -> bytes:
    """What PayPal signs: `<id>|<time>|<webhook id>|<CRC32 of the raw body, unsigned decimal>`."""
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body)}".encode()


def _deep_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class ApiError(Exception):
    """A PayPal error answer: `{name, message, debug_id, details[], links[]}`."""

    def __init__(
        self,
        status: int,
        name: str,
        details: Iterable[dict[str, Any]] = (),
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        self.status, self.name = status, name
        self.details = list(details)
        self.message = message or ERROR_MESSAGES.get(name, name.replace("_", " ").capitalize() + ".")
        self.headers = headers or {}


class OAuthError(Exception):
    """The OAuth-style answer PayPal gives for credentials and tokens: `{error, error_description}`."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# PayPal's documents fix the description of these issues (an `enum` of one string in the error
# schemas); the stand-in answers exactly those and logs its own explanation instead.
ISSUE_DESCRIPTIONS = {
    "INVALID_RESOURCE_ID": "Specified resource ID does not exist. Please check the resource ID and try again.",
    "INVALID_PARAMETER_SYNTAX": "The value of a field does not conform to the expected format.",
    "INVALID_STRING_MAX_LENGTH": "The value of a field is too long.",
    "INVALID_STRING_MIN_LENGTH": "The value of a field is too short.",
    "INVALID_PARAMETER_VALUE": "The value of a field is invalid.",
    "INVALID_INTEGER_MIN_VALUE": "The integer value of a field is too small.",
    "INVALID_INTEGER_MAX_VALUE": "The integer value of a field is too large.",
    "MISSING_REQUEST_BODY": "Request body is missing.",
    "MISSING_REQUIRED_PARAMETER": "A required field is missing.",
    "MISSING_REGULAR_BILLING_CYCLE": "Plan should have at least one regular billing cycle.",
}
PLAN_STATUS_FOR_SUBSCRIPTION = "Invalid plan status for subscription creation; plan status should be active."
PLAN_STATUS_INVALID = {
    "activate": "Invalid plan status for activate action; plan status should be either created or inactive.",
    "deactivate": "Invalid plan status for deactivate action; plan status should be active.",
}
STATUS_INVALID = {
    "cancel": "Invalid subscription status for cancel action; subscription status should be active or suspended.",
    "suspend": "Invalid subscription status for suspend action; subscription status should be active.",
    "activate": "Invalid subscription status for activate action; subscription status should be suspended.",
}


def _detail(
    issue: str,
    why: str,
    field_: str | None = None,
    value: Any = None,
    location: str | None = "body",
    description: str | None = None,
) -> dict[str, Any]:
    """One `details[]` entry. `why` is the stand-in's own explanation: it goes to the log, while the
    answer carries PayPal's documented description for the issue (or `description`, or `why`)."""
    d: dict[str, Any] = {}
    if field_ is not None:
        d["field"] = field_
    if value is not None:
        d["value"] = str(value)[:200]
    if location is not None and field_ is not None:
        d["location"] = location
    d["issue"] = issue
    d["description"] = description or ISSUE_DESCRIPTIONS.get(issue) or why
    d["_why"] = why
    return d


def _bad(issue: str, description: str, field_: str | None = None, value: Any = None) -> ApiError:
    return ApiError(400, "INVALID_REQUEST", [_detail(issue, description, field_, value)])


def _string(
    body: dict[str, Any],
    key: str,
    lo: int,
    hi: int,
    *,
    required: bool,
    path: str = "",
    missing_issue: str = "MISSING_REQUIRED_PARAMETER",
    short_issue: str = "INVALID_PARAMETER_VALUE",
    long_issue: str = "INVALID_STRING_MAX_LENGTH",
) -> str | None:
    field_ = f"{path}/{key}"
    if key not in body or body[key] is None:
        if required:
            raise _bad(missing_issue, f"A required field / parameter is missing: {key}.", field_)
        return None
    value = body[key]
    if not isinstance(value, str):
        raise _bad("INVALID_PARAMETER_SYNTAX", f"{key} must be a string.", field_, value)
    if len(value) < lo:
        raise _bad(short_issue, f"{key} must be at least {lo} characters.", field_, value)
    if len(value) > hi:
        raise _bad(long_issue, f"{key} must be at most {hi} characters.", field_, value)
    return value


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


# --- state -----------------------------------------------------------------------------------------


@dataclass
class _Subscription:
    data: dict[str, Any]
    ba_token: str
    return_url: str | None
    cancel_url: str | None
    requested_subscriber: dict[str, Any] = field(default_factory=dict)
    last_sale_id: str | None = None
    plan_override: dict[str, Any] = field(default_factory=dict)  # the request's inline `plan`, if any


@dataclass
class _Event:
    id: str
    event_type: str
    resource_type: str
    body: bytes
    subscription_id: str | None
    resource_id: str | None
    create_time: str
    withheld: bool
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "subscription_id": self.subscription_id,
            "create_time": self.create_time,
            "withheld": self.withheld,
            "event": json.loads(self.body),
            "body": self.body.decode(),
            "deliveries": copy.deepcopy(self.deliveries),
        }


class _LazyHandshakeContext(ssl.SSLContext):
    """Defers the TLS handshake from accept() (the one serving thread) to the request's own thread,
    so a slow or silent client cannot stall every other request."""

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )


class _QuietHandler(WSGIRequestHandler):
    """werkzeug's access log would print query strings; the app logs its own line instead."""

    timeout = 30
    # werkzeug closes every connection after one response; without TCP_NODELAY the response waits
    # on the client's delayed ACK of the handshake's last flight (tens of ms per request).
    disable_nagle_algorithm = True

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002
        if type == "error":
            print(f"paypal-standin: server error: {message % args if args else message}", file=sys.stderr, flush=True)


# Routes: every endpoint `x` is handled by `StandIn._h_x`.
URL_MAP = Map(
    [
        Rule("/v1/oauth2/token", methods=["POST"], endpoint="token"),
        Rule("/v1/catalogs/products", methods=["POST"], endpoint="create_product"),
        Rule("/v1/catalogs/products/<pid>", methods=["GET"], endpoint="get_product"),
        Rule("/v1/billing/plans", methods=["POST"], endpoint="create_plan"),
        Rule("/v1/billing/plans", methods=["GET"], endpoint="list_plans"),
        Rule("/v1/billing/plans/<pid>", methods=["GET"], endpoint="get_plan"),
        Rule("/v1/billing/plans/<pid>/<any(activate, deactivate):action>", methods=["POST"], endpoint="plan_action"),
        Rule("/v1/notifications/webhooks", methods=["POST"], endpoint="create_webhook"),
        Rule("/v1/notifications/webhooks", methods=["GET"], endpoint="list_webhooks"),
        Rule("/v1/notifications/webhooks/<wid>", methods=["GET"], endpoint="get_webhook"),
        Rule("/v1/notifications/webhooks/<wid>", methods=["DELETE"], endpoint="delete_webhook"),
        Rule("/v1/notifications/webhooks-events", methods=["GET"], endpoint="list_events_api"),
        Rule("/v1/notifications/webhooks-events/<eid>", methods=["GET"], endpoint="get_event_api"),
        Rule("/v1/notifications/webhooks-events/<eid>/resend", methods=["POST"], endpoint="resend_event_api"),
        Rule("/v1/notifications/certs/<cert_id>", methods=["GET"], endpoint="cert"),
        Rule("/v1/billing/subscriptions", methods=["POST"], endpoint="create_subscription"),
        Rule("/v1/billing/subscriptions/<sid>", methods=["GET"], endpoint="get_subscription"),
        Rule(
            "/v1/billing/subscriptions/<sid>/<any(cancel, suspend, activate):action>",
            methods=["POST"],
            endpoint="subscription_action",
        ),
        Rule("/webapps/billing/subscriptions", methods=["GET"], endpoint="approve_page"),
        Rule(
            "/webapps/billing/subscriptions/<any(approve, cancel):action>",
            methods=["POST"],
            endpoint="approve_page_post",
        ),
        Rule("/myaccount/autopay/", methods=["GET"], endpoint="autopay_page"),
        Rule("/myaccount/autopay/<sid>/cancel", methods=["POST"], endpoint="autopay_cancel"),
        Rule("/_standin/health", methods=["GET"], endpoint="c_health"),
        Rule("/_standin/subscriptions/<sid>", methods=["GET"], endpoint="c_get_subscription"),
        Rule("/_standin/subscriptions/<sid>", methods=["PATCH"], endpoint="c_patch_subscription"),
        Rule("/_standin/subscriptions/<sid>/approve", methods=["POST"], endpoint="c_approve"),
        Rule("/_standin/subscriptions/<sid>/simulate", methods=["POST"], endpoint="c_simulate"),
        Rule("/_standin/faults", methods=["GET"], endpoint="c_list_faults"),
        Rule("/_standin/faults", methods=["POST"], endpoint="c_add_fault"),
        Rule("/_standin/faults", methods=["DELETE"], endpoint="c_clear_faults"),
        Rule("/_standin/events", methods=["GET"], endpoint="c_list_events"),
        Rule("/_standin/events/send", methods=["POST"], endpoint="c_send_event"),
        Rule("/_standin/events/<eid>", methods=["GET"], endpoint="c_get_event"),
        Rule("/_standin/events/<eid>/resend", methods=["POST"], endpoint="c_resend_event"),
        Rule("/_standin/clock", methods=["GET"], endpoint="c_get_clock"),
        Rule("/_standin/clock", methods=["POST"], endpoint="c_move_clock"),
        Rule("/_standin/clock", methods=["DELETE"], endpoint="c_reset_clock"),
    ],
    strict_slashes=False,
)


# --- the stand-in ----------------------------------------------------------------------------------


class StandIn:
    """The PayPal stand-in, in-process: `start()` serves in background threads, `stop()` ends them."""

    def __init__(
        self,
        dev_dir: Path | str,
        credentials_path: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_ttl: int = DEFAULT_TOKEN_TTL,
        retry_delays: Iterable[float] = DEFAULT_RETRY_DELAYS,
        delivery_timeout: float = DELIVERY_TIMEOUT_S,
        public_base_url: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.dev_dir = Path(dev_dir)
        self.credentials_path = Path(credentials_path)
        self.host, self.port = host, port
        self.token_ttl = max(1, int(token_ttl))
        self.retry_delays = tuple(float(d) for d in retry_delays)
        self.delivery_timeout = float(delivery_timeout)
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._log_fn = log
        self._offset = 0.0  # seconds the control API moved the clock forward
        self.now: Callable[[], float] = self._clock  # tests may replace it to move the clock
        self.ca = devca.paths(self.dev_dir)
        self._lock = threading.RLock()
        self._tokens: dict[str, float] = {}
        self._products: dict[str, dict[str, Any]] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._subs: dict[str, _Subscription] = {}
        self._ba_tokens: dict[str, str] = {}
        self._idempotency: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._events: dict[str, _Event] = {}
        self._faults: list[dict[str, Any]] = []
        self._queue: queue.Queue[tuple[_Event, dict[str, Any]] | None] = queue.Queue()
        self._stopping = threading.Event()
        self._server: BaseWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._signing_key: Any = None
        self._cert_pem = b""

    # -- lifecycle --

    @property
    def base_url(self) -> str:
        if self._public_base_url:
            return self._public_base_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.ca.ca_cert

    @property
    def cert_url(self) -> str:
        return f"{self.base_url}/v1/notifications/certs/{CERT_ID}"

    def start(self) -> StandIn:
        self._read_credentials()  # fail fast on a missing or malformed credentials file
        self.ca = devca.ensure(self.dev_dir)
        self._signing_key = self.ca.load_signing_key()
        self._cert_pem = self.ca.signing_cert.read_bytes() + self.ca.ca_cert.read_bytes()
        ctx = _LazyHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.num_tickets = 0  # one request per connection: session tickets would only add a round of small writes
        ctx.load_cert_chain(str(self.ca.server_cert), str(self.ca.server_key))
        self._stopping.clear()
        self._server = make_server(
            self.host, self.port, self, threaded=True, request_handler=_QuietHandler, ssl_context=ctx
        )
        self.port = self._server.port
        serve = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="paypal-standin-http", daemon=True
        )
        worker = threading.Thread(target=self._deliver_loop, name="paypal-standin-webhooks", daemon=True)
        self._threads = [serve, worker]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _clock(self) -> float:
        return time.time() + self._offset

    def _log(self, line: str) -> None:
        if self._log_fn is not None:
            self._log_fn(line)
        else:
            print(f"paypal-standin: {line}", flush=True)

    def _read_credentials(self) -> tuple[str, str]:
        data = json.loads(self.credentials_path.read_text())
        client_id, client_secret = data["client_id"], data["client_secret"]
        if not (isinstance(client_id, str) and isinstance(client_secret, str) and client_id and client_secret):
            raise ValueError(f"{self.credentials_path}: client_id and client_secret must be non-empty strings")
        return client_id, client_secret

    # -- WSGI --

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except Exception:  # never leak a traceback to the client; keep it in the log
            traceback.print_exc(file=sys.stderr)
            response = self._api_error_response(ApiError(500, "INTERNAL_SERVER_ERROR"))
        note = request.environ.get("mllab.standin.note")
        self._log(f"{request.method} {request.path} {response.status_code}" + (f" ({note})" if note else ""))
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        try:
            return self._route(request)
        except ApiError as e:
            notes = [
                f"{d['issue']} {d.get('field', '')}: {d['_why']}".replace(" :", ":") for d in e.details if d.get("_why")
            ]
            if notes:
                request.environ["mllab.standin.note"] = "; ".join(notes)
            return self._api_error_response(e)
        except OAuthError as e:
            return self._json({"error": e.error, "error_description": e.description}, e.status)
        except ControlError as e:
            return self._json({"error": e.message}, e.status)
        except HTTPException as e:  # e.g. a redirect for a trailing slash
            return e.get_response(request.environ)

    def _route(self, request: Request) -> Response:
        """Hand the request to its `_h_` handler; PayPal's paths (/v1/) first take any queued fault, then need a Bearer
        token (all but the token and certificate endpoints)."""
        api = request.path.startswith("/v1/")
        if api:
            self._apply_fault(request)
        adapter = URL_MAP.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            if api:
                raise ApiError(
                    404,
                    "RESOURCE_NOT_FOUND",
                    [_detail("INVALID_RESOURCE_ID", "Requested resource ID was not found.", location=None)],
                ) from None
            return self._json({"error": "not found"}, 404)
        except MethodNotAllowed:
            if api:
                raise ApiError(405, "METHOD_NOT_SUPPORTED") from None
            return self._json({"error": "method not allowed"}, 405)
        if api and endpoint not in ("token", "cert"):
            self._check_bearer(request)
        return getattr(self, "_h_" + endpoint)(request, **args)

    def _apply_fault(self, request: Request) -> None:
        """A fault the control API queued for this path: its delay, then its error answer (either may be absent)."""
        fault = self._take_fault(request)
        if fault is None:
            return
        if fault.get("delay_s"):
            time.sleep(float(fault["delay_s"]))
        if fault.get("status"):
            status = int(fault["status"])
            headers = {"Retry-After": "1"} if status == 429 else {}
            raise ApiError(status, FAULT_ERRORS[status], headers=headers)

    def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        response = Response(json.dumps(obj), status=status, mimetype="application/json")
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    def _api_error_response(self, e: ApiError) -> Response:
        debug_id = secrets.token_hex(7)[:13]
        links = [
            {"href": f"{INFO_BASE}v1/billing/subscriptions#{d['issue']}", "rel": "information_link", "method": "GET"}
            for d in e.details
        ] or [
            {"href": f"{INFO_BASE}v1/billing/subscriptions#error-{e.name}", "rel": "information_link", "method": "GET"}
        ]
        body: dict[str, Any] = {"name": e.name, "message": e.message, "debug_id": debug_id}
        if e.details:
            body["details"] = [{k: v for k, v in d.items() if k != "_why"} for d in e.details]
        body["links"] = links
        return self._json(body, e.status, {"Paypal-Debug-Id": debug_id, **e.headers})

    def _body(self, request: Request, *, required: bool = True) -> dict[str, Any]:
        raw = request.get_data()
        if not raw.strip():
            if required:
                raise _bad("MISSING_REQUEST_BODY", "Request body is missing.")
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _bad("INVALID_PARAMETER_SYNTAX", "The request JSON is not well formed.") from None
        if not isinstance(body, dict):
            raise _bad("INVALID_PARAMETER_SYNTAX", "The request body must be a JSON object.")
        return body

    def _control_body(self, request: Request) -> dict[str, Any]:
        raw = request.get_data()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ControlError(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise ControlError(400, "body must be a JSON object")
        return body

    # -- auth --

    def _h_token(self, request: Request) -> Response:
        client_id, client_secret = self._read_credentials()
        auth = request.authorization
        ok = (
            auth is not None
            and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode(), client_id.encode())
            and hmac.compare_digest((auth.password or "").encode(), client_secret.encode())
        )
        if not ok:
            raise OAuthError(401, "invalid_client", "Client Authentication failed")
        grant = request.form.get("grant_type")
        if grant != "client_credentials":
            raise OAuthError(
                400, "unsupported_grant_type", "Grant Type is NULL" if not grant else f"Unsupported grant_type {grant}"
            )
        token = "A21AA" + secrets.token_urlsafe(64)
        now = self.now()
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self.token_ttl
        return self._json(
            {
                "scope": SCOPE,
                "access_token": token,
                "token_type": "Bearer",
                "app_id": APP_ID,
                "expires_in": self.token_ttl,
                "nonce": f"{iso(now)}{secrets.token_urlsafe(32)}",
            }
        )

    def _check_bearer(self, request: Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise OAuthError(401, "invalid_token", "No Bearer access token in the Authorization header")
        with self._lock:
            expiry = self._tokens.get(token.strip())
        if expiry is None:
            raise OAuthError(401, "invalid_token", "Access Token not found in cache")
        if expiry <= self.now():
            raise OAuthError(401, "invalid_token", "The access token has expired")

    # -- faults --

    def _take_fault(self, request: Request) -> dict[str, Any] | None:
        with self._lock:
            for fault in self._faults:
                if not request.path.startswith(fault["path_prefix"]):
                    continue
                if fault.get("method") and fault["method"] != request.method:
                    continue
                fault["remaining"] -= 1
                if fault["remaining"] <= 0:
                    self._faults.remove(fault)
                return dict(fault)
        return None

    # -- idempotency (PayPal-Request-Id on creating POSTs) --

    def _replay(self, request: Request) -> Response | None:
        key = request.headers.get("PayPal-Request-Id")
        if not key:
            return None
        stored = self._idempotency.get((request.path, key))
        if stored is None:
            return None
        return self._json(copy.deepcopy(stored[1]), stored[0])

    def _remember(self, request: Request, status: int, body: dict[str, Any]) -> None:
        key = request.headers.get("PayPal-Request-Id")
        if key:
            self._idempotency[(request.path, key)] = (status, copy.deepcopy(body))

    # -- catalog products --

    def _h_create_product(self, request: Request) -> Response:
        with self._lock:
            if (replay := self._replay(request)) is not None:
                return replay
            body = self._body(request)
            name = _string(body, "name", 1, 127, required=True)
            ptype = body.get("type")
            if ptype not in ("PHYSICAL", "DIGITAL", "SERVICE"):
                raise _bad("INVALID_PARAMETER_VALUE", "type must be PHYSICAL, DIGITAL or SERVICE.", "/type", ptype)
            given = body.get("id")
            pid = given if isinstance(given, str) and given else "PROD-" + _rand(17)
            if pid in self._products:
                raise ApiError(
                    422,
                    "UNPROCESSABLE_ENTITY",
                    [_detail("DUPLICATE_RESOURCE_IDENTIFIER", "A resource with this id already exists.", "/id", pid)],
                )
            now = iso(self.now())
            product: dict[str, Any] = {"id": pid, "name": name}
            for key in ("description", "category", "image_url", "home_url"):
                if isinstance(body.get(key), str):
                    product[key] = body[key]
            product.update(
                {
                    "type": ptype,
                    "create_time": now,
                    "update_time": now,
                    "links": [
                        {"href": f"{self.base_url}/v1/catalogs/products/{pid}", "rel": "self", "method": "GET"},
                        {"href": f"{self.base_url}/v1/catalogs/products/{pid}", "rel": "edit", "method": "PATCH"},
                    ],
                }
            )
            self._products[pid] = product
            self._remember(request, 201, product)
            return self._json(product, 201)

    def _h_get_product(self, request: Request, pid: str) -> Response:
        with self._lock:
            product = self._products.get(pid)
            if product is None:
                raise self._not_found(pid)
            return self._json(product)

    # -- plans --

    def _h_create_plan(self, request: Request) -> Response:
        with self._lock:
            if (replay := self._replay(request)) is not None:
                return replay
            body = self._body(request, required=False)  # plans.create-400 has no MISSING_REQUEST_BODY
            product_id = _string(body, "product_id", 6, 50, required=True, short_issue="INVALID_STRING_MIN_LENGTH")
            if product_id not in self._products:
                raise _bad(
                    "INVALID_PARAMETER_VALUE", "The product id names no catalog product.", "/product_id", product_id
                )
            name = _string(body, "name", 1, 127, required=True, short_issue="INVALID_STRING_MIN_LENGTH")
            description = _string(body, "description", 1, 127, required=False, short_issue="INVALID_STRING_MIN_LENGTH")
            status = body.get("status", "ACTIVE")
            if status not in ("CREATED", "INACTIVE", "ACTIVE"):
                raise _bad("INVALID_PARAMETER_VALUE", "status must be CREATED, INACTIVE or ACTIVE.", "/status", status)
            cycles = body.get("billing_cycles")
            if not isinstance(cycles, list) or not 1 <= len(cycles) <= 12:
                raise _bad(
                    "MISSING_REQUIRED_PARAMETER" if cycles is None else "INVALID_PARAMETER_VALUE",
                    "billing_cycles must list 1 to 12 billing cycles.",
                    "/billing_cycles",
                )
            prefs = body.get("payment_preferences")
            if not isinstance(prefs, dict):
                raise _bad("MISSING_REQUIRED_PARAMETER", "payment_preferences is required.", "/payment_preferences")
            now = iso(self.now())
            stored_cycles = self._plan_cycles(cycles, now)
            stored_prefs = self._plan_preferences(prefs)
            pid = "P-" + _rand(24)
            plan: dict[str, Any] = {"id": pid, "product_id": product_id, "name": name, "status": status}
            if description:
                plan["description"] = description
            plan.update(
                {"usage_type": "LICENSED", "billing_cycles": stored_cycles, "payment_preferences": stored_prefs}
            )
            if isinstance(body.get("taxes"), dict):
                plan["taxes"] = copy.deepcopy(body["taxes"])
            plan.update(
                {
                    "quantity_supported": bool(body.get("quantity_supported", False)),
                    "create_time": now,
                    "update_time": now,
                    "links": self._plan_links(pid),
                }
            )
            self._plans[pid] = plan
            self._remember(request, 201, plan)
            return self._json(plan, 201)

    @classmethod
    def _plan_cycles(cls, cycles: list[Any], now: str) -> list[dict[str, Any]]:
        """The plan's billing cycles as stored, each checked in turn; one of them must be REGULAR."""
        stored = [cls._plan_cycle(c, i, now) for i, c in enumerate(cycles)]
        if not any(c["tenure_type"] == "REGULAR" for c in stored):
            raise ApiError(
                422,
                "UNPROCESSABLE_ENTITY",
                [
                    _detail(
                        "MISSING_REGULAR_BILLING_CYCLE",
                        "The plan needs one REGULAR billing cycle.",
                        "/billing_cycles",
                    )
                ],
            )
        return stored

    @staticmethod
    def _plan_preferences(prefs: dict[str, Any]) -> dict[str, Any]:
        """The plan's payment preferences as stored (always PREPAID, PayPal's defaults where not given)."""
        threshold = prefs.get("payment_failure_threshold", 0)
        if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= 999:
            raise _bad(
                "INVALID_PARAMETER_VALUE",
                "payment_failure_threshold must be 0 to 999.",
                "/payment_preferences/payment_failure_threshold",
                threshold,
            )
        stored = {
            "service_type": "PREPAID",
            "auto_bill_outstanding": bool(prefs.get("auto_bill_outstanding", True)),
            "setup_fee_failure_action": prefs.get("setup_fee_failure_action", "CANCEL"),
            "payment_failure_threshold": threshold,
        }
        if isinstance(prefs.get("setup_fee"), dict):
            stored["setup_fee"] = copy.deepcopy(prefs["setup_fee"])
        return stored

    @classmethod
    def _plan_cycle(cls, cycle: Any, index: int, now: str) -> dict[str, Any]:
        where = f"/billing_cycles/{index}"
        if not isinstance(cycle, dict):
            raise _bad("INVALID_PARAMETER_SYNTAX", "A billing cycle must be an object.", where)
        freq = cycle.get("frequency")
        if not isinstance(freq, dict) or freq.get("interval_unit") not in INTERVAL_DAYS:
            raise _bad(
                "INVALID_PARAMETER_VALUE",
                "frequency.interval_unit must be DAY, WEEK, MONTH or YEAR.",
                f"{where}/frequency/interval_unit",
            )
        count = freq.get("interval_count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 365:
            raise _bad(
                "INVALID_PARAMETER_VALUE", "interval_count must be 1 to 365.", f"{where}/frequency/interval_count"
            )
        tenure = cycle.get("tenure_type")
        if tenure not in ("REGULAR", "TRIAL"):
            raise _bad("INVALID_PARAMETER_VALUE", "tenure_type must be REGULAR or TRIAL.", f"{where}/tenure_type")
        sequence = cycle.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool) or not 1 <= sequence <= 99:
            raise _bad("INVALID_PARAMETER_VALUE", "sequence must be 1 to 99.", f"{where}/sequence")
        total = cycle.get("total_cycles", 1)
        if not isinstance(total, int) or isinstance(total, bool) or not 0 <= total <= 999:
            raise _bad("INVALID_PARAMETER_VALUE", "total_cycles must be 0 to 999.", f"{where}/total_cycles")
        out: dict[str, Any] = {
            "frequency": {"interval_unit": freq["interval_unit"], "interval_count": count},
            "tenure_type": tenure,
            "sequence": sequence,
            "total_cycles": total,
        }
        scheme = cycle.get("pricing_scheme")
        if isinstance(scheme, dict):
            out["pricing_scheme"] = cls._pricing_scheme(scheme, where, now)
        elif tenure == "REGULAR":
            raise _bad(
                "MISSING_REQUIRED_PARAMETER",
                "A REGULAR billing cycle needs a pricing_scheme.",
                f"{where}/pricing_scheme",
            )
        return out

    @staticmethod
    def _pricing_scheme(scheme: dict[str, Any], where: str, now: str) -> dict[str, Any]:
        """A billing cycle's pricing scheme as stored: a fixed price, version 1."""
        fixed = scheme.get("fixed_price")
        if (
            not isinstance(fixed, dict)
            or not isinstance(fixed.get("value"), str)
            or not isinstance(fixed.get("currency_code"), str)
            or len(fixed["currency_code"]) != 3
        ):
            raise _bad(
                "INVALID_PARAMETER_VALUE",
                "pricing_scheme.fixed_price needs value and currency_code.",
                f"{where}/pricing_scheme/fixed_price",
            )
        try:
            Decimal(fixed["value"])
        except InvalidOperation:
            raise _bad(
                "INVALID_PARAMETER_VALUE",
                "fixed_price.value must be a decimal number.",
                f"{where}/pricing_scheme/fixed_price/value",
                fixed["value"],
            ) from None
        return {
            "version": 1,
            "fixed_price": {"currency_code": fixed["currency_code"], "value": fixed["value"]},
            "create_time": now,
            "update_time": now,
        }

    def _plan_links(self, pid: str) -> list[dict[str, str]]:
        href = f"{self.base_url}/v1/billing/plans/{pid}"
        return [{"href": href, "rel": "self", "method": "GET"}, {"href": href, "rel": "edit", "method": "PATCH"}]

    def _h_get_plan(self, request: Request, pid: str) -> Response:
        with self._lock:
            plan = self._plans.get(pid)
            if plan is None:
                raise self._not_found(pid)
            return self._json(plan)

    def _h_list_plans(self, request: Request) -> Response:
        with self._lock:
            product_id = request.args.get("product_id")
            plans = [p for p in self._plans.values() if not product_id or p["product_id"] == product_id]
            return self._json(
                {
                    "plans": plans,
                    "total_items": len(plans),
                    "total_pages": 1,
                    "links": [{"href": f"{self.base_url}/v1/billing/plans", "rel": "self", "method": "GET"}],
                }
            )

    def _h_plan_action(self, request: Request, pid: str, action: str) -> Response:
        with self._lock:
            plan = self._plans.get(pid)
            if plan is None:
                raise self._not_found(pid)
            want = "ACTIVE" if action == "activate" else "INACTIVE"
            if plan["status"] == want:
                raise ApiError(
                    422,
                    "UNPROCESSABLE_ENTITY",
                    [
                        _detail(
                            "PLAN_STATUS_INVALID",
                            f"The plan is already {want}.",
                            description=PLAN_STATUS_INVALID[action],
                        )
                    ],
                )
            plan["status"] = want
            plan["update_time"] = iso(self.now())
            return Response(status=204)

    @staticmethod
    def _not_found(resource_id: str) -> ApiError:
        return ApiError(
            404,
            "RESOURCE_NOT_FOUND",
            [
                _detail(
                    "INVALID_RESOURCE_ID", "Requested resource ID was not found.", "resource_id", resource_id, "path"
                )
            ],
        )

    # -- webhooks (registrations) --

    def _h_create_webhook(self, request: Request) -> Response:
        with self._lock:
            body = self._body(request)
            url = body.get("url")
            if not isinstance(url, str) or not url:
                raise _bad("MISSING_REQUIRED_PARAMETER", "url is required.", "/url")
            if len(url) > 2048 or not _is_url(url):
                raise _bad("INVALID_PARAMETER_SYNTAX", "url must be an absolute http(s) URL.", "/url", url)
            types = body.get("event_types")
            if not isinstance(types, list) or not types:
                raise _bad(
                    "MISSING_REQUIRED_PARAMETER", "event_types must list at least one event type.", "/event_types"
                )
            if len(types) > 500 or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"] for t in types
            ):
                raise _bad("INVALID_PARAMETER_SYNTAX", "Each event type needs a name.", "/event_types")
            if any(w["url"] == url for w in self._webhooks.values()):
                raise ApiError(400, "WEBHOOK_URL_ALREADY_EXISTS")
            if len(self._webhooks) >= 10:
                raise ApiError(400, "WEBHOOK_NUMBER_LIMIT_EXCEEDED")
            wid = _rand(17)
            names = list(dict.fromkeys(t["name"] for t in types))
            webhook = {
                "id": wid,
                "url": url,
                "event_types": [{"name": n, "description": SUMMARIES.get(n, n), "status": "ENABLED"} for n in names],
                "links": self._webhook_links(wid),
            }
            self._webhooks[wid] = webhook
            return self._json(webhook, 201)

    def _webhook_links(self, wid: str) -> list[dict[str, str]]:
        href = f"{self.base_url}/v1/notifications/webhooks/{wid}"
        return [
            {"href": href, "rel": "self", "method": "GET"},
            {"href": href, "rel": "update", "method": "PATCH"},
            {"href": href, "rel": "delete", "method": "DELETE"},
        ]

    def _h_list_webhooks(self, request: Request) -> Response:
        with self._lock:
            return self._json({"webhooks": list(self._webhooks.values())})

    def _h_get_webhook(self, request: Request, wid: str) -> Response:
        with self._lock:
            if wid not in self._webhooks:
                raise ApiError(
                    404,
                    "INVALID_RESOURCE_ID",
                    [_detail("INVALID_RESOURCE_ID", "Webhook id not found.", "webhook_id", wid, "path")],
                )
            return self._json(self._webhooks[wid])

    def _h_delete_webhook(self, request: Request, wid: str) -> Response:
        with self._lock:
            if self._webhooks.pop(wid, None) is None:
                raise ApiError(
                    404,
                    "INVALID_RESOURCE_ID",
                    [_detail("INVALID_RESOURCE_ID", "Webhook id not found.", "webhook_id", wid, "path")],
                )
            return Response(status=204)

    def _h_cert(self, request: Request, cert_id: str) -> Response:
        if cert_id != CERT_ID:
            raise ApiError(
                404,
                "RESOURCE_NOT_FOUND",
                [_detail("INVALID_RESOURCE_ID", "Certificate not found.", "cert_id", cert_id, "path")],
            )
        return Response(self._cert_pem, status=200, mimetype="text/plain")

    # -- webhook events (PayPal's API view) --

    def _h_list_events_api(self, request: Request) -> Response:
        with self._lock:
            events = [json.loads(e.body) for e in reversed(self._events.values())]
            return self._json({"events": events, "count": len(events), "links": []})

    def _h_get_event_api(self, request: Request, eid: str) -> Response:
        with self._lock:
            event = self._events.get(eid)
            if event is None:
                raise ApiError(
                    404,
                    "INVALID_RESOURCE_ID",
                    [_detail("INVALID_RESOURCE_ID", "Event id not found.", "event_id", eid, "path")],
                )
            return self._json(json.loads(event.body))

    def _h_resend_event_api(self, request: Request, eid: str) -> Response:
        body = self._body(request, required=False)
        ids = body.get("webhook_ids")
        with self._lock:
            event = self._events.get(eid)
            if event is None:
                raise ApiError(
                    404,
                    "INVALID_RESOURCE_ID",
                    [_detail("INVALID_RESOURCE_ID", "Event id not found.", "event_id", eid, "path")],
                )
            self._schedule(event, resend=True, webhook_ids=ids if isinstance(ids, list) else None)
            return self._json(json.loads(event.body), 202)

    # -- subscriptions --

    def _h_create_subscription(self, request: Request) -> Response:
        with self._lock:
            if (replay := self._replay(request)) is not None:
                return replay
            body = self._body(request)
            plan_id = _string(body, "plan_id", 3, 50, required=True)
            assert plan_id is not None
            custom_id, quantity, start = self._subscription_fields(body)
            return_url, cancel_url = self._application_context(body)
            subscriber = body.get("subscriber")
            if subscriber is not None and not isinstance(subscriber, dict):
                raise _bad("INVALID_PARAMETER_SYNTAX", "subscriber must be an object.", "/subscriber")
            self._check_plan_active(plan_id)
            now = self.now()
            sid = "I-" + _rand(12)
            while sid in self._subs:
                sid = "I-" + _rand(12)
            data: dict[str, Any] = {
                "status": "APPROVAL_PENDING",
                "status_update_time": iso(now),
                "id": sid,
                "plan_id": plan_id,
                "start_time": start or iso(now),
                "quantity": quantity,
            }
            if isinstance(body.get("shipping_amount"), dict):
                data["shipping_amount"] = copy.deepcopy(body["shipping_amount"])
            data.update({"create_time": iso(now), "update_time": iso(now)})
            if custom_id is not None:
                data["custom_id"] = custom_id
            data["plan_overridden"] = isinstance(body.get("plan"), dict)
            sub = _Subscription(
                data=data,
                ba_token="BA-" + _rand(17),
                return_url=return_url,
                cancel_url=cancel_url,
                requested_subscriber=copy.deepcopy(subscriber or {}),
                plan_override=copy.deepcopy(body["plan"]) if data["plan_overridden"] else {},
            )
            self._subs[sid] = sub
            self._ba_tokens[sub.ba_token] = sid
            answer = self._created_answer(self._snapshot(sub), request)
            self._remember(request, 201, answer)
            self._emit_subscription(sub, "BILLING.SUBSCRIPTION.CREATED")
            return self._json(answer, 201)

    @staticmethod
    def _subscription_fields(body: dict[str, Any]) -> tuple[str | None, str, Any]:
        """(custom_id, quantity, start_time) of a new subscription, each checked in that order."""
        custom_id = _string(body, "custom_id", 1, 127, required=False)
        if custom_id is not None and not all(0x20 <= ord(c) <= 0x7E for c in custom_id):
            raise _bad("INVALID_PARAMETER_VALUE", "custom_id must be printable ASCII.", "/custom_id", custom_id)
        quantity = body.get("quantity", "1")
        if (
            not isinstance(quantity, str)
            or not quantity
            or len(quantity) > 32
            or not all(c.isdigit() or c == "." for c in quantity)
        ):
            raise _bad("INVALID_PARAMETER_VALUE", "quantity must be a decimal string.", "/quantity", quantity)
        start = body.get("start_time")
        if start is not None and parse_iso(start) is None:
            raise _bad("INVALID_PARAMETER_SYNTAX", "start_time must be an RFC 3339 date-time.", "/start_time", start)
        return custom_id, quantity, start

    @staticmethod
    def _application_context(body: dict[str, Any]) -> tuple[str | None, str | None]:
        """(return_url, cancel_url) from a new subscription's application_context; (None, None) without one."""
        context = body.get("application_context")
        if context is None:
            return None, None
        if not isinstance(context, dict):
            raise _bad("INVALID_PARAMETER_SYNTAX", "application_context must be an object.", "/application_context")
        for key in ("return_url", "cancel_url"):
            value = _string(context, key, 10, 4000, required=True, path="/application_context")
            if not _is_url(value or ""):
                raise _bad(
                    "INVALID_PARAMETER_SYNTAX",
                    f"{key} must be an absolute URL.",
                    f"/application_context/{key}",
                    value,
                )
        _string(context, "brand_name", 1, 127, required=False, path="/application_context")
        for key, allowed in (
            ("user_action", ("CONTINUE", "SUBSCRIBE_NOW")),
            ("shipping_preference", ("GET_FROM_FILE", "NO_SHIPPING", "SET_PROVIDED_ADDRESS")),
        ):
            if key in context and context[key] not in allowed:
                raise _bad(
                    "INVALID_PARAMETER_VALUE",
                    f"{key} must be one of {', '.join(allowed)}.",
                    f"/application_context/{key}",
                    context[key],
                )
        return context["return_url"], context["cancel_url"]

    def _check_plan_active(self, plan_id: str) -> None:
        """A subscription needs an existing, ACTIVE plan."""
        plan = self._plans.get(plan_id)
        if plan is None:
            # The create-422 issues PayPal documents have no "unknown plan"; PLAN_STATUS_INVALID is the nearest.
            raise ApiError(
                422,
                "UNPROCESSABLE_ENTITY",
                [
                    _detail(
                        "PLAN_STATUS_INVALID",
                        f"no plan {plan_id} exists",
                        "/plan_id",
                        plan_id,
                        description=PLAN_STATUS_FOR_SUBSCRIPTION,
                    )
                ],
            )
        if plan["status"] != "ACTIVE":
            raise ApiError(
                422,
                "UNPROCESSABLE_ENTITY",
                [
                    _detail(
                        "PLAN_STATUS_INVALID",
                        f"plan is {plan['status']}",
                        "/plan_id",
                        plan_id,
                        description=PLAN_STATUS_FOR_SUBSCRIPTION,
                    )
                ],
            )

    @staticmethod
    def _created_answer(snapshot: dict[str, Any], request: Request) -> dict[str, Any]:
        """The whole subscription when the client asks for `Prefer: return=representation`, else PayPal's
        minimal answer."""
        if "return=representation" in request.headers.get("Prefer", ""):
            return snapshot
        keys = (
            "id",
            "status",
            "status_update_time",
            "plan_id",
            "plan_overridden",
            "start_time",
            "quantity",
            "shipping_amount",
            "custom_id",
            "create_time",
            "links",
        )
        return {k: snapshot[k] for k in keys if k in snapshot}

    def _sub(self, sid: str) -> _Subscription:
        sub = self._subs.get(sid)
        if sub is None:
            raise self._not_found(sid)
        return sub

    def _h_get_subscription(self, request: Request, sid: str) -> Response:
        with self._lock:
            return self._json(self._snapshot(self._sub(sid)))

    def _h_subscription_action(self, request: Request, sid: str, action: str) -> Response:
        with self._lock:
            sub = self._sub(sid)
            try:
                body = self._body(request, required=False)
                reason = _string(body, "reason", 1, 128, required=action != "activate")
            except ApiError as e:
                # PayPal's documents list one 400 issue for cancel, suspend and activate; keep the
                # answer within them and say what was wrong in the description.
                for detail in e.details:
                    detail["issue"] = "INVALID_STRING_MAX_LENGTH"
                    detail["description"] = ISSUE_DESCRIPTIONS["INVALID_STRING_MAX_LENGTH"]
                raise
            status = sub.data["status"]
            allowed = {
                "cancel": ("ACTIVE", "SUSPENDED", "APPROVED"),
                "suspend": ("ACTIVE",),
                "activate": ("SUSPENDED",),
            }[action]
            if status not in allowed:
                raise ApiError(
                    422,
                    "UNPROCESSABLE_ENTITY",
                    [
                        _detail(
                            "SUBSCRIPTION_STATUS_INVALID",
                            f"{action} on a {status} subscription",
                            "id",
                            sid,
                            "path",
                            description=STATUS_INVALID[action],
                        )
                    ],
                )
            new, event = {
                "cancel": ("CANCELLED", "BILLING.SUBSCRIPTION.CANCELLED"),
                "suspend": ("SUSPENDED", "BILLING.SUBSCRIPTION.SUSPENDED"),
                "activate": ("ACTIVE", "BILLING.SUBSCRIPTION.RE-ACTIVATED"),
            }[action]
            self._set_status(sub, new, note=reason)
            self._emit_subscription(sub, event)
            return Response(status=204)

    # -- subscription state changes (shared by the API, the approval page and the control API) --

    def _plan_terms(self, sub: _Subscription) -> tuple[str, str, timedelta, dict[str, Any]]:
        """(price, currency, interval, regular cycle) of the subscription's plan, or of the inline plan
        it was created with (an override's billing cycles replace the plan's)."""
        plan = self._plans.get(sub.data["plan_id"]) or {}
        cycles = sub.plan_override.get("billing_cycles") or plan.get("billing_cycles") or []
        if not isinstance(cycles, list) or not all(isinstance(c, dict) for c in cycles):
            cycles = plan.get("billing_cycles") or []
        regular = next((c for c in cycles if c.get("tenure_type") == "REGULAR"), cycles[-1] if cycles else {})
        fixed = (regular.get("pricing_scheme") or {}).get("fixed_price") or {"value": "15.00", "currency_code": "USD"}
        freq = regular.get("frequency") or {"interval_unit": "MONTH", "interval_count": 1}
        days = INTERVAL_DAYS.get(freq.get("interval_unit", "MONTH"), 30) * int(freq.get("interval_count", 1))
        return money_str(fixed["value"]), fixed["currency_code"], timedelta(days=days), regular

    def _threshold(self, sub: _Subscription) -> int:
        plan = self._plans.get(sub.data["plan_id"]) or {}
        return int((plan.get("payment_preferences") or {}).get("payment_failure_threshold") or 0)

    def _set_status(self, sub: _Subscription, status: str, note: str | None = None) -> None:
        now = iso(self.now())
        sub.data["status"] = status
        sub.data["status_update_time"] = now
        sub.data["update_time"] = now
        if note:
            sub.data["status_change_note"] = note
        if status in ("CANCELLED", "EXPIRED"):
            # PayPal stops answering a next billing time once nothing will be billed.
            (sub.data.get("billing_info") or {}).pop("next_billing_time", None)

    def _approve(self, sub: _Subscription) -> list[str]:
        if sub.data["status"] != "APPROVAL_PENDING":
            raise ControlError(409, f"subscription is {sub.data['status']}, not APPROVAL_PENDING")
        now = self.now()
        price, currency, interval, _regular = self._plan_terms(sub)
        requested = sub.requested_subscriber
        subscriber: dict[str, Any] = {
            "email_address": requested.get("email_address") or f"buyer-{_rand(6).lower()}@example.com",
            "payer_id": _rand(13, PAYER_ID_ALPHABET),
            "name": requested.get("name") or {"given_name": "Local", "surname": "Buyer"},
        }
        plan = self._plans.get(sub.data["plan_id"]) or {}
        executions = []
        for cycle in sorted(plan.get("billing_cycles") or [], key=lambda c: c["sequence"]):
            done = 1 if cycle["tenure_type"] == "REGULAR" else 0
            total = cycle.get("total_cycles", 0)
            executions.append(
                {
                    "tenure_type": cycle["tenure_type"],
                    "sequence": cycle["sequence"],
                    "cycles_completed": done,
                    "cycles_remaining": max(total - done, 0) if total else 0,
                    "current_pricing_scheme_version": 1,
                    "total_cycles": total,
                }
            )
        data = sub.data
        start = parse_iso(data.get("start_time"))
        data["status"] = "ACTIVE"
        data["status_update_time"] = iso(now)
        data["update_time"] = iso(now)
        data["subscriber"] = subscriber
        if start is not None and start > now:
            # A delayed start: approved now, nothing billed; the first regular cycle is due at start_time.
            for execution in executions:
                execution["cycles_completed"] = 0
                execution["cycles_remaining"] = execution["total_cycles"]
            data["billing_info"] = {
                "outstanding_balance": {"currency_code": currency, "value": "0.00"},
                "cycle_executions": executions,
                "next_billing_time": iso(start),
                "failed_payments_count": 0,
            }
            return [self._emit_subscription(sub, "BILLING.SUBSCRIPTION.ACTIVATED")]
        data["start_time"] = iso(now)
        data["billing_info"] = {
            "outstanding_balance": {"currency_code": currency, "value": "0.00"},
            "cycle_executions": executions,
            "last_payment": {"amount": {"currency_code": currency, "value": price}, "time": iso(now)},
            "next_billing_time": iso(now + interval.total_seconds()),
            "failed_payments_count": 0,
        }
        return [
            self._emit_subscription(sub, "BILLING.SUBSCRIPTION.ACTIVATED"),
            self._emit_sale(sub, "PAYMENT.SALE.COMPLETED"),
        ]

    def _bill_due(self, deliver: bool) -> list[str]:
        """PayPal's scheduler: every ACTIVE subscription whose next billing time has come is charged,
        one sale per cycle due (a clock moved across two cycles bills two)."""
        events: list[str] = []
        now = self.now()
        for sub in list(self._subs.values()):
            for _ in range(1000):
                due = parse_iso((sub.data.get("billing_info") or {}).get("next_billing_time"))
                if sub.data["status"] != "ACTIVE" or due is None or due > now:
                    break
                events += self._charge(sub, deliver, at=due)
        return events

    def _simulate(self, sub: _Subscription, what: str, deliver: bool) -> list[str]:
        data = sub.data
        status = data["status"]
        need = {
            "payment-completed": ("ACTIVE",),
            "payment-failed": ("ACTIVE",),
            "suspended": ("ACTIVE",),
            "expired": ("ACTIVE", "SUSPENDED"),
            "cancelled": ("ACTIVE", "SUSPENDED", "APPROVED"),
            "reactivated": ("SUSPENDED",),
        }[what]
        if status not in need:
            raise ControlError(409, f"{what} needs status {' or '.join(need)}; the subscription is {status}")
        now = self.now()
        price, currency, _interval, _regular = self._plan_terms(sub)
        billing = data.setdefault(
            "billing_info",
            {"outstanding_balance": {"currency_code": currency, "value": "0.00"}, "failed_payments_count": 0},
        )
        events: list[str] = []
        if what == "payment-completed":
            events += self._charge(sub, deliver, at=now)
        elif what == "payment-failed":
            billing["failed_payments_count"] = min(int(billing.get("failed_payments_count") or 0) + 1, 999)
            billing["last_failed_payment"] = {
                "amount": {"currency_code": currency, "value": price},
                "time": iso(now),
                "reason_code": "PAYMENT_DENIED",
                "next_payment_retry_time": iso(now + 5 * 86400),
            }
            owed = Decimal((billing.get("outstanding_balance") or {}).get("value") or "0") + Decimal(price)
            billing["outstanding_balance"] = {"currency_code": currency, "value": money_str(owed)}
            data["update_time"] = iso(now)
            events.append(self._emit_subscription(sub, "BILLING.SUBSCRIPTION.PAYMENT.FAILED", deliver=deliver))
            threshold = self._threshold(sub)
            if threshold > 0 and billing["failed_payments_count"] >= threshold:
                self._set_status(sub, "SUSPENDED")
                events.append(self._emit_subscription(sub, "BILLING.SUBSCRIPTION.SUSPENDED", deliver=deliver))
        else:
            new, event = {
                "suspended": ("SUSPENDED", "BILLING.SUBSCRIPTION.SUSPENDED"),
                "expired": ("EXPIRED", "BILLING.SUBSCRIPTION.EXPIRED"),
                "cancelled": ("CANCELLED", "BILLING.SUBSCRIPTION.CANCELLED"),
                "reactivated": ("ACTIVE", "BILLING.SUBSCRIPTION.RE-ACTIVATED"),
            }[what]
            self._set_status(sub, new)
            events.append(self._emit_subscription(sub, event, deliver=deliver))
        return events

    def _charge(self, sub: _Subscription, deliver: bool, *, at: float) -> list[str]:
        """One regular cycle paid at `at`: last_payment, the next billing time one interval on, a sale."""
        price, currency, interval, _regular = self._plan_terms(sub)
        billing = sub.data.setdefault("billing_info", {})
        billing["last_payment"] = {"amount": {"currency_code": currency, "value": price}, "time": iso(at)}
        base = parse_iso(billing.get("next_billing_time")) or at
        billing["next_billing_time"] = iso(base + interval.total_seconds())
        billing["failed_payments_count"] = 0
        billing["outstanding_balance"] = {"currency_code": currency, "value": "0.00"}
        for execution in billing.get("cycle_executions") or []:
            if execution.get("tenure_type") == "REGULAR":
                execution["cycles_completed"] = min(execution.get("cycles_completed", 0) + 1, 9999)
                total = execution.get("total_cycles") or 0
                if total:
                    execution["cycles_remaining"] = max(total - execution["cycles_completed"], 0)
        sub.data["update_time"] = iso(self.now())
        return [self._emit_sale(sub, "PAYMENT.SALE.COMPLETED", deliver=deliver)]

    def _snapshot(self, sub: _Subscription) -> dict[str, Any]:
        data = copy.deepcopy(sub.data)
        data["links"] = self._sub_links(sub)
        return data

    def _sub_links(self, sub: _Subscription) -> list[dict[str, str]]:
        href = f"{self.base_url}/v1/billing/subscriptions/{sub.data['id']}"
        status = sub.data["status"]
        if status == "APPROVAL_PENDING":
            return [
                {"href": self.approve_url(sub.ba_token), "rel": "approve", "method": "GET"},
                {"href": href, "rel": "edit", "method": "PATCH"},
                {"href": href, "rel": "self", "method": "GET"},
            ]
        links = []
        if status in ("ACTIVE", "SUSPENDED", "APPROVED"):
            links.append({"href": f"{href}/cancel", "rel": "cancel", "method": "POST"})
        if status in ("ACTIVE", "SUSPENDED"):
            links.append({"href": href, "rel": "edit", "method": "PATCH"})
        links.append({"href": href, "rel": "self", "method": "GET"})
        if status == "ACTIVE":
            links.append({"href": f"{href}/suspend", "rel": "suspend", "method": "POST"})
        if status == "SUSPENDED":
            links.append({"href": f"{href}/activate", "rel": "activate", "method": "POST"})
        if status in ("ACTIVE", "SUSPENDED"):
            links.append({"href": f"{href}/capture", "rel": "capture", "method": "POST"})
        return links

    def approve_url(self, ba_token: str) -> str:
        return f"{self.base_url}/webapps/billing/subscriptions?{urlencode({'ba_token': ba_token})}"

    # -- events and their delivery --

    def _emit_subscription(self, sub: _Subscription, event_type: str, deliver: bool = True) -> str:
        return self._emit(
            event_type,
            "subscription",
            self._snapshot(sub),
            SUMMARIES.get(event_type, event_type),
            subscription_id=sub.data["id"],
            deliver=deliver,
        )

    def _emit_sale(self, sub: _Subscription, event_type: str, deliver: bool = True) -> str:
        price, currency, _interval, _regular = self._plan_terms(sub)
        now = iso(self.now())
        state = SALE_STATES.get(event_type, "completed")
        if event_type == "PAYMENT.SALE.COMPLETED" or sub.last_sale_id is None:
            sale_id = _rand(17)
            if event_type == "PAYMENT.SALE.COMPLETED":
                sub.last_sale_id = sale_id
        else:
            sale_id = sub.last_sale_id
        fee = money_str(Decimal(price) * Decimal("0.029") + Decimal("0.30"))
        sale: dict[str, Any] = {
            "id": sale_id,
            "state": state,
            "amount": {"total": price, "currency": currency, "details": {"subtotal": price}},
            "payment_mode": "INSTANT_TRANSFER",
            "protection_eligibility": "ELIGIBLE",
            "protection_eligibility_type": "ITEM_NOT_RECEIVED_ELIGIBLE,UNAUTHORIZED_PAYMENT_ELIGIBLE",
            "transaction_fee": {"value": fee, "currency": currency},
            "billing_agreement_id": sub.data["id"],
        }
        if sub.data.get("custom_id"):
            sale["custom"] = sub.data["custom_id"]
        sale.update(
            {
                "create_time": now,
                "update_time": now,
                "links": [
                    {"href": f"{self.base_url}/v1/payments/sale/{sale_id}", "rel": "self", "method": "GET"},
                    {"href": f"{self.base_url}/v1/payments/sale/{sale_id}/refund", "rel": "refund", "method": "POST"},
                ],
            }
        )
        words = {
            "completed": "Payment completed for",
            "denied": "A payment was denied for",
            "refunded": "A sale payment was refunded for",
            "reversed": "A sale payment was reversed for",
            "pending": "Payment pending for",
        }[state]
        summary = f"{words} $ {price} {currency}"
        return self._emit(event_type, "sale", sale, summary, subscription_id=sub.data["id"], deliver=deliver)

    def _emit(
        self,
        event_type: str,
        resource_type: str,
        resource: dict[str, Any],
        summary: str,
        *,
        subscription_id: str | None,
        deliver: bool,
    ) -> str:
        eid = f"WH-{_rand(17)}-{_rand(17)}"
        now = iso(self.now())
        event = {
            "id": eid,
            "event_version": "1.0",
            "create_time": now,
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": resource,
            "links": [
                {"href": f"{self.base_url}/v1/notifications/webhooks-events/{eid}", "rel": "self", "method": "GET"},
                {
                    "href": f"{self.base_url}/v1/notifications/webhooks-events/{eid}/resend",
                    "rel": "resend",
                    "method": "POST",
                },
            ],
        }
        record = _Event(
            id=eid,
            event_type=event_type,
            resource_type=resource_type,
            body=json.dumps(event, separators=(",", ":")).encode(),
            subscription_id=subscription_id,
            resource_id=resource.get("id"),
            create_time=now,
            withheld=not deliver,
        )
        self._events[eid] = record
        if deliver:
            self._schedule(record)
        else:
            self._log(f"webhook {eid} {event_type} withheld")
        return eid

    def _schedule(self, event: _Event, *, resend: bool = False, webhook_ids: list[str] | None = None) -> None:
        """Queue one delivery per registered webhook that wants this event type (call with the lock)."""
        for webhook in self._webhooks.values():
            if webhook_ids is not None and webhook["id"] not in webhook_ids:
                continue
            names = {t["name"] for t in webhook["event_types"]}
            if "*" not in names and event.event_type not in names:
                continue
            delivery = {
                "webhook_id": webhook["id"],
                "url": webhook["url"],
                "resend": resend,
                "attempts": 0,
                "status": None,
                "error": None,
                "delivered": False,
                "finished": False,
                "transmissions": [],
            }
            event.deliveries.append(delivery)
            self._queue.put((event, delivery))

    def _headers(self, event: _Event, webhook_id: str) -> dict[str, str]:
        transmission_id = str(uuid.uuid4())
        transmission_time = iso(self.now())
        message = crc32_message(transmission_id, transmission_time, webhook_id, event.body)
        signature = self._signing_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return {
            "Content-Type": "application/json",
            "PAYPAL-TRANSMISSION-ID": transmission_id,
            "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": self.cert_url,
            "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "User-Agent": "PayPal/AUHD-214.0-58843004",
        }

    def _deliver_loop(self) -> None:
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=str(self.ca.ca_cert))
        with httpx.Client(verify=ctx, trust_env=False, follow_redirects=False, timeout=self.delivery_timeout) as client:
            while True:
                item = self._queue.get()
                if item is None or self._stopping.is_set():
                    return
                event, delivery = item
                for attempt in range(len(self.retry_delays) + 1):
                    if attempt and self._stopping.wait(self.retry_delays[attempt - 1]):
                        return
                    if self._deliver_once(client, event, delivery):
                        break
                with self._lock:
                    delivery["finished"] = True

    def _deliver_once(self, client: httpx.Client, event: _Event, delivery: dict[str, Any]) -> bool:
        headers = self._headers(event, delivery["webhook_id"])
        status: int | None = None
        error: str | None = None
        try:
            status = client.post(delivery["url"], content=event.body, headers=headers).status_code
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"[:300]
        ok = status is not None and 200 <= status < 300
        with self._lock:
            delivery["attempts"] += 1
            delivery["status"], delivery["error"] = status, error
            delivery["delivered"] = ok
            delivery["transmissions"].append(
                {
                    "transmission_id": headers["PAYPAL-TRANSMISSION-ID"],
                    "transmission_time": headers["PAYPAL-TRANSMISSION-TIME"],
                    "status": status,
                    "error": error,
                }
            )
        shown = urlsplit(delivery["url"])._replace(query="", fragment="").geturl()
        self._log(
            f"webhook {event.id} {event.event_type} -> {shown} "
            f"{status if status is not None else error} (attempt {delivery['attempts']})"
        )
        return ok

    # -- the buyer's approval page --

    def _h_approve_page(self, request: Request) -> Response:
        ba_token = request.args.get("ba_token", "")
        with self._lock:
            sid = self._ba_tokens.get(ba_token)
            if sid is None:
                return self._page("Not found", "<p>This approval link is not valid.</p>", 404)
            sub = self._subs[sid]
            plan = self._plans.get(sub.data["plan_id"]) or {}
            price, currency, interval, regular = self._plan_terms(sub)
            freq = regular.get("frequency") or {}
            every = f"{freq.get('interval_count', 1)} {str(freq.get('interval_unit', 'MONTH')).lower()}"
            esc = html.escape
            token = esc(ba_token)
            start = parse_iso(sub.data.get("start_time"))
            first = (
                datetime.fromtimestamp(start, UTC).strftime("%b %d, %Y") if start and start > self.now() else "today"
            )
            if sub.data["status"] != "APPROVAL_PENDING":
                return self._page(
                    "PayPal",
                    f"<p>This subscription is {esc(sub.data['status'])}; there is nothing to approve.</p>",
                    409,
                )
            content = (
                f"<h1>{esc(plan.get('name', 'Subscription'))}</h1>"
                f"<p class=price>${esc(price)} {esc(currency)} every {esc(every)}</p>"
                f"<p id=first-payment>First payment: {esc(first)}</p>"
                f"<p>Subscription <code>{esc(sub.data['id'])}</code></p>"
                f"<form method=post action=/webapps/billing/subscriptions/approve>"
                f"<input type=hidden name=ba_token value=\"{token}\">"
                f"<button type=submit id=approve>Agree &amp; Subscribe</button></form>"
                f"<form method=post action=/webapps/billing/subscriptions/cancel>"
                f"<input type=hidden name=ba_token value=\"{token}\">"
                f"<button type=submit id=cancel class=link>Cancel and return to merchant</button></form>"
            )
            return self._page("PayPal Checkout (local stand-in)", content)

    def _h_approve_page_post(self, request: Request, action: str) -> Response:
        ba_token = request.form.get("ba_token", "")
        with self._lock:
            sid = self._ba_tokens.get(ba_token)
            if sid is None:
                return self._page("Not found", "<p>This approval link is not valid.</p>", 404)
            sub = self._subs[sid]
            if sub.data["status"] != "APPROVAL_PENDING":
                return self._page(
                    "PayPal",
                    f"<p>This subscription is {html.escape(sub.data['status'])}; there is nothing to approve.</p>",
                    409,
                )
            token = _rand(17)
            if action == "approve":
                self._approve(sub)
                target = sub.return_url
                params = {"subscription_id": sid, "ba_token": ba_token, "token": token}
                done = "<p>Subscription approved. You can close this page.</p>"
            else:
                target = sub.cancel_url
                params = {"ba_token": ba_token, "token": token}
                done = "<p>You cancelled. You can close this page.</p>"
        if not target:
            return self._page("PayPal", done)
        return Response(status=302, headers={"Location": with_query(target, params)})

    # -- the buyer's automatic payments page (www.paypal.com/myaccount/autopay/) --
    # Real PayPal shows the signed-in buyer's own; the stand-in has no buyer sign-in, so it lists every
    # subscription PayPal still bills. Cancelling here is what a buyer can do without visiting the lab.

    def _h_autopay_page(self, request: Request) -> Response:
        esc = html.escape
        with self._lock:
            billed = [sub for sub in reversed(self._subs.values()) if sub.data["status"] in ("ACTIVE", "SUSPENDED")]
            rows = "".join(
                f"<li><p><code>{esc(sub.data['id'])}</code> {esc(sub.data['status'])}"
                f" — {esc((sub.data.get('subscriber') or {}).get('email_address', ''))}</p>"
                f"<form method=post action=/myaccount/autopay/{esc(sub.data['id'])}/cancel>"
                f"<button type=submit>Cancel {esc(sub.data['id'])}</button></form></li>"
                for sub in billed
            )
        return self._page(
            "Automatic payments (local stand-in)",
            "<h1>Automatic payments</h1>"
            + (f"<ul>{rows}</ul>" if rows else "<p>No merchant bills you automatically.</p>"),
        )

    def _h_autopay_cancel(self, request: Request, sid: str) -> Response:
        with self._lock:
            sub = self._subs.get(sid)
            if sub is None or sub.data["status"] not in ("ACTIVE", "SUSPENDED"):
                return self._page("PayPal", "<p>There is no automatic payment to cancel.</p>", 409)
            self._set_status(sub, "CANCELLED", note="Cancelled by the buyer in automatic payments")
            self._emit_subscription(sub, "BILLING.SUBSCRIPTION.CANCELLED")
        return self._page("PayPal", f"<h1>Cancelled</h1><p>{html.escape(sid)} will not be billed again.</p>")

    @staticmethod
    def _page(title: str, content: str, status: int = 200) -> Response:
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>"
            "body{font:16px system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#111}"
            "h1{font-size:1.3rem}.price{font-size:1.5rem;font-weight:600}"
            "button{width:100%;padding:.8rem;margin:.4rem 0;border-radius:2rem;border:0;font-size:1rem;"
            "background:#0070ba;color:#fff;cursor:pointer}"
            "button.link{background:none;color:#0070ba;text-decoration:underline}"
            ".note{color:#666;font-size:.8rem}</style></head><body>"
            f"{content}<p class=note>Local PayPal stand-in: no money moves.</p></body></html>"
        )
        return Response(page, status=status, mimetype="text/html")

    # -- control API --

    def _h_c_health(self, request: Request) -> Response:
        return self._json({"ok": True})

    def _c_sub(self, sid: str) -> _Subscription:
        sub = self._subs.get(sid)
        if sub is None:
            raise ControlError(404, f"no subscription {sid}")
        return sub

    def _h_c_get_subscription(self, request: Request, sid: str) -> Response:
        with self._lock:
            sub = self._c_sub(sid)
            return self._json(
                {
                    "subscription": self._snapshot(sub),
                    "ba_token": sub.ba_token,
                    "approve_url": self.approve_url(sub.ba_token),
                    "return_url": sub.return_url,
                    "cancel_url": sub.cancel_url,
                }
            )

    def _h_c_patch_subscription(self, request: Request, sid: str) -> Response:
        body = self._control_body(request)
        with self._lock:
            sub = self._c_sub(sid)
            body.pop("id", None)
            body.pop("links", None)
            for key, value in body.items():
                if key == "billing_info" and isinstance(value, dict):
                    _deep_merge(sub.data.setdefault("billing_info", {}), value)
                elif value is None:
                    sub.data.pop(key, None)
                else:
                    sub.data[key] = copy.deepcopy(value)
            return self._json({"subscription": self._snapshot(sub)})

    def _h_c_approve(self, request: Request, sid: str) -> Response:
        with self._lock:
            sub = self._c_sub(sid)
            events = self._approve(sub)
            return self._json({"subscription": self._snapshot(sub), "events": events})

    def _h_c_simulate(self, request: Request, sid: str) -> Response:
        body = self._control_body(request)
        what = body.get("event")
        if what not in SIMULATIONS:
            raise ControlError(400, f"event must be one of {', '.join(SIMULATIONS)}")
        deliver = body.get("deliver", True)
        if not isinstance(deliver, bool):
            raise ControlError(400, "deliver must be true or false")
        with self._lock:
            sub = self._c_sub(sid)
            events = self._simulate(sub, what, deliver)
            return self._json({"subscription": self._snapshot(sub), "events": events})

    def _h_c_list_faults(self, request: Request) -> Response:
        with self._lock:
            return self._json({"faults": copy.deepcopy(self._faults)})

    def _h_c_add_fault(self, request: Request) -> Response:
        body = self._control_body(request)
        status = body.get("status")
        delay = body.get("delay_s")
        if status is None and delay is None:
            raise ControlError(400, "give status (500, 503 or 429) and/or delay_s")
        if status is not None and status not in FAULT_ERRORS:
            raise ControlError(400, "status must be 500, 503 or 429")
        if delay is not None and (
            not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 120
        ):
            raise ControlError(400, "delay_s must be a number of seconds from 0 to 120")
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ControlError(400, "count must be a positive integer")
        prefix = body.get("path_prefix", "/v1/")
        if not isinstance(prefix, str) or not prefix.startswith("/v1/"):
            raise ControlError(400, "path_prefix must start with /v1/")
        method = body.get("method")
        if method is not None and (not isinstance(method, str) or not method.isalpha()):
            raise ControlError(400, "method must be an HTTP method")
        fault = {
            "status": status,
            "delay_s": delay,
            "count": count,
            "remaining": count,
            "path_prefix": prefix,
            "method": method.upper() if method else None,
        }
        with self._lock:
            self._faults.append(fault)
            return self._json({"faults": copy.deepcopy(self._faults)}, 201)

    def _h_c_clear_faults(self, request: Request) -> Response:
        with self._lock:
            self._faults.clear()
            return Response(status=204)

    def _h_c_list_events(self, request: Request) -> Response:
        event_type = request.args.get("event_type")
        sid = request.args.get("subscription_id")
        with self._lock:
            events = [
                e.view()
                for e in self._events.values()
                if (not event_type or e.event_type == event_type) and (not sid or e.subscription_id == sid)
            ]
            return self._json({"events": events})

    def _c_event(self, eid: str) -> _Event:
        event = self._events.get(eid)
        if event is None:
            raise ControlError(404, f"no event {eid}")
        return event

    def _h_c_get_event(self, request: Request, eid: str) -> Response:
        with self._lock:
            return self._json({"event": self._c_event(eid).view()})

    def _h_c_resend_event(self, request: Request, eid: str) -> Response:
        body = self._control_body(request)
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 50:
            raise ControlError(400, "count must be 1 to 50")
        with self._lock:
            event = self._c_event(eid)
            for _ in range(count):
                self._schedule(event, resend=True)
            return self._json({"event": event.view()}, 202)

    def _clock_view(self) -> dict[str, Any]:
        return {"now": iso(self.now()), "offset_s": self._offset}

    def _h_c_get_clock(self, request: Request) -> Response:
        with self._lock:
            return self._json(self._clock_view())

    def _h_c_move_clock(self, request: Request) -> Response:
        body = self._control_body(request)
        advance, to = body.get("advance_s", 0), body.get("to")
        if not isinstance(advance, int | float) or isinstance(advance, bool) or not 0 <= advance <= 10 * 365 * 86400:
            raise ControlError(400, "advance_s must be a number of seconds from 0 to ten years")
        deliver = body.get("deliver", True)
        if not isinstance(deliver, bool):
            raise ControlError(400, "deliver must be true or false")
        with self._lock:
            if to is not None:
                target = parse_iso(to)
                if target is None:
                    raise ControlError(400, "to must be an RFC 3339 date-time")
                advance = max(0.0, target - self.now())  # the clock never goes back
            self._offset += float(advance)
            events = self._bill_due(deliver)
            return self._json({**self._clock_view(), "events": events})

    def _h_c_reset_clock(self, request: Request) -> Response:
        with self._lock:
            self._offset = 0.0
            return Response(status=204)

    def _h_c_send_event(self, request: Request) -> Response:
        body = self._control_body(request)
        event_type = body.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise ControlError(400, "event_type is required")
        deliver = body.get("deliver", True)
        if not isinstance(deliver, bool):
            raise ControlError(400, "deliver must be true or false")
        with self._lock:
            sub = self._c_sub(str(body.get("subscription_id")))
            if event_type.startswith("PAYMENT.SALE."):
                eid = self._emit_sale(sub, event_type, deliver=deliver)
            else:
                eid = self._emit_subscription(sub, event_type, deliver=deliver)
            return self._json({"event": self._events[eid].view()}, 201)


# --- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mllab_dev.paypal_standin", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--dev-dir", type=Path, default=Path(".dev"))
    parser.add_argument(
        "--credentials",
        type=Path,
        default=None,
        help="JSON {client_id, client_secret} (default: <dev-dir>/secrets/paypal-client)",
    )
    parser.add_argument("--token-ttl", type=int, default=DEFAULT_TOKEN_TTL, help="access token lifetime, seconds")
    parser.add_argument(
        "--retry-delays",
        default=",".join(str(d) for d in DEFAULT_RETRY_DELAYS),
        help="comma-separated webhook retry backoff, seconds",
    )
    parser.add_argument("--delivery-timeout", type=float, default=DELIVERY_TIMEOUT_S)
    args = parser.parse_args(argv)
    credentials = args.credentials or args.dev_dir / "secrets" / "paypal-client"
    delays = tuple(float(d) for d in args.retry_delays.split(",") if d.strip())
    standin = StandIn(
        args.dev_dir,
        credentials,
        args.host,
        args.port,
        token_ttl=args.token_ttl,
        retry_delays=delays,
        delivery_timeout=args.delivery_timeout,
    )
    try:
        standin.start()
    except (OSError, ValueError, KeyError) as e:
        print(f"paypal-standin: cannot start: {e}", file=sys.stderr, flush=True)
        return 1
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"paypal-standin: serving {standin.base_url} (CA {standin.ca_file})", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
