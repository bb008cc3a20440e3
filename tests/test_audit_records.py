"""The canonical encoding of a record is the documented JSON: every field, keys sorted, no
spaces, UTF-8, characters as themselves. Checked against the json module for any text."""

import json

import pytest
from hypothesis import given, strategies as st

from corral.audit.records import AuditRecord

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(texts, texts, texts, st.one_of(st.none(), texts), st.one_of(st.none(), texts),
       st.integers(min_value=0, max_value=2**62))
def test_the_leaf_is_sorted_compact_json(actor, action, resource, decision, outcome, seq):
    record = AuditRecord(actor=actor, action=action, resource=resource, decision=decision, outcome=outcome, seq=seq)
    fields = {"seq": record.seq, "time": record.time, "actor": record.actor, "action": record.action,
              "resource": record.resource, "decision": record.decision, "outcome": record.outcome,
              "payload_sha256": None}
    expected = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert record.leaf() == expected


def test_a_known_record_encodes_as_documented():
    record = AuditRecord(actor="alice@example.com", action="policy.activate", resource="policy:v2", decision="allow",
                         outcome="ok", seq=3, time="2026-11-26T12:00:00.000000Z")
    assert record.leaf() == (b'{"action":"policy.activate","actor":"alice@example.com","decision":"allow",'
                             b'"outcome":"ok","payload_sha256":null,"resource":"policy:v2","seq":3,'
                             b'"time":"2026-11-26T12:00:00.000000Z"}')


@pytest.mark.parametrize("text, stored", [("a\x00b", "a\ufffdb"), ("\ud800x", "\ufffdx")])
def test_nul_and_lone_surrogates_are_replaced_before_anything_is_hashed(text, stored):
    assert AuditRecord(actor="a", action="b", resource=text).resource == stored


def test_a_payload_hash_must_be_a_sha256():
    with pytest.raises(ValueError):
        AuditRecord(actor="a", action="b", resource="c", payload_sha256="not-a-hash")
