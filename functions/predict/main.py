"""Predictions from a deployment (docs/serving.md): `POST /predict/{id}` with an API key. The router
requires `Authorization: Bearer ...` and answers CORS for any origin without credentials; the serving
domain judges the key (constant time, failures budgeted per key prefix and address), the owner's plan
and quota, and computes the predictions. The key is never logged."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.serving import predict as serving

router = http.Router("predict")


@router.route("POST", "/predict/{id}")
def predict_route(request: http.Request) -> dict:
    return serving.predict(request.bearer, request.params["id"], request.body, ip=request.client_ip)


@functions_framework.http
def predict(request: flask.Request) -> RawResponse:
    return router(request)
