"""Signed URLs: the browser uploads and downloads files directly from the bucket."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab.api import http
from mllab.files import schemas, uploads

router = http.Router("signed_urls")


@router.route("POST", "/signed/upload")
def sign_upload(request: http.Request) -> schemas.SignedUrl:
    return uploads.sign_upload(request.uid, request.body)


@router.route("GET", "/signed/download")
def sign_download(request: http.Request) -> schemas.SignedUrl:
    return uploads.sign_download(request.uid, request.args.get("object", ""))


@functions_framework.http
def signed_urls(request: flask.Request) -> RawResponse:
    return router(request)
