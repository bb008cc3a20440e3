"""Signed notes and checkpoints, in the C2SP formats (signed-note, tlog-checkpoint) with Ed25519
keys, so any standard transparency-log tool can check Corral's checkpoints. Pure: keys come in,
text goes out.

A checkpoint is three lines (origin, tree size, base64 root hash); a signed note is the text, a
blank line, and one `— <key name> <base64(key id || signature)>` line per signature. A key's id
is the first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key), 0x01 meaning Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat, NoEncryption

ED25519 = b"\x01"
_NAME = re.compile(r"^[^\s+]+$")
_SIGNATURE_LINE = re.compile(r"^\u2014 (\S+) (\S+)$")
MAX_SIGNATURES = 100


class NoteError(ValueError):
    """A note, key or checkpoint that is malformed or does not verify."""


def key_id(name: str, public_key: bytes) -> bytes:
    return sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise NoteError(f"a key name must be non-empty, without spaces or '+': {name!r}")
    return name


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def __str__(self) -> str:  # the vkey format: name+hexid+base64(0x01 || key)
        return f"{self.name}+{self.id.hex()}+{base64.b64encode(ED25519 + self.public_key).decode()}"

    @classmethod
    def parse(cls, text: str) -> "Verifier":
        name, _, rest = text.strip().partition("+")
        id_hex, _, encoded = rest.partition("+")
        try:
            raw = base64.b64decode(encoded, validate=True)
            expected = bytes.fromhex(id_hex)
        except (binascii.Error, ValueError):
            raise NoteError("a verifier key is NAME+HEXID+BASE64KEY") from None
        if not raw.startswith(ED25519) or len(raw) != 33 or len(expected) != 4:
            raise NoteError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
        verifier = cls(_check_name(name), raw[1:])
        if verifier.id != expected:
            raise NoteError("the verifier key's id does not match its name and key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> "Signer":
        return cls(_check_name(name), Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> "Signer":
        """`PRIVATE+KEY+name+hexid+base64(0x01 || seed)`, the x/mod/sumdb/note signer format."""
        parts = text.strip().split("+", 4)  # base64 has '+' in it too
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signing key is PRIVATE+KEY+NAME+HEXID+BASE64KEY")
        try:
            raw = base64.b64decode(parts[4], validate=True)
            expected = bytes.fromhex(parts[3])
        except (binascii.Error, ValueError):
            raise NoteError("a signing key is PRIVATE+KEY+NAME+HEXID+BASE64KEY") from None
        if not raw.startswith(ED25519) or len(raw) != 33:
            raise NoteError("only Ed25519 signing keys (type 0x01, 32-byte seed) are supported")
        signer = cls(_check_name(parts[2]), Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier.id != expected:
            raise NoteError("the signing key's id does not match its name and key")
        return signer

    def __str__(self) -> str:
        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+{base64.b64encode(ED25519 + seed).decode()}"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, text: str) -> str:
        """The signed note: `text` (which must end in a newline) with this key's signature."""
        message = _check_text(text)
        signature = self.private_key.sign(message)
        line = base64.b64encode(self.verifier.id + signature).decode()
        return f"{text}\n\u2014 {self.name} {line}\n"


def _check_text(text: str) -> bytes:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    if any(ord(char) < 0x20 and char != "\n" for char in text):
        raise NoteError("a note's text has no control characters but newlines")
    return text.encode()


def open_note(signed: str, verifiers: list[Verifier]) -> str:
    """The text of a signed note, if at least one known key signed it; every signature by a
    known key must verify. Raise NoteError otherwise."""
    text, separator, block = signed.rpartition("\n\n")
    if not separator:
        raise NoteError("a signed note is the text, a blank line, and signature lines")
    text += "\n"
    message = _check_text(text)
    lines = block.split("\n")
    if lines[-1] != "":
        raise NoteError("a signed note ends with a newline")
    if len(lines) - 1 > MAX_SIGNATURES:
        raise NoteError(f"a signed note has at most {MAX_SIGNATURES} signatures")
    known = {(v.name, v.id): v for v in verifiers}
    verified = 0
    for line in lines[:-1]:
        match = _SIGNATURE_LINE.match(line)
        if match is None:
            raise NoteError(f"not a signature line: {line[:80]!r}")
        try:
            raw = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise NoteError("a signature is not base64") from None
        verifier = known.get((match.group(1), raw[:4]))
        if verifier is None:
            continue  # someone else's signature (a witness's): not ours to judge
        if not verifier.verify(message, raw[4:]):
            raise NoteError(f"the signature of {verifier.name} does not verify")
        verified += 1
    if not verified:
        raise NoteError("no signature by a known key")
    return text


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> "Checkpoint":
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is an origin, a tree size and a root hash, one per line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not origin or not re.fullmatch(r"0|[1-9][0-9]{0,19}", size):
            raise NoteError("a checkpoint's second line is the tree size, a decimal number")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise NoteError("a checkpoint's third line is the base64 root hash") from None
        if len(digest) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        return cls(origin, int(size), digest)
