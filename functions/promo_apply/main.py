"""Promo codes: redeem one for a PRO trial or a comp."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.billing import promo, schemas

router = http.Router("promo_apply")


@router.route("POST", "/promo/apply")
def apply(request: http.Request) -> schemas.PromoApplied:
    return promo.apply(request.uid, request.body.code, ip=request.client_ip)


@functions_framework.http
def promo_apply(request: flask.Request) -> RawResponse:
    return router(request)
