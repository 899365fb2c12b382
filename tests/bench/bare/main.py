"""The baseline: a bare functions-framework HTTP function, nothing imported."""

import functions_framework


@functions_framework.http
def bare(request):
    return "ok"
