"""Minimal writers of Apple disk images for the tests: APFS containers, GPT disks, UDIF .dmg, IPSW zips.

Nothing on Linux writes files into APFS, so the end-to-end tests build their
own images: one container, one volume, a file-system B-tree of inode, directory
(hashed names), symbolic-link xattr and file-extent records, object maps and a
checkpoint, every object with its Fletcher-64 checksum. Written from Apple's
File System Reference; checked by reading back with dissect.apfs (an
independent reader) in tests/test_extract_writer.py.

Images can be sparse: :class:`Image` holds only the blocks written, so a 2 GB
container costs a few kilobytes until it is saved (``save`` makes a sparse file).
"""

from __future__ import annotations

import plistlib
import stat
import struct
import unicodedata
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import lzfse

BLOCK = 4096
XID = 1
# Object types and storage flags (obj_phys.o_type).
NX_SUPERBLOCK, BTREE, BTREE_NODE, OMAP, CHECKPOINT_MAP, FS, FSTREE, SNAPMETATREE = 0x1, 0x2, 0x3, 0xB, 0xC, 0xD, 0xE, 0x10
PHYSICAL, EPHEMERAL = 0x40000000, 0x80000000
# File-system record types (top 4 bits of a key's obj_id_and_type).
INODE, XATTR, FILE_EXTENT, DIR_REC = 3, 4, 8, 9
ROOT_INO, FIRST_INO = 2, 16
VOLUME_OID, FS_ROOT_OID = 1026, 1028
CASE_INSENSITIVE, NORMALIZATION_INSENSITIVE = 0x1, 0x8


def fletcher64(data: bytes) -> int:
    words = struct.unpack(f"<{len(data) // 4}I", data)
    sum1 = sum2 = 0
    for w in words:
        sum1 = (sum1 + w) % 0xFFFFFFFF
        sum2 = (sum2 + sum1) % 0xFFFFFFFF
    low = 0xFFFFFFFF - ((sum1 + sum2) % 0xFFFFFFFF)
    high = 0xFFFFFFFF - ((sum1 + low) % 0xFFFFFFFF)
    return (high << 32) | low


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def name_hash(name: str, case_insensitive: bool) -> int:
    """APFS's directory-entry hash: crc32c of the NFD (case-folded) name as UTF-32, complemented, 22 bits."""
    text = unicodedata.normalize("NFD", name)
    if case_insensitive:
        text = text.casefold()
    return (crc32c(text.encode("utf-32-le")) ^ 0xFFFFFFFF) & 0x3FFFFF


def obj(block: bytearray | bytes, oid: int, otype: int, subtype: int = 0, xid: int = XID) -> bytes:
    """A block with its object header filled in and checksummed."""
    b = bytearray(block.ljust(BLOCK, b"\0"))
    struct.pack_into("<QQII", b, 8, oid, xid, otype, subtype)
    struct.pack_into("<Q", b, 0, fletcher64(bytes(b[8:])))
    return bytes(b)


def btree_node(records: list[tuple[bytes, bytes]], *, oid: int, otype: int, subtype: int, root: bool, leaf: bool,
               level: int = 0, fixed: tuple[int, int] | None = None, tree_flags: int = 0, key_count: int = 0,
               node_count: int = 1, longest: tuple[int, int] = (0, 0)) -> bytes:
    """One B-tree node: table of contents, keys from the front, values from the back (before btree_info)."""
    b = bytearray(BLOCK)
    n = len(records)
    toc_len = n * (4 if fixed else 8)
    key_start = 56 + toc_len
    value_end = BLOCK - (40 if root else 0)
    koff, voff = 0, 0
    for i, (k, v) in enumerate(records):
        b[key_start + koff : key_start + koff + len(k)] = k
        voff += len(v)
        b[value_end - voff : value_end - voff + len(v)] = v
        if fixed:
            struct.pack_into("<HH", b, 56 + 4 * i, koff, voff)
        else:
            struct.pack_into("<HHHH", b, 56 + 8 * i, koff, len(k), voff, len(v))
        koff += len(k)
    free = value_end - voff - (key_start + koff)
    assert free >= 0, "records do not fit one node"
    flags = (1 if root else 0) | (2 if leaf else 0) | (4 if fixed else 0)
    struct.pack_into("<HHIHHHHHHHH", b, 32, flags, level, n, 0, toc_len, koff, free, 0xFFFF, 0, 0xFFFF, 0)
    if root:
        ks, vs = fixed or (0, 0)
        struct.pack_into("<IIIIIIQQ", b, BLOCK - 40, tree_flags, BLOCK, ks, vs, longest[0], longest[1], key_count,
                         node_count)
    return obj(b, oid, otype, subtype)


def fs_key(oid: int, kind: int) -> bytes:
    return struct.pack("<Q", oid | (kind << 60))


@dataclass
class Node:
    oid: int
    parent: int
    name: str
    mode: int
    children: dict[str, "Node"] = field(default_factory=dict)
    data: bytes = b""
    target: str = ""


def _xfields(fields: list[tuple[int, int, bytes]]) -> bytes:
    heads, body = b"", b""
    for kind, flags, data in fields:
        heads += struct.pack("<BBH", kind, flags, len(data))
        body += data + b"\0" * (-len(data) % 8)
    return struct.pack("<HH", len(fields), len(body)) + heads + body


class Image:
    """Sparse blocks: {block number: bytes}; ``size`` in bytes."""

    def __init__(self, size: int):
        self.size = size
        self.blocks: dict[int, bytes] = {}

    def to_bytes(self) -> bytes:
        out = bytearray(self.size)
        for n, data in self.blocks.items():
            out[n * BLOCK : n * BLOCK + len(data)] = data
        return bytes(out)

    def save(self, path: Path) -> Path:
        with open(path, "wb") as f:
            for n in sorted(self.blocks):
                f.seek(n * BLOCK)
                f.write(self.blocks[n])
            f.truncate(self.size)
        return path


def build_apfs(files: dict[str, bytes], symlinks: dict[str, str] | None = None, *, volume: str = "System",
               role: int = 1, case_insensitive: bool = False, block_count: int | None = None,
               data_block: int | None = None) -> Image:
    """An APFS container of one volume holding ``files`` (path -> bytes) and ``symlinks`` (path -> target).

    ``block_count``: the container's size in blocks (default: just enough); ``data_block``: where file
    data starts (default: right after the metadata), so a sparse image can hold it far from the start.
    """
    symlinks = symlinks or {}
    next_oid = [FIRST_INO]
    root = Node(ROOT_INO, 1, "root", stat.S_IFDIR | 0o755)

    def directory(parts: list[str]) -> Node:
        node = root
        for part in parts:
            if part not in node.children:
                node.children[part] = Node(next_oid[0], node.oid, part, stat.S_IFDIR | 0o755)
                next_oid[0] += 1
            node = node.children[part]
        return node

    for path, data in sorted(files.items()):
        *dirs, name = path.split("/")
        parent = directory(dirs)
        parent.children[name] = Node(next_oid[0], parent.oid, name, stat.S_IFREG | 0o644, data=data)
        next_oid[0] += 1
    for path, target in sorted(symlinks.items()):
        *dirs, name = path.split("/")
        parent = directory(dirs)
        parent.children[name] = Node(next_oid[0], parent.oid, name, stat.S_IFLNK | 0o755, target=target)
        next_oid[0] += 1

    # As in a real volume: the root folder and the private folder are entries of the parent of all, oid 1.
    top = Node(1, 1, "", stat.S_IFDIR | 0o755, {"root": root})
    private = Node(3, 1, "private-dir", stat.S_IFDIR | 0o755)
    top.children["private-dir"] = private
    nodes, stack = [], [root, private]
    while stack:
        n = stack.pop()
        nodes.append(n)
        stack.extend(n.children.values())
    file_nodes = sorted((n for n in nodes if stat.S_ISREG(n.mode)), key=lambda n: n.oid)

    # Layout: 0 superblock, 1 checkpoint map, 2 superblock copy, 3 checkpoint data, 4-5 container omap,
    # 6 volume superblock, 7-8 volume omap, 9 snapshot metadata tree, 10.. file-system tree leaves (+ root).
    meta_blocks = 10
    records = []
    data_next = None  # assigned after the tree's size is known
    extents: dict[int, tuple[int, int]] = {}

    def inode_record(n: Node) -> tuple[bytes, bytes]:
        nchildren = len(n.children) if stat.S_ISDIR(n.mode) else 1
        val = struct.pack("<QQQQQQQiIIIIIHHQ", n.parent, n.oid, 0, 0, 0, 0, 0, nchildren, 0, 0, 0, 99, 99,
                          n.mode, 0, 0)
        fields = [(4, 0x02, (n.name if n.oid != ROOT_INO else "root").encode() + b"\0")]
        if stat.S_ISREG(n.mode):
            alloced = -(-len(n.data) // BLOCK) * BLOCK
            fields.append((8, 0x20, struct.pack("<QQQQQ", len(n.data), alloced, 0, 0, 0)))
        return fs_key(n.oid, INODE), val + (_xfields(fields) if fields else b"")

    def sort_key(rec):
        (k, _), extra = rec
        (oid_type,) = struct.unpack_from("<Q", k)
        return (oid_type & 0x0FFFFFFFFFFFFFFF, oid_type >> 60, extra)

    pending = []
    for name, child in top.children.items():
        encoded = name.encode() + b"\0"
        h = name_hash(name, case_insensitive)
        key = fs_key(1, DIR_REC) + struct.pack("<I", (h << 10) | len(encoded)) + encoded
        pending.append(((key, struct.pack("<QQH", child.oid, 0, 4)), (h, encoded)))
    for n in nodes:
        pending.append((inode_record(n), ()))
        for name, child in n.children.items():
            encoded = name.encode() + b"\0"
            h = name_hash(name, case_insensitive)
            key = fs_key(n.oid, DIR_REC) + struct.pack("<I", (h << 10) | len(encoded)) + encoded
            dt = 4 if stat.S_ISDIR(child.mode) else 10 if stat.S_ISLNK(child.mode) else 8
            pending.append(((key, struct.pack("<QQH", child.oid, 0, dt)), (h, encoded)))
        if stat.S_ISLNK(n.mode):
            xname = b"com.apple.fs.symlink\0"
            target = n.target.encode() + b"\0"
            key = fs_key(n.oid, XATTR) + struct.pack("<H", len(xname)) + xname
            pending.append(((key, struct.pack("<HH", 0x02 | 0x08, len(target)) + target), (xname,)))

    # File data blocks and their extents.
    tree_blocks_estimate = 8 + len(pending) // 12
    data_next = data_block if data_block is not None else meta_blocks + tree_blocks_estimate
    blocks_of_data: dict[int, bytes] = {}
    for n in file_nodes:
        if not n.data:
            continue
        count = -(-len(n.data) // BLOCK)
        extents[n.oid] = (data_next, count)
        for i in range(count):
            blocks_of_data[data_next + i] = n.data[i * BLOCK : (i + 1) * BLOCK]
        key = fs_key(n.oid, FILE_EXTENT) + struct.pack("<Q", 0)
        pending.append(((key, struct.pack("<QQQ", count * BLOCK, data_next, 0)), (0,)))
        data_next += count

    pending.sort(key=sort_key)
    records = [r for r, _ in pending]
    longest = (max(len(k) for k, _ in records), max(len(v) for _, v in records))

    # Pack leaves greedily (leaving room for the root's btree_info), then one index root if needed.
    leaves, current, used = [], [], 0
    for k, v in records:
        need = 8 + len(k) + len(v)
        if current and used + need > BLOCK - 56 - 40 - 64:
            leaves.append(current)
            current, used = [], 0
        current.append((k, v))
        used += need
    leaves.append(current)

    img = Image((block_count or 0) * BLOCK)
    volume_omap_entries = []  # (virtual oid, block)
    tree_block = meta_blocks
    if len(leaves) == 1:
        img.blocks[tree_block] = btree_node(leaves[0], oid=FS_ROOT_OID, otype=BTREE, subtype=FSTREE, root=True,
                                            leaf=True, key_count=len(records), longest=longest)
        volume_omap_entries.append((FS_ROOT_OID, tree_block))
        tree_block += 1
    else:
        index = []
        for i, leaf in enumerate(leaves):
            leaf_oid = FS_ROOT_OID + 1 + i
            img.blocks[tree_block] = btree_node(leaf, oid=leaf_oid, otype=BTREE_NODE, subtype=FSTREE, root=False,
                                                leaf=True)
            volume_omap_entries.append((leaf_oid, tree_block))
            tree_block += 1
            index.append((leaf[0][0], struct.pack("<Q", leaf_oid)))
        img.blocks[tree_block] = btree_node(index, oid=FS_ROOT_OID, otype=BTREE, subtype=FSTREE, root=True,
                                            leaf=False, level=1, key_count=len(records),
                                            node_count=len(leaves) + 1, longest=longest)
        volume_omap_entries.append((FS_ROOT_OID, tree_block))
        tree_block += 1
    first_data = min(blocks_of_data) if blocks_of_data else tree_block
    assert tree_block <= first_data, "file-system tree overlaps the file data: pass a larger data_block"
    img.blocks.update(blocks_of_data)
    total = max(block_count or 0, data_next, tree_block)
    img.size = total * BLOCK

    def omap_tree(entries: list[tuple[int, int]], at: int) -> bytes:
        recs = [(struct.pack("<QQ", oid, XID), struct.pack("<IIQ", 0, BLOCK, paddr)) for oid, paddr in sorted(entries)]
        return btree_node(recs, oid=at, otype=BTREE | PHYSICAL, subtype=OMAP, root=True, leaf=True, fixed=(16, 16),
                          tree_flags=0x10 | 0x1, key_count=len(recs), longest=(16, 16))

    def omap_object(at: int, tree_at: int) -> bytes:
        b = bytearray(BLOCK)
        struct.pack_into("<IIIIQQQQQ", b, 32, 0, 0, BTREE | PHYSICAL, BTREE | PHYSICAL, tree_at, 0, 0, 0, 0)
        return obj(b, at, OMAP | PHYSICAL)

    img.blocks[4] = omap_object(4, 5)
    img.blocks[5] = omap_tree([(VOLUME_OID, 6)], 5)
    img.blocks[7] = omap_object(7, 8)
    img.blocks[8] = omap_tree(volume_omap_entries, 8)
    img.blocks[9] = btree_node([], oid=9, otype=BTREE | PHYSICAL, subtype=SNAPMETATREE, root=True, leaf=True,
                               tree_flags=0x10)

    vol = bytearray(BLOCK)
    incompat = CASE_INSENSITIVE if case_insensitive else NORMALIZATION_INSENSITIVE
    struct.pack_into("<4sIQQQ", vol, 32, b"APSB", 0, 0, 0, incompat)
    struct.pack_into("<III", vol, 116, BTREE, BTREE | PHYSICAL, BTREE | PHYSICAL)
    struct.pack_into("<QQQQ", vol, 128, 7, FS_ROOT_OID, 0, 9)
    struct.pack_into("<Q", vol, 176, next_oid[0])
    struct.pack_into("<QQQ", vol, 184, len(file_nodes), sum(stat.S_ISDIR(n.mode) for n in nodes),
                     sum(stat.S_ISLNK(n.mode) for n in nodes))
    vol[240:256] = uuid.UUID(int=0x5EED).bytes_le
    struct.pack_into("<Q", vol, 264, 1)  # APFS_FS_UNENCRYPTED
    vol[272:272 + 32] = b"neuralhash tests apfs_writer".ljust(32, b"\0")
    vol[704:704 + 256] = volume.encode().ljust(256, b"\0")
    struct.pack_into("<H", vol, 964, role)
    img.blocks[6] = obj(vol, VOLUME_OID, FS)

    sb = bytearray(BLOCK)
    struct.pack_into("<4sIQQQQ", sb, 32, b"NXSB", BLOCK, total, 0, 0, 0x2)  # NX_INCOMPAT_VERSION2
    sb[72:88] = uuid.UUID(int=0xC0FFEE).bytes_le
    struct.pack_into("<QQIIQQ", sb, 88, VOLUME_OID + 16, XID + 1, 2, 1, 1, 3)
    struct.pack_into("<IIIIII", sb, 128, 0, 0, 0, 2, 0, 1)
    struct.pack_into("<QQQII", sb, 152, 0, 4, 0, 0, 100)
    struct.pack_into("<Q", sb, 184, VOLUME_OID)
    superblock = obj(sb, 1, NX_SUPERBLOCK | EPHEMERAL)
    img.blocks[0] = superblock
    cpm = bytearray(BLOCK)
    struct.pack_into("<II", cpm, 32, 1, 0)  # CHECKPOINT_MAP_LAST, no mappings
    img.blocks[1] = obj(cpm, 1, CHECKPOINT_MAP | PHYSICAL)
    img.blocks[2] = superblock
    return img


APFS_GPT_TYPE = uuid.UUID("7C3457EF-0000-11AA-AA11-00306543ECAC")


def wrap_gpt(container: Image, *, first_lba: int = 40) -> Image:
    """A GPT disk (512-byte sectors) whose one partition, of APFS type, is ``container``."""
    sectors = container.size // 512
    last_lba = first_lba + sectors - 1
    disk_sectors = last_lba + 1 + 33
    entries = bytearray(128 * 128)
    entries[0:16] = APFS_GPT_TYPE.bytes_le
    entries[16:32] = uuid.UUID(int=0xDEAD).bytes_le
    struct.pack_into("<QQQ", entries, 32, first_lba, last_lba, 0)
    entries[56:56 + 16] = "System".encode("utf-16-le").ljust(16, b"\0")
    header = bytearray(92)
    struct.pack_into("<8sIIIIQQQQ16sQIII", header, 0, b"EFI PART", 0x00010000, 92, 0, 0, 1, disk_sectors - 1,
                     34, disk_sectors - 34, uuid.UUID(int=0xBEEF).bytes_le, 2, 128, 128, zlib.crc32(entries))
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    mbr = bytearray(512)
    struct.pack_into("<BBBBBBBBII", mbr, 446, 0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, min(disk_sectors - 1, 0xFFFFFFFF))
    mbr[510:512] = b"\x55\xAA"
    head = bytes(mbr) + bytes(header).ljust(512, b"\0") + bytes(entries)
    disk = Image(disk_sectors * 512)
    # Re-base the container's blocks at the partition's offset (a multiple of 4096 when first_lba is of 8).
    assert (first_lba * 512) % BLOCK == 0
    shift = first_lba * 512 // BLOCK
    disk.blocks = {n + shift: data for n, data in container.blocks.items()}
    prefix = head.ljust(first_lba * 512, b"\0")
    for i in range(0, len(prefix), BLOCK):
        disk.blocks[i // BLOCK] = prefix[i : i + BLOCK]
    return disk


def udif(disk: Image, *, chunk_sectors: int = 2048, codec: str = "lzfse") -> bytes:
    """A UDIF image of ``disk``: LZFSE (or zlib) chunks, zero-fill for empty runs, one blkx entry."""
    sectors = disk.size // 512
    data_fork = bytearray()
    chunks = []
    decoded_crc = 0
    chunk_bytes = chunk_sectors * 512
    blocks_per_chunk = chunk_bytes // BLOCK
    for start in range(0, sectors, chunk_sectors):
        count = min(chunk_sectors, sectors - start)
        first_block = start * 512 // BLOCK
        present = [n for n in range(first_block, first_block + blocks_per_chunk) if n in disk.blocks]
        if not present:
            chunks.append((0x00000000, start, count, len(data_fork), 0))
            decoded_crc = zlib.crc32(bytes(count * 512), decoded_crc)
            continue
        raw = bytearray(count * 512)
        for n in present:
            at = n * BLOCK - start * 512
            raw[at : at + len(disk.blocks[n])] = disk.blocks[n][: len(raw) - at]
        decoded_crc = zlib.crc32(raw, decoded_crc)
        packed = lzfse.compress(bytes(raw)) if codec == "lzfse" else zlib.compress(bytes(raw))
        kind = 0x80000007 if codec == "lzfse" else 0x80000005
        chunks.append((kind, start, count, len(data_fork), len(packed)))
        data_fork += packed
    chunks.append((0xFFFFFFFF, sectors, 0, len(data_fork), 0))
    mish = bytearray(204)
    struct.pack_into(">4sIQQQII", mish, 0, b"mish", 1, 0, sectors, 0, 0x208, 0)
    struct.pack_into(">III", mish, 64, 2, 32, decoded_crc)
    struct.pack_into(">I", mish, 200, len(chunks))
    for kind, start, count, offset, length in chunks:
        mish += struct.pack(">IIQQQQ", kind, 0, start, count, offset, length)
    plist = plistlib.dumps({"resource-fork": {"blkx": [{"Attributes": "0x0050", "CFName": "whole disk",
                                                        "Data": bytes(mish), "ID": "0",
                                                        "Name": "whole disk (Apple_APFS : 1)"}]}})
    koly = bytearray(512)
    struct.pack_into(">4sIIIQQQQQII", koly, 0, b"koly", 4, 512, 1, 0, 0, len(data_fork), 0, 0, 1, 1)
    struct.pack_into(">III", koly, 80, 2, 32, zlib.crc32(data_fork))
    struct.pack_into(">QQ", koly, 216, len(data_fork), len(plist))
    struct.pack_into(">III", koly, 352, 2, 32, zlib.crc32(struct.pack(">I", decoded_crc)))
    struct.pack_into(">IQ", koly, 488, 1, sectors)
    return bytes(data_fork) + plist + bytes(koly)


def ipsw(path: Path, dmg: bytes, *, version: str = "15.0", build: str = "19A346", product: str = "iPhone14,2",
         member: str = "038-00000-000.dmg", decoy: bytes | None = None) -> Path:
    """An IPSW-shaped zip: BuildManifest.plist naming ``member`` (stored), and a larger decoy .dmg."""
    manifest = {"ProductVersion": version, "ProductBuildVersion": build, "SupportedProductTypes": [product],
                "BuildIdentities": [{"Manifest": {"OS": {"Info": {"Path": member}}}}]}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("BuildManifest.plist"), plistlib.dumps(manifest), zipfile.ZIP_DEFLATED)
        if decoy is not None:
            zf.writestr(zipfile.ZipInfo("038-99999-000.dmg"), decoy, zipfile.ZIP_STORED)
        zf.writestr(zipfile.ZipInfo(member), dmg, zipfile.ZIP_STORED)
    return path
