"""An audit record and its canonical encoding, the bytes that become a Merkle leaf. Pure.

The encoding (docs/audit.md) is JSON with the keys sorted, no spaces, UTF-8, and every field
present (null when unknown): anyone can rebuild a leaf from a record with a JSON library. A
record names its payload (prompt, arguments, output) only by SHA-256, never holds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from hashlib import sha256
from json.encoder import encode_basestring

from corral.audit.merkle import leaf_hash


def payload_sha256(value: object) -> str:
    """How a payload (arguments, a result, an event's attributes, a tool's definition) is named:
    the hex SHA-256 of its sorted-key, compact JSON in UTF-8."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def now_text() -> str:
    """The current UTC time as the ledger writes it: RFC 3339 with microseconds and `Z`."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")[:-6] + "Z"  # drops "+00:00"


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
        texts = (self.actor, self.action, self.resource, self.decision or "", self.outcome or "")
        if _UNENCODABLE.search("".join(texts)):  # rare: one search decides whether any needs cleaning
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
    return (f'{{"action":{_quote(action)},"actor":{_quote(actor)},'
            f'"decision":{"null" if decision is None else _quote(decision)},'
            f'"outcome":{"null" if outcome is None else _quote(outcome)},'
            f'"payload_sha256":{"null" if payload_sha256 is None else _quote(payload_sha256)},'
            f'"resource":{_quote(resource)},"seq":{int(seq)},"time":{_quote(time)}}}').encode()


_quote = encode_basestring


StoredRow = tuple  # (seq, time, actor, action, resource, decision, outcome, payload_sha256, leaf_hash hex)


def checked_leaf_hashes(rows: Iterable[StoredRow], start: int, into: list[bytes]) -> tuple[str, int] | None:
    """Rebuild the leaf hash of each stored row, expected at positions `start`, `start + 1`, ...,
    check it against the stored one and add it to `into`; stop at the first row that is out of
    place or changed and return what is wrong with it, naming it. The hot loop of every
    verification (the CLI's, the server's, the database check)."""
    add, expected = into.append, start
    for seq, time, actor, action, resource, decision, outcome, payload, stored in rows:
        if seq != expected:
            return f"record {expected} is missing", expected
        computed = sha256(b"\x00" + canonical_leaf(seq, time, actor, action, resource, decision, outcome,
                                                   payload)).digest()  # leaf_hash, inlined
        if computed.hex() != stored:
            return f"record {seq} does not match its leaf hash: its contents or its hash were changed", seq
        add(computed)
        expected += 1
    return None
