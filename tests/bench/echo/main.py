"""The gateway bench's upstream: answers as a function does (a small JSON body, two Set-Cookie headers,
a few more headers), nothing imported beyond functions-framework."""

import json

import functions_framework


@functions_framework.http
def echo(request):
    body = request.get_data()
    headers = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("Vary", "Origin"),
        ("X-Request-Id", request.headers.get("X-Request-Id", "")),
        ("Set-Cookie", "__Host-rt=" + "r" * 43 + "; Path=/; Max-Age=2592000; Secure; HttpOnly; SameSite=Strict"),
        ("Set-Cookie", "__Host-csrf=" + "c" * 22 + "; Path=/; Max-Age=2592000; Secure; SameSite=Strict"),
    ]
    answer = {"ok": True, "method": request.method, "path": request.path, "bytes": len(body), "uid": "u" * 28}
    return json.dumps(answer), 200, headers
