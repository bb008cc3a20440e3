"""OIDC bearer tokens: verify a JWT from the configured issuer and map it to a Principal.

The signature is checked against the issuer's JWKS (cached; refetched when a token names an
unknown `kid`, at most once per `min_refresh_interval` seconds so random kids cannot make Corral hammer the
issuer). The algorithm comes from the key, never from the token alone: `none`, symmetric keys and
a header `alg` that differs from the key's are rejected. The email claim names the user, who must
exist in Corral (tokens never create users or grant roles); the groups claim adds the teams of
those names that exist.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
from jwt.exceptions import InvalidTokenError, PyJWKError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.errors import InvalidRequest, NotFound, Unauthenticated, Unavailable
from corral.identity.access import SCOPES, Principal
from corral.identity.bootstrap import ADMIN_EMAIL
from corral.identity.directory import get_user, normalise_email
from corral.store.tables import teams

FETCH_TIMEOUT = 5.0
LEEWAY_SECONDS = 30
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def key_algorithm(jwk: dict[str, Any]) -> str:
    """The one algorithm a JWK may verify with."""
    if "alg" in jwk:
        return str(jwk["alg"])
    kty = jwk.get("kty")
    if kty == "RSA":
        return "RS256"
    if kty == "EC" and jwk.get("crv") in _EC_ALGORITHMS:
        return _EC_ALGORITHMS[jwk["crv"]]
    if kty == "OKP" and jwk.get("crv") == "Ed25519":
        return "EdDSA"
    raise ValueError(f"unsupported key type {kty!r}")


class OidcVerifier:
    def __init__(self, issuer: str, audience: str, jwks_url: str | None = None,
                 min_refresh_interval: float = 30.0) -> None:
        self.issuer = issuer
        self.min_refresh_interval = min_refresh_interval
        self.audience = audience
        self._jwks_url = jwks_url
        self._keys: dict[str, tuple[Any, str]] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _discover_jwks_url(self, client: httpx.AsyncClient) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        response = await client.get(url)
        response.raise_for_status()
        return str(response.json()["jwks_uri"])

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.min_refresh_interval:
                return
            self._fetched_at = time.monotonic()  # failed fetches count too: an issuer outage is not amplified
            try:
                async with httpx.AsyncClient(timeout=FETCH_TIMEOUT) as client:
                    if self._jwks_url is None:
                        self._jwks_url = await self._discover_jwks_url(client)
                    response = await client.get(self._jwks_url)
                    response.raise_for_status()
                    document = response.json()
            except (httpx.HTTPError, ValueError, KeyError) as error:
                raise Unavailable(f"cannot fetch the OIDC issuer's keys: {type(error).__name__}") from None
            found = document.get("keys") if isinstance(document, dict) else None
            keys: dict[str, tuple[Any, str]] = {}
            for jwk in found if isinstance(found, list) else []:
                if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
                    continue
                try:
                    algorithm = key_algorithm(jwk)
                    keys[str(jwk.get("kid", ""))] = (jwt.PyJWK(jwk, algorithm=algorithm).key, algorithm)
                except (ValueError, TypeError, PyJWKError, jwt.PyJWTError):
                    continue  # a key we cannot use verifies nothing; the others still do
            self._keys = keys

    async def _key_for(self, kid: str) -> tuple[Any, str]:
        if kid not in self._keys:
            await self._refresh()
        if kid not in self._keys:
            raise Unauthenticated("token signed with a key the issuer does not publish")
        return self._keys[kid]

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or Unauthenticated saying which check failed."""
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError:
            raise Unauthenticated("malformed bearer token") from None
        key, algorithm = await self._key_for(str(header.get("kid", "")))
        if header.get("alg") != algorithm:
            raise Unauthenticated(f"token algorithm {header.get('alg')!r} does not match its key ({algorithm})")
        try:
            return jwt.decode(
                token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud"]},
            )
        except InvalidTokenError as error:
            raise Unauthenticated(f"token rejected: {error}") from None


async def principal_from_claims(
    connection: AsyncConnection, claims: dict[str, Any], email_claim: str, groups_claim: str
) -> Principal:
    email = claims.get(email_claim)
    if not isinstance(email, str):
        raise Unauthenticated(f"token has no {email_claim!r} claim")
    try:
        user = await get_user(connection, normalise_email(email))
    except (NotFound, InvalidRequest):
        raise Unauthenticated(f"no Corral user for {email}; an administrator must create one") from None
    if claims.get("email_verified") is False:
        raise Unauthenticated(f"the issuer has not verified {email}")
    if user.email == ADMIN_EMAIL:
        raise Unauthenticated("the bootstrap administrator signs in with its key, not a token")
    if user.disabled:
        raise Unauthenticated(f"{user.email} is disabled")
    groups = claims.get(groups_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list):
        groups = []  # a claim of another shape names no teams
    wanted = {str(group).strip().lower() for group in groups}
    known = set()
    if wanted:
        known = {row.name for row in await connection.execute(select(teams.c.name).where(teams.c.name.in_(wanted)))}
    extra = tuple(sorted(known - set(user.teams)))
    return Principal(
        user_id=user.id, email=user.email, roles=frozenset(user.roles), teams=user.teams + extra,
        scopes=frozenset(SCOPES) if "admin" in user.roles else frozenset(SCOPES) - {"admin"}, via="oidc",
    )


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and not credential.startswith("ck_")

