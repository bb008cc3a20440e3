"""The acting user's confirmation on connections without a session (MCP 2026-07-28), where the
question cannot be held open: Corral answers the call with an input request and a sealed
`request_state` naming who asked, which tool, the SHA-256 of the arguments and when the question
expires; the client asks the user and calls again with the answer and the state. An answer
counts only with a state Corral sealed for this very call, unexpired and not used before, so a
client cannot confirm by itself, change the arguments after the user saw them, or replay an
answer. The seal is an Ed25519 signature with the server's signing key, which every replica shares.
"""

from __future__ import annotations

import base64
import json
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MAX_USED = 100_000  # answers remembered (a used state cannot be presented again)


class Seal:
    def __init__(self, key: Ed25519PrivateKey, ttl_s: float) -> None:
        self._key = key
        self._public = key.public_key()
        self._ttl = ttl_s
        self._used: dict[str, float] = {}  # nonce -> when it expires

    def issue(self, user_id: int, resource: str, arguments_sha256: str) -> str:
        body = json.dumps({"u": user_id, "r": resource, "a": arguments_sha256, "e": time.time() + self._ttl,
                           "n": secrets.token_urlsafe(12)}, separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._key.sign(body))}"

    def check(self, state: str | None, user_id: int, resource: str, arguments_sha256: str) -> str | None:
        """None when `state` is a fresh seal for this call; otherwise why it is not."""
        try:
            body_text, signature_text = (state or "").split(".")
            body = _unb64(body_text)
            self._public.verify(_unb64(signature_text), body)
            sealed = json.loads(body)
        except (ValueError, InvalidSignature):
            sealed = None
        if not isinstance(sealed, dict):
            return "the confirmation did not come with a request_state Corral issued"
        if sealed.get("u") != user_id or sealed.get("r") != resource or sealed.get("a") != arguments_sha256:
            return "the confirmation was given for another call (other arguments, tool or user)"
        now = time.time()
        if sealed.get("e", 0) < now:
            return "the confirmation expired; call again to be asked again"
        if sealed["n"] in self._used:
            return "this confirmation was used already"
        if len(self._used) >= MAX_USED:
            self._used = {nonce: expiry for nonce, expiry in self._used.items() if expiry >= now}
        self._used[sealed["n"]] = sealed["e"]
        return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
