"""Who is calling: the credential from `Authorization: Bearer` (or `x-api-key`, which Anthropic
clients send) is a Corral key or an OIDC JWT. Every failure is recorded as an `auth.failed`
event (never with the credential) and answered 401."""

from __future__ import annotations

from fastapi import Request

from corral.errors import Unauthenticated
from corral.events.model import Event
from corral.identity import tokens
from corral.identity.access import Principal
from corral.identity.keys import authenticate_key
from corral.identity.oidc import looks_like_jwt, principal_from_claims


def credential_from(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise Unauthenticated("the Authorization header must be `Bearer <key or token>`")
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request) -> Principal:
    corral = request.app.state.corral
    credential = None
    try:
        credential = credential_from(request)
        if credential is None:
            raise Unauthenticated("missing credentials: send `Authorization: Bearer <your Corral key>`")
        if looks_like_jwt(credential):
            if corral.oidc is None:
                raise Unauthenticated("bearer tokens are not accepted: OIDC is not configured on this server")
            claims = await corral.oidc.verify(credential)
            async with corral.database.read() as connection:
                principal = await principal_from_claims(
                    connection, claims, corral.settings.oidc_email_claim, corral.settings.oidc_groups_claim)
        else:
            principal = await authenticate_key(corral.database, credential, corral.keys)
    except Unauthenticated as error:
        attributes = {"reason": error.message, "path": request.url.path,
                      "remote": request.client.host if request.client else None}
        if credential and tokens.is_well_formed(credential):
            attributes["prefix"] = tokens.display_prefix(credential)
        corral.recorder.emit(Event(kind="auth.failed", resource=request.url.path, decision="deny",
                                   outcome="unauthenticated", attributes=attributes))
        raise
    request.scope["corral.principal"] = principal
    return principal
