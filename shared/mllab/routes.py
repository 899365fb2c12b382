"""The one route table. The gateway routes by it, each function's router binds its handlers to it,
and the load balancer's URL map and the OpenAPI document are derived from it."""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field

from pydantic import BaseModel

from mllab import schemas


class Auth(str, enum.Enum):
    NONE = "none"
    ACCESS_TOKEN = "access_token"
    REFRESH_COOKIE = "refresh_cookie"
    WEBHOOK_SIGNATURE = "webhook_signature"


class Trigger(str, enum.Enum):
    HTTP = "http"
    PUBSUB = "pubsub"


@dataclass(frozen=True)
class Function:
    name: str
    trigger: Trigger
    # Cloud clients (mllab.clients getters) its paths may load; the import check holds it to this.
    uses: frozenset[str] = field(default_factory=frozenset)
    topic: str | None = None  # for Pub/Sub triggers


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # template: /models/{id}/versions
    function: str
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: Auth = Auth.NONE
    csrf: bool = False
    cache: str = "no-store"

    @functools.cached_property
    def pattern(self) -> re.Pattern[str]:
        return compile_template(self.path)

    def match(self, path: str) -> dict[str, str] | None:
        m = self.pattern.fullmatch(path)
        return m.groupdict() if m else None


def compile_template(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{([a-z_]+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(regex)


FUNCTIONS: tuple[Function, ...] = (
    Function("jwks", Trigger.HTTP),
    Function("on_object_finalized", Trigger.PUBSUB, uses=frozenset({"firestore"}), topic="events_topic"),
)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/.well-known/jwks.json", "jwks", "Public keys that verify access tokens",
          response=schemas.Jwks, cache="public, max-age=300"),
)


def function(name: str) -> Function:
    for fn in FUNCTIONS:
        if fn.name == name:
            return fn
    raise KeyError(name)


def http_functions() -> list[Function]:
    return [fn for fn in FUNCTIONS if fn.trigger is Trigger.HTTP]


def for_function(name: str, table: tuple[Route, ...] = ROUTES) -> tuple[Route, ...]:
    return tuple(r for r in table if r.function == name)


def match_path(path: str, table: tuple[Route, ...] = ROUTES) -> list[tuple[Route, dict[str, str]]]:
    """Every route whose template matches the path, whatever its method."""
    found = []
    for route in table:
        params = route.match(path)
        if params is not None:
            found.append((route, params))
    return found
