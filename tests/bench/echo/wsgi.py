"""The gateway bench's floor: a WSGI app answering at once, under the gateway's own gunicorn settings."""

BODY = b'{"ok": true}'


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]
