"""The catalog: projects, models (+ versions), datasets and training jobs. Create, list (filters and
cursor pagination), get, rename and delete; POST /models/{id}/versions allocates the next version.
Auth, liveness and CSRF are enforced by the router from the route table."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.files import catalog as records  # the entry point below is named `catalog`

router = http.Router("catalog")


@router.route("POST", "/projects", reads=records.plan_reads)
def create_project(request: http.Request) -> dict:
    return records.create_project(request.uid, request.body, request.documents)


@router.route("POST", "/models", reads=records.plan_reads)
def create_model(request: http.Request) -> dict:
    return records.create_model(request.uid, request.body, request.documents)


@router.route("POST", "/models/{id}/versions")
def allocate_version(request: http.Request) -> dict:
    return records.allocate_version(request.uid, request.params["id"])


@router.route("PATCH", "/models/{id}/versions/{version}")
def set_version_notes(request: http.Request) -> dict:
    return records.set_version_notes(request.uid, request.params["id"], request.params["version"], request.body)


@router.route("POST", "/datasets", reads=records.plan_reads)
def create_dataset(request: http.Request) -> dict:
    return records.create_dataset(request.uid, request.body, request.documents)


@router.route("POST", "/jobs", reads=records.plan_reads)
def create_job(request: http.Request) -> dict:
    return records.create_job(request.uid, request.body, request.documents)


def _bind(collection: str) -> None:
    """List, get, rename and delete: the same for every collection."""

    @router.route("GET", f"/{collection}")
    def list_records(request: http.Request) -> dict:
        return records.list_records(collection, request.uid, request.args)

    @router.route("GET", f"/{collection}/{{id}}")
    def get_record(request: http.Request) -> dict:
        return records.get(collection, request.params["id"], request.uid)

    @router.route("PATCH", f"/{collection}/{{id}}")
    def rename_record(request: http.Request) -> dict:
        return records.rename(collection, request.params["id"], request.uid, request.body)

    @router.route("DELETE", f"/{collection}/{{id}}")
    def delete_record(request: http.Request) -> None:
        records.delete(collection, request.params["id"], request.uid, ip=request.client_ip)


for _collection in records.COLLECTIONS:
    _bind(_collection)


@functions_framework.http
def catalog(request: flask.Request) -> RawResponse:
    return router(request)
