"""``neuralhash extract``: the shared firmware fixtures give their pinned contents or the named refusal,
and IPSW / UDIF / GPT / APFS images built by tests/apfs_writer.py give the demo model's files and hashes."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, draw_image

pytest.importorskip("dissect.apfs", reason="the 'extract' extra (dissect.apfs) is not installed")

import apfs_writer as W  # noqa: E402
import extract_images as X  # noqa: E402
from neuralhash.cli import main  # noqa: E402
from neuralhash.errors import FirmwareError  # noqa: E402
from neuralhash.firmware import extract, find_neuralhash, find_paths, list_espresso, open_firmware  # noqa: E402
from neuralhash.firmware.rangefile import CountingFile  # noqa: E402
from neuralhash.firmware.udif import UdifDisk  # noqa: E402

FIRMWARE = FIXTURES / "firmware"
UDIF_DIR = FIRMWARE / "udif"
APFS_DIR = FIRMWARE / "apfs"
CODECS = {"zlib": "zlib", "bzip2": "bzip2", "lzfse": "LZFSE", "lzma": "LZMA", "adc": "ADC"}
XATTR_TEXT = b"Compressed data in xattr " + b"a" * 90 + b"\n"
FORK_SHA256 = "5f46d97f947137dcf974fc19914c547acd18fcdb25124c846c1100f8b3fbca5f"
APPLE_FILE = b"\xef\xa3\xbf File System\n"


def fixture(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"firmware fixture {path} is not present")
    return path


@pytest.fixture(scope="module")
def apfs_fixtures(tmp_path_factory) -> Path:
    """The gzipped APFS fixtures, decompressed once."""
    folder = tmp_path_factory.mktemp("apfs")
    for gz in [APFS_DIR / "dfvfs_apfs.raw.gz", *sorted((APFS_DIR / "dissect").glob("*.bin.gz"))]:
        if gz.is_file():
            (folder / gz.name[: -len(".gz")]).write_bytes(gzip.decompress(gz.read_bytes()))
    return folder


def apfs_fixture(folder: Path, name: str) -> Path:
    return fixture(folder / name)


def read(src, path: str, **kw) -> bytes:
    with open_firmware(src) as fw:
        (found,) = find_paths(fw, [path], **kw)
        with found.tree.open(found.entry) as stream:
            return stream.read(found.size)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "neuralhash", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("neuralhash: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[-1]


# -- UDIF fixtures (real hdiutil output) --------------------------------------------------------------


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_udif_fixture_decodes_every_chunk_type(codec):
    with CountingFile(fixture(UDIF_DIR / f"hfsplus_{codec}.dmg")) as fh:
        disk = UdifDisk(fh)
        assert CODECS[codec] in disk.chunk_kinds
        data = disk.read()
    # The pinned layout: a GPT disk whose Apple_HFS partition (sector 40) holds an HFS+ header at 1024.
    assert len(data) == 3836 * 512
    assert data[512:520] == b"EFI PART"
    assert data[40 * 512 + 1024 : 40 * 512 + 1026] == b"H+"


def test_udif_fixtures_decode_to_the_same_volume():
    """Five compressions of one volume: the decoded HFS+ partitions agree apart from a few timestamp and
    identifier bytes (each image was made separately); a decoding error would differ in thousands."""
    disks = {}
    for codec in CODECS:
        with CountingFile(fixture(UDIF_DIR / f"hfsplus_{codec}.dmg")) as fh:
            disks[codec] = UdifDisk(fh).read()[40 * 512 : 3800 * 512]
    base = disks["zlib"]
    for codec, data in disks.items():
        differing = sum(a != b for a, b in zip(data, base))
        assert differing < 1024, f"{codec}: {differing} bytes differ from the zlib image"


@pytest.mark.parametrize("codec", ["zlib", "adc"])
def test_hfs_plus_is_refused_by_name(codec, tmp_path):
    line = one_line_error(run_cli("extract", str(fixture(UDIF_DIR / f"hfsplus_{codec}.dmg")), "-o",
                                  str(tmp_path / "out")))
    assert "HFS+" in line and "older than the model" in line and f"hfsplus_{codec}.dmg" in line
    assert not (tmp_path / "out").exists()


def test_corrupt_udif_chunk_is_named(tmp_path):
    data = bytearray(fixture(UDIF_DIR / "hfsplus_zlib.dmg").read_bytes())
    data[100] ^= 0xFF  # inside the first zlib chunk
    bad = tmp_path / "bad.dmg"
    bad.write_bytes(bytes(data))
    with pytest.raises(FirmwareError, match=r"bad\.dmg: zlib chunk at disk offset 1,024: .*zlib"):
        with CountingFile(bad) as fh:
            UdifDisk(fh)


def test_udif_checksums(tmp_path):
    """A blkx table whose CRC32 disagrees with its decoded data is refused; so is a wrong master checksum."""
    import plistlib
    import struct
    import zlib

    image = bytearray(W.udif(W.wrap_gpt(W.build_apfs({"a": b"x"}))))
    xml_offset, xml_length = struct.unpack_from(">QQ", image, len(image) - 512 + 216)
    plist = plistlib.loads(bytes(image[xml_offset : xml_offset + xml_length]))
    mish = bytearray(plist["resource-fork"]["blkx"][0]["Data"])
    mish[72:76] = b"\0\0\0\1"
    plist["resource-fork"]["blkx"][0]["Data"] = bytes(mish)
    patched = plistlib.dumps(plist)
    assert len(patched) == xml_length
    image[xml_offset : xml_offset + xml_length] = patched
    (tmp_path / "master.dmg").write_bytes(bytes(image))
    with pytest.raises(FirmwareError, match=r"master\.dmg: UDIF master checksum mismatch"):
        UdifDisk(CountingFile(tmp_path / "master.dmg"))
    struct.pack_into(">I", image, len(image) - 512 + 360, zlib.crc32(b"\0\0\0\1"))
    (tmp_path / "blkx.dmg").write_bytes(bytes(image))
    with pytest.raises(FirmwareError, match=r"blkx\.dmg: blkx entry 'whole disk \(Apple_APFS : 1\)' .* checksum"):
        UdifDisk(CountingFile(tmp_path / "blkx.dmg"))


# -- APFS fixtures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["zlib", "lzvn", "lzfse"])
def test_decmpfs_every_method(apfs_fixtures, method):
    image = apfs_fixture(apfs_fixtures, "case_sensitive.bin")
    assert read(image, f"dir/compressed-{method}-xattr") == XATTR_TEXT
    assert hashlib.sha256(read(image, f"dir/compressed-{method}-fork")).hexdigest() == FORK_SHA256


def test_lzfse_goes_through_the_binding():
    """decmpfs LZFSE chunks are decoded by the lzfse binding, not dissect.util's pure-Python decoder (slow, and
    failing on dense streams of 200 KB and more)."""
    import random

    import dissect.apfs.stream
    import lzfse

    from neuralhash.firmware.apfs import _dissect

    _dissect()
    rng = random.Random(1)
    dense = bytes(rng.choice(b"abcdefgh") for _ in range(300_000))
    assert dissect.apfs.stream.lzfse.decompress(lzfse.compress(dense)) == dense
    assert dissect.apfs.stream.lzfse.__class__.__name__ == "SimpleNamespace"


def test_links_and_plain_files(apfs_fixtures):
    image = apfs_fixture(apfs_fixtures, "case_sensitive.bin")
    assert read(image, "dir/file") == APPLE_FILE
    assert read(image, "hardlink") == APPLE_FILE
    assert read(image, "symlink-file") == APPLE_FILE
    assert read(image, "symlink-dir/file") == APPLE_FILE
    assert read(image, "empty") == b""
    with pytest.raises(FirmwareError, match="DIR/FILE not found"):  # a case-sensitive volume
        read(image, "DIR/FILE")


def test_case_insensitive_volume(apfs_fixtures):
    image = apfs_fixture(apfs_fixtures, "dfvfs_apfs.raw")
    text = read(image, "a_directory/another_file")
    assert read(image, "A_DIRECTORY/Another_File") == text
    assert read(image, "a_link") == text  # the symbolic link points at it


@pytest.mark.parametrize("index", [0, 7, 300])
def test_snapshot_by_name(apfs_fixtures, tmp_path, index):
    image = apfs_fixture(apfs_fixtures, "snapshot.bin")
    out = tmp_path / "out"
    assert main(["extract", str(image), "--path", "file", "--snapshot", f"Snapshot {index}", "-o", str(out)]) == 0
    assert (out / "file").read_bytes() == f"Snapshot {index}\n".encode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"][0]["snapshot"] == f"Snapshot {index}"


def test_snapshot_searched_when_live_tree_lacks_the_file(apfs_fixtures):
    image = apfs_fixture(apfs_fixtures, "snapshot.bin")
    with open_firmware(image) as fw:
        (found,) = find_paths(fw, ["file"])
        with found.tree.open(found.entry) as s:
            assert s.read() == f"{found.snapshot}\n".encode()  # the newest snapshot holding it


def test_unknown_snapshot(apfs_fixtures):
    with pytest.raises(FirmwareError, match="no snapshot named 'nope'"):
        read(apfs_fixture(apfs_fixtures, "snapshot.bin"), "file", snapshot="nope")


def test_filevault_volume_is_refused(apfs_fixtures, tmp_path):
    line = one_line_error(run_cli("extract", str(apfs_fixture(apfs_fixtures, "encrypted.bin")), "-o",
                                  str(tmp_path / "out")))
    assert "FileVault-encrypted" in line and "'Encrypted'" in line
    assert not (tmp_path / "out").exists()


def test_damaged_checkpoints_fall_back(apfs_fixtures):
    with open_firmware(apfs_fixture(apfs_fixtures, "corrupt.bin")) as fw:
        (container,) = fw.containers
        assert container.xid == 302 and container.newest_xid == 304
        assert "damaged" in fw.layers[-1]
        tree = next(iter(fw.trees()))
        assert "FEVER" in [name for name, _ in tree.children(tree.root())]


# -- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, head, expected", [
    ("root.dmg.aea", b"AEA1" + bytes(600), "AEA-encrypted"),
    ("root.dmg", b"AEA1" + bytes(600), "AEA-encrypted"),
    ("root.dmg", b"encrcdsa" + bytes(600), "encrypted UDIF"),
    ("notes.bin", b"hello" * 200, "not firmware this tool reads"),
])
def test_refusals(tmp_path, name, head, expected):
    src = tmp_path / name
    src.write_bytes(head)
    line = one_line_error(run_cli("extract", str(src), "-o", str(tmp_path / "out")))
    assert expected in line and name in line
    if "AEA" in expected:
        assert "iOS 18" in line and "14.7" in line
    assert not (tmp_path / "out").exists()


def test_missing_extra_is_one_line(tmp_path):
    code = ("import sys; sys.modules['dissect.apfs'] = None; from neuralhash.cli import main; "
            f"sys.exit(main(['extract', {str(tmp_path / 'c.apfs')!r}, '--list']))")
    W.build_apfs({"a": b"x"}).save(tmp_path / "c.apfs")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    line = one_line_error(proc)
    assert "'.[extract]'" in line


# -- end to end: the demo model inside firmware ----------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cache = tmp_path_factory.mktemp("nh-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEURALHASH_CACHE", str(cache))
    mp.delenv("NEURALHASH_MODEL_PATH", raising=False)
    yield X.demo_files(cache)
    mp.undo()


@pytest.fixture(scope="module")
def images(tmp_path_factory, demo) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("firmware")
    return {
        "ipsw": X.ios_ipsw(folder / "iPhone_15.0_19A346_Restore.ipsw", demo),
        "macos": X.macos_container(demo).save(folder / "mac.apfs"),
        "macos_gpt": W.wrap_gpt(X.macos_container(demo)).save(folder / "mac.img"),
        "old": X.ios_ipsw(folder / "iPhone_14.2_18B92_Restore.ipsw", {"other.bin": b"x"}, version="14.2",
                          build="18B92"),
    }


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pictures")
    return [draw_image(folder / f"p{i}.png", seed=i) for i in range(3)]


def demo_hashes(pictures) -> list[str]:
    from neuralhash.hashing import NeuralHash

    nh = NeuralHash.demo()
    return [nh.hash(p).hex for p in pictures]


def hash_lines(capsys) -> list[str]:
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("kind", ["ipsw", "macos", "macos_gpt"])
def test_extract_gives_the_demo_files(images, demo, tmp_path, kind):
    out = tmp_path / "out"
    result = extract(images[kind], out)
    assert sorted(p.name for p in result.files) == sorted(demo)
    for name, data in demo.items():
        assert (out / name).read_bytes() == data
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {f["name"]: f for f in manifest["files"]}
    for name, data in demo.items():
        assert entries[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert entries[name]["size"] == len(data)
        assert entries[name]["variant"] == ("seed" if name == X.SEED_NAME else "float32")
    if kind == "ipsw":
        assert entries[X.MODEL_NAMES[0]]["path"] == f"{X.VISION}/{X.MODEL_NAMES[0]}"
        assert manifest["os"]["version"] == "15.0" and manifest["os"]["build"] == "19A346"
        assert manifest["layers"][0] == "IPSW (038-00000-000.dmg)" and "LZFSE" in manifest["layers"][1]
    else:
        # Reached through Resources -> Versions/Current/Resources -> A, resolved inside the image.
        assert entries[X.MODEL_NAMES[0]]["path"] == f"{X.VISION}/Resources/{X.MODEL_NAMES[0]}"
        assert manifest["os"]["product"] == "macOS" and manifest["os"]["version"] == "12.6"
        assert entries[X.MODEL_NAMES[0]]["volume"] == "Macintosh HD"


def test_extract_convert_hash_equals_the_demo(images, tmp_path, pictures, capsys):
    out = tmp_path / "nh"
    assert main(["extract", str(images["ipsw"]), "-o", str(out)]) == 0
    assert main(["convert", str(out), "-o", str(tmp_path / "nh.onnx")]) == 0
    capsys.readouterr()
    assert main(["hash", "--model", str(tmp_path / "nh.onnx"), *map(str, pictures)]) == 0
    assert hash_lines(capsys) == demo_hashes(pictures)


@pytest.mark.parametrize("kind", ["ipsw", "macos_gpt"])
def test_hash_and_convert_take_firmware_directly(images, tmp_path, pictures, capsys, kind):
    assert main(["hash", "--model", str(images[kind]), *map(str, pictures)]) == 0
    assert hash_lines(capsys) == demo_hashes(pictures)
    assert main(["convert", str(images[kind]), "-o", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["hash", "--model", str(tmp_path / "m.onnx"), *map(str, pictures)]) == 0
    assert hash_lines(capsys) == demo_hashes(pictures)


def test_firmware_is_extracted_once_into_the_cache(images):
    from neuralhash.demo import cache_root
    from neuralhash.firmware import firmware_model_dir

    first = firmware_model_dir(images["macos"])
    assert first.parent == cache_root() / "firmware"
    mtime = (first / "manifest.json").stat().st_mtime_ns
    assert firmware_model_dir(images["macos"]) == first
    assert (first / "manifest.json").stat().st_mtime_ns == mtime


def test_list_writes_nothing(images, tmp_path, capsys):
    assert main(["extract", str(images["ipsw"]), "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {f["name"] for f in listed["files"]} == {*X.MODEL_NAMES, X.SEED_NAME}
    assert listed["os"]["version"] == "15.0"


def test_espresso_lists_every_model(images, capsys):
    assert main(["extract", str(images["macos"]), "--espresso", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert [m["path"] for m in models] == [f"{X.VISION}/Versions/A/Resources/{X.MODEL_NAMES[0]}"]


def test_path_extracts_any_file(images, tmp_path):
    out = tmp_path / "out"
    assert main(["extract", str(images["ipsw"]), "--path", "/usr/lib/dyld", "-o", str(out)]) == 0
    assert (out / "dyld").read_bytes() == b"not a model"


def test_symlink_never_leaves_the_image(images):
    with open_firmware(images["macos"]) as fw:
        with pytest.raises(FirmwareError, match="not found"):
            find_paths(fw, [f"{X.VISION}/Versions/A/Escape/passwd"])


def test_firmware_older_than_the_model(images, tmp_path):
    line = one_line_error(run_cli("extract", str(images["old"]), "-o", str(tmp_path / "out")))
    assert "firmware older than the model" in line and "14.2" in line and "14.7" in line
    assert not (tmp_path / "out").exists()


def test_existing_different_file_is_kept_without_force(images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / X.SEED_NAME).write_bytes(b"mine")
    with pytest.raises(FirmwareError, match="differs from the file in the firmware"):
        extract(images["macos"], out)
    assert sorted(p.name for p in out.iterdir()) == [X.SEED_NAME]  # nothing else written, no debris
    assert (out / X.SEED_NAME).read_bytes() == b"mine"
    extract(images["macos"], out, force=True)
    assert (out / X.SEED_NAME).read_bytes() == X.seed_file_bytes()
    extract(images["macos"], out)  # identical files: no --force needed


def test_folder_source(images, tmp_path):
    """A folder (an extracted file system): the same finder, symbolic links resolved inside it."""
    root = tmp_path / "root"
    res = root / X.VISION / "Versions" / "A" / "Resources"
    res.mkdir(parents=True)
    extract(images["macos"], tmp_path / "files")
    for name in (*X.MODEL_NAMES, X.SEED_NAME):
        (res / name).write_bytes((tmp_path / "files" / name).read_bytes())
    (root / X.VISION / "Versions" / "Current").symlink_to("A")
    (root / X.VISION / "Resources").symlink_to("Versions/Current/Resources")
    (root / "Users" / "me").mkdir(parents=True)
    (root / "Users" / "me" / "mine.espresso.net").write_bytes(b"{}")
    with open_firmware(root) as fw:
        found = find_neuralhash(fw)
        models = list_espresso(fw)
    assert found[0].path == f"{X.VISION}/Resources/{X.MODEL_NAMES[0]}"
    # A system's root: only System/, usr/ and Library/Apple/ are walked (not the users' folders).
    assert [m["path"] for m in models] == [f"{X.VISION}/Versions/A/Resources/{X.MODEL_NAMES[0]}"]


# -- sizes a file declares, deflated members, commands given firmware they refuse -------------------------


def test_absurd_udif_chunk_is_refused(tmp_path):
    import struct

    image = bytearray(W.udif(W.wrap_gpt(W.build_apfs({"a": b"x"}))))
    xml_offset, xml_length = struct.unpack_from(">QQ", image, len(image) - 512 + 216)
    xml = bytes(image[xml_offset : xml_offset + xml_length])
    import plistlib

    plist = plistlib.loads(xml)
    mish = bytearray(plist["resource-fork"]["blkx"][0]["Data"])
    struct.pack_into(">Q", mish, 16, 1 << 40)  # the entry's sector count
    struct.pack_into(">Q", mish, 204 + 16, 1 << 20)  # the first chunk: 512 MiB of sectors
    struct.pack_into(">Q", image, len(image) - 512 + 492, 1 << 40)  # the disk: 512 TiB
    plist["resource-fork"]["blkx"][0]["Data"] = bytes(mish)
    patched = plistlib.dumps(plist)
    image[xml_offset : xml_offset + xml_length] = patched
    (tmp_path / "huge.dmg").write_bytes(bytes(image))
    with pytest.raises(FirmwareError, match=r"huge\.dmg: chunk at disk offset 0: a LZFSE chunk of 536,870,912 bytes"):
        UdifDisk(CountingFile(tmp_path / "huge.dmg"))


def test_file_larger_than_the_limit_is_not_read(images, tmp_path):
    with pytest.raises(FirmwareError, match=r"declares 7,238,784 bytes, more than the 1,000,000 allowed"):
        extract(images["macos"], tmp_path / "out", max_size=1_000_000)
    assert not (tmp_path / "out").exists()


def test_not_enough_disk_space(images, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(FirmwareError, match=r"the files need [\d,]+ bytes, the disk has 1,000 free"):
        extract(images["macos"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_deflated_ipsw_member(demo, tmp_path):
    """A zip re-made with deflate: read through zipfile's stream (slowly), with the same result."""
    import plistlib
    import zipfile

    dmg = W.udif(W.wrap_gpt(X.ios_container(demo)))
    manifest = {"BuildIdentities": [{"Manifest": {"OS": {"Info": {"Path": "root.dmg"}}}}]}
    with zipfile.ZipFile(tmp_path / "deflated.ipsw", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("BuildManifest.plist", plistlib.dumps(manifest))
        zf.writestr("root.dmg", dmg)
    result = extract(tmp_path / "deflated.ipsw", tmp_path / "out")
    for name, data in demo.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert result.manifest["os"]["version"] == "15.0"


def test_hash_model_with_refused_firmware_is_one_line(tmp_path):
    proc = run_cli("hash", "--model", str(fixture(UDIF_DIR / "hfsplus_lzfse.dmg")), str(tmp_path / "none.png"))
    line = one_line_error(proc)
    assert "HFS+" in line
