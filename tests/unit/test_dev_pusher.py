"""The local stack's push delivery (mllab_dev.pusher): push's wire format, and push's rule that only a
2xx acknowledges a message."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest

from mllab_dev import pusher

SUBSCRIPTION = "projects/demo-mllab/subscriptions/gcs-events-on_object_finalized"


@dataclass
class Message:
    data: bytes = b'{"name": "users/u/x"}'
    attributes: dict[str, str] = field(default_factory=lambda: {"eventType": "OBJECT_FINALIZE"})
    message_id: str = "42"
    publish_time: datetime = datetime(2026, 12, 7, 19, 0, 0, 123000, tzinfo=UTC)
    settled: list[str] = field(default_factory=list)

    def ack(self) -> None:
        self.settled.append("ack")

    def nack(self) -> None:
        self.settled.append("nack")


def _deliver(handler, monkeypatch: pytest.MonkeyPatch) -> tuple[Message, list[httpx.Request]]:
    monkeypatch.setattr(pusher, "RETRY_PAUSE_S", 0.0)
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    message = Message()
    with httpx.Client(transport=httpx.MockTransport(record)) as client:
        pusher.deliverer(client, "http://fn/projects/p/topics/t", SUBSCRIPTION, 5.0)(message)
    return message, seen


def test_a_message_is_posted_in_push_format_and_acknowledged_on_a_2xx(monkeypatch: pytest.MonkeyPatch) -> None:
    message, seen = _deliver(lambda r: httpx.Response(204), monkeypatch)
    assert message.settled == ["ack"]
    body = httpx.Response(200, content=seen[0].content).json()
    assert body["subscription"] == SUBSCRIPTION
    wire = body["message"]
    assert base64.b64decode(wire["data"]) == message.data and wire["attributes"] == message.attributes
    assert wire["messageId"] == wire["message_id"] == "42"
    assert wire["publishTime"] == wire["publish_time"] == "2026-12-07T19:00:00.123000Z"


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_any_other_answer_leaves_the_message_to_be_delivered_again(
    status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    message, _ = _deliver(lambda r: httpx.Response(status), monkeypatch)
    assert message.settled == ["nack"]


def test_no_answer_leaves_the_message_to_be_delivered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    message, _ = _deliver(refuse, monkeypatch)
    assert message.settled == ["nack"]
