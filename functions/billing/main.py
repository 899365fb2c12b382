"""Billing: the plans, PayPal checkout, sync on return from PayPal, and cancel."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.billing import schemas
from mllab.billing import subscriptions as billing_lib  # the entry point below takes the name `billing`

router = http.Router("billing")


@router.route("GET", "/billing/plans")
def plans(request: http.Request) -> schemas.Plans:
    return billing_lib.plans()


@router.route("POST", "/billing/paypal/subscribe")
def subscribe(request: http.Request) -> schemas.SubscribeResponse:
    return billing_lib.subscribe(request.live_user, ip=request.client_ip)


@router.route("POST", "/billing/sync")
def sync(request: http.Request) -> schemas.Subscription:
    return billing_lib.sync(request.uid, request.body.subscription_id)


@router.route("POST", "/billing/cancel")
def cancel(request: http.Request) -> schemas.Subscription:
    return billing_lib.cancel(request.uid, request.body.reason, ip=request.client_ip)


@functions_framework.http
def billing(request: flask.Request) -> RawResponse:
    return router(request)
