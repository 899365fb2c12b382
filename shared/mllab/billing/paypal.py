"""PayPal REST client: OAuth client credentials, retries, a circuit breaker, the few calls we make.

One `PayPal` per process (`client()`), one `httpx.Client` inside it so connections are reused.
Failures come in two kinds, and callers only need to tell them apart:

    PayPalError        PayPal refused the call (4xx): `status`, `name`, `issues`, `debug_id`
    PayPalUnavailable  PayPal is down, slow or throttling us (and the retries ran out), or the
                       circuit is open. A ConnectionError, so the HTTP router answers 503.

A retried POST is only safe with a `PayPal-Request-Id` (PayPal keeps those for 72 h and answers a
repeat with the first result), so a POST without one is retried only when it provably never ran
(connection refused, pool timeout, 429). Nothing secret (client secret, access tokens) is logged
or put into an exception's message.
"""

from __future__ import annotations

import functools
import json as jsonlib
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mllab.platform import clock, config, log

TOKEN_PATH = "/v1/oauth2/token"
TOKEN_EARLY_S = 300  # refresh five minutes before PayPal says the token expires
RETRY_AFTER_CAP_S = 5.0  # a longer Retry-After is not waited for inside a request: give up, pass it on
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 2.0
DEFAULT_RETRY_AFTER_S = 5
SUBSCRIPTION_ID = re.compile(r"I-[A-Z0-9]{6,40}")
_PLAN_ID = re.compile(r"P-[A-Z0-9]{6,48}")
_PRICE = re.compile(r"\d{1,7}(\.\d{1,2})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Transport failures after which the request certainly never reached PayPal: safe to resend any call.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _now() -> float:
    """Seconds on the project's clock (tests move it with `clock.travel`)."""
    return clock.now().timestamp()


# --- errors --------------------------------------------------------------------------------------


class PayPalError(Exception):
    """PayPal answered with an error. `name` is PayPal's (UNPROCESSABLE_ENTITY, RESOURCE_NOT_FOUND,
    invalid_client...), `issues` the `details[].issue` codes (SUBSCRIPTION_STATUS_INVALID...)."""

    def __init__(
        self, status: int, name: str, message: str = "", issues: list[str] | None = None, debug_id: str | None = None
    ) -> None:
        self.status = status
        self.name = name
        self.message = log.redact(message)[:300]  # PayPal's own words; masked in case they echo a credential
        self.issues = list(issues or [])
        self.debug_id = debug_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"PayPal {self.status or 'call'} {self.name}"
        if self.issues:
            text += f" [{', '.join(self.issues)}]"
        if self.message:
            text += f": {self.message}"
        if self.debug_id:
            text += f" (debug_id {self.debug_id})"
        return text

    def __str__(self) -> str:
        return self._describe()


class PayPalUnavailable(PayPalError, ConnectionError):
    """Transient: timeout, connection failure, 429 or 5xx after the retries, or the circuit is open.
    `retry_after` is how many seconds to tell our own caller to wait."""

    def __init__(
        self,
        status: int,
        name: str,
        message: str = "",
        issues: list[str] | None = None,
        debug_id: str | None = None,
        *,
        retry_after: int = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(status, name, message, issues, debug_id)


# --- circuit breaker -----------------------------------------------------------------------------


class CircuitBreaker:
    """Closed -> open after `threshold` consecutive failed attempts -> half-open after `cooldown_s`
    (one trial call; the rest still fail fast) -> closed on a success, open again on a failure.

    While open, calls fail at once without network I/O, so a PayPal outage answers 503 in
    milliseconds instead of holding every request for the full retry deadline."""

    def __init__(self, threshold: int = 5, cooldown_s: float = 30.0, *, now: Callable[[], float] = _now) -> None:
        if threshold < 1 or cooldown_s <= 0:
            raise ValueError("threshold must be >= 1 and cooldown_s > 0")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._now = now
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None  # when the half-open trial started (None: no trial out)

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "open" if self._now() - self._opened_at < self.cooldown_s else "half-open"

    def allow(self) -> bool:
        """May a call go out now? In half-open, True for exactly one caller (the trial)."""
        with self._lock:
            if self._opened_at is None:
                return True
            now = self._now()
            if now - self._opened_at < self.cooldown_s:
                return False
            # A trial that never reported back (its caller crashed) must not wedge the breaker.
            if self._trial_at is not None and now - self._trial_at < self.cooldown_s:
                return False
            self._trial_at = now
            return True

    def retry_after(self) -> int:
        """Whole seconds until a trial call may go out (at least 1)."""
        with self._lock:
            if self._opened_at is None:
                return 1
            return max(1, int(self.cooldown_s - (self._now() - self._opened_at) + 0.999))

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = self._trial_at = None

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_at is not None or self._failures >= self.threshold:
                self._opened_at = self._now()
                self._trial_at = None


# --- client --------------------------------------------------------------------------------------


class _OAuthFailed(Exception):
    """The token endpoint answered something other than a token (handled like any response)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class _Call:
    """One API call across its attempts: what its log line reports."""

    method: str
    path: str
    resendable: bool  # safe to send again (a safe method, or a PayPal-Request-Id makes it idempotent)
    started: float
    deadline: float
    attempt: int = 0
    status: int | None = None
    reauthed: bool = False
    refreshed: bool = False
    debug_id: str | None = None


def _log_call(call: _Call) -> None:
    elapsed_ms = round((time.monotonic() - call.started) * 1000, 1)
    fields = dict(
        method=call.method,
        path=call.path,
        status=call.status,
        attempts=call.attempt,
        elapsed_ms=elapsed_ms,
        oauth_fetched=call.refreshed,
        debug_id=call.debug_id,
    )
    if call.status is not None and call.status < 400:
        log.info("paypal call", **fields)
    else:
        log.warning("paypal call", **fields)


class PayPal:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        attempts: int = 3,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not client_id or not client_secret:
            raise config.ConfigError("PayPal client id and secret must be set")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.attempts = max(1, attempts)
        self.breaker = breaker or CircuitBreaker()
        self._sleep = sleep
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=verify,
            transport=transport,
            timeout=self._timeouts(self.timeout),
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_until = 0.0

    def __repr__(self) -> str:  # never the credentials
        return f"PayPal({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def _timeouts(seconds: float) -> httpx.Timeout:
        t = max(0.05, seconds)
        return httpx.Timeout(t, connect=min(t, 5.0), pool=min(t, 5.0))

    # --- OAuth -----------------------------------------------------------------------------------

    def _access_token(self, timeout: float) -> tuple[str, bool]:
        """(token, fetched now). One refresh at a time: callers waiting on the lock reuse its result."""
        token = self._token
        if token is not None and _now() < self._token_until:
            return token, False
        with self._token_lock:
            if self._token is not None and _now() < self._token_until:
                return self._token, False
            resp = self._http.post(
                TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=self._auth, timeout=self._timeouts(timeout)
            )
            if resp.status_code != 200:
                raise _OAuthFailed(resp)
            try:
                body = resp.json()
                token, expires_in = str(body["access_token"]), int(body.get("expires_in", 0))
            except (ValueError, KeyError, TypeError):
                raise PayPalUnavailable(
                    resp.status_code, "BAD_TOKEN_RESPONSE", "the token endpoint answered without an access token"
                ) from None
            self._token = token
            self._token_until = _now() + max(0, expires_in - TOKEN_EARLY_S)
            return token, True

    def _drop_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:  # another thread may already have replaced it
                self._token = None
                self._token_until = 0.0

    # --- one call, with retries ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> dict | None:
        """One PayPal API call. Returns the JSON body (None for 204). Raises PayPalError (4xx) or
        PayPalUnavailable (transient, after at most `attempts` attempts, all within the timeout, so
        a request waiting on PayPal still answers within its own deadline)."""
        method = method.upper()
        if not path.startswith("/") or path.startswith("//"):
            raise ValueError("path must be relative to the API base (the bearer token goes with it)")
        send_headers = dict(headers or {})
        if request_id is not None:
            send_headers["PayPal-Request-Id"] = request_id  # the same id on every retry: that is the point
        if method == "POST":
            send_headers.setdefault("Prefer", "return=representation")
        started = time.monotonic()
        call = _Call(method, path, method in _SAFE_METHODS or request_id is not None, started, started + self.timeout)
        try:
            while True:
                self._admit()
                call.attempt += 1
                sent = self._send(call, json, send_headers)
                if sent is None:
                    continue  # not answered; paused before the next attempt
                resp, token = sent
                call.status = resp.status_code
                call.debug_id = resp.headers.get("paypal-debug-id") or call.debug_id
                if call.status == 401 and token is not None and not call.reauthed:
                    # PayPal revoked or expired the token early: drop it and try once with a new one.
                    self.breaker.success()  # PayPal answered (and a half-open trial must not block the retry)
                    self._drop_token(token)
                    call.reauthed = True
                    call.attempt -= 1
                    continue
                if call.status < 300:
                    self.breaker.success()
                    return _json_body(resp)
                self._refused(call, resp)
        finally:
            _log_call(call)

    def _admit(self) -> None:
        if not self.breaker.allow():
            raise PayPalUnavailable(
                0,
                "CIRCUIT_OPEN",
                "PayPal calls are paused after repeated failures",
                retry_after=self.breaker.retry_after(),
            )

    def _send(self, call: _Call, json: Any, headers: dict[str, str]) -> tuple[httpx.Response, str | None] | None:
        """One attempt: (PayPal's answer, the token it was sent with, None if the token endpoint
        refused). None when PayPal was not reached and there is time for another attempt."""
        remaining = call.deadline - time.monotonic()
        try:
            token, fresh = self._access_token(remaining)
            call.refreshed = call.refreshed or fresh
            resp = self._http.request(
                call.method,
                call.path,
                json=json,
                timeout=self._timeouts(remaining),
                headers={**headers, "Authorization": f"Bearer {token}"},
            )
        except _OAuthFailed as exc:
            return exc.response, None
        except httpx.TransportError as exc:
            self.breaker.failure()
            call.status = None
            failure = PayPalUnavailable(
                0,
                "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "UNREACHABLE",
                f"{type(exc).__name__} calling PayPal",
            )
            retry = call.resendable or isinstance(exc, _NOT_SENT)
            if not self._pause(retry, call.attempt, self._backoff(call.attempt), call.deadline):
                raise failure from exc
            return None
        return resp, token

    def _refused(self, call: _Call, resp: httpx.Response) -> None:
        """An error answer: raise it, or pause before the next attempt (a 429 or 5xx worth retrying)."""
        status = resp.status_code
        if status != 429 and status < 500:
            self.breaker.success()  # PayPal is up; the call was wrong
            raise _error(resp)
        self.breaker.failure()
        wait = _retry_after(resp)
        failure = _unavailable(resp, wait)
        retry = call.resendable or status == 429  # a 429 was refused before doing anything
        if wait is not None and wait > RETRY_AFTER_CAP_S:
            raise failure  # cannot be honoured inside this request: let our caller wait instead
        if not self._pause(
            retry, call.attempt, wait if wait is not None else self._backoff(call.attempt), call.deadline
        ):
            raise failure

    def _backoff(self, attempt: int) -> float:
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # jitter: instances retrying together spread out

    def _pause(self, retry: bool, attempt: int, delay: float, deadline: float) -> bool:
        """Sleep before the next attempt; False when there is no next attempt."""
        if not retry or attempt >= self.attempts or time.monotonic() + delay >= deadline:
            return False
        self._sleep(delay)
        return True

    # --- the calls we make -----------------------------------------------------------------------

    def create_subscription(
        self,
        plan_id: str,
        custom_id: str,
        return_url: str,
        cancel_url: str,
        request_id: str,
        brand_name: str = "ML Lab",
        start_time: str | None = None,
    ) -> dict:
        """`start_time` (RFC 3339, in the future): PayPal approves now and charges the first cycle then."""
        body: dict[str, Any] = {
            "plan_id": plan_id,
            "custom_id": custom_id,
            "application_context": {
                "brand_name": brand_name,
                "user_action": "SUBSCRIBE_NOW",
                "shipping_preference": "NO_SHIPPING",
                "return_url": return_url,
                "cancel_url": cancel_url,
            },
        }
        if start_time is not None:
            body["start_time"] = start_time
        return self._dict(self.request("POST", "/v1/billing/subscriptions", json=body, request_id=request_id))

    def get_subscription(self, subscription_id: str) -> dict:
        _check_subscription_id(subscription_id)
        return self._dict(self.request("GET", f"/v1/billing/subscriptions/{subscription_id}"))

    def cancel_subscription(self, subscription_id: str, reason: str) -> bool:
        """True if cancelled now; False if PayPal says it is no longer cancellable (already cancelled
        or expired), which callers treat as success too."""
        _check_subscription_id(subscription_id)
        reason = " ".join(reason.split())[:128] or "Cancelled by the subscriber"
        try:
            # No request id: a resent cancel is harmless anyway (it would come back as the 422 below).
            self.request("POST", f"/v1/billing/subscriptions/{subscription_id}/cancel", json={"reason": reason})
        except PayPalError as exc:
            if exc.status == 422 and "SUBSCRIPTION_STATUS_INVALID" in exc.issues:
                return False
            raise
        return True

    def get_plan(self, plan_id: str) -> dict:
        if not isinstance(plan_id, str) or not _PLAN_ID.fullmatch(plan_id):
            raise ValueError("not a PayPal plan id (P-...)")
        return self._dict(self.request("GET", f"/v1/billing/plans/{plan_id}"))

    def create_product(self, name: str, description: str, request_id: str) -> dict:
        body = {"name": name, "description": description, "type": "SERVICE", "category": "SOFTWARE"}
        return self._dict(self.request("POST", "/v1/catalogs/products", json=body, request_id=request_id))

    def create_plan(
        self, product_id: str, name: str, price: str, currency: str, payment_failure_threshold: int, request_id: str
    ) -> dict:
        if not _PRICE.fullmatch(price) or not _CURRENCY.fullmatch(currency):
            raise ValueError("price must be a decimal string like '15.00' and currency a code like 'USD'")
        if not 0 <= payment_failure_threshold <= 999:
            raise ValueError("payment_failure_threshold must be 0..999")
        body = {
            "product_id": product_id,
            "name": name,
            "status": "ACTIVE",
            "billing_cycles": [
                {
                    "frequency": {"interval_unit": "MONTH", "interval_count": 1},
                    "tenure_type": "REGULAR",
                    "sequence": 1,
                    "total_cycles": 0,
                    "pricing_scheme": {"fixed_price": {"value": price, "currency_code": currency}},
                }
            ],
            "payment_preferences": {
                "auto_bill_outstanding": True,
                "setup_fee_failure_action": "CANCEL",
                "payment_failure_threshold": payment_failure_threshold,
            },
        }
        return self._dict(self.request("POST", "/v1/billing/plans", json=body, request_id=request_id))

    def create_webhook(self, url: str, event_types: list[str]) -> dict:
        body = {"url": url, "event_types": [{"name": name} for name in event_types]}
        return self._dict(self.request("POST", "/v1/notifications/webhooks", json=body))

    def list_webhooks(self) -> list[dict]:
        body = self.request("GET", "/v1/notifications/webhooks") or {}
        hooks = body.get("webhooks", [])
        return [h for h in hooks if isinstance(h, dict)] if isinstance(hooks, list) else []

    @staticmethod
    def _dict(body: dict | None) -> dict:
        if not isinstance(body, dict):
            raise PayPalUnavailable(0, "EMPTY_RESPONSE", "PayPal answered without the expected JSON object")
        return body


def approve_url(subscription: dict) -> str:
    """Where to send the buyer: the subscription's `rel == "approve"` link."""
    for link in subscription.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "approve" and isinstance(link.get("href"), str):
            return link["href"]
    raise ValueError("the subscription has no approve link")


def _check_subscription_id(subscription_id: str) -> None:
    # Checked before any call: the id goes into a URL path.
    if not isinstance(subscription_id, str) or not SUBSCRIPTION_ID.fullmatch(subscription_id):
        raise ValueError("not a PayPal subscription id (I-...)")


# --- responses -----------------------------------------------------------------------------------


def _json_body(resp: httpx.Response) -> dict | None:
    if resp.status_code == 204 or not resp.content:
        return None
    try:
        body = resp.json()
    except ValueError:
        raise PayPalUnavailable(resp.status_code, "BAD_RESPONSE", "PayPal answered with invalid JSON") from None
    return body if isinstance(body, dict) else {"items": body}


def _error_fields(resp: httpx.Response) -> tuple[str, str, list[str], str | None]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    # API errors: {name, message, debug_id, details[{issue, description}]}; OAuth's: {error, error_description}.
    name = body.get("name") or body.get("error") or f"HTTP_{resp.status_code}"
    message = body.get("message") or body.get("error_description") or ""
    details = body.get("details")
    if not isinstance(details, list):
        details = []
    issues = [str(d["issue"])[:100] for d in details if isinstance(d, dict) and d.get("issue")]
    debug_id = body.get("debug_id") or resp.headers.get("paypal-debug-id")
    return str(name)[:100], str(message), issues, str(debug_id)[:64] if debug_id else None


def _error(resp: httpx.Response) -> PayPalError:
    name, message, issues, debug_id = _error_fields(resp)
    return PayPalError(resp.status_code, name, message, issues, debug_id)


def _unavailable(resp: httpx.Response, retry_after: float | None) -> PayPalUnavailable:
    name, message, issues, debug_id = _error_fields(resp)
    wait = int(retry_after + 0.999) if retry_after is not None else DEFAULT_RETRY_AFTER_S
    return PayPalUnavailable(resp.status_code, name, message, issues, debug_id, retry_after=wait)


def _retry_after(resp: httpx.Response) -> float | None:
    """Retry-After in seconds (the delta form; an HTTP date is ignored and backoff applies)."""
    raw = resp.headers.get("retry-after", "").strip()
    if raw.isdigit():
        return float(min(int(raw), 24 * 3600))
    return None


# --- the process's client ------------------------------------------------------------------------


def tls_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """TLS trust for PayPal: the default, plus the local stand-in's development CA when configured."""
    if ca_file is None:
        return True
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


@functools.cache
def client() -> PayPal:
    s = config.settings()
    try:
        creds = jsonlib.loads(config.secret(config.PAYPAL_CLIENT))
        client_id, client_secret = str(creds["client_id"]), str(creds["client_secret"])
    except (ValueError, KeyError, TypeError):
        # `from None`: a JSON error would carry the secret's text along in its attributes.
        raise config.ConfigError(
            f"secret {config.PAYPAL_CLIENT!r} must be JSON {{\"client_id\": ..., \"client_secret\": ...}}"
        ) from None
    return PayPal(
        s.paypal_api_base, client_id, client_secret, verify=tls_verify(s.paypal_ca_file), timeout=s.paypal_timeout_s
    )


def reset() -> None:
    """Forget the process's client (tests change settings and secrets)."""
    if client.cache_info().currsize:
        client().close()
    client.cache_clear()
