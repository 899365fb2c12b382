"""Push delivery to a local Pub/Sub-triggered function at the concurrency production gives it.

The Pub/Sub emulator pushes each subscription with two synchronous loops: never more than two requests
in flight, however long the endpoint takes. A function that waits ~20 ms on Firestore per event could
then take at most ~100 events/s locally whatever its own concurrency, while in production Pub/Sub pushes
to Cloud Run as many requests at once as the instances' concurrency allows. This process reads a pull
subscription by streaming pull (leases, acks in batches) and posts each message to the function in
push's wire format ({"message", "subscription"}), up to `--concurrency` at once, as one instance at its
deploy concurrency would receive them. As push does: a 2xx acknowledges the message; anything else, or no
answer within the ack deadline, leaves it to be delivered again, after a pause (the emulator's own push
waits 1 s before a redelivery) so a failing function is not hammered.

    python -m mllab_dev.pusher --subscription projects/P/subscriptions/S --endpoint URL --concurrency 8 --port N

PUBSUB_EMULATOR_HOST names the emulator. GET / on --port answers 200 (the stack's readiness probe).
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

RETRY_PAUSE_S = 1.0


def push_body(message: Any, subscription: str) -> dict[str, Any]:
    """The JSON body Pub/Sub's push sends (both spellings of the id and time, as push sends them)."""
    published = message.publish_time.isoformat().replace("+00:00", "Z")
    wire = {
        "data": base64.b64encode(message.data).decode(),
        "attributes": dict(message.attributes),
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": published,
        "publish_time": published,
    }
    return {"message": wire, "subscription": subscription}


def deliverer(client: httpx.Client, endpoint: str, subscription: str, timeout: float) -> Any:
    """The callback the subscriber runs per message (on one of its `concurrency` threads)."""
    stop = threading.Event()

    def deliver(message: Any) -> None:
        try:
            r = client.post(endpoint, json=push_body(message, subscription), timeout=timeout)
            ok = 200 <= r.status_code < 300
        except httpx.HTTPError:
            ok = False
        if ok:
            message.ack()
            return
        stop.wait(RETRY_PAUSE_S)
        message.nack()

    return deliver


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's handler name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:  # quiet
        pass


def run(subscription: str, endpoint: str, concurrency: int, port: int, ack_deadline: float) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # PUBSUB_EMULATOR_HOST: read by the client

    health = ThreadingHTTPServer(("127.0.0.1", port), _Health)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits) as client, pubsub_v1.SubscriberClient() as subscriber:
        deliver = deliverer(client, endpoint, subscription, ack_deadline)
        print(f"pusher: {subscription} -> {endpoint}, {concurrency} at once", flush=True)
        while True:  # a stream the emulator broke (it was paused, or restarted) is opened again
            future = subscriber.subscribe(
                subscription,
                deliver,
                flow_control=pubsub_v1.types.FlowControl(max_messages=concurrency),
                scheduler=pubsub_v1.subscriber.scheduler.ThreadScheduler(ThreadPoolExecutor(concurrency)),
            )
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - any end of the stream: report it, open another
                print(f"pusher: the stream ended ({type(exc).__name__}: {exc}); reopening", flush=True)
                time.sleep(RETRY_PAUSE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ack-deadline", type=float, default=60.0)
    args = parser.parse_args(argv)
    run(args.subscription, args.endpoint, args.concurrency, args.port, args.ack_deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
