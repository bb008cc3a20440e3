"""The Merkle tree of the ledger, as RFC 6962 / RFC 9162 define it: leaf and node hashes, tree
roots, inclusion and consistency proofs, and their verification. The one place the hashing
scheme lives. Pure: no I/O, nothing of Corral's.

Leaf hash `SHA-256(0x00 || leaf)`, node hash `SHA-256(0x01 || left || right)`, the root of the
empty tree `SHA-256("")`. Leaf indexes are 0-based.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256

EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The tree head over these leaf hashes, level by level (an odd last node moves up as it is,
    which gives RFC 6962's split at the largest power of two)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [sha256(b"\x01" + left + right).digest() for left, right in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _split(size: int) -> int:
    """The largest power of two smaller than `size` (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


HASH_SIZE = 32


def parents(level: bytes) -> bytes:
    """The level above: the node hash of each complete pair of these joined 32-byte hashes."""
    return b"".join([sha256(b"\x01" + level[start:start + 64]).digest()
                     for start in range(0, len(level) - HASH_SIZE, 2 * HASH_SIZE)])


def levels_of(leaves: bytes, height: int) -> list[bytes]:
    """The hashes of the complete subtrees over these joined leaf hashes, levels 0 to `height`.
    For a range of leaves starting at a multiple of 2**height, these are exactly that range's
    part of the whole tree's levels: ranges can be built apart and joined."""
    levels = [leaves]
    for _ in range(height):
        levels.append(parents(levels[-1]))
    return levels


class MerkleTree:
    """A tree that grows by appending leaf hashes and keeps every complete subtree's hash, so any
    root, inclusion proof or consistency proof is O(log n) hashes away. Each level is kept as one
    buffer of joined 32-byte hashes (half the memory of a list of bytes objects)."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        for value in leaf_hashes:
            self.append(value)

    @classmethod
    def from_leaves(cls, leaf_hashes: Sequence[bytes]) -> "MerkleTree":
        """The same tree as appending each leaf, built a level at a time (much faster)."""
        return cls.from_levels([b"".join(leaf_hashes)])

    @classmethod
    def from_levels(cls, levels: Sequence[bytes]) -> "MerkleTree":
        """The tree whose lowest levels (joined hashes, as `levels_of` gives them) are these; the
        levels above are computed."""
        tree = cls()
        tree._levels = [bytearray(level) for level in levels]
        while len(tree._levels[-1]) > HASH_SIZE:
            tree._levels.append(bytearray(parents(tree._levels[-1])))
        return tree

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def _node(self, height: int, index: int) -> bytes:
        return bytes(self._levels[height][index * HASH_SIZE:(index + 1) * HASH_SIZE])

    def append(self, value: bytes) -> int:
        """Add a leaf hash; return its index."""
        if len(value) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(value)}")
        index = self.size
        self._levels[0] += value
        height, position = 0, index
        while position % 2 == 1:  # this node completes a pair: its parent is complete too
            parent = node_hash(self._node(height, position - 1), self._node(height, position))
            height += 1
            position //= 2
            if height == len(self._levels):
                self._levels.append(bytearray())
            self._levels[height] += parent
        return index

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check_size(size)
        return self._range(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(index, D[0:size])."""
        size = self.size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf {index} is not in a tree of size {size}")
        return self._path(index, 0, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(old_size, D[0:new_size])."""
        new_size = self.size if new_size is None else new_size
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
        if old_size == 0 or old_size == new_size:
            return []
        return self._subproof(old_size, 0, new_size, True)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {size}")

    def _range(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a `start` aligned as every range in the RFC's recursions is:
        the complete subtrees that tile the range, folded from the right."""
        nodes = []
        position = start
        while position < end:
            height = (end - position).bit_length() - 1  # the largest block that fits...
            if position:
                height = min(height, (position & -position).bit_length() - 1)  # ...and is aligned
            nodes.append(self._node(height, position >> height))
            position += 1 << height
        result = nodes[-1]
        for node in reversed(nodes[:-1]):
            result = node_hash(node, result)
        return result

    def _path(self, index: int, start: int, end: int) -> list[bytes]:
        if end - start == 1:
            return []
        middle = start + _split(end - start)
        if index < middle - start:
            return [*self._path(index, start, middle), self._range(middle, end)]
        return [*self._path(index - (middle - start), middle, end), self._range(start, middle)]

    def _subproof(self, size: int, start: int, end: int, complete: bool) -> list[bytes]:
        if size == end - start:
            return [] if complete else [self._range(start, end)]
        middle = start + _split(end - start)
        if size <= middle - start:
            return [*self._subproof(size, start, middle, complete), self._range(middle, end)]
        return [*self._subproof(size - (middle - start), middle, end, False), self._range(start, middle)]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` show leaf hash `leaf` at `index` in the tree `root` of `size`?"""
    if not 0 <= index < size:
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does `proof` show the tree `new_root` of `new_size` extends `old_root`?"""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first = node_hash(node, first)
            second = node_hash(node, second)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            second = node_hash(second, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and first == old_root and second == new_root
