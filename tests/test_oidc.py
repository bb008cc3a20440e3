"""OIDC bearer tokens from a local issuer whose keys are generated here: the good token works,
and each forgery or mismatch is refused with a 401 that says why."""

import base64
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import JWKS_REFRESH, unique


def _whoami(server, token):
    return httpx.get(server.url + "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_valid_token_maps_email_to_the_user_and_groups_to_teams(server, issuer):
    response = _whoami(server, issuer.token("Alice@Example.com", groups=["Payments", "no-such-team"]))
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["email"] == "alice@example.com" and me["via"] == "oidc"
    assert me["teams"] == ["platform", "payments"]  # her own team, then the groups that exist
    assert "admin" not in me["scopes"]


@pytest.mark.parametrize("change, reason", [
    ({"iss": "https://evil.example.com"}, "issuer"),
    ({"aud": "someone-else"}, "audience"),
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"nbf": int(time.time()) + 3600}, "not yet valid"),
])
def test_wrong_claims_are_refused(server, issuer, change, reason):
    response = _whoami(server, issuer.token(**change))
    assert response.status_code == 401
    assert reason in response.json()["error"]["message"].lower()


def test_a_token_without_expiry_is_refused(server, issuer):
    response = _whoami(server, issuer.token(exp=None))
    assert response.status_code == 401 and "exp" in response.json()["error"]["message"]


def test_a_token_signed_by_another_key_with_a_published_kid_is_refused(server, issuer):
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response = _whoami(server, issuer.token(key=impostor))
    assert response.status_code == 401 and "signature" in response.json()["error"]["message"].lower()


def _unsigned(issuer, alg):
    header = {"alg": alg, "kid": "k1", "typ": "JWT"}
    body = {"iss": issuer.url, "aud": issuer.audience, "email": "alice@example.com", "exp": int(time.time()) + 300}
    encode = lambda data: base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{encode(header)}.{encode(body)}."


def test_alg_none_is_refused(server, issuer):
    response = _whoami(server, _unsigned(issuer, "none"))
    assert response.status_code == 401 and "algorithm" in response.json()["error"]["message"]


def test_hmac_signed_with_the_public_key_is_refused(server, issuer):
    public_pem = issuer.keys["k1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    body = {"iss": issuer.url, "aud": issuer.audience, "email": "alice@example.com", "exp": int(time.time()) + 300}
    import hashlib
    import hmac

    encode = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()  # noqa: E731
    signing_input = f"{encode(json.dumps(header).encode())}.{encode(json.dumps(body).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    response = _whoami(server, f"{signing_input}.{encode(signature)}")
    assert response.status_code == 401 and "algorithm" in response.json()["error"]["message"]


def test_a_new_signing_key_is_picked_up_by_refetching_the_jwks(server, issuer):
    kid = unique("k")
    issuer.add_key(kid, kind="ec")
    time.sleep(JWKS_REFRESH + 0.1)  # Corral refetches at most this often; a rotation waits that long
    before = issuer.jwks_requests
    response = _whoami(server, issuer.token(kid=kid, alg="ES256"))
    assert response.status_code == 200, response.text
    assert issuer.jwks_requests > before


def test_unknown_kids_do_not_make_corral_hammer_the_issuer(server, issuer):
    _whoami(server, issuer.token())  # keys are cached now
    before = issuer.jwks_requests
    for _ in range(5):
        forged = jwt.encode({"iss": issuer.url}, issuer.keys["k1"], algorithm="RS256", headers={"kid": unique("ghost")})
        response = _whoami(server, forged)
        assert response.status_code == 401
    assert issuer.jwks_requests - before <= 1


def test_a_token_for_someone_corral_does_not_know_is_refused(server, issuer):
    response = _whoami(server, issuer.token("stranger@example.com"))
    assert response.status_code == 401 and "no Corral user" in response.json()["error"]["message"]


def test_a_token_without_the_email_claim_is_refused(server, issuer):
    response = _whoami(server, issuer.token(email=None))
    assert response.status_code == 401 and "email" in response.json()["error"]["message"]


def test_a_garbage_token_is_refused(server):
    response = _whoami(server, "not.a.jwt")
    assert response.status_code == 401 and "malformed" in response.json()["error"]["message"]


def test_an_unverified_email_is_refused(server, issuer):
    response = _whoami(server, issuer.token(email_verified=False))
    assert response.status_code == 401 and "not verified" in response.json()["error"]["message"]


def test_a_token_cannot_sign_in_as_the_bootstrap_admin(server, issuer):
    response = _whoami(server, issuer.token("admin@corral.local"))
    assert response.status_code == 401 and "bootstrap" in response.json()["error"]["message"]


def test_a_groups_claim_of_another_shape_names_no_teams(server, issuer):
    response = _whoami(server, issuer.token(groups=5))
    assert response.status_code == 200 and response.json()["teams"] == ["platform"]


def test_an_unusable_key_in_the_jwks_does_not_break_the_others(server, issuer):
    bad = [{"kty": "EC", "alg": "RS256", "kid": "bad-ec"}, {"kty": "RSA", "alg": "HS256", "kid": "bad-rsa", "n": "AQAB", "e": "AQAB"}, "junk"]
    issuer.published.extend(bad)
    try:
        time.sleep(JWKS_REFRESH + 0.1)
        # An unknown kid makes Corral refetch the set that now holds the bad entries.
        forged = jwt.encode({"iss": issuer.url}, issuer.keys["k1"], algorithm="RS256", headers={"kid": "bad-ec"})
        assert _whoami(server, forged).status_code == 401
        assert _whoami(server, issuer.token()).status_code == 200
    finally:
        for entry in bad:
            issuer.published.remove(entry)


def test_the_mcp_endpoint_takes_tokens_and_refuses_forged_ones(server, issuer):
    ping = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    good = httpx.post(server.url + "/mcp", json=ping, timeout=10,
                      headers={**headers, "Authorization": f"Bearer {issuer.token('alice@example.com')}"})
    assert good.status_code == 200 and good.headers.get("mcp-session-id")
    forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = httpx.post(server.url + "/mcp", json=ping, timeout=10,
                        headers={**headers, "Authorization": f"Bearer {issuer.token(key=forged_key)}"})
    assert forged.status_code == 401 and forged.json()["error"]["code"] == -32013
