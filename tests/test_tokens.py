"""Key strings: shape, checksum, hashing. Properties, not examples."""

import string

from hypothesis import given, strategies as st

from corral.identity import tokens

KEY_CHARS = string.ascii_letters + string.digits


def test_a_generated_key_is_ck_then_49_base62_characters():
    key = tokens.generate_key()
    assert key.startswith("ck_") and len(key) == 52
    assert all(char in KEY_CHARS for char in key[3:])
    assert tokens.is_well_formed(key)


def test_generated_keys_differ():
    assert len({tokens.generate_key() for _ in range(1000)}) == 1000


@given(st.text(max_size=80))
def test_arbitrary_text_is_not_a_key(text):
    # A random string passes the 32-bit checksum with odds of about one in four billion.
    assert not tokens.is_well_formed(text) or (text.startswith("ck_") and len(text) == 52)


@given(st.integers(min_value=3, max_value=51), st.sampled_from(KEY_CHARS))
def test_changing_any_character_breaks_the_checksum(position, replacement):
    key = tokens.generate_key()
    if key[position] == replacement:
        return
    tampered = key[:position] + replacement + key[position + 1 :]
    assert not tokens.is_well_formed(tampered)


@given(st.integers(min_value=0, max_value=51))
def test_a_truncated_or_extended_key_is_rejected(cut):
    key = tokens.generate_key()
    assert not tokens.is_well_formed(key[:cut])
    assert not tokens.is_well_formed(key + "a")
    assert not tokens.is_well_formed(" " + key)


def test_the_hash_is_sha256_hex_and_does_not_contain_the_key():
    key = tokens.generate_key()
    digest = tokens.hash_key(key)
    assert len(digest) == 64 and all(char in "0123456789abcdef" for char in digest)
    assert key[3:] not in digest
    assert tokens.hash_key(key) == digest


def test_the_display_prefix_is_short_and_public():
    key = tokens.generate_key()
    assert tokens.display_prefix(key) == key[:11]
