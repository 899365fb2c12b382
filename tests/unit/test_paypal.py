"""mllab.billing.paypal against a scripted PayPal (httpx.MockTransport): OAuth caching, retries with the same
PayPal-Request-Id, error parsing, the circuit breaker, and nothing secret in logs or errors."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from mllab.api import http
from mllab.billing import paypal
from mllab.billing.paypal import CircuitBreaker, PayPal, PayPalError, PayPalUnavailable
from mllab.platform import clock, config

BASE = "https://api-m.sandbox.paypal.com"
CLIENT_ID = "AcLientIdForTests0001"
CLIENT_SECRET = "EsEcretValue-never-logged-9f8e7d"
SUB = "I-BW452GLLEP1G"

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakePayPal:
    """Token endpoint plus a queue of scripted API replies (the last one repeats)."""

    def __init__(self, *replies: Reply, expires_in: int = 32400) -> None:
        self.replies = list(replies) or [httpx.Response(200, json={"id": SUB, "status": "ACTIVE"})]
        self.expires_in = expires_in
        self.token_calls: list[httpx.Request] = []
        self.token_replies: list[Reply] = []
        self.calls: list[httpx.Request] = []
        self.lock = threading.Lock()

    def token(self, n: int) -> str:
        return f"A21AAtokenvalue{n:04d}XYZ"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if request.url.path == paypal.TOKEN_PATH:
                self.token_calls.append(request)
                if self.token_replies:
                    return self._play(self.token_replies.pop(0), request)
                return httpx.Response(
                    200,
                    json={
                        "access_token": self.token(len(self.token_calls)),
                        "token_type": "Bearer",
                        "expires_in": self.expires_in,
                    },
                )
            self.calls.append(request)
            reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return self._play(reply, request)

    @staticmethod
    def _play(reply: Reply, request: httpx.Request) -> httpx.Response:
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply


def error_body(name: str, issue: str | None = None, debug_id: str = "f1e2d3c4b5a69") -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "message": f"{name} happened", "debug_id": debug_id}
    if issue:
        body["details"] = [{"issue": issue, "description": "described"}]
    return body


def make(fake: FakePayPal, **kw: Any) -> tuple[PayPal, list[float]]:
    slept: list[float] = []
    kw.setdefault("sleep", slept.append)
    return PayPal(BASE, CLIENT_ID, CLIENT_SECRET, transport=httpx.MockTransport(fake), **kw), slept


# --- OAuth -----------------------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused() -> None:
    fake = FakePayPal()
    pp, _ = make(fake)
    for _ in range(3):
        assert pp.get_subscription(SUB)["status"] == "ACTIVE"
    assert len(fake.token_calls) == 1
    token_req = fake.token_calls[0]
    assert token_req.method == "POST"
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_req.headers["authorization"] == f"Basic {basic}"
    assert token_req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token_req.content == b"grant_type=client_credentials"
    assert all(r.headers["authorization"] == f"Bearer {fake.token(1)}" for r in fake.calls)
    assert fake.calls[0].url == httpx.URL(f"{BASE}/v1/billing/subscriptions/{SUB}")


def test_token_refreshed_five_minutes_before_expiry() -> None:
    fake = FakePayPal(expires_in=3600)
    pp, _ = make(fake)
    pp.get_subscription(SUB)
    with clock.travel(by=timedelta(seconds=3600 - 300 - 5)):
        pp.get_subscription(SUB)
    assert len(fake.token_calls) == 1
    with clock.travel(by=timedelta(seconds=3600 - 300 + 1)):
        pp.get_subscription(SUB)
    assert len(fake.token_calls) == 2
    assert fake.calls[-1].headers["authorization"] == f"Bearer {fake.token(2)}"


def test_token_refreshed_once_after_401_invalid_token() -> None:
    expired = httpx.Response(
        401, json={"error": "invalid_token", "error_description": "Token signature verification failed"}
    )
    fake = FakePayPal(expired, httpx.Response(200, json={"id": SUB, "status": "ACTIVE"}))
    pp, slept = make(fake)
    assert pp.get_subscription(SUB)["id"] == SUB
    assert len(fake.token_calls) == 2
    assert [r.headers["authorization"] for r in fake.calls] == [f"Bearer {fake.token(1)}", f"Bearer {fake.token(2)}"]
    assert slept == []  # a re-auth is not a backoff


def test_a_second_401_is_an_error_not_a_loop() -> None:
    fake = FakePayPal(httpx.Response(401, json={"error": "invalid_token", "error_description": "nope"}))
    pp, _ = make(fake)
    with pytest.raises(PayPalError) as info:
        pp.get_subscription(SUB)
    assert (info.value.status, info.value.name) == (401, "invalid_token")
    assert not isinstance(info.value, PayPalUnavailable)
    assert len(fake.calls) == 2 and len(fake.token_calls) == 2


def test_bad_client_credentials_are_an_oauth_error() -> None:
    fake = FakePayPal()
    fake.token_replies.append(
        httpx.Response(401, json={"error": "invalid_client", "error_description": "Client Authentication failed"})
    )
    pp, _ = make(fake)
    with pytest.raises(PayPalError) as info:
        pp.get_subscription(SUB)
    assert (info.value.status, info.value.name) == (401, "invalid_client")
    assert "Client Authentication failed" in str(info.value)
    assert fake.calls == [] and len(fake.token_calls) == 1


def test_token_endpoint_outage_is_retried() -> None:
    fake = FakePayPal()
    fake.token_replies += [httpx.Response(503), httpx.ConnectError("refused")]
    pp, slept = make(fake)
    assert pp.get_subscription(SUB)["id"] == SUB
    assert len(fake.token_calls) == 3 and len(slept) == 2


def test_concurrent_callers_share_one_token_refresh() -> None:
    fake = FakePayPal()
    pp, _ = make(fake)
    barrier = threading.Barrier(8)
    original = fake.__call__

    def slow_token(request: httpx.Request) -> httpx.Response:
        if request.url.path == paypal.TOKEN_PATH:
            time.sleep(0.05)  # every thread arrives while the first refresh is in flight
        return original(request)

    pp._http._transport = httpx.MockTransport(slow_token)  # same client, slower token endpoint

    def call() -> None:
        barrier.wait()
        pp.get_subscription(SUB)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.token_calls) == 1 and len(fake.calls) == 8


# --- retries ---------------------------------------------------------------------------------------


def created() -> httpx.Response:
    return httpx.Response(
        201,
        json={
            "id": SUB,
            "status": "APPROVAL_PENDING",
            "links": [
                {
                    "rel": "approve",
                    "href": "https://www.sandbox.paypal.com/webapps/billing/subscriptions?ba_token=BA-1",
                    "method": "GET",
                },
                {"rel": "self", "href": f"{BASE}/v1/billing/subscriptions/{SUB}", "method": "GET"},
            ],
        },
    )


def test_request_id_is_sent_and_identical_across_retries() -> None:
    fake = FakePayPal(httpx.Response(500, json=error_body("INTERNAL_SERVER_ERROR")), httpx.Response(503), created())
    pp, slept = make(fake)
    sub = pp.create_subscription(
        "P-5ML4271244454362WXNWU5NQ",
        "uid-123",
        "https://lab.example/billing/return",
        "https://lab.example/billing/cancel",
        request_id="sub-uid-123-0001",
    )
    assert sub["id"] == SUB and paypal.approve_url(sub).startswith("https://www.sandbox.paypal.com/")
    assert len(fake.calls) == 3 and len(slept) == 2
    assert {r.headers["paypal-request-id"] for r in fake.calls} == {"sub-uid-123-0001"}
    assert {r.headers["prefer"] for r in fake.calls} == {"return=representation"}
    body = json.loads(fake.calls[0].content)
    assert body == {
        "plan_id": "P-5ML4271244454362WXNWU5NQ",
        "custom_id": "uid-123",
        "application_context": {
            "brand_name": "ML Lab",
            "user_action": "SUBSCRIBE_NOW",
            "shipping_preference": "NO_SHIPPING",
            "return_url": "https://lab.example/billing/return",
            "cancel_url": "https://lab.example/billing/cancel",
        },
    }
    # exponential backoff with jitter: attempt n waits within [base*2^(n-1)/2, base*2^(n-1)]
    assert paypal.BACKOFF_BASE_S / 2 <= slept[0] <= paypal.BACKOFF_BASE_S
    assert paypal.BACKOFF_BASE_S <= slept[1] <= 2 * paypal.BACKOFF_BASE_S


def test_429_retry_after_is_honoured() -> None:
    fake = FakePayPal(
        httpx.Response(429, headers={"Retry-After": "2"}, json=error_body("RATE_LIMIT_REACHED")),
        httpx.Response(200, json={"id": SUB}),
    )
    pp, slept = make(fake)
    assert pp.get_subscription(SUB) == {"id": SUB}
    assert slept == [2.0]


def test_429_with_a_long_retry_after_is_passed_on_not_waited() -> None:
    fake = FakePayPal(httpx.Response(429, headers={"Retry-After": "120"}, json=error_body("RATE_LIMIT_REACHED")))
    pp, slept = make(fake)
    with pytest.raises(PayPalUnavailable) as info:
        pp.get_subscription(SUB)
    assert info.value.retry_after == 120 and info.value.status == 429 and info.value.name == "RATE_LIMIT_REACHED"
    assert slept == [] and len(fake.calls) == 1


def test_a_post_without_request_id_is_retried_on_429_but_not_on_500() -> None:
    fake = FakePayPal(httpx.Response(429), httpx.Response(201, json={"id": "WH-1"}))
    pp, _ = make(fake)
    assert pp.create_webhook("https://api.example/paypal/webhook", ["BILLING.SUBSCRIPTION.ACTIVATED"])["id"] == "WH-1"
    assert len(fake.calls) == 2
    fake = FakePayPal(httpx.Response(500))
    pp, slept = make(fake)
    with pytest.raises(PayPalUnavailable):
        pp.create_webhook("https://api.example/paypal/webhook", ["BILLING.SUBSCRIPTION.ACTIVATED"])
    assert len(fake.calls) == 1 and slept == []  # it may have been applied: resending could duplicate it


def test_a_post_without_request_id_is_resent_only_when_it_never_left() -> None:
    fake = FakePayPal(httpx.ConnectError("refused"), httpx.Response(204))
    pp, _ = make(fake)
    assert pp.cancel_subscription(SUB, "moving on") is True
    assert len(fake.calls) == 2  # a refused connection never reached PayPal: resent
    fake = FakePayPal(httpx.ReadTimeout("slow"))
    pp, _ = make(fake)
    with pytest.raises(PayPalUnavailable) as info:
        pp.cancel_subscription(SUB, "moving on")
    assert info.value.name == "TIMEOUT" and len(fake.calls) == 1


def test_transient_failures_after_all_attempts_are_unavailable() -> None:
    fake = FakePayPal(httpx.Response(503, json=error_body("SERVICE_UNAVAILABLE")))
    pp, slept = make(fake, attempts=3)
    with pytest.raises(PayPalUnavailable) as info:
        pp.get_subscription(SUB)
    exc = info.value
    assert (exc.status, exc.name, exc.retry_after) == (503, "SERVICE_UNAVAILABLE", paypal.DEFAULT_RETRY_AFTER_S)
    assert isinstance(exc, ConnectionError) and isinstance(exc, PayPalError) and http.dependency_outage(exc)
    assert len(fake.calls) == 3 and len(slept) == 2


def test_timeouts_are_unavailable() -> None:
    fake = FakePayPal(httpx.ReadTimeout("timed out"))
    pp, slept = make(fake)
    with pytest.raises(PayPalUnavailable) as info:
        pp.get_subscription(SUB)
    assert info.value.name == "TIMEOUT" and info.value.status == 0
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len(fake.calls) == 3 and len(slept) == 2


def test_a_silent_server_is_given_up_on_within_the_total_deadline() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (the kernel does) and never answers
    try:
        pp = PayPal(f"http://127.0.0.1:{listener.getsockname()[1]}", CLIENT_ID, CLIENT_SECRET, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(PayPalUnavailable) as info:
            pp.get_subscription(SUB)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert info.value.name == "TIMEOUT"
    assert elapsed < 2 * 0.2 + 0.3, elapsed
    pp.close()


def test_the_client_has_explicit_bounded_timeouts() -> None:
    pp, _ = make(FakePayPal(), timeout=3.0)
    t = pp._http.timeout
    assert all(v is not None and 0 < v <= 3.0 for v in (t.connect, t.read, t.write, t.pool))


# --- errors ----------------------------------------------------------------------------------------


def test_404_is_resource_not_found() -> None:
    fake = FakePayPal(
        httpx.Response(
            404, json=error_body("RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID"), headers={"Paypal-Debug-Id": "hdr-debug"}
        )
    )
    pp, slept = make(fake)
    with pytest.raises(PayPalError) as info:
        pp.get_subscription(SUB)
    exc = info.value
    assert (exc.status, exc.name, exc.issues, exc.debug_id) == (
        404,
        "RESOURCE_NOT_FOUND",
        ["INVALID_RESOURCE_ID"],
        "f1e2d3c4b5a69",
    )
    assert not isinstance(exc, PayPalUnavailable) and not http.dependency_outage(exc)
    assert len(fake.calls) == 1 and slept == []


def test_error_without_json_body() -> None:
    fake = FakePayPal(httpx.Response(400, text="<html>bad</html>", headers={"Paypal-Debug-Id": "dbg-1"}))
    pp, _ = make(fake)
    with pytest.raises(PayPalError) as info:
        pp.get_subscription(SUB)
    assert (info.value.name, info.value.debug_id) == ("HTTP_400", "dbg-1")


def test_cancel_returns_true_then_false_when_already_cancelled() -> None:
    fake = FakePayPal(
        httpx.Response(204), httpx.Response(422, json=error_body("UNPROCESSABLE_ENTITY", "SUBSCRIPTION_STATUS_INVALID"))
    )
    pp, _ = make(fake)
    assert pp.cancel_subscription(SUB, "  Too   expensive  " + "x" * 200) is True
    assert pp.cancel_subscription(SUB, "again") is False
    first = fake.calls[0]
    assert first.method == "POST" and first.url.path == f"/v1/billing/subscriptions/{SUB}/cancel"
    reason = json.loads(first.content)["reason"]
    assert reason.startswith("Too expensive x") and len(reason) == 128
    assert json.loads(fake.calls[1].content) == {"reason": "again"}


def test_cancel_with_a_blank_reason_sends_a_default() -> None:
    fake = FakePayPal(httpx.Response(204))
    pp, _ = make(fake)
    pp.cancel_subscription(SUB, "   ")
    assert 1 <= len(json.loads(fake.calls[0].content)["reason"]) <= 128


def test_cancel_other_422_is_raised() -> None:
    fake = FakePayPal(httpx.Response(422, json=error_body("UNPROCESSABLE_ENTITY", "SOMETHING_ELSE")))
    pp, _ = make(fake)
    with pytest.raises(PayPalError) as info:
        pp.cancel_subscription(SUB, "r")
    assert info.value.issues == ["SOMETHING_ELSE"]


@pytest.mark.parametrize(
    "bad",
    ["", "I-", "I-abc123", "P-ABCDEFGH", "I-ABC/../../x", "I-ABCDEF?x=1", "I-" + "A" * 41, " I-ABCDEFG", "I-ABCDEFG\n"],
)
def test_subscription_ids_are_validated_before_any_call(bad: str) -> None:
    fake = FakePayPal()
    pp, _ = make(fake)
    with pytest.raises(ValueError):
        pp.get_subscription(bad)
    with pytest.raises(ValueError):
        pp.cancel_subscription(bad, "r")
    assert fake.calls == [] and fake.token_calls == []


def test_request_refuses_absolute_urls() -> None:
    pp, _ = make(FakePayPal())
    for path in ("https://evil.example/x", "//evil.example/x", "v1/x"):
        with pytest.raises(ValueError):
            pp.request("GET", path)


# --- the typed helpers -----------------------------------------------------------------------------


def test_catalog_and_webhook_helpers_send_the_documented_bodies() -> None:
    fake = FakePayPal(
        httpx.Response(201, json={"id": "PROD-1"}),
        httpx.Response(201, json={"id": "P-1"}),
        httpx.Response(201, json={"id": "WH-1"}),
        httpx.Response(200, json={"webhooks": [{"id": "WH-1", "url": "https://a/b"}]}),
    )
    pp, _ = make(fake)
    assert pp.create_product("ML Lab Pro", "Pro plan", request_id="prod-1")["id"] == "PROD-1"
    assert pp.create_plan("PROD-1", "ML Lab Pro monthly", "15.00", "USD", 2, request_id="plan-1")["id"] == "P-1"
    assert (
        pp.create_webhook(
            "https://api.example/paypal/webhook", ["BILLING.SUBSCRIPTION.ACTIVATED", "PAYMENT.SALE.COMPLETED"]
        )["id"]
        == "WH-1"
    )
    assert pp.list_webhooks() == [{"id": "WH-1", "url": "https://a/b"}]
    product, plan, hook, listing = fake.calls
    assert (product.url.path, product.headers["paypal-request-id"]) == ("/v1/catalogs/products", "prod-1")
    assert json.loads(product.content) == {
        "name": "ML Lab Pro",
        "description": "Pro plan",
        "type": "SERVICE",
        "category": "SOFTWARE",
    }
    body = json.loads(plan.content)
    assert plan.url.path == "/v1/billing/plans" and plan.headers["paypal-request-id"] == "plan-1"
    assert body["product_id"] == "PROD-1" and body["name"] == "ML Lab Pro monthly"
    assert body["billing_cycles"] == [
        {
            "frequency": {"interval_unit": "MONTH", "interval_count": 1},
            "tenure_type": "REGULAR",
            "sequence": 1,
            "total_cycles": 0,
            "pricing_scheme": {"fixed_price": {"value": "15.00", "currency_code": "USD"}},
        }
    ]
    assert body["payment_preferences"] == {
        "auto_bill_outstanding": True,
        "setup_fee_failure_action": "CANCEL",
        "payment_failure_threshold": 2,
    }
    assert json.loads(hook.content) == {
        "url": "https://api.example/paypal/webhook",
        "event_types": [{"name": "BILLING.SUBSCRIPTION.ACTIVATED"}, {"name": "PAYMENT.SALE.COMPLETED"}],
    }
    assert (listing.method, listing.url.path) == ("GET", "/v1/notifications/webhooks")
    assert "prefer" not in listing.headers


@pytest.mark.parametrize(
    "price, currency, threshold",
    [("15", "usd", 1), ("15.000", "USD", 1), ("abc", "USD", 1), ("15.00", "USD", -1), ("15.00", "USD", 1000)],
)
def test_create_plan_validates_its_inputs(price: str, currency: str, threshold: int) -> None:
    fake = FakePayPal()
    pp, _ = make(fake)
    with pytest.raises(ValueError):
        pp.create_plan("PROD-1", "n", price, currency, threshold, request_id="r")
    assert fake.calls == []


def test_approve_url() -> None:
    assert paypal.approve_url(created().json()).endswith("ba_token=BA-1")
    with pytest.raises(ValueError):
        paypal.approve_url({"links": [{"rel": "self", "href": "x"}]})
    with pytest.raises(ValueError):
        paypal.approve_url({})


def test_no_content_is_none() -> None:
    pp, _ = make(FakePayPal(httpx.Response(204)))
    assert pp.request("POST", f"/v1/billing/subscriptions/{SUB}/suspend", json={"reason": "r"}) is None


# --- circuit breaker -------------------------------------------------------------------------------


def test_breaker_opens_fails_fast_then_half_opens() -> None:
    fake = FakePayPal(httpx.Response(503))
    breaker = CircuitBreaker(threshold=5, cooldown_s=30)
    pp, _ = make(fake, attempts=3, breaker=breaker)
    with pytest.raises(PayPalUnavailable):
        pp.get_subscription(SUB)  # 3 failed attempts
    assert breaker.state == "closed"
    with pytest.raises(PayPalUnavailable) as info:
        pp.get_subscription(SUB)  # attempts 4 and 5 fail; the breaker opens and stops attempt 6
    assert info.value.name == "CIRCUIT_OPEN" and breaker.state == "open"
    assert len(fake.calls) == 5
    for _ in range(20):
        with pytest.raises(PayPalUnavailable) as info:
            pp.get_subscription(SUB)
        assert info.value.name == "CIRCUIT_OPEN" and 1 <= info.value.retry_after <= 30
        assert http.dependency_outage(info.value)
    assert len(fake.calls) == 5  # no network I/O while open
    fake.replies = [httpx.Response(200, json={"id": SUB})]
    with clock.travel(by=timedelta(seconds=31)):
        assert breaker.state == "half-open"
        assert pp.get_subscription(SUB) == {"id": SUB}  # the trial call
        assert breaker.state == "closed"
    assert len(fake.calls) == 6


def test_a_failed_trial_reopens_at_once() -> None:
    fake = FakePayPal(httpx.Response(500))
    breaker = CircuitBreaker(threshold=2, cooldown_s=10)
    pp, _ = make(fake, attempts=5, breaker=breaker)
    with pytest.raises(PayPalUnavailable):
        pp.get_subscription(SUB)
    assert breaker.state == "open" and len(fake.calls) == 2
    with clock.travel(by=timedelta(seconds=11)):
        with pytest.raises(PayPalUnavailable) as info:
            pp.get_subscription(SUB)  # one trial attempt fails, no second attempt goes out
        assert info.value.name == "CIRCUIT_OPEN" and len(fake.calls) == 3
        assert breaker.state == "open"


def test_a_trial_that_needs_a_new_token_goes_through() -> None:
    fake = FakePayPal(
        httpx.Response(500), httpx.Response(401, json={"error": "invalid_token"}), httpx.Response(200, json={"id": SUB})
    )
    breaker = CircuitBreaker(threshold=1, cooldown_s=10)
    pp, _ = make(fake, attempts=1, breaker=breaker)
    with pytest.raises(PayPalUnavailable):
        pp.get_subscription(SUB)
    assert breaker.state == "open"
    with clock.travel(by=timedelta(seconds=11)):
        assert pp.get_subscription(SUB) == {"id": SUB}
    assert breaker.state == "closed" and len(fake.token_calls) == 2


def test_half_open_lets_exactly_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=1, cooldown_s=10, now=lambda: now[0])
    breaker.failure()
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.allow() and not breaker.allow() and not breaker.allow()
    now[0] = 20.0  # the trial never reported back: another may go
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_client_errors_do_not_trip_the_breaker() -> None:
    fake = FakePayPal(httpx.Response(404, json=error_body("RESOURCE_NOT_FOUND")))
    breaker = CircuitBreaker(threshold=2, cooldown_s=30)
    pp, _ = make(fake, breaker=breaker)
    for _ in range(5):
        with pytest.raises(PayPalError) as info:
            pp.get_subscription(SUB)
        assert info.value.name == "RESOURCE_NOT_FOUND"
    assert breaker.state == "closed"


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=30)
    fake = FakePayPal(
        httpx.Response(500),
        httpx.Response(500),
        httpx.Response(200, json={}),
        httpx.Response(500),
        httpx.Response(500),
        httpx.Response(200, json={}),
    )
    pp, _ = make(fake, breaker=breaker)
    pp.get_subscription(SUB)
    pp.get_subscription(SUB)
    assert breaker.state == "closed"


# --- logs and secrets ------------------------------------------------------------------------------


def test_no_secret_or_token_in_logs_or_errors(logs: Any) -> None:
    fake = FakePayPal(
        httpx.Response(200, json={"id": SUB}),
        httpx.Response(401, json={"error": "invalid_token", "error_description": "expired"}),
        httpx.Response(200, json={"id": SUB}),
        httpx.ReadTimeout("t"),
    )
    pp, _ = make(fake)
    pp.get_subscription(SUB)
    pp.get_subscription(SUB)
    errors: list[Exception] = []
    with pytest.raises(PayPalUnavailable) as info:
        pp.get_subscription(SUB)
    errors.append(info.value)
    fake.token_replies.append(
        httpx.Response(401, json={"error": "invalid_client", "error_description": "Client Authentication failed"})
    )
    pp._token = None
    with pytest.raises(PayPalError) as info2:
        pp.get_subscription(SUB)
    errors.append(info2.value)
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    text = logs.text + "".join(f"{e!s}{e!r}" for e in errors) + repr(pp)
    for secret in (CLIENT_SECRET, basic, fake.token(1), fake.token(2), "A21AAtoken"):
        assert secret not in text
    calls = logs.find("paypal call")
    assert len(calls) == 4
    assert calls[0]["method"] == "GET" and calls[0]["path"] == f"/v1/billing/subscriptions/{SUB}"
    assert calls[0]["status"] == 200 and calls[0]["attempts"] == 1 and isinstance(calls[0]["elapsed_ms"], float)
    assert calls[0]["oauth_fetched"] is True and calls[1]["oauth_fetched"] is True
    assert calls[2]["severity"] == "WARNING" and calls[2]["attempts"] == 3


# --- the process's client --------------------------------------------------------------------------


def test_client_is_built_from_settings_and_secret(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    paypal.reset()
    try:
        first = paypal.client()
        assert paypal.client() is first and first.base_url == config.PAYPAL_SANDBOX_API
        assert first.timeout == config.settings().paypal_timeout_s
        creds = json.loads(config.secret(config.PAYPAL_CLIENT))
        assert creds["client_secret"] not in repr(first)
        paypal.reset()
        mounted = tmp_path / "mounted-secrets"
        mounted.mkdir()
        (mounted / config.PAYPAL_CLIENT).write_text('{"client_id": "x"')
        with pytest.raises(config.ConfigError) as info:
            paypal.client()
        assert '"x"' not in str(info.value)
    finally:
        paypal.reset()


def test_tls_verify_adds_the_local_ca(tmp_path: Any) -> None:
    assert paypal.tls_verify(None) is True
    from tests.unit.test_webhooks import make_ca  # one CA helper for both files

    ca_pem, _, _ = make_ca()
    path = tmp_path / "ca.pem"
    path.write_bytes(ca_pem)
    ctx = paypal.tls_verify(path)
    assert not isinstance(ctx, bool) and ctx.verify_mode.name == "CERT_REQUIRED" and ctx.check_hostname
    assert any(
        c.get("subject") and ("commonName", "ML Lab test CA") in [n for rdn in c["subject"] for n in rdn]
        for c in ctx.get_ca_certs()
    )
