"""Merkle tree hashing and proofs against RFC 6962 (published CT vectors + a literal recursive reference)."""

from __future__ import annotations

import hashlib

import pytest

from sandbox._internal import merkle

# Certificate Transparency / RFC 6962 reference leaves and roots (transparency-dev/merkle testonly data).
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"]]  # fmt: skip
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}  # fmt: skip
CT_CONSISTENCY = {
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}  # fmt: skip


# --- a literal transcription of RFC 6962 section 2.1, for comparison ---------------------------------
def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def tree_of(leaves: list[bytes]) -> merkle.MerkleTree:
    return merkle.MerkleTree([merkle.leaf_hash(x) for x in leaves])


def test_published_roots_for_every_size() -> None:
    rng = merkle.CompactRange()
    assert rng.root().hex() == CT_ROOTS[0]
    for n in range(1, 9):
        rng.append(merkle.leaf_hash(CT_LEAVES[n - 1]))
        assert rng.root().hex() == CT_ROOTS[n]
        assert tree_of(CT_LEAVES[:n]).root().hex() == CT_ROOTS[n]
        assert ref_mth(CT_LEAVES[:n]).hex() == CT_ROOTS[n]


def test_published_inclusion_and_consistency_proofs() -> None:
    tree = tree_of(CT_LEAVES)
    for (index, size), want in CT_INCLUSION.items():
        assert [h.hex() for h in tree.inclusion_proof(index, size)] == want
        proof = [bytes.fromhex(h) for h in want]
        leaf = merkle.leaf_hash(CT_LEAVES[index])
        assert merkle.verify_inclusion(leaf, index, size, proof, bytes.fromhex(CT_ROOTS[size]))
    for (old, new), want in CT_CONSISTENCY.items():
        assert [h.hex() for h in tree.consistency_proof(old, new)] == want
        assert merkle.verify_consistency(
            old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]), [bytes.fromhex(h) for h in want]
        )


@pytest.mark.parametrize("n", range(1, 41))
def test_every_proof_matches_the_rfc_and_verifies(n: int) -> None:
    leaves = [f"leaf-{i}".encode() for i in range(n)]
    tree = tree_of(leaves)
    rng = merkle.CompactRange()
    for x in leaves:
        rng.append(merkle.leaf_hash(x))
    root = ref_mth(leaves)
    assert tree.root() == rng.root() == root
    for m in range(n):
        proof = tree.inclusion_proof(m)
        assert proof == ref_path(m, leaves)
        assert merkle.verify_inclusion(merkle.leaf_hash(leaves[m]), m, n, proof, root)
    for old in range(1, n + 1):
        proof = tree.consistency_proof(old)
        assert proof == (ref_subproof(old, leaves, True) if old < n else [])
        assert merkle.verify_consistency(old, n, ref_mth(leaves[:old]), root, proof)


def test_wrong_proofs_are_rejected() -> None:
    leaves = [bytes([i]) for i in range(13)]
    tree = tree_of(leaves)
    root = tree.root()
    proof = tree.inclusion_proof(6)
    leaf = merkle.leaf_hash(leaves[6])
    assert merkle.verify_inclusion(leaf, 6, 13, proof, root)
    assert not merkle.verify_inclusion(leaf, 7, 13, proof, root)  # wrong index
    assert not merkle.verify_inclusion(leaf, 6, 8, proof, root)  # wrong size
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"x"), 6, 13, proof, root)  # wrong leaf
    assert not merkle.verify_inclusion(leaf, 6, 13, proof[:-1], root)  # short proof
    assert not merkle.verify_inclusion(leaf, 6, 13, [*proof, proof[0]], root)  # long proof
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    assert not merkle.verify_inclusion(leaf, 6, 13, bad, root)
    cproof = tree.consistency_proof(5)
    old_root = tree.root(5)
    assert merkle.verify_consistency(5, 13, old_root, root, cproof)
    assert not merkle.verify_consistency(5, 13, tree.root(6), root, cproof)
    assert not merkle.verify_consistency(6, 13, old_root, root, cproof)
    assert not merkle.verify_consistency(5, 13, old_root, root, cproof[:-1])
    forked = tree_of([*leaves[:4], b"evil", *leaves[5:]])
    assert not merkle.verify_consistency(5, 13, old_root, forked.root(), forked.consistency_proof(5))
