"""Abuse: hostile input on every route of the route table, through the gateway. Each request is
refused with the right 4xx problem, and stored data does not change: every Firestore document
(rate-limit counters and audit entries aside, which are meant to record refusals) and every object in
the bucket are compared before and after.

Driven by `mllab.api.routes.ROUTES`: a new route gets the generic cases at once, and the tables here (an
example body per request model, whose id each `{id}` and each `*_id` field names) must cover it or a
test says what is missing. Covered elsewhere and not repeated: the CSRF matrix of the cookie routes
and refresh-reuse timing (test_refresh_sessions.py, checked below to list every cookie route), catalog
validation and cursors (test_catalog.py), the recorder's refusals (test_storage_flow.py), static
file traversal (test_gateway.py), webhook signatures and the 64 KiB cap (test_paypal_webhook.py),
off-site return_to (test_google_signin.py, tests/unit/test_oauth.py). On both file stores.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel

from mllab.api import routes
from mllab.api.routes import Auth, Csrf, Route
from mllab.billing import entitlements, subscriptions
from mllab.billing import schemas as billing_schemas
from mllab.files import catalog, objects
from mllab.files import schemas as file_schemas
from mllab.identity import schemas as identity_schemas
from mllab.identity import sessions, tokens
from mllab.platform import audit, clients, clock, config
from mllab.platform.problems import PROBLEM_JSON
from mllab.serving import apikeys, deployments
from mllab.serving import schemas as serving_schemas
from mllab_dev.stack import BUCKET, Stack

from .backend_support import BACKENDS, on_backend
from .billing_support import wait
from .conftest import PASSWORD, docs_where
from .limits_support import upload as store_object


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory):
    yield from on_backend(request.param, stack, tmp_path_factory)


# Collections whose documents are meant to change on a refusal: failure counters and the audit log.
MEANT_TO_CHANGE = {"rate_limits", "audit_log"}
FOREIGN_ORIGINS = ("https://evil.example", "null")


# --- what is stored -----------------------------------------------------------------------------------


def stored() -> dict[str, Any]:
    """Every Firestore document (subcollections included) and every object of the bucket."""
    db = clients.firestore()
    docs: dict[str, Any] = {}

    def walk(collections: Any) -> None:
        for collection in collections:
            if collection.id in MEANT_TO_CHANGE:
                continue
            for ref in collection.list_documents():
                snap = ref.get()
                if snap.exists:
                    docs[ref.path] = snap.to_dict()
                walk(ref.collections())

    walk(db.collections())
    if config.settings().storage == "s3":
        from mllab.files import s3

        blobs = {o.name: o.generation for o in s3.list_prefix("")}
    else:
        blobs = {b.name: b.generation for b in clients.storage().bucket(BUCKET).list_blobs()}
    return {"documents": docs, "objects": blobs}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = []
    for part in ("documents", "objects"):
        b, a = before[part], after[part]
        lines += [f"added {part[:-1]} {k}: {a[k]}" for k in sorted(a.keys() - b.keys())]
        lines += [f"removed {part[:-1]} {k}" for k in sorted(b.keys() - a.keys())]
        lines += [f"changed {part[:-1]} {k}: {b[k]} -> {a[k]}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return "\n".join(lines)


@contextmanager
def nothing_changes() -> Iterator[None]:
    before = stored()
    yield
    after = stored()
    assert after == before, "stored data changed:\n" + _diff(before, after)


# --- the parties --------------------------------------------------------------------------------------


@dataclass
class Party:
    """A signed-in PRO user with one of everything: a project, a model with version 1 (its weights
    recorded), a dataset, a training job and a PayPal subscription."""

    uid: str
    email: str
    sid: str
    token: str
    csrf: str
    refresh: str
    ids: dict[str, str] = field(
        default_factory=dict
    )  # projects, models, datasets, jobs, sessions, deployments, api-keys
    object: str = ""
    subscription_id: str = ""
    api_key: str = ""  # a predict key of hers

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-CSRF-Token": self.csrf}


def _party(stack: Stack, new_user, name: str) -> Party:
    user = new_user(name=name)
    session, refresh = sessions.create(user["uid"], "password", user_agent="abuse-test", ip="203.0.113.9")
    p = Party(
        user["uid"],
        user["email"],
        session.id,
        tokens.issue_access_token(user["uid"], session.id).token,
        sessions.csrf_token(session.id),
        refresh,
    )
    subscriptions.set_grant(p.uid, lambda doc, now: entitlements.with_grant(doc, None, now))
    with httpx.Client(base_url=stack.gateway_url, timeout=20, headers={**p.auth(), "Origin": stack.gateway_url}) as c:

        def make(path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
            r = c.post(path, json=body) if body is not None else c.post(path)
            assert r.status_code == 201, r.text
            return r.json()

        project = make("/projects", {"name": f"{name}'s project"})["id"]
        model = make("/models", {"project_id": project, "name": "m"})["id"]
        make(f"/models/{model}/versions")
        dataset = make("/datasets", {"project_id": project, "name": "d"})["id"]
        job = make("/jobs", {"project_id": project, "model_id": model, "version": 1})["id"]
    # A deployment of version 1, written as the domain stores one (the version here is a stand-in, never
    # ready, so POST /deployments would refuse it), and a predict key.
    deployment = uuid.uuid4().hex
    now = clock.now()
    deployments.ref(deployment).set(
        {
            "uid": p.uid,
            "model_id": model,
            "project_id": project,
            "version": 1,
            "public": False,
            "description": "",
            "created_at": now,
            "updated_at": now,
        }  # fmt: skip
    )
    key = apikeys.create(p.uid, "abuse", ["predict"])
    p.api_key = key["key"]
    p.ids = {"projects": project, "models": model, "datasets": dataset, "jobs": job, "sessions": p.sid,
             "deployments": deployment, apikeys.COLLECTION: key["id"]}  # fmt: skip
    p.object = str(objects.model_file(p.uid, project, model, 1, "weights"))
    store_object(p.object, b"\x00" * 64, "application/octet-stream")
    p.subscription_id = "I-" + uuid.uuid4().hex[:12].upper()
    now = clock.now()
    clients.firestore().collection(subscriptions.SUBSCRIPTIONS).document(p.subscription_id).set(
        {
            "uid": p.uid,
            "status": "APPROVAL_PENDING",
            "plan_id": "P-X",
            "approve_url": None,
            "request_id": None,
            "created_at": now,
            "updated_at": now,
            "synced_at": None,
            "fetched_at": None,
            "pro_until": None,
        }
    )
    return p


@dataclass
class World:
    stack: Stack
    client: httpx.Client
    alice: Party  # the victim
    mallory: Party  # the attacker: her own requests are valid except for the one hostile part

    @property
    def origin(self) -> str:
        return self.stack.gateway_url


@pytest.fixture
def world(stack: Stack, new_user) -> Iterator[World]:
    alice, mallory = _party(stack, new_user, "alice"), _party(stack, new_user, "mallory")
    # both weights files recorded, so downloads of them are signable
    assert wait(lambda: all(docs_where("artifacts", "object", p.object) for p in (alice, mallory))), (
        "the recorder did not record the uploads"
    )
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield World(stack, client, alice, mallory)


# --- valid requests, per route --------------------------------------------------------------------------

NEW_PASSWORD = "an entirely new passphrase 42"

# A valid body for every request model; each hostile case changes one thing in it.
EXAMPLES: dict[type[BaseModel], Callable[[Party], dict[str, Any]]] = {
    identity_schemas.RegisterRequest: lambda p: {
        "email": f"new-{uuid.uuid4().hex[:8]}@example.com",
        "password": NEW_PASSWORD,
        "name": "New",
    },
    identity_schemas.LoginRequest: lambda p: {"email": p.email, "password": PASSWORD},
    identity_schemas.VerifyEmailRequest: lambda p: {"token": "A" * 43},
    identity_schemas.EmailRequest: lambda p: {"email": p.email},
    identity_schemas.PasswordResetConfirmRequest: lambda p: {"token": "A" * 43, "password": NEW_PASSWORD},
    identity_schemas.PasswordChangeRequest: lambda p: {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    identity_schemas.LogoutRequest: lambda p: {"scope": "global"},
    identity_schemas.DeleteAccountRequest: lambda p: {"password": PASSWORD},
    file_schemas.CreateProject: lambda p: {"name": "a project"},
    file_schemas.Rename: lambda p: {"name": "a new name"},
    file_schemas.CreateModel: lambda p: {
        "project_id": p.ids["projects"],
        "name": "a model",
        "config_json": {"layers": []},
    },
    file_schemas.CreateDataset: lambda p: {"project_id": p.ids["projects"], "name": "a dataset", "schema_json": {}},
    file_schemas.CreateJob: lambda p: {
        "project_id": p.ids["projects"],
        "model_id": p.ids["models"],
        "version": 1,
        "dataset_id": p.ids["datasets"],
        "name": "a run",
    },
    file_schemas.SignUpload: lambda p: {"kind": "weights", "model_id": p.ids["models"], "version": 1, "size": 64},
    file_schemas.CompleteUpload: lambda p: {"object": p.object},
    file_schemas.VersionNotes: lambda p: {"notes": "a note"},
    billing_schemas.SyncRequest: lambda p: {"subscription_id": p.subscription_id},
    billing_schemas.CancelRequest: lambda p: {"reason": "too expensive"},
    billing_schemas.PromoRequest: lambda p: {"code": "NO-SUCH-CODE"},
    serving_schemas.CreateDeployment: lambda p: {"model_id": p.ids["models"], "version": 1},
    serving_schemas.UpdateDeployment: lambda p: {"description": "a description"},
    serving_schemas.CreateApiKey: lambda p: {"name": "a key", "scopes": ["predict"]},
    serving_schemas.PredictRequest: lambda p: {"instances": [{"x": 1}]},
}

# Which of a party's records each `{id}` of a path names (the first path segment says).
ID_OF = {
    "projects": "projects",
    "models": "models",
    "datasets": "datasets",
    "jobs": "jobs",
    "sessions": "sessions",
    "deployments": "deployments",
    "api-keys": apikeys.COLLECTION,
    "public": "deployments",
    "predict": "deployments",
}


def fill(route: Route, owner: Party, value: str | None = None) -> str:
    """The route's path with its `{id}` naming the owner's record (or `value`)."""
    if "{id}" not in route.path:
        return route.path
    concrete = route.path.replace("{id}", value if value is not None else owner.ids[ID_OF[route.path.split("/")[1]]])
    return concrete.replace("{version}", "1")


def headers_for(w: World, route: Route, p: Party) -> dict[str, str]:
    """What the lab sends on this route as `p`: auth, CSRF, Origin, JSON."""
    h = {"Origin": w.origin, "Content-Type": "application/json", "User-Agent": "abuse-test"}
    if route.auth is Auth.ACCESS_TOKEN:
        h.update(p.auth())
    if route.csrf is Csrf.ORIGIN:
        h["X-CSRF-Token"] = "1"
    if route.auth is Auth.REFRESH_COOKIE:
        h["Cookie"] = f"{sessions.COOKIE}={p.refresh}"
    if route.auth is Auth.API_KEY:
        h["Authorization"] = f"Bearer {p.api_key}"
    return h


def send(
    w: World,
    route: Route,
    *,
    party: Party | None = None,
    path: str | None = None,
    body: Any = None,
    content: bytes | None = None,
    headers: dict[str, str | bytes] | None = None,
    drop: tuple[str, ...] = (),
    params: dict[str, str] | None = None,
    method: str | None = None,
) -> httpx.Response:
    p = party or w.mallory
    h = {**headers_for(w, route, p), **(headers or {})}
    for name in drop:
        h.pop(name, None)
    if content is None:
        if body is None and route.request is not None:
            body = EXAMPLES[route.request](p)
        content = json.dumps(body).encode() if body is not None else b""
    return w.client.request(method or route.method, path or fill(route, p), content=content, headers=h, params=params)


def refused(r: httpx.Response, status: int, what: Any) -> dict[str, Any]:
    """A problem+json refusal with exactly this status."""
    assert r.status_code == status, f"{what}: expected {status}, got {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"] == PROBLEM_JSON, what
    body = r.json()
    assert body["status"] == status and body["detail"] and body["request_id"], body
    return body


def check_all(cases: list[tuple[Any, Callable[[], httpx.Response], int]]) -> None:
    """Send every case; report every wrong answer at once, and any change to stored data."""
    wrong = []
    with nothing_changes():
        for what, call, status in cases:
            r = call()
            if r.status_code != status or r.headers.get("content-type") != PROBLEM_JSON:
                wrong.append(f"{what}: expected {status} problem, got {r.status_code} {r.text[:200]}")
            elif r.json().get("status") != status or not r.json().get("detail"):
                wrong.append(f"{what}: malformed problem {r.text[:200]}")
    assert not wrong, f"{len(wrong)} of {len(cases)} cases were not refused as expected:\n" + "\n".join(wrong)


def _key(route: Route) -> str:
    return f"{route.method} {route.path}"


BODY_ROUTES = [r for r in routes.ROUTES if r.request is not None]
TOKEN_ROUTES = [r for r in routes.ROUTES if r.auth is Auth.ACCESS_TOKEN]
SESSION_CSRF_ROUTES = [r for r in routes.ROUTES if r.csrf is Csrf.SESSION]
ID_ROUTES = [r for r in routes.ROUTES if "{id}" in r.path]
PATHS = sorted({r.path for r in routes.ROUTES})
# Paths that answer CORS for any origin without credentials (API keys, never cookies): test_serving_http.py.
ANY_ORIGIN_PATHS = {r.path for r in routes.ROUTES if r.any_origin}


def test_the_tables_cover_every_route() -> None:
    """A new request model or `{id}` route must be added to the tables above."""
    # `{id}` names a record; `{version}` (a model's version) is always the record's version 1
    assert all(set(re.findall(r"\{(\w+)\}", r.path)) <= {"id", "version"} for r in routes.ROUTES)
    assert {r.request for r in BODY_ROUTES} <= EXAMPLES.keys(), {r.request for r in BODY_ROUTES} - EXAMPLES.keys()
    assert {r.path.split("/")[1] for r in ID_ROUTES} <= ID_OF.keys()
    assert {f for r in BODY_ROUTES for f in r.request.model_fields if f.endswith("_id")} <= ID_FIELDS.keys()


def test_the_cookie_routes_csrf_matrix_covers_every_cookie_route() -> None:
    from .identity_support import COOKIE_ROUTES

    cookie_routes = {r.path for r in routes.ROUTES if r.csrf is Csrf.ORIGIN}
    assert cookie_routes == {path for path, _ in COOKIE_ROUTES}


def test_the_snapshot_holds_every_party_record_and_sees_a_change(world: World) -> None:
    """nothing_changes() is what every refusal below is checked with: it must see both parties'
    records and objects, and report a change (else every case could pass on an empty snapshot)."""
    snap = stored()
    for p in (world.alice, world.mallory):
        for collection, key in p.ids.items():
            assert f"{collection}/{key}" in snap["documents"], (collection, key)
        assert f"models/{p.ids['models']}/versions/000000001" in snap["documents"]  # subcollections too
        assert f"{subscriptions.SUBSCRIPTIONS}/{p.subscription_id}" in snap["documents"]
        assert p.object in snap["objects"]
    with (
        pytest.raises(AssertionError, match=f"changed document projects/{world.alice.ids['projects']}"),
        nothing_changes(),
    ):
        clients.firestore().collection("projects").document(world.alice.ids["projects"]).update({"name": "x"})
    # An object change is compared the same way; checked on the snapshot itself, because a stray upload
    # is rejected and deleted by the recorder within milliseconds (a real upload would race it).
    stray = {**snap, "objects": {**snap["objects"], f"users/{world.mallory.uid}/stray": 1}}
    assert f"added object users/{world.mallory.uid}/stray" in _diff(snap, stray)
    moved = {**snap, "objects": {**snap["objects"], world.alice.object: -1}}
    assert f"changed object {world.alice.object}" in _diff(snap, moved)


# --- malformed and huge JSON, wrong content types ---------------------------------------------------------


def _wrong_type(route: Route) -> int:
    return 403 if route.csrf is Csrf.ORIGIN else 415  # a cookie route treats it as a CSRF attempt


BODY_CASES: dict[str, tuple[Callable[[Route, dict[str, Any]], dict[str, Any]], Callable[[Route], int]]] = {
    "truncated JSON": (lambda r, b: {"content": json.dumps(b).encode()[:-1]}, lambda r: 400),
    "nested 100,000 deep": (lambda r, b: {"content": b"[" * 100_000 + b"]" * 100_000}, lambda r: 400),
    "an object nested 5,000 deep": (lambda r, b: {"content": b'{"a":' * 5000 + b"1" + b"}" * 5000}, lambda r: 400),
    "not UTF-8": (lambda r, b: {"content": json.dumps(b).encode()[:-1] + b',"x":"\xff\xfe"}'}, lambda r: 400),
    "NaN": (lambda r, b: {"content": json.dumps({**b, "x": float("nan")}).encode()}, lambda r: 400),
    "a 10,000-digit number": (
        lambda r, b: {"content": json.dumps(b).encode()[:-1] + b',"x":' + b"9" * 10_000 + b"}"},
        lambda r: 400,
    ),
    "an array": (lambda r, b: {"body": [b]}, lambda r: 422),
    "a string": (lambda r, b: {"body": json.dumps(b)}, lambda r: 422),
    "null": (lambda r, b: {"content": b"null"}, lambda r: 422),
    "an unknown field": (lambda r, b: {"body": {**b, "uid": "0" * 32}}, lambda r: 422),
    "over the body cap": (lambda r, b: {"body": {**b, "pad": "x" * config.LIMITS.request_body_bytes}}, lambda r: 413),
    "text/plain": (lambda r, b: {"body": b, "headers": {"Content-Type": "text/plain"}}, _wrong_type),
    "a form": (
        lambda r, b: {"content": b"name=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        _wrong_type,
    ),
    "multipart": (
        lambda r, b: {"content": b"--x\r\n\r\n--x--", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
        _wrong_type,
    ),
    "no content type": (lambda r, b: {"body": b, "drop": ("Content-Type",)}, _wrong_type),
    "JSON that is UTF-16": (
        lambda r, b: {
            "content": json.dumps(b).encode("utf-16"),
            "headers": {"Content-Type": "application/json; charset=utf-16"},
        },
        lambda r: 400,
    ),
}


def test_malformed_bodies_are_refused_on_every_route(world: World) -> None:
    cases = []
    for case, (make, status) in BODY_CASES.items():
        for route in BODY_ROUTES:
            kwargs = make(route, EXAMPLES[route.request](world.mallory))
            cases.append(
                (f"{case}: {_key(route)}", lambda route=route, kw=kwargs: send(world, route, **kw), status(route))
            )
    check_all(cases)


# --- hostile text in every field --------------------------------------------------------------------------

HOSTILE_TEXT = {
    "NUL": "a\x00b",
    "only NUL": "\x00",
    "a line break": "a\nb",
    "an escape sequence": "a\x1b[31mb",
    "a right-to-left override": "abc\u202egnp.exe",
    "an unpaired surrogate": "\ud800",
    "100,000 characters": "x" * 100_000,
    "a number": 12345,
    "an object": {"$gt": ""},
}


def _text_fields(model: type[BaseModel]) -> list[str]:
    """Fields holding text a person or the system reads (passwords take any character: they are hashed)."""
    out = []
    for name in model.model_fields:
        if "password" in name or name.endswith("_json") or name in ("size", "version", "sign_out_others"):
            continue
        out.append(name)
    return out


def test_hostile_text_in_every_field_is_422(world: World) -> None:
    cases = []
    for value in HOSTILE_TEXT:
        for route in BODY_ROUTES:
            for name in _text_fields(route.request):
                body = {**EXAMPLES[route.request](world.mallory), name: HOSTILE_TEXT[value]}
                # an unpaired surrogate can only travel as a JSON escape; ensure_ascii keeps it one
                content = json.dumps(body, ensure_ascii=True).encode()
                cases.append(
                    (
                        f"{value} in {_key(route)} {name}",
                        lambda route=route, content=content: send(world, route, content=content),
                        422,
                    )
                )
    check_all(cases)


def test_names_in_any_script_are_kept_exactly(world: World) -> None:
    """Unicode is not hostile: only control characters are refused, and what is kept is not normalised."""
    m = world.mallory
    h = {**m.auth(), "Origin": world.origin}
    for name in ["模型 🚀 Café", "Ελληνικά", "עברית مرحبا", "👩‍🔬 team", "ﬁ Ⅻ ㎏", "é"]:
        r = world.client.post("/projects", json={"name": name}, headers=h)
        assert r.status_code == 201 and r.json()["name"] == name, r.text
        assert world.client.get(f"/projects/{r.json()['id']}", headers=h).json()["name"] == name
        r = world.client.patch(f"/models/{m.ids['models']}", json={"name": name}, headers=h)
        assert r.status_code == 200 and r.json()["name"] == name, r.text


# --- forged access tokens -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
    return signing_input.decode() + "." + _b64(sign(signing_input))


class Forger:
    """Tokens for mallory's session, forged every known way (and a few we would sign with bad claims)."""

    def __init__(self, m: Party) -> None:
        self.real = m.token
        self.claims = jwt.decode(m.token, options={"verify_signature": False})
        self.header = jwt.get_unverified_header(m.token)
        self.kid, self.key = tokens._signing_key()
        self.attacker = ec.generate_private_key(ec.SECP256R1())
        published = tokens.public_jwks()["keys"]
        self.jwk = next(k for k in published if k["kid"] == self.kid)

    def ours(self, claims: dict[str, Any] | None = None, header: dict[str, Any] | None = None, **changes: Any) -> str:
        """Signed with our own key (what a bug minting bad claims would produce)."""
        c = {**self.claims, **(claims or {})}
        for k, v in changes.items():
            if v is _DROP:
                c.pop(k, None)
            else:
                c[k] = v
        return jwt.encode(c, self.key, algorithm="ES256", headers={"kid": self.kid, "typ": "at+jwt", **(header or {})})

    def attackers(self, header: dict[str, Any], claims: dict[str, Any] | None = None) -> str:
        return jwt.encode({**self.claims, **(claims or {})}, self.attacker, algorithm="ES256", headers=header)

    def raw(self, header: dict[str, Any]) -> str:
        """Signed with our key under a header PyJWT would not write."""
        es256 = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
        return _compact(header, self.claims, lambda data: es256.sign(data, self.key))

    def hs256(self, secret: bytes) -> str:
        header = {"alg": "HS256", "typ": "at+jwt", "kid": self.kid}
        return _compact(header, self.claims, lambda data: hmac.new(secret, data, hashlib.sha256).digest())

    def unsigned(self, alg: str) -> str:
        return _compact({**self.header, "alg": alg}, self.claims, lambda data: b"")

    def flipped(self) -> str:
        head, payload, sig = self.real.split(".")
        raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
        raw[len(raw) // 2] ^= 0x01
        return f"{head}.{payload}.{_b64(bytes(raw))}"

    def spliced(self, victim: Party) -> str:
        """Mallory's signature on a payload naming alice."""
        head, _, sig = self.real.split(".")
        claims = {**self.claims, "sub": victim.uid}
        return f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"


_DROP = object()


def forgeries(f: Forger, mallory: Party, alice: Party) -> dict[str, str]:
    now = clock.timestamp()
    pem = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(f.jwk)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attacker_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(f.attacker.public_key()))
    return {
        "alg none": f.unsigned("none"),
        "alg None": f.unsigned("None"),
        "alg NONE": f.unsigned("NONE"),
        "HS256 keyed with the public JWK": f.hs256(json.dumps(f.jwk).encode()),
        "HS256 keyed with the public PEM": f.hs256(pem),
        "HS256 keyed with x": f.hs256(f.jwk["x"].encode()),
        "ES256 from an unpublished key, our kid": f.attackers({"kid": f.kid, "typ": "at+jwt"}),
        "ES256 from an unpublished key, its own kid": f.attackers({"kid": "attacker-1", "typ": "at+jwt"}),
        "ES256 with the key embedded (jwk)": f.attackers({"kid": f.kid, "typ": "at+jwt", "jwk": attacker_jwk}),
        "ES256 with a key URL (jku)": f.attackers(
            {"kid": f.kid, "typ": "at+jwt", "jku": "https://evil.example/jwks.json"}
        ),
        "ES256 with a certificate URL (x5u)": f.attackers(
            {"kid": f.kid, "typ": "at+jwt", "x5u": "https://evil.example/cert.pem"}
        ),
        "an unknown kid": f.ours(header={"kid": "no-such-key"}),
        "a kid with path traversal": f.ours(header={"kid": "../../../../../../etc/passwd"}),
        "a kid that is a URL": f.ours(header={"kid": "https://evil.example/jwks.json#k"}),
        "a kid with NUL": f.ours(header={"kid": f.kid + "\x00"}),
        "a kid that is a number": f.raw({"alg": "ES256", "typ": "at+jwt", "kid": 1}),
        "a kid that is a list": f.raw({"alg": "ES256", "typ": "at+jwt", "kid": [f.kid]}),
        "no kid": jwt.encode(f.claims, f.key, algorithm="ES256", headers={"typ": "at+jwt"}),
        "typ JWT": f.ours(header={"typ": "JWT"}),
        "no typ": jwt.encode(f.claims, f.key, algorithm="ES256", headers={"kid": f.kid, "typ": None}),
        "expired": f.ours(exp=now - 1, iat=now - 700),
        "issued an hour from now": f.ours(iat=now + 3600, exp=now + 4200),
        "another issuer": f.ours(iss="https://evil.example"),
        "another audience": f.ours(aud="someone-else"),
        "an audience list without ours": f.ours(aud=["someone-else", "another"]),
        "no sub": f.ours(sub=_DROP),
        "no sid": f.ours(sid=_DROP),
        "no jti": f.ours(jti=_DROP),
        "no exp": f.ours(exp=_DROP),
        "no iat": f.ours(iat=_DROP),
        "no iss": f.ours(iss=_DROP),
        "no aud": f.ours(aud=_DROP),
        "sub a number": f.ours(sub=12345),
        "sub empty": f.ours(sub=""),
        "sid a list": f.ours(sid=[f.claims["sid"]]),
        "exp a string": f.ours(exp=str(now + 600)),
        "exp a float": f.ours(exp=now + 600.5),
        "signature bytes flipped": f.flipped(),
        "signature missing": f.real.rsplit(".", 1)[0] + ".",
        "another user's payload under mallory's signature": f.spliced(alice),
        "two segments": f.real.rsplit(".", 1)[0],
        "four segments": f.real + ".e30",
        "not base64": "!!!.???.***",
        "non-ASCII": f.real[:-4] + "éé",
        "her refresh token": mallory.refresh,
    }


def test_forged_access_tokens_are_401_on_every_token_route(world: World) -> None:
    f = Forger(world.mallory)
    me = next(r for r in routes.ROUTES if r.path == "/me")
    for control in (f.ours(), f.raw({"alg": "ES256", "typ": "at+jwt", "kid": f.kid})):  # only the forged part is wrong
        assert send(world, me, headers={"Authorization": f"Bearer {control}"}).status_code == 200
    cases = []
    for what, token in forgeries(f, world.mallory, world.alice).items():
        header = f"Bearer {token}".encode()  # bytes: a non-ASCII token goes out as UTF-8
        for route in TOKEN_ROUTES:
            cases.append(
                (
                    f"{what}: {_key(route)}",
                    lambda route=route, header=header: send(world, route, headers={"Authorization": header}),
                    401,
                )
            )
    check_all(cases)


def test_a_malformed_authorization_header_is_401_on_every_token_route(world: World) -> None:
    t = world.mallory.token
    cases = []
    for header in [
        "",
        "Bearer",
        "Basic bWFsbG9yeTpwdw==",
        f"Token {t}",
        f"Bearer {t} {t}",
        f"Bearer{t}",
        t,
        f"Bearer {t[:-1]}",
        f"Bearer {'A' * 6000}",
    ]:
        cases += [
            (
                f"{header[:40]!r}: {_key(route)}",
                lambda route=route, h=header: send(world, route, headers={"Authorization": h}),
                401,
            )
            for route in TOKEN_ROUTES
        ]
    check_all(cases)


def test_a_token_elsewhere_than_the_authorization_header_is_401(world: World) -> None:
    t = world.mallory.token
    cases = []
    for route in TOKEN_ROUTES:
        cases += [
            (
                f"query {_key(route)}",
                lambda route=route: send(world, route, drop=("Authorization",), params={"access_token": t}),
                401,
            ),
            (
                f"cookie {_key(route)}",
                lambda route=route: send(
                    world, route, drop=("Authorization",), headers={"Cookie": f"access_token={t}"}
                ),
                401,
            ),
        ]
    check_all(cases)


def test_every_401_says_how_to_authenticate(world: World) -> None:
    for route in TOKEN_ROUTES:
        r = send(world, route, headers={"Authorization": "Bearer x.y.z"})
        refused(r, 401, _key(route))
        assert r.headers["www-authenticate"].startswith('Bearer realm="mllab"'), _key(route)


def test_a_revoked_sessions_token_is_401_on_every_token_route(world: World) -> None:
    """Every access-token route checks that the session is live before it reads, writes or signs
    anything (docs/security.md): reads return user data and signed URLs too."""
    m = world.mallory
    assert sessions.revoke(m.sid, "test")
    live_checked = [r for r in TOKEN_ROUTES if r.needs_live_session]
    assert live_checked == list(TOKEN_ROUTES)
    check_all([(_key(route), lambda route=route: send(world, route), 401) for route in live_checked])


# --- replayed refresh cookies -----------------------------------------------------------------------------


def _rotate(w: World, cookie: str) -> str:
    r = w.client.post(
        "/auth/refresh",
        headers={
            "Origin": w.origin,
            "X-CSRF-Token": "1",
            "Content-Type": "application/json",
            "Cookie": f"{sessions.COOKIE}={cookie}",
        },
    )
    assert r.status_code == 200, r.text
    return r.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]


def test_a_replayed_older_refresh_cookie_revokes_the_session_and_is_audited(world: World) -> None:
    """The immediately previous cookie within 10 s gets the current one (two tabs); any older one is
    theft: the session ends for everyone holding it, and the audit log says so."""
    m = world.mallory
    first = m.refresh
    second = _rotate(world, first)
    _rotate(world, second)
    route = next(r for r in routes.ROUTES if r.path == "/auth/refresh")
    r = send(world, route, headers={"Cookie": f"{sessions.COOKIE}={first}"})
    refused(r, 401, "grandparent cookie")
    assert "Max-Age=0" in r.headers["set-cookie"]
    session = clients.firestore().collection("sessions").document(m.sid).get().to_dict()
    assert session["revoked_at"] is not None and session["revoke_reason"] == "reuse_detected"
    reuse = [e for e in audit.for_actor(m.uid) if e["action"] == "session.refresh_reuse"]
    assert reuse and reuse[0]["target"] == f"session:{m.sid}" and reuse[0]["outcome"] == "revoked"
    assert world.client.get("/me", headers=m.auth()).status_code == 401  # its access tokens died with it


def test_a_replayed_or_forged_refresh_cookie_signs_nobody_out(world: World) -> None:
    m = world.mallory
    first = m.refresh
    current = _rotate(world, _rotate(world, first))
    parsed = sessions.parse_refresh_token(current)
    forged = sessions.TOKEN_PREFIX + _b64(
        uuid.UUID(hex=parsed.sid).bytes + (parsed.counter).to_bytes(8, "big") + bytes(32)
    )
    alices_forged = sessions.TOKEN_PREFIX + _b64(
        uuid.UUID(hex=world.alice.sid).bytes + (0).to_bytes(8, "big") + bytes(32)
    )
    refresh = next(r for r in routes.ROUTES if r.path == "/auth/refresh")
    logout = next(r for r in routes.ROUTES if r.path == "/auth/logout")
    cases = []
    for what, cookie in (
        ("a forged MAC on mallory's session", forged),
        ("a forged MAC on alice's session", alices_forged),
        ("a cookie of another format", "rt1.AAAA"),
        ("a cookie of 4 KiB", "rt1." + "A" * 4000),
        ("a non-ASCII cookie", current[:-2] + "é"),
    ):
        cookie_header = {"Cookie": f"{sessions.COOKIE}={cookie}".encode()}
        cases.append((f"refresh with {what}", lambda h=cookie_header: send(world, refresh, headers=h), 401))
        for scope in ("others", "global"):
            cases.append(
                (
                    f"logout {scope} with {what}",
                    lambda h=cookie_header, s=scope: send(world, logout, headers=h, body={"scope": s}),
                    401,
                )
            )
    for scope in ("others", "global"):  # a cookie two rotations old no longer speaks for the session
        cases.append(
            (
                f"logout {scope} with a replayed cookie",
                lambda s=scope: send(
                    world, logout, headers={"Cookie": f"{sessions.COOKIE}={first}"}, body={"scope": s}
                ),
                401,
            )
        )
    check_all(cases)
    assert world.client.get("/me", headers=m.auth()).status_code == 200
    assert world.client.get("/me", headers=world.alice.auth()).status_code == 200


# --- CSRF and CORS ------------------------------------------------------------------------------------------


def test_session_csrf_is_checked_on_every_mutation(world: World) -> None:
    """Every mutation with an access token needs the X-CSRF-Token bound to that token's session
    (the cookie routes' Origin/Fetch-Metadata matrix is in test_refresh_sessions.py)."""
    m, a = world.mallory, world.alice
    version = m.csrf.split(".", 1)[0]
    variants = {
        "missing": None,
        "empty": "",
        "wrong": m.csrf[:-2] + "xx",
        "another session's": a.csrf,
        "an unknown key version": "99." + m.csrf.split(".", 1)[1],
        "no MAC": version + ".",
        "the cookie routes' 1": "1",
        "non-ASCII": (m.csrf[:-2] + "é").encode(),
    }
    cases = []
    for what, token in variants.items():
        for route in SESSION_CSRF_ROUTES:
            kw: dict[str, Any] = {"drop": ("X-CSRF-Token",)} if token is None else {"headers": {"X-CSRF-Token": token}}
            cases.append((f"{what}: {_key(route)}", lambda route=route, kw=kw: send(world, route, **kw), 403))
    check_all(cases)
    for route in SESSION_CSRF_ROUTES:
        assert refused(send(world, route, drop=("X-CSRF-Token",)), 403, _key(route))["type"].endswith("csrf")


def test_a_foreign_origin_gets_no_cors_on_any_route_and_its_preflight_is_refused(world: World) -> None:
    gw = world.origin
    origins = [
        *FOREIGN_ORIGINS,
        "http://127.0.0.1:1",
        f"{gw}.evil.example",
        "https://" + gw.split("://", 1)[1],
        gw.upper(),
        gw + "/",
    ]
    bad = []
    with nothing_changes():
        for origin, path in ((o, p) for o in origins for p in PATHS if p not in ANY_ORIGIN_PATHS):
            concrete = path.replace("{id}", world.mallory.ids.get(ID_OF.get(path.split("/")[1], ""), "x"))
            concrete = concrete.replace("{version}", "1")
            methods = sorted({r.method for r in routes.ROUTES if r.path == path})
            for method in methods:
                pre = world.client.options(
                    concrete,
                    headers={
                        "Origin": origin,
                        "Access-Control-Request-Method": method,
                        "Access-Control-Request-Headers": "authorization",
                    },
                )
                if pre.status_code != 403 or pre.headers.get("content-type") != PROBLEM_JSON:
                    bad.append(f"{origin} preflight {method} {path}: {pre.status_code}")
                if any(h.startswith("access-control-allow") for h in pre.headers):
                    bad.append(f"{origin} preflight {method} {path} answered CORS headers")
                if origin == origins[0]:  # the control: the lab's own origin is allowed
                    ok = world.client.options(concrete, headers={"Origin": gw, "Access-Control-Request-Method": method})
                    if ok.status_code != 204 or ok.headers.get("access-control-allow-origin") != gw:
                        bad.append(f"the lab's own preflight {method} {path}: {ok.status_code}")
                if method != "GET" or path.startswith("/auth/google/"):
                    continue  # the actual request: API reads only (sign-in navigations store a transaction)
                r = world.client.get(concrete, headers={"Origin": origin, **world.mallory.auth()})
                if "access-control-allow-origin" in r.headers or "access-control-allow-credentials" in r.headers:
                    bad.append(f"{origin} GET {path} was allowed")
    assert not bad, "\n".join(bad)


def test_a_foreign_origin_cannot_use_the_cookie_routes(world: World) -> None:
    """What a cross-site form or fetch would do with the refresh cookie: refused, and no CORS."""
    cases = []
    for route in (r for r in routes.ROUTES if r.csrf is Csrf.ORIGIN):
        for origin in FOREIGN_ORIGINS:
            cases.append(
                (
                    f"{origin} {_key(route)}",
                    lambda route=route, o=origin: send(world, route, headers={"Origin": o}),
                    403,
                )
            )
        cases.append(
            (
                f"cross-site {_key(route)}",
                lambda route=route: send(world, route, headers={"Sec-Fetch-Site": "cross-site"}),
                403,
            )
        )
        cases.append(
            (
                f"non-ASCII Origin {_key(route)}",
                lambda route=route: send(world, route, headers={"Origin": (world.origin + "é").encode()}),
                403,
            )
        )
    check_all(cases)


def test_an_unsupported_method_is_405_on_every_path(world: World) -> None:
    cases = []
    for path in PATHS:
        allowed = {r.method for r in routes.ROUTES if r.path == path}
        concrete = path.replace("{id}", world.mallory.ids.get(ID_OF.get(path.split("/")[1], ""), "x"))
        concrete = concrete.replace("{version}", "1")
        route = next(r for r in routes.ROUTES if r.path == path)
        for method in sorted(
            {"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed - ({"GET"} if "GET" in allowed else set())
        ):
            cases.append(
                (
                    f"{method} {path}",
                    lambda route=route, c=concrete, m=method: send(world, route, path=c, method=m),
                    405,
                )
            )
    check_all(cases)


# --- path traversal in every field that names an object or a record ----------------------------------------

TRAVERSALS = [
    "..",
    "../x",
    "../../etc/passwd",
    "%2e%2e",
    "%2e%2e%2fx",
    "..%2f..%2fx",
    "/etc/passwd",
    "..\\..\\x",
    "\\\\evil\\share",
    "x\x00",
    "x%00",
    "users/{alice}/projects",
    "0" * 31 + "/",
    "~",
    ".",
    "./x",
]


def _traversals(w: World) -> list[str]:
    return [t.replace("{alice}", w.alice.uid) for t in TRAVERSALS]


def test_path_traversal_in_upload_fields_is_422(world: World) -> None:
    route = next(r for r in routes.ROUTES if r.path == "/signed/upload")
    m = world.mallory
    bodies = {
        "model_id": {"kind": "weights", "version": 1, "size": 10},
        "dataset_id": {"kind": "dataset", "filename": "data.csv", "size": 10},
        "job_id": {"kind": "metrics", "size": 10},
        "filename": {"kind": "dataset", "dataset_id": m.ids["datasets"], "size": 10},
        "kind": {"model_id": m.ids["models"], "version": 1, "size": 10},
    }
    cases = []
    for name, base in bodies.items():
        for t in _traversals(world) + [t + ".csv" for t in _traversals(world)]:
            body = {**base, name: t}
            cases.append((f"{name}={t!r}", lambda body=body: send(world, route, body=body), 422))
    check_all(cases)


def test_path_traversal_in_a_download_object_is_404(world: World) -> None:
    route = next(r for r in routes.ROUTES if r.path == "/signed/download")
    m, a = world.mallory, world.alice
    mine = m.object
    objects_ = [
        *_traversals(world),
        f"users/{m.uid}/../{a.object[6:]}",
        f"users/{m.uid}/projects/../../{a.uid}",
        mine.replace("weights.bin", "../../../../../../" + a.object),
        "/" + mine,
        mine + "/",
        mine.replace("/", "\\"),
        mine.replace("/", "%2F"),
        mine.replace("/", "%252F"),
        mine + "\x00",
        mine + "%00.png",
        mine.upper(),
        f"gs://{BUCKET}/{mine}",
        f"https://storage.googleapis.com/{BUCKET}/{mine}",
        a.object,
        f"users/{a.uid}/",
        "users/",
        "",
    ]
    check_all([(repr(o), lambda o=o: send(world, route, params={"object": o}), 404) for o in objects_])
    r = send(world, route, params={"object": mine})  # the control: her own file is signable
    assert r.status_code == 200 and r.json()["object"] == mine, r.text


def send_raw(w: World, route: Route, path: str) -> httpx.Response:
    """The request line exactly as written (an HTTP client would resolve `..` before sending)."""
    import http.client

    h = headers_for(w, route, w.mallory)
    body = json.dumps(EXAMPLES[route.request](w.mallory)).encode() if route.request is not None else b""
    conn = http.client.HTTPConnection(w.stack.gateway_url.split("://", 1)[1], timeout=30)
    try:
        conn.request(route.method, path, body=body, headers=h)
        r = conn.getresponse()
        return httpx.Response(r.status, headers=r.getheaders(), content=r.read())
    finally:
        conn.close()


def test_path_traversal_in_every_id_of_a_path_is_404(world: World) -> None:
    cases = []
    for route in ID_ROUTES:
        own = world.mallory.ids[ID_OF[route.path.split("/")[1]]]
        for t in [
            "..",
            ".",
            "%2e%2e",
            "..%2f..%2fprojects",
            "%00",
            "%5c..%5c",
            "x%2F..",
            "..%252f",
            "%E2%80%AE",
            own + "%00",
            own + "%2f..",
            own + "/..",
            f"..%2f{own}",
            "~",
            "%ff",
        ]:
            path = route.path.replace("{id}", t).replace("{version}", "1")
            cases.append((f"{route.method} {path}", lambda route=route, path=path: send_raw(world, route, path), 404))
    check_all(cases)


def test_path_traversal_in_list_filters_is_422(world: World) -> None:
    cases = []
    for route in (r for r in routes.ROUTES if r.method == "GET" and r.function == "catalog" and "{id}" not in r.path):
        collection = route.path.strip("/")
        for name in catalog.LIST_FILTERS[collection]:
            for t in _traversals(world):
                cases.append(
                    (
                        f"{route.path}?{name}={t!r}",
                        lambda route=route, n=name, t=t: send(world, route, params={n: t}),
                        422,
                    )
                )
    check_all(cases)


# --- another user's ids everywhere ------------------------------------------------------------------------

# Request fields that hold an id, and whose record each names.
ID_FIELDS = {
    "project_id": "projects",
    "model_id": "models",
    "dataset_id": "datasets",
    "job_id": "jobs",
    "subscription_id": "subscription",
}


def _id_of(p: Party, kind: str) -> str:
    return p.subscription_id if kind == "subscription" else p.ids[kind]


def test_another_users_id_in_any_path_is_404(world: World) -> None:
    """Not 403: a 404 does not reveal that the record exists (test_catalog.py shows the catalog's
    answers in detail; this covers every `{id}` route of the table)."""
    check_all(
        [
            (_key(route), lambda route=route: send(world, route, path=fill(route, world.alice)), 404)
            for route in ID_ROUTES
        ]
    )
    # The control: her own records are there (the public view answers only a ready, shared model: its 200
    # is in test_serving_http.py).
    for route in (r for r in ID_ROUTES if r.method == "GET" and r.auth is not Auth.NONE):
        assert send(world, route).status_code == 200, _key(route)


def test_another_users_id_in_any_body_field_is_404(world: World) -> None:
    m, a = world.mallory, world.alice
    cases = []
    for route in BODY_ROUTES:
        body = EXAMPLES[route.request](m)
        for name in (f for f in body if f in ID_FIELDS):
            if route.request is file_schemas.SignUpload and name != "model_id":
                continue  # covered below with the fields each upload kind takes
            hostile = {**body, name: _id_of(a, ID_FIELDS[name])}
            cases.append((f"{_key(route)} {name}", lambda route=route, b=hostile: send(world, route, body=b), 404))
    upload = next(r for r in routes.ROUTES if r.path == "/signed/upload")
    for body in (
        {"kind": "model", "model_id": a.ids["models"], "version": 1, "size": 10},
        {"kind": "dataset", "dataset_id": a.ids["datasets"], "filename": "d.csv", "size": 10},
        {"kind": "metrics", "job_id": a.ids["jobs"], "size": 10},
    ):
        cases.append((f"upload {body['kind']}", lambda b=body: send(world, upload, body=b), 404))
    download = next(r for r in routes.ROUTES if r.path == "/signed/download")
    cases.append(("download her object", lambda: send(world, download, params={"object": a.object}), 404))
    check_all(cases)


def test_another_users_ids_in_list_filters_match_nothing(world: World) -> None:
    """By design a filter naming someone else's id simply matches nothing (every query filters by the caller's uid)."""
    h = {**world.mallory.auth(), "Origin": world.origin}
    for collection, filters in catalog.LIST_FILTERS.items():
        for name in filters:
            r = world.client.get(f"/{collection}", params={name: world.alice.ids[ID_FIELDS[name]]}, headers=h)
            assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}, (collection, name, r.text)


# --- the sign-in navigations ----------------------------------------------------------------------------


def test_sign_in_navigations_refuse_hostile_parameters(world: World) -> None:
    """GET /auth/google/login and /callback: a hostile return_to, transaction cookie or state is a 400,
    stores no sign-in transaction and consumes none (off-site return_to values: test_google_signin.py)."""
    from mllab.identity import oauth

    nav = {r.path: r for r in routes.ROUTES if r.path.startswith("/auth/google/")}
    started = world.client.get("/auth/google/login", params={"return_to": "/lab"})  # a live transaction
    assert started.status_code == 302, started.text
    tx_id = started.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    state = dict(httpx.URL(started.headers["location"]).params)["state"]
    cases = []
    for value in [
        "/\r\nSet-Cookie: a=b",
        "/lab\x00",
        "/lab\u202e",
        "javascript:alert(1)",
        "/" + "a" * 3000,
        "/..%2f..%2fetc",
        "\\\\evil.example\\x",
    ]:
        cases.append(
            (
                f"return_to={value[:30]!r}",
                lambda v=value: world.client.get("/auth/google/login", params={"return_to": v}),
                400,
            )
        )
    for cookie in ["", "%00" * 14 + "A", "A" * 5000, "../../" + "A" * 37, tx_id[:-1] + "é", tx_id + tx_id]:
        h = {"Cookie": f"{oauth.TX_COOKIE}={cookie}".encode()}
        cases.append(
            (
                f"tx cookie {cookie[:12]!r}",
                lambda h=h: world.client.get(
                    nav["/auth/google/callback"].path, params={"state": state, "code": "c"}, headers=h
                ),
                400,
            )
        )
    for value in ["", "\x00", "A" * 5000, state + "x", state[:-1] + "é", "../" + state]:
        h = {"Cookie": f"{oauth.TX_COOKIE}={tx_id}"}
        cases.append(
            (
                f"state {value[:12]!r}",
                lambda h=h, v=value: world.client.get(
                    nav["/auth/google/callback"].path, params={"state": v, "code": "c"}, headers=h
                ),
                400,
            )
        )
    check_all(cases)
