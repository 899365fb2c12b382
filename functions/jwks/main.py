"""GET /.well-known/jwks.json: the public keys that verify ML Lab access tokens."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.identity import tokens

router = http.Router("jwks")


@router.route("GET", "/.well-known/jwks.json")
def get_jwks(request: http.Request) -> dict:
    return tokens.public_jwks()


@functions_framework.http
def jwks(request: flask.Request) -> RawResponse:
    return router(request)
