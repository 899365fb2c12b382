"""Signed URLs: the browser uploads and downloads files directly from the bucket."""

import flask
import functions_framework
from werkzeug.wrappers import Response as RawResponse

from mllab import http, uploads

router = http.Router("signed_urls")
router.route("POST", "/signed/upload")(uploads.sign_upload)
router.route("GET", "/signed/download")(uploads.sign_download)


@functions_framework.http
def signed_urls(request: flask.Request) -> RawResponse:
    return router(request)
