"""Corral API keys as strings: how they are made, recognised, hashed and shown.

A key is `ck_` + 43 base62 characters (32 random bytes) + a 6-character base62 CRC32 of them,
so a typo or a truncated paste is rejected before any database lookup and secret scanners can
recognise a key with few false positives. Pure functions; the plaintext never leaves here except
as the return value of `generate_key`.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

PREFIX = "ck_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
KEY_LENGTH = len(PREFIX) + _BODY_LEN + _CHECK_LEN
DISPLAY_LENGTH = len(PREFIX) + 8


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECK_LEN)


def generate_key() -> str:
    """A new key with 256 bits of randomness."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return PREFIX + body + _checksum(body)


def is_well_formed(candidate: str) -> bool:
    """True if `candidate` has the shape and checksum of a Corral key."""
    if len(candidate) != KEY_LENGTH or not candidate.startswith(PREFIX):
        return False
    rest = candidate[len(PREFIX) :]
    if any(char not in _ALPHABET for char in rest):
        return False
    body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return secrets.compare_digest(_checksum(body), check)


def hash_key(key: str) -> str:
    """The only form of a key that is stored. A key has 256 random bits, so a fast hash is
    enough: there is nothing to brute-force."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def display_prefix(key: str) -> str:
    """The short, non-secret start of a key that lists show (`ck_AbCd1234`)."""
    return key[:DISPLAY_LENGTH]
