"""Exact in-memory Hamming search over 96-bit NeuralHash hashes.

Hashes
------
A hash is 24 hex digits, bit 0 first and most significant. :func:`pack_hex` turns
hex strings into a ``uint8 [N, 12]`` array (the storage and exchange form; invalid
input raises :class:`~neuralhash.errors.NeuralHashError` naming the index and value),
:func:`unpack_hex` turns it back. :func:`pack_bits` / :func:`unpack_bits` convert from
and to the model's ``[N, 96]`` 0/1 bits. :func:`to_words` / :func:`from_words` convert
to and from the search representation: ``hi uint64[N]`` (bits 0-63, i.e. the first 16
hex digits as a big-endian number) and ``lo uint32[N]`` (bits 64-95), so that a
distance is ``bitwise_count(hi ^ q_hi) + bitwise_count(lo ^ q_lo)`` with 12 bytes
read a hash and no padding.

Search
------
::

    from neuralhash.matching import HashIndex, connected_components, component_groups

    index = HashIndex(packed, ids=rowids)           # or HashIndex.from_hex(hexes, ids=...)
    m = index.query("8e1f...", max_distance=4)      # Matches: .indices, .distances, .ids
    b = index.query_many(queries, 4)                # BatchMatches: flat .query/.index/.distance/.ids
    b.for_query(0); b.split()                       # per-query Matches
    pairs = index.self_join(4)                      # Pairs: .i < .j, .distance
    labels = connected_components(pairs, len(index))
    groups = component_groups(labels)               # near-duplicate groups (>= 2 members)

Every result is exact and sorted: a query's matches nearest first, ties by index;
batch rows by query, distance, index; pairs by ``i`` then ``j``. Indices are int64,
distances uint8. ``max_distance`` is an integer in 0..96.

``query``, ``query_many`` and ``self_join`` take ``method="auto" | "index" |
"brute"``; all three give identical answers (the tests check this on data with
planted near-duplicates), ``auto`` picks the one a rough cost model estimates faster.
:meth:`HashIndex.brute_force` is ``query(..., method="brute")``;
:meth:`HashIndex.distances` returns the distance to every stored hash.

How it works
------------
*Brute force* XORs and popcounts (``np.bitwise_count``) in tiles of 2^18 (query,
hash) cells so that temporaries stay in cache. Up to radius 20 it reads only ``hi``
and gathers ``lo`` for the few hashes whose first 64 bits are already within the
radius; this halves the work of a scan, which is bound by memory bandwidth.

*Multi-index hashing* splits the 96 bits into ``m = ceil(96 / block_bits)`` blocks
of (nearly) equal width, wider ones first. With ``r = m*s + a`` (``0 <= a < m``), a
hash within ``r`` of the query differs by at most ``s`` bits in one of blocks
``0..a`` or by at most ``s - 1`` bits in one of the others (pigeonhole; blocks with
radius -1 are skipped, so at r=4 with 5 blocks each block is one exact lookup). The
tables are flat: ``order`` holds, block after block, hash positions sorted by block
value (4 bytes a hash a block), and one ``offsets`` array maps (block, value) to a
bucket's slice of ``order`` (2^width + 1 entries a block) when the widest block has
at most 4 values a hash, else each block keeps its sorted values for binary search.
A query XORs each planned block's value with every mask of at most that block's
radius bits, looks all the keys up with one gather, verifies every candidate with a
full popcount, and keeps a hash found in several blocks once. ``block_bits``
defaults to ``round(log2 N)`` within 8..24, so a bucket holds a few hashes: 1 and 10
million hashes both get 5 blocks of 19-20 bits (about 20 bytes a hash of tables);
wider blocks (fewer of them) cost more memory in offsets and, at radius >= m, need
block radius 1 lookups; narrower blocks make fuller buckets, i.e. more candidates.
If a block would have to be searched at a radius covering all its values (or with
over 2^20 lookups), ``method="index"`` scans instead (:meth:`HashIndex.indexable`).
Tables are built on first use or by :meth:`HashIndex.build`; ``auto`` counts the
build in its estimate, so one query against a fresh index scans.

*Self-join* uses the same plan: in each block, pairs within one bucket and (for a
block radius s > 0) pairs of buckets whose values differ by a mask of at most s bits,
each unordered pair of buckets once. A pair is kept only by the first block of the
plan that can produce it (checked on the block's bits of the pair's XOR), so no
global de-duplication is needed; candidates are expanded and verified in chunks of
about two million pairs, so memory beyond the result stays bounded.
:func:`connected_components` is a vectorised union-find (min-hooking with
``np.minimum.at`` plus pointer jumping); a component's label is its smallest index.
"""

from .components import component_groups, connected_components
from .index import (
    BatchMatches,
    HashIndex,
    Matches,
    Pairs,
    auto_block_bits,
    block_layout,
    check_radius,
)
from .packing import (
    HASH_BITS,
    HASH_BYTES,
    from_words,
    pack_bits,
    pack_hex,
    to_words,
    unpack_bits,
    unpack_hex,
)

__all__ = [
    "HASH_BITS",
    "HASH_BYTES",
    "BatchMatches",
    "HashIndex",
    "Matches",
    "Pairs",
    "auto_block_bits",
    "block_layout",
    "check_radius",
    "component_groups",
    "connected_components",
    "from_words",
    "pack_bits",
    "pack_hex",
    "to_words",
    "unpack_bits",
    "unpack_hex",
]
