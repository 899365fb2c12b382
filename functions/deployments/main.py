"""Deployments, API keys and share pages (docs/serving.md): deploy a ready version of one of your
models, switch its version, share it; create, list and revoke API keys; what a shared model's page
needs. Auth, liveness and CSRF are enforced by the router from the route table; the serving domain
does the rest."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.serving import apikeys
from mllab.serving import deployments as records  # the entry point below is named `deployments`

router = http.Router("deployments")


@router.route("POST", "/deployments")
def create_deployment(request: http.Request) -> dict:
    return records.create(request.uid, request.body.model_id, request.body.version)


@router.route("GET", "/deployments")
def list_deployments(request: http.Request) -> dict:
    return {"items": records.list_deployments(request.uid)}


@router.route("GET", "/deployments/{id}")
def get_deployment(request: http.Request) -> dict:
    return records.get(request.uid, request.params["id"])


@router.route("PATCH", "/deployments/{id}")
def update_deployment(request: http.Request) -> dict:
    changes = request.body.model_dump(exclude_unset=True)
    return records.update(request.uid, request.params["id"], changes)


@router.route("DELETE", "/deployments/{id}")
def delete_deployment(request: http.Request) -> None:
    records.delete(request.uid, request.params["id"])


@router.route("POST", "/api-keys")
def create_key(request: http.Request) -> dict:
    body = request.body
    return apikeys.create(request.uid, body.name, list(body.scopes), body.deployment_ids, body.expires_in_days)


@router.route("GET", "/api-keys")
def list_keys(request: http.Request) -> dict:
    return {"items": apikeys.list_keys(request.uid)}


@router.route("DELETE", "/api-keys/{id}")
def revoke_key(request: http.Request) -> None:
    apikeys.revoke(request.uid, request.params["id"])


@router.route("GET", "/public/deployments/{id}")
def public_view(request: http.Request) -> dict:
    return records.public_view(request.params["id"])


@functions_framework.http
def deployments(request: flask.Request) -> RawResponse:
    return router(request)
