"""tests/apfs_writer.py checked against an independent reader: dissect.apfs reads back every file, folder and
symbolic link it wrote, on case-sensitive and case-insensitive volumes, in one-leaf and many-leaf trees."""

from __future__ import annotations

import io
import zlib

import pytest

pytest.importorskip("dissect.apfs", reason="the 'extract' extra (dissect.apfs) is not installed")

from dissect.apfs import APFS  # noqa: E402

import apfs_writer as W  # noqa: E402


@pytest.mark.parametrize("count", [3, 120])  # one leaf; several leaves under an index node
@pytest.mark.parametrize("case_insensitive", [False, True])
def test_dissect_reads_back_what_the_writer_wrote(count, case_insensitive):
    files = {f"a/b{i % 3}/file-{i}.bin": bytes([i % 251]) * (i * 37 % 9000 + 1) for i in range(count)}
    files["a/Ünïcode name.txt"] = "é".encode() * 10
    links = {"a/link": "b0/file-0.bin", "top": "/a"}
    fs = APFS(io.BytesIO(W.build_apfs(files, links, volume="Vol", case_insensitive=case_insensitive).to_bytes()))
    (volume,) = fs.volumes
    assert volume.name == "Vol" and volume.is_case_insensitive == case_insensitive
    assert not volume.is_encrypted
    for path, data in files.items():
        inode = volume.get(path)
        assert inode.is_file() and inode.size == len(data)
        assert inode.open().read() == data
    assert volume.get("a/link").readlink() == "b0/file-0.bin"
    assert volume.get("top").readlink() == "/a"
    assert sorted(volume.get("a").listdir()) == sorted(["b0", "b1", "b2", "link", "Ünïcode name.txt"])
    if case_insensitive:
        assert volume.get("A/B0/FILE-0.BIN").open().read() == files["a/b0/file-0.bin"]


def test_checksums_and_name_hashes_agree_with_dissect():
    import random

    from dissect.apfs.objects.fs import _hash_filename
    from dissect.apfs.util import fletcher64

    rng = random.Random(0)
    for _ in range(3):
        data = bytes(rng.getrandbits(8) for _ in range(W.BLOCK - 8))
        assert W.fletcher64(data) == fletcher64(data)
    assert W.crc32c(b"123456789") == 0xE3069283  # the standard check value
    for name in ("root", "ROOT", "Vision.framework", "nfd_téstfilè", "µ"):
        for insensitive in (False, True):
            assert W.name_hash(name, insensitive) == _hash_filename(name, insensitive) & 0x3FFFFF


def test_udif_round_trip(tmp_path):
    """The UDIF writer's image decodes (through the reader checked on hdiutil's images) to the disk written."""
    from neuralhash.firmware.rangefile import CountingFile
    from neuralhash.firmware.udif import UdifDisk

    disk = W.wrap_gpt(W.build_apfs({"x": b"y" * 5000}, block_count=1200))
    for codec in ("lzfse", "zlib"):
        path = tmp_path / f"{codec}.dmg"
        path.write_bytes(W.udif(disk, codec=codec))
        with CountingFile(path) as fh:
            assert UdifDisk(fh).read() == disk.to_bytes()
