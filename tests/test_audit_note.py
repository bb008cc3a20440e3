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


@pytest.mark.skipif(not VECTORS.exists(), reason="no signed-note vectors collected")
def test_published_signed_note_vectors():
    vectors = json.loads(VECTORS.read_text())
    for case in vectors.get("cases", [vectors]):
        verifier = Verifier.parse(case["verifier_key"])
        assert open_note(case["signed_note"], [verifier]) == case["text"]
        if case.get("signer_key"):
            signer = Signer.parse(case["signer_key"])
            assert signer.verifier == verifier
            assert signer.sign(case["text"]) == case["signed_note"]  # Ed25519 is deterministic
