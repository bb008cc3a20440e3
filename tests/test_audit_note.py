"""Signed notes and checkpoints in the C2SP formats: round trips, published vectors
(tests/vectors/signed_note.json, from golang.org/x/mod/sumdb/note), and tampering."""

import json
from pathlib import Path

import pytest

from corral.audit.note import Checkpoint, NoteError, Signer, Verifier, open_note

VECTORS = Path(__file__).parent / "vectors" / "signed_note.json"


def test_a_checkpoint_signs_and_opens():
    signer = Signer.generate("corral.example/audit")
    checkpoint = Checkpoint("corral.example/audit", 42, bytes(range(32)))
    signed = signer.sign(checkpoint.text())
    assert signed.startswith("corral.example/audit\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\n\u2014 ")
    assert Checkpoint.parse(open_note(signed, [signer.verifier])) == checkpoint


def test_keys_round_trip_through_their_text_forms():
    signer = Signer.generate("corral")
    assert Signer.parse(str(signer)).verifier == signer.verifier
    assert Verifier.parse(str(signer.verifier)) == signer.verifier
    assert str(signer.verifier).startswith("corral+")


@pytest.mark.parametrize("tamper", [
    lambda s: s.replace("\n42\n", "\n43\n"),
    lambda s: s.replace("corral\n", "corrak\n"),
    lambda s: s[:-10] + ("A" if s[-10] != "A" else "B") + s[-9:],
])
def test_a_tampered_note_does_not_open(tamper):
    signer = Signer.generate("corral")
    signed = signer.sign(Checkpoint("corral", 42, bytes(32)).text())
    with pytest.raises(NoteError):
        open_note(tamper(signed), [signer.verifier])


def test_a_note_signed_by_another_key_does_not_open():
    signed = Signer.generate("corral").sign("corral\n1\n" + "A" * 43 + "=\n")
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(signed, [Signer.generate("corral").verifier])


@pytest.mark.parametrize("text", ["corral\n1\n", "corral\n-1\nAAAA\n", "corral\n01\n" + "A" * 43 + "=\n",
                                  "corral\n1\nAAAA\n", "\n1\n" + "A" * 43 + "=\n"])
def test_malformed_checkpoints_are_refused(text):
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


VECTOR_SET = json.loads(VECTORS.read_text())
VERIFIERS = {key["name"]: Verifier.parse(key["verifier_key"]) for key in VECTOR_SET["keys"]}


@pytest.mark.parametrize("case", VECTOR_SET["signed_notes"], ids=lambda case: case["id"])
def test_published_signed_notes_open(case):
    assert open_note(case["signed_note"], [VERIFIERS[name] for name in case["signers"]]) == case["text"]
    assert open_note(case["signed_note"], [VERIFIERS[case["signers"][0]]]) == case["text"]  # others' are skipped


def test_signing_reproduces_the_published_note_exactly():
    peter = next(key for key in VECTOR_SET["keys"] if key["name"] == "PeterNeumann")
    signer = Signer.parse(peter["signer_key"])
    assert str(signer.verifier) == peter["verifier_key"]
    case = VECTOR_SET["signed_notes"][0]
    assert signer.sign(case["text"]) == case["signed_note"]


@pytest.mark.parametrize("case", [c for c in VECTOR_SET["negative_notes"]["cases"] if "signed_note" in c
                                  and "SUCCEED" not in c["desc"]], ids=lambda case: case["desc"][:40])
def test_published_bad_notes_do_not_open(case):
    with pytest.raises(NoteError):
        open_note(case["signed_note"], [VERIFIERS["PeterNeumann"]])


@pytest.mark.parametrize("key", VECTOR_SET["bad_verifier_keys"]["keys"], ids=lambda key: key["why"])
def test_published_bad_verifier_keys_are_refused(key):
    with pytest.raises(NoteError):
        Verifier.parse(key["key"])


def test_the_sumdb_checkpoint_parses():
    case = next(c for c in VECTOR_SET["signed_notes"] if c["id"] == "sumdb-checkpoint")
    checkpoint = Checkpoint.parse(open_note(case["signed_note"], [VERIFIERS["sum.golang.org"]]))
    assert checkpoint.origin == "go.sum database tree" and checkpoint.size == 6476701


def test_unknown_and_duplicate_signatures_do_not_spoil_a_note():
    case = next(c for c in VECTOR_SET["negative_notes"]["cases"] if "SUCCEED" in c["desc"])
    text = VECTOR_SET["signed_notes"][0]["text"]
    assert open_note(case["signed_note"], [VERIFIERS["PeterNeumann"]]) == text
