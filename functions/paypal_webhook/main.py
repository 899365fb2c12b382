"""PayPal webhooks: verified on the raw body, processed exactly once."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.billing import schemas, subscriptions

router = http.Router("paypal_webhook")


@router.route("POST", "/payments/paypal/webhook")
def receive(request: http.Request) -> schemas.WebhookAck:
    return subscriptions.handle_webhook(request.headers, request.raw_body)


@functions_framework.http
def paypal_webhook(request: flask.Request) -> RawResponse:
    return router(request)
