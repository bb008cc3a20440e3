"""The Merkle tree against the RFC's own recursive definitions (written out here from RFC 6962
§2.1), published vectors (tests/vectors/rfc6962.json), and properties: every proof verifies,
and any flipped bit, wrong leaf, wrong index or wrong root fails. (The size is not checked by
the proof itself: a signed checkpoint binds it to the root.)"""

import json
from hashlib import sha256
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from corral.audit.merkle import (EMPTY_ROOT, MerkleTree, leaf_hash, levels_of, node_hash, root_of, verify_consistency,
                                 verify_inclusion)

VECTORS = Path(__file__).parent / "vectors" / "rfc6962.json"


def mth(hashes):  # RFC 6962 §2.1, literally
    if not hashes:
        return sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def path(m, hashes):  # RFC 6962 §2.1.1
    if len(hashes) == 1:
        return []
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    if m < k:
        return path(m, hashes[:k]) + [mth(hashes[k:])]
    return path(m - k, hashes[k:]) + [mth(hashes[:k])]


def subproof(m, hashes, complete):  # RFC 6962 §2.1.2
    if m == len(hashes):
        return [] if complete else [mth(hashes)]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    if m <= k:
        return subproof(m, hashes[:k], complete) + [mth(hashes[k:])]
    return subproof(m - k, hashes[k:], False) + [mth(hashes[:k])]


def leaves(n):
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_hashes_are_domain_separated():
    assert leaf_hash(b"") == sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=300))
def test_roots_match_the_rfc_definition(n):
    hashes = leaves(n)
    tree = MerkleTree(hashes)
    assert tree.root() == root_of(hashes) == mth(hashes)
    for size in {0, 1, n // 2, n}:
        if size <= n:
            assert tree.root(size) == mth(hashes[:size])


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=200).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n)).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.integers(min_value=0, max_value=t[1] - 1)))))
def test_inclusion_proofs_match_the_rfc_and_verify(sizes):
    n, size, index = sizes
    hashes = leaves(n)
    tree = MerkleTree(hashes)
    proof = tree.inclusion_proof(index, size)
    assert proof == path(index, hashes[:size])
    root = tree.root(size)
    assert verify_inclusion(hashes[index], index, size, proof, root)
    if size > 1:
        assert not verify_inclusion(hashes[index], (index + 1) % size, size, proof, root)
    for position in range(len(proof)):
        for bit in (0, 255):
            broken = list(proof)
            flipped = bytearray(broken[position])
            flipped[bit // 8] ^= 1 << (bit % 8)
            broken[position] = bytes(flipped)
            assert not verify_inclusion(hashes[index], index, size, broken, root)
    assert not verify_inclusion(leaf_hash(b"other"), index, size, proof, root)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=200).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n)).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.integers(min_value=1, max_value=t[1]), st.just(t[1])))))
def test_consistency_proofs_match_the_rfc_and_verify(sizes):
    n, old, new = sizes
    hashes = leaves(n)
    tree = MerkleTree(hashes)
    proof = tree.consistency_proof(old, new)
    assert proof == ([] if old == new else subproof(old, hashes[:new], True))
    old_root, new_root = tree.root(old), tree.root(new)
    assert verify_consistency(old, new, old_root, new_root, proof)
    if old < new:
        assert not verify_consistency(old, new, old_root, leaf_hash(b"x"), proof)
        assert not verify_consistency(old, new, leaf_hash(b"x"), new_root, proof)
        for position in range(len(proof)):
            broken = list(proof)
            broken[position] = bytes([broken[position][0] ^ 0x80]) + broken[position][1:]
            assert not verify_consistency(old, new, old_root, new_root, broken)


def test_growing_a_tree_one_leaf_at_a_time_keeps_every_old_root_provable():
    tree = MerkleTree()
    roots = [tree.root()]
    for value in leaves(70):
        tree.append(value)
        roots.append(tree.root())
    for old in range(0, 71, 7):
        assert verify_consistency(old, 70, roots[old], roots[70], tree.consistency_proof(old, 70))


def test_bad_arguments_are_refused():
    tree = MerkleTree(leaves(5))
    with pytest.raises(ValueError):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        tree.root(6)
    with pytest.raises(ValueError):
        tree.consistency_proof(4, 3)
    assert not verify_inclusion(leaves(1)[0], 0, 0, [], EMPTY_ROOT)
    assert verify_consistency(0, 5, EMPTY_ROOT, tree.root(), [])


def test_published_vectors():
    vectors = json.loads(VECTORS.read_text())
    hashes = [leaf_hash(bytes.fromhex(leaf)) for leaf in vectors["leaves"]]
    tree = MerkleTree(hashes)
    for case in vectors["roots"]:
        assert tree.root(case["tree_size"]).hex() == case["root"]
    for case in vectors["inclusion_proofs"]:
        proof = [bytes.fromhex(h) for h in case["proof"]]
        index, size = case["leaf_index"], case["tree_size"]
        assert tree.inclusion_proof(index, size) == proof
        assert verify_inclusion(hashes[index], index, size, proof, tree.root(size))
    for case in vectors["consistency_proofs"]:
        proof = [bytes.fromhex(h) for h in case["proof"]]
        old, new = case["size1"], case["size2"]
        assert tree.consistency_proof(old, new) == proof
        assert verify_consistency(old, new, tree.root(old), tree.root(new), proof)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=300))
def test_building_a_tree_at_once_equals_appending_leaf_by_leaf(n):
    hashes = leaves(n)
    at_once, appended = MerkleTree.from_leaves(hashes), MerkleTree(hashes)
    assert at_once.root() == appended.root()
    for size in range(0, n + 1, max(1, n // 7)):
        assert at_once.root(size) == appended.root(size)
        if size:
            assert at_once.inclusion_proof(size - 1, size) == appended.inclusion_proof(size - 1, size)
            assert at_once.consistency_proof(size // 2, size) == appended.consistency_proof(size // 2, size)
    at_once.append(leaf_hash(b"more"))
    appended.append(leaf_hash(b"more"))
    assert at_once.root() == appended.root()


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=5), st.data())
def test_a_tree_joined_from_ranges_built_apart_equals_the_whole(n, height, data):
    """How verification splits work between processes: ranges starting at multiples of
    2**height, each built up to `height` on its own, joined level by level."""
    hashes = leaves(n)
    step = 1 << height
    cuts = sorted(set(data.draw(st.lists(st.integers(min_value=0, max_value=n // step), max_size=4))))
    bounds = sorted({0, n, *(cut * step for cut in cuts)})
    parts = [levels_of(b"".join(hashes[start:end]), height) for start, end in zip(bounds, bounds[1:])] or \
        [levels_of(b"", height)]
    joined = MerkleTree.from_levels([b"".join(part[level] for part in parts) for level in range(height + 1)])
    assert joined.size == n and joined.root() == root_of(hashes) == mth(hashes)
    if n:
        assert joined.inclusion_proof(n - 1) == MerkleTree(hashes).inclusion_proof(n - 1)
