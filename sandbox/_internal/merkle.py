"""RFC 6962 (and RFC 9162 section 2.1) Merkle tree hashing, proofs and proof verification.

Why our own: the algorithms are a few dozen lines, the log needs an *incremental* tree (one
:class:`CompactRange` per open log, O(log n) per append) and the auditor needs proofs without a server.
Hashes are raw 32-byte SHA-256 digests; leaf hash = SHA-256(0x00 || leaf), node hash =
SHA-256(0x01 || left || right), the root of the empty tree = SHA-256("").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n >= 2): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


class CompactRange:
    """The right edge of perfect subtrees of a growing tree: enough to append and to compute the root.

    Keeps one hash per set bit of the size, so memory is O(log n) and an append costs O(1) amortized
    node hashes; this is what lets the writer checkpoint at any moment without re-reading the log.
    """

    __slots__ = ("_hashes", "_heights", "size")

    def __init__(self) -> None:
        self.size = 0
        self._hashes: list[bytes] = []
        self._heights: list[int] = []

    def append(self, leaf_digest: bytes) -> None:
        h, height = leaf_digest, 0
        hashes, heights = self._hashes, self._heights
        while heights and heights[-1] == height:
            h = node_hash(hashes.pop(), h)
            heights.pop()
            height += 1
        hashes.append(h)
        heights.append(height)
        self.size += 1

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h


class MerkleTree:
    """An in-memory tree over known leaf hashes, for inclusion and consistency proofs.

    Stores every level of complete pairs (about 2n hashes), so a perfect, aligned subtree is a lookup
    and any proof costs O(log^2 n) hashes instead of rehashing the whole log per proof.
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaf_hashes)]
        while len(self.levels[-1]) >= 2:
            prev = self.levels[-1]
            self.levels.append([node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev) - 1, 2)])

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def _hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end)."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            level = n.bit_length() - 1
            return self.levels[level][start >> level]
        k = _split(n)
        return node_hash(self._hash(start, start + k), self._hash(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        _check_size(size, self.size)
        return self._hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH(m, D[0:size])."""
        size = self.size if size is None else size
        _check_size(size, self.size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is outside a tree of size {size}")
        proof: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start, m = start + k, m - k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF(m, D[0:n]) = SUBPROOF(m, D[0:n], true)."""
        new_size = self.size if new_size is None else new_size
        _check_size(new_size, self.size)
        if not 0 <= old_size <= new_size:
            raise ValueError(f"old size {old_size} must be between 0 and the new size {new_size}")
        if old_size in (0, new_size):
            return []
        proof: list[bytes] = []
        start, end, m, whole = 0, new_size, old_size, True
        while True:
            n = end - start
            if m == n:
                if not whole:
                    proof.append(self._hash(start, end))
                break
            k = _split(n)
            if m <= k:
                proof.append(self._hash(start + k, end))
                end = start + k
            else:
                proof.append(self._hash(start, start + k))
                start, m, whole = start + k, m - k, False
        proof.reverse()
        return proof


def _check_size(size: int, have: int) -> None:
    if not 0 <= size <= have:
        raise ValueError(f"tree size {size} is outside 0..{have}")


def verify_inclusion(leaf_digest: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf_digest
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2 (old_size 0 or equal sizes: trivially consistent with an empty proof)."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
