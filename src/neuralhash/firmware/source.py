"""Opening firmware: what a path is (IPSW, UDIF, GPT disk, APFS container, folder), layer by layer.

Each layer is recognised by its own magic, not by the file's name, and wraps
the one below as a lazy file object, so an IPSW's APFS is read through the zip
and the UDIF image without a temporary copy. Formats this tool cannot read are
refused in one line saying what to do instead.
"""

from __future__ import annotations

import os
import plistlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FirmwareError
from . import gpt, ipsw, udif
from .rangefile import CountingFile, ReadOnlyFile
from .trees import FolderTree, Tree

#: The releases NeuralHash (``NeuralHashv3b``) ships in.
FIRST_RELEASES = {"iOS": (14, 7), "iPadOS": (14, 7), "macOS": (11, 4)}
WORKING_RELEASES = "iOS/iPadOS 14.7 to 17.x or macOS 11.4 to 14.x"
AEA_ADVICE = (f"iOS 18, macOS 15 and later ship their images AEA-encrypted, and the key comes from Apple's "
              f"servers (not fetched by this tool): use an IPSW of {WORKING_RELEASES}, or copy the files from a Mac")
OLDER_ADVICE = f"NeuralHash ships in {WORKING_RELEASES.replace(' to 17.x', '+').replace(' to 14.x', '+')}"
SYSTEM_VERSION = "System/Library/CoreServices/SystemVersion.plist"
ESPRESSO_SUFFIXES = (".espresso.net", ".espresso.shape", ".espresso.weights", ".dat", ".onnx", ".json")


@dataclass
class Firmware:
    """An opened source: the trees to search, in order, and what is known about it."""

    source: str
    layers: list[str] = field(default_factory=list)
    product: dict = field(default_factory=dict)  # from BuildManifest.plist
    containers: list = field(default_factory=list)
    folder: FolderTree | None = None
    file: CountingFile | None = None

    @property
    def bytes_read(self) -> int:
        return self.file.bytes_read if self.file is not None else 0

    @property
    def size(self) -> int:
        return self.file.size if self.file is not None else 0

    def trees(self, snapshot: str | None = None, *, snapshots: bool = True):
        if self.folder is not None:
            if snapshot is not None:
                raise FirmwareError(f"{self.source}: a folder has no snapshots (--snapshot applies to images)")
            yield self.folder
            return
        for container in self.containers:
            yield from container.trees(snapshot, snapshots=snapshots)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def __enter__(self) -> "Firmware":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_firmware(src: str | os.PathLike) -> Firmware:
    path = Path(src).expanduser()
    if path.is_dir():
        return Firmware(source=str(path), layers=["folder"], folder=FolderTree(path))
    if not path.exists():
        raise FirmwareError(f"{path}: no such file or folder")
    if path.name.lower().endswith(".aea"):
        raise FirmwareError(f"{path}: an AEA-encrypted image (.aea); {AEA_ADVICE}")
    fh = CountingFile(path)
    fw = Firmware(source=str(path), file=fh)
    try:
        _open_layers(fh, fw)
    except BaseException:
        fh.close()
        raise
    return fw


def sniff(path: str | os.PathLike) -> str | None:
    """What a file is, from a few bytes ("ipsw", "udif", "gpt", "apfs", "aea", "encrypted-udif"), or None.

    Cheap (the first 4 KiB and the last 512 bytes): ``convert`` and ``hash --model`` ask it of every file.
    Espresso files are never firmware, whatever bytes their weights happen to hold.
    """
    if os.fspath(path).endswith(ESPRESSO_SUFFIXES):
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(4608)
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 512))
            tail = f.read(512)
    except OSError:
        return None
    return _kind(head, tail)


def _kind(head: bytes, tail: bytes) -> str | None:
    if head[:4] == b"AEA1":
        return "aea"
    if head[:8] == b"encrcdsa" or tail[-8:] == b"cdsaencr":
        return "encrypted-udif"
    if head[:4] == b"PK\x03\x04":
        return "ipsw"
    if tail[:4] == b"koly":
        return "udif"
    if head[512:520] == b"EFI PART" or head[4096:4104] == b"EFI PART":
        return "gpt"
    if head[32:36] == b"NXSB":
        return "apfs"
    if head[1024:1028] in (b"H+\x00\x04", b"HX\x00\x05"):  # signature and version of an HFS+ / HFSX header
        return "hfs"
    return None


def _open_layers(fh: ReadOnlyFile, fw: Firmware) -> None:
    name = fh.name
    fh.seek(0)
    head = fh.read(min(fh.size, 4608))
    fh.seek(max(0, fh.size - 512))
    tail = fh.read(min(fh.size, 512))
    kind = _kind(head, tail)
    if kind == "aea" or name.lower().endswith(".aea"):
        raise FirmwareError(f"{name}: an AEA-encrypted image (AEA1); {AEA_ADVICE}")
    if kind == "encrypted-udif":
        raise FirmwareError(f"{name}: an encrypted UDIF image (encrcdsa); decrypt it on a Mac first "
                            "(hdiutil convert -format UDZO) or use an unencrypted IPSW")
    if kind == "ipsw":
        opened = ipsw.open_ipsw(fh)
        fw.layers.append(f"IPSW ({opened.member})")
        fw.product.update(opened.product)
        return _open_layers(opened.image, fw)
    if kind == "udif":
        disk = udif.UdifDisk(fh)
        fw.layers.append(f"UDIF ({', '.join(sorted(disk.chunk_kinds))} chunks)")
        if any("Apple_HFS" in p.name for p in disk.partitions) and not any("APFS" in p.name for p in disk.partitions):
            raise _hfs(name)
        return _open_layers(disk, fw)
    if kind == "gpt":
        sector = gpt.gpt_sector_size(fh)
        files, parts = gpt.apfs_partitions(fh, sector)
        fw.layers.append(f"GPT ({len(files)} APFS of {len(parts)} partitions)")
        if not files:
            if any(p.type == gpt.HFS_TYPE for p in parts):
                raise _hfs(name)
            raise FirmwareError(f"{name}: a GPT disk without an APFS partition")
        for part in files:
            _open_layers(part, fw)
        return
    if kind == "apfs":
        from .apfs import Container

        container = Container(fh, name)
        fw.layers.append(container.description)
        fw.containers.append(container)
        return
    if kind == "hfs":
        raise _hfs(name)
    raise FirmwareError(f"{name}: not firmware this tool reads (expected an IPSW, a UDIF .dmg, a GPT disk "
                        "image or an APFS container)")


def _hfs(name: str) -> FirmwareError:
    return FirmwareError(f"{name}: an HFS+ file system: firmware older than the model (Apple's HFS+ images are "
                         f"iOS 10.2 / macOS 10.12 and earlier); {OLDER_ADVICE}")


def os_version(fw: Firmware) -> dict:
    """{"product", "version", "build", "from"} read from the image's SystemVersion.plist, else from the
    IPSW's BuildManifest.plist; {} when neither says."""
    from .trees import resolve

    for tree in fw.trees(snapshots=False):
        if not isinstance(tree, Tree):
            continue
        entry = resolve(tree, SYSTEM_VERSION)
        if entry is None or entry.kind != "file" or tree.size(entry) > (1 << 20):
            continue
        with tree.open(entry) as f:
            data = f.read(1 << 20)
        try:
            plist = plistlib.loads(data)
        except Exception:  # noqa: BLE001 - an unreadable plist: the manifest may still say
            continue
        if isinstance(plist, dict) and plist.get("ProductVersion"):
            return {"product": str(plist.get("ProductName", "")), "version": str(plist["ProductVersion"]),
                    "build": str(plist.get("ProductBuildVersion", "")), "from": f"{tree.label}: {SYSTEM_VERSION}"}
    if fw.product.get("ProductVersion"):
        types_ = fw.product.get("SupportedProductTypes") or []
        is_mac = any(str(t).startswith(("Mac", "VirtualMac")) for t in types_)
        return {"product": "macOS" if is_mac else "iOS", "version": str(fw.product["ProductVersion"]),
                "build": str(fw.product.get("ProductBuildVersion", "")), "from": "BuildManifest.plist"}
    return {}


def older_than_model(info: dict) -> bool:
    product = "macOS" if "mac" in info.get("product", "").lower() else "iOS"
    try:
        version = tuple(int(x) for x in info["version"].split(".")[:2])
    except (KeyError, ValueError):
        return False
    return version < FIRST_RELEASES[product]
