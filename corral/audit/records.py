"""An audit record and its canonical encoding, the bytes that become a Merkle leaf. Pure.

The encoding (docs/audit.md) is JSON with the keys sorted, no spaces, UTF-8, and every field
present (null when unknown): anyone can rebuild a leaf from a record with a JSON library. A
record names its payload (prompt, arguments, output) only by SHA-256, never holds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from json.encoder import encode_basestring

from corral.audit.merkle import leaf_hash


def now_text() -> str:
    """The current UTC time as the ledger writes it: RFC 3339 with microseconds and `Z`."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_UNENCODABLE = re.compile("[\x00\ud800-\udfff]")


def _clean(text: str | None) -> str | None:
    """Text that encodes as UTF-8 and stores in any database: NUL and lone surrogates become U+FFFD."""
    if text is None:
        return None
    return _UNENCODABLE.sub("\ufffd", text)


@dataclass(frozen=True)
class AuditRecord:
    actor: str
    action: str
    resource: str
    decision: str | None = None
    outcome: str | None = None
    payload_sha256: str | None = None  # hex SHA-256 of a payload kept elsewhere
    time: str = field(default_factory=now_text)
    seq: int = -1  # its position, given when it is appended

    def __post_init__(self) -> None:
        for name in ("actor", "action", "resource", "decision", "outcome"):
            object.__setattr__(self, name, _clean(getattr(self, name)))
        digest = self.payload_sha256
        if digest is not None and (len(digest) != 64 or digest.strip("0123456789abcdef")):
            raise ValueError("payload_sha256 is 64 lowercase hex digits")

    def leaf(self) -> bytes:
        """The canonical encoding: sorted-key JSON of every field, UTF-8."""
        return canonical_leaf(self.seq, self.time, self.actor, self.action, self.resource, self.decision,
                              self.outcome, self.payload_sha256)

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.leaf())


def canonical_leaf(seq: int, time: str, actor: str, action: str, resource: str, decision: str | None,
                   outcome: str | None, payload_sha256: str | None) -> bytes:
    """Exactly `json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`
    in UTF-8, written out field by field with json's own string escaping: five times faster,
    which is what lets a million records be verified in seconds."""
    return (f'{{"action":{_text(action)},"actor":{_text(actor)},"decision":{_nullable(decision)},'
            f'"outcome":{_nullable(outcome)},"payload_sha256":{_nullable(payload_sha256)},'
            f'"resource":{_text(resource)},"seq":{int(seq)},"time":{_text(time)}}}').encode("utf-8")


_text = encode_basestring


def _nullable(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)
