"""Fuzzing ``extract`` with damaged images: IPSW zips, UDIF .dmg files and APFS containers with bytes flipped,
zeroed, truncated. Every outcome is either the files (when the damage missed what is read) or one
NeuralHashError line; nothing else escapes, nothing is written on failure, time and memory stay bounded."""

from __future__ import annotations

import random
import resource
import time

import pytest

pytest.importorskip("dissect.apfs", reason="the 'extract' extra (dissect.apfs) is not installed")

import apfs_writer as W  # noqa: E402
import extract_images as X  # noqa: E402
from neuralhash.errors import NeuralHashError  # noqa: E402
from neuralhash.firmware import extract  # noqa: E402

CASES = 60  # per input kind and mutation family; seeded, so a failure names a reproducible case
SMALL_MODEL = {name: bytes([i + 1]) * (3000 + 997 * i) for i, name in enumerate((*X.MODEL_NAMES, X.SEED_NAME))}


def _inputs() -> dict[str, tuple[bytes, list[tuple[int, int]]]]:
    """kind -> (image bytes, the byte ranges worth damaging: metadata, tables, compressed data)."""
    container = X.ios_container(SMALL_MODEL)
    apfs = container.to_bytes()
    apfs_ranges = [(n * W.BLOCK, (n + 1) * W.BLOCK) for n in sorted(container.blocks)]
    dmg = W.udif(W.wrap_gpt(container))
    zip_bytes = _zip_bytes(dmg)
    return {
        "apfs": (apfs, apfs_ranges),
        "udif": (dmg, [(0, len(dmg))]),
        "ipsw": (zip_bytes, [(0, 200), (len(zip_bytes) - 400, len(zip_bytes))]),
    }


def _zip_bytes(dmg: bytes) -> bytes:
    import io
    import plistlib
    import zipfile

    manifest = {"ProductVersion": "15.0", "ProductBuildVersion": "19A346",
                "BuildIdentities": [{"Manifest": {"OS": {"Info": {"Path": "root.dmg"}}}}]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("BuildManifest.plist", plistlib.dumps(manifest), zipfile.ZIP_DEFLATED)
        zf.writestr("root.dmg", dmg, zipfile.ZIP_STORED)
    return buf.getvalue()


def mutate(data: bytes, ranges: list[tuple[int, int]], rng: random.Random, family: str) -> bytes:
    out = bytearray(data)
    if family == "truncate":
        return bytes(out[: rng.randrange(len(out))])
    for _ in range(rng.randint(1, 8)):
        start, end = rng.choice(ranges)
        pos = rng.randrange(start, end)
        if family == "flip":
            out[pos] ^= 1 << rng.randrange(8)
        elif family == "zero":
            n = rng.randint(1, 64)
            out[pos : pos + n] = bytes(len(out[pos : pos + n]))
        else:  # "big": a field set to a huge value (a length, a count, an offset)
            n = rng.choice((2, 4, 8))
            out[pos : pos + n] = b"\xff" * len(out[pos : pos + n])
    return bytes(out)


@pytest.mark.parametrize("kind", ["apfs", "udif", "udif_lazy", "ipsw"])
@pytest.mark.parametrize("family", ["flip", "zero", "big", "truncate"])
def test_damaged_images_give_one_line_errors(tmp_path, monkeypatch, kind, family):
    if kind == "udif_lazy":  # as a real 10 GB image is read: no whole-image checksums, chunks decoded on demand
        from neuralhash.firmware import udif

        monkeypatch.setattr(udif, "CRC_CHECK_LIMIT", 0)
    data, ranges = _inputs()[kind.replace("_lazy", "")]
    rng = random.Random(f"{kind}-{family}")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    outcomes = {"ok": 0, "refused": 0}
    for case in range(CASES):
        src = tmp_path / f"case{case}.img"
        src.write_bytes(mutate(data, ranges, rng, family))
        out = tmp_path / f"out{case}"
        try:
            result = extract(src, out)
        except NeuralHashError as exc:
            message = str(exc)
            assert message and "\n" not in message, f"case {case}: {message!r}"
            assert not out.exists(), f"case {case}: {out} written although extraction failed ({message})"
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{kind}/{family} case {case}: {type(exc).__name__}: {exc}")
        else:
            # The damage missed what is read: then what is written is the real thing or checked (sha256 in the
            # manifest equals the file) - never a file silently different from its manifest.
            import hashlib
            import json

            manifest = json.loads((out / "manifest.json").read_text())
            for entry in manifest["files"]:
                assert hashlib.sha256((out / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
            assert len(result.files) >= 3
            outcomes["ok"] += 1
        src.unlink()
    assert time.monotonic() - started < 120, "fuzz cases too slow"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"
    assert outcomes["refused"] > 0, outcomes  # the mutations do reach what is read
