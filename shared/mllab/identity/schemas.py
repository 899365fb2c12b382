"""Identity's wire models: sign-up and sign-in requests, tokens, sessions,
the public keys and the account export."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from mllab.platform.wire import ApiModel, Plain, Strict


class Jwk(ApiModel):
    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str
    y: str
    kid: str
    use: Literal["sig"] = "sig"
    alg: Literal["ES256"] = "ES256"


class Jwks(ApiModel):
    keys: list[Jwk]


# The server's own check (mllab.identity.users.normalize_email) answers 422 for what is not an email address.
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=254),
    Plain,
    Field(json_schema_extra={"format": "email"}),
]
# 8 characters minimum, and at least 64 accepted (we take up to 1,024 so no one's passphrase is cut).
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
AnyPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
OneTimeToken = Annotated[str, StringConstraints(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")]


class RegisterRequest(Strict):
    email: Email
    password: NewPassword
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100), Plain] = ""


class LoginRequest(Strict):
    email: Email
    password: AnyPassword


class EmailRequest(Strict):
    email: Email


class VerifyEmailRequest(Strict):
    token: OneTimeToken


class PasswordResetConfirmRequest(Strict):
    token: OneTimeToken
    password: NewPassword


class PasswordChangeRequest(Strict):
    current_password: AnyPassword
    new_password: NewPassword
    sign_out_others: bool = True


class LogoutRequest(Strict):
    scope: Literal["local", "others", "global"] = "local"


class DeleteAccountRequest(Strict):
    password: AnyPassword | None = None


class AccessTokenResponse(ApiModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class SessionInfo(ApiModel):
    id: str
    method: str
    user_agent: str
    ip: str
    created_at: str
    refreshed_at: str
    expires_at: str
    current: bool


class SessionList(ApiModel):
    items: list[SessionInfo]
    next_cursor: str | None = None


class AccountExport(ApiModel):
    model_config = ConfigDict(extra="allow")

    exported_at: str
    user: dict
    identities: list[dict]
    sessions: list[dict]
    audit: list[dict]
