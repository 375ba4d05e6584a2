"""IPSW files: a zip whose ``BuildManifest.plist`` names the root file system image.

The image member is read where it lies: a stored member (Apple's IPSWs store
their disk images) is a :class:`RangeFile` over the zip's bytes, never inflated
to a copy; a deflated member (a zip re-made by hand) is read through
:mod:`zipfile`'s stream, which works but is slow for random access (a backward
seek decompresses from the start again).
"""

from __future__ import annotations

import plistlib
import struct
import zipfile
from dataclasses import dataclass, field

from ..errors import FirmwareError
from .rangefile import RangeFile, ReadOnlyFile, StreamFile

MANIFEST = "BuildManifest.plist"
MAX_MANIFEST = 64 << 20


@dataclass
class Ipsw:
    image: ReadOnlyFile  # the root file system image (a UDIF .dmg, usually)
    member: str
    product: dict = field(default_factory=dict)  # ProductVersion, ProductBuildVersion, SupportedProductTypes


def _zip(fh: ReadOnlyFile) -> zipfile.ZipFile:
    fh.seek(0)
    try:
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise FirmwareError(f"{fh.name}: not a readable zip/IPSW ({exc}): truncated or corrupt?") from None


def read_manifest(zf: zipfile.ZipFile, name: str) -> dict:
    try:
        info = zf.getinfo(MANIFEST)
    except KeyError:
        raise FirmwareError(f"{name}: a zip without {MANIFEST}: not an IPSW (unzip it and pass the disk image)") \
            from None
    if info.file_size > MAX_MANIFEST:
        raise FirmwareError(f"{name}: {MANIFEST} declares {info.file_size:,} bytes (limit {MAX_MANIFEST >> 20} MiB)")
    try:
        with zf.open(info) as member:
            data = member.read(MAX_MANIFEST + 1)
        manifest = plistlib.loads(data)
        if not isinstance(manifest, dict):
            raise TypeError("not a dictionary")
        return manifest
    except FirmwareError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/plistlib raise many types on damaged input
        raise FirmwareError(f"{name}: unreadable {MANIFEST} ({type(exc).__name__}: {exc})") from None


def root_image_paths(manifest: dict, name: str) -> list[str]:
    """``BuildIdentities[*].Manifest.OS.Info.Path``: the root file system image(s), in manifest order."""
    paths: list[str] = []
    identities = manifest.get("BuildIdentities")
    for identity in identities if isinstance(identities, list) else []:
        try:
            path = identity["Manifest"]["OS"]["Info"]["Path"]
        except (KeyError, TypeError):
            continue
        if isinstance(path, str) and path not in paths:
            paths.append(path)
    if not paths:
        raise FirmwareError(f"{name}: {MANIFEST} names no root file system image (BuildIdentities[].Manifest.OS"
                            ".Info.Path)")
    return paths


def _member_offset(fh: ReadOnlyFile, info: zipfile.ZipInfo, name: str) -> int:
    """Where a member's data starts: after its local header (whose name and extra lengths may differ
    from the central directory's)."""
    fh.seek(info.header_offset)
    header = fh.read(30)
    if header[:4] != b"PK\x03\x04":
        raise FirmwareError(f"{name}: member {info.filename}: no local header at offset {info.header_offset:,}: "
                            "corrupt zip")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    return info.header_offset + 30 + name_len + extra_len


def open_ipsw(fh: ReadOnlyFile) -> Ipsw:
    name = fh.name
    zf = _zip(fh)
    manifest = read_manifest(zf, name)
    paths = root_image_paths(manifest, name)
    path = paths[0]
    try:
        info = zf.getinfo(path)
    except KeyError:
        raise FirmwareError(f"{name}: {MANIFEST} names {path}, which the zip does not hold: an incomplete IPSW") \
            from None
    label = f"{name}!{path}"
    if info.flag_bits & 0x1:
        raise FirmwareError(f"{label}: an encrypted zip member")
    product = {k: manifest.get(k) for k in ("ProductVersion", "ProductBuildVersion", "SupportedProductTypes")
               if manifest.get(k) is not None}
    if info.compress_type == zipfile.ZIP_STORED:
        image = RangeFile(fh, _member_offset(fh, info, name), info.file_size, label)
    else:
        image = StreamFile(lambda: zf.open(info), info.file_size, label)
    return Ipsw(image=image, member=path, product=product)
