"""Finding files in firmware and writing them out with a manifest.

:func:`find_neuralhash` looks where Apple puts NeuralHash (iOS's flat
``Vision.framework/``, macOS's ``Vision.framework/Versions/A/Resources``
reached through the framework's symbolic links), in every volume (the System
role first), the live trees first, then snapshots. :func:`extract` writes what
was found: every file is first written to a hidden temporary file beside its
destination and checked (size, sha256); only when all are read are they
renamed into place, with ``manifest.json``. So a failure writes nothing, and an
existing different file is not replaced without ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import __version__
from ..errors import FirmwareError
from ..files.fileio import atomic_write
from .source import OLDER_ADVICE, Firmware, older_than_model, open_firmware, os_version
from .trees import Entry, FolderTree, Tree, resolve

#: NeuralHash's file names and what each is.
NEURALHASH_FILES = {
    "NeuralHashv3b-current.espresso.net": "float32",
    "NeuralHashv3b-current.espresso.shape": "float32",
    "NeuralHashv3b-current.espresso.weights": "float32",
    "NeuralHashv3b_fp16-current.espresso.net": "float16",
    "NeuralHashv3b_fp16-current.espresso.shape": "float16",
    "NeuralHashv3b_fp16-current.espresso.weights": "float16",
    "neuralhash_128x96_seed1.dat": "seed",
}
#: Where Apple puts them: iOS first, then macOS (the framework's symbolic link, then the real folder).
VISION_FOLDERS = (
    "System/Library/Frameworks/Vision.framework",
    "System/Library/Frameworks/Vision.framework/Resources",
    "System/Library/Frameworks/Vision.framework/Versions/A/Resources",
)
#: The folders walked by ``--espresso`` in a folder that is a system's root.
SYSTEM_TOPS = ("System", "usr", "Library/Apple")
#: A file larger than this is not extracted (NeuralHash's weights are about 7 MB).
MAX_FILE_SIZE = 2 << 30
MANIFEST = "manifest.json"
CHUNK = 1 << 20
#: A line of progress every this many bytes of a long read.
PROGRESS_EVERY = 64 << 20

Progress = Callable[[str], None]


@dataclass
class FoundFile:
    name: str
    path: str  # inside the image, from the volume's root
    volume: str | None
    snapshot: str | None
    size: int
    variant: str | None
    tree: Tree = field(repr=False, compare=False)
    entry: Entry = field(repr=False, compare=False)

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "volume": self.volume, "snapshot": self.snapshot,
                "size": self.size, "variant": self.variant}


@dataclass
class ExtractResult:
    files: list[Path]
    manifest: dict
    manifest_path: Path | None


def _searchable(fw: Firmware, snapshot: str | None, encrypted: list[str]) -> Iterator[Tree]:
    """The trees to search, lazily (a volume's 500 snapshots are opened only if the live trees lack a file);
    encrypted volumes are not searched but appended to ``encrypted``."""
    any_tree = False
    for tree in fw.trees(snapshot):
        if isinstance(tree, Tree):
            any_tree = True
            yield tree
        else:
            encrypted.append(tree.label)
    if snapshot is not None and not any_tree and not encrypted:
        raise FirmwareError(f"{fw.source}: no snapshot named {snapshot!r}")


def _found(tree: Tree, path: str, name: str, variant: str | None) -> FoundFile | None:
    entry = resolve(tree, path)
    if entry is None or entry.kind != "file":
        return None
    return FoundFile(name, path, tree.volume, tree.snapshot, tree.size(entry), variant, tree, entry)


def find_neuralhash(fw: Firmware, *, snapshot: str | None = None, progress: Progress | None = None) -> list[FoundFile]:
    """Every NeuralHash file, each name once (the first place found wins), in NEURALHASH_FILES order.

    Raises FirmwareError when neither variant's graph and weights are found: saying the firmware is older
    than the model when its version says so, naming encrypted volumes skipped, and listing what was searched.
    """
    found: dict[str, FoundFile] = {}
    encrypted: list[str] = []
    searched = []
    for tree in _searchable(fw, snapshot, encrypted):
        if len(found) == len(NEURALHASH_FILES) or (tree.snapshot is not None and snapshot is None
                                                   and _has_complete_model(found)):
            break  # snapshots are searched only for a model the live trees lack
        if progress:
            progress(f"searching {tree.label}")
        searched.append(tree.label)
        for folder in VISION_FOLDERS:
            for name, variant in NEURALHASH_FILES.items():
                if name not in found:
                    hit = _found(tree, f"{folder}/{name}", name, variant)
                    if hit is not None:
                        found[name] = hit
    files = [found[n] for n in NEURALHASH_FILES if n in found]
    if not any(f.name.endswith(".net") for f in files) or not any(f.name.endswith(".weights") for f in files):
        raise FirmwareError(_not_found_message(fw, searched, encrypted, "NeuralHash (NeuralHashv3b*.espresso.*)"))
    return files


def _has_complete_model(found: dict[str, FoundFile]) -> bool:
    """Some variant's graph, shape and weights are all found."""
    return any(all(n in found for n, v in NEURALHASH_FILES.items() if v == variant) for variant in ("float32", "float16"))


def _not_found_message(fw: Firmware, searched: list[str], encrypted: list[str], what: str) -> str:
    info = os_version(fw)
    release = f"{info['product']} {info['version']} ({info['build']})" if info else None
    if info and older_than_model(info):
        return (f"{fw.source}: firmware older than the model: {release} has no NeuralHash; {OLDER_ADVICE}")
    if encrypted and not searched:
        return (f"{fw.source}: every volume is FileVault-encrypted ({', '.join(encrypted)}): this tool does not "
                "decrypt; copy the files from the unlocked Mac instead")
    text = f"{fw.source}: {what} not found"
    if release:
        text += f" in {release}"
    if encrypted:
        text += (f"; FileVault-encrypted volume(s) not searched ({', '.join(encrypted)}): this tool does not "
                 "decrypt, copy the files from the unlocked Mac instead")
    text += f"; searched {len(searched)} tree(s)" + (f": {'; '.join(searched[:6])}" if searched else "")
    return text


def find_paths(fw: Firmware, paths: Iterable[str], *, snapshot: str | None = None) -> list[FoundFile]:
    """The files at ``paths`` (from the volume's root), each from the first tree that has it."""
    out = []
    for path in paths:
        clean = path.strip("/")
        encrypted: list[str] = []
        searched = []
        for tree in _searchable(fw, snapshot, encrypted):
            searched.append(tree.label)
            hit = _found(tree, clean, clean.rsplit("/", 1)[-1], None)
            if hit is not None:
                out.append(hit)
                break
        else:
            raise FirmwareError(_not_found_message(fw, searched, encrypted, path))
    return out


def list_espresso(fw: Firmware, *, snapshot: str | None = None, progress: Progress | None = None) -> list[dict]:
    """Every compiled Espresso model (``*.espresso.net``) in the live trees (or one snapshot), walking the
    whole tree (symbolic links are not followed)."""
    trees = [t for t in _searchable(fw, snapshot, []) if snapshot is not None or t.snapshot is None]
    models, seen = [], 0
    for tree in trees:
        if progress:
            progress(f"listing {tree.label}")
        stack = [("", tree.root())]
        if isinstance(tree, FolderTree) and (tree.path / "System" / "Library").is_dir():
            # A system's root (a Mac's /): its user data, other volumes and /dev are no place for Apple's models.
            stack = [(f"{top}/", e) for top in SYSTEM_TOPS if (e := resolve(tree, top)) is not None and e.kind == "dir"]
            if progress:
                progress(f"  a system folder: only {', '.join(t + '/' for t in SYSTEM_TOPS)} are walked")
        while stack:
            prefix, directory = stack.pop()
            for name, entry in tree.children(directory):
                seen += 1
                if progress and seen % 20000 == 0:
                    progress(f"  {seen:,} entries read, {len(models)} models so far")
                path = f"{prefix}{name}"
                if entry.kind == "dir":
                    stack.append((path + "/", entry))
                elif entry.kind == "file" and name.lower().endswith(".espresso.net"):
                    models.append({"path": path, "volume": tree.volume, "snapshot": tree.snapshot})
    models.sort(key=lambda m: (m["volume"] or "", m["path"]))
    return models


def _stage(found: FoundFile, folder: Path, max_size: int, progress: Progress | None = None) -> tuple[Path, str]:
    """The file copied to a hidden temporary name in ``folder``: (temporary path, sha256)."""
    if found.size > max_size:
        raise FirmwareError(f"{found.tree.label}: {found.path} declares {found.size:,} bytes, more than the "
                            f"{max_size:,} allowed")
    tmp = folder / f".{found.name}.{os.getpid()}.extract.tmp"
    digest, written = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out, found.tree.open(found.entry) as stream:
            while written < found.size:
                block = stream.read(min(CHUNK, found.size - written))
                if not block:
                    break
                digest.update(block)
                out.write(block)
                written += len(block)
                if progress and written % PROGRESS_EVERY < len(block) and written < found.size:
                    progress(f"  {written >> 20} of {found.size >> 20} MiB")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FirmwareError(f"{tmp}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if written != found.size:
        tmp.unlink(missing_ok=True)
        raise FirmwareError(f"{found.tree.label}: {found.path}: {written:,} bytes read of {found.size:,}: "
                            "truncated or corrupt")
    return tmp, digest.hexdigest()


def _sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def build_manifest(fw: Firmware, files: list[FoundFile], digests: list[str]) -> dict:
    return {
        "source": fw.source,
        "layers": fw.layers,
        "os": os_version(fw) or None,
        "build_manifest": fw.product or None,
        "files": [{**f.describe(), "sha256": d} for f, d in zip(files, digests)],
        "written_by": f"neuralhash {__version__}",
    }


def write_files(fw: Firmware, files: list[FoundFile], out_dir: str | os.PathLike, *, force: bool = False,
                max_size: int = MAX_FILE_SIZE, progress: Progress | None = None) -> ExtractResult:
    """Write ``files`` and ``manifest.json`` into ``out_dir``: all of them, or (on any error) nothing."""
    folder = Path(out_dir).expanduser()
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise FirmwareError(f"two files to extract are named {dup[0]!r}: extract them one at a time")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FirmwareError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    if not folder.is_dir():
        raise FirmwareError(f"{folder}: not a folder")
    needed = sum(f.size for f in files)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and needed > free:
        if created:
            folder.rmdir()
        raise FirmwareError(f"{folder}: the files need {needed:,} bytes, the disk has {free:,} free")
    staged: list[Path] = []
    try:
        digests = []
        for f in files:
            if progress:
                progress(f"reading {f.path} ({f.size:,} bytes) from {f.tree.label}")
            tmp, digest = _stage(f, folder, max_size, progress)
            staged.append(tmp)
            digests.append(digest)
        manifest = build_manifest(fw, files, digests)
        manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        targets = [folder / f.name for f in files]
        if not force:
            for target, digest in zip(targets, digests):
                if target.exists() and _sha256_of(target) != digest:
                    raise FirmwareError(f"{target}: exists and differs from the file in the firmware: not "
                                        "overwritten (use --force)")
        for tmp, target in zip(staged, targets):
            os.replace(tmp, target)
        staged = []
        atomic_write(folder / MANIFEST, manifest_bytes)
    except BaseException:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        if created:
            try:
                folder.rmdir()  # only when still empty
            except OSError:
                pass
        raise
    return ExtractResult(files=targets, manifest=manifest, manifest_path=folder / MANIFEST)


def preferred_model(files: list[FoundFile]) -> list[FoundFile]:
    """One variant (float32 when present: the published hashes use it) and the seed file."""
    variants = {f.variant for f in files if f.name.endswith(".net")}
    keep = "float32" if "float32" in variants else "float16"
    return [f for f in files if f.variant in (keep, "seed")]


def extract(src: str | os.PathLike, out_dir: str | os.PathLike, *, paths: Iterable[str] | None = None,
            snapshot: str | None = None, force: bool = False, max_size: int = MAX_FILE_SIZE,
            one_variant: bool = False, progress: Progress | None = None) -> ExtractResult:
    """Extract NeuralHash (or the files at ``paths``) from firmware ``src`` into ``out_dir``."""
    with open_firmware(src) as fw:
        if paths:
            files = find_paths(fw, paths, snapshot=snapshot)
        else:
            files = find_neuralhash(fw, snapshot=snapshot, progress=progress)
            if one_variant:
                files = preferred_model(files)
        return write_files(fw, files, out_dir, force=force, max_size=max_size, progress=progress)


def firmware_model_dir(src: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                       progress: Progress | None = None) -> Path:
    """NeuralHash extracted from firmware ``src`` once into the cache (``<cache>/firmware/<key>``).

    ``key``: the sha256 of the firmware's absolute path, size, modification time and this package's version
    (hashing a 10 GB image to name it would cost more than extracting from it).
    """
    from ..demo import cache_root

    path = Path(src).expanduser().resolve()
    try:
        st = path.stat()
    except OSError as exc:
        raise FirmwareError(f"{src}: cannot read ({exc.strerror or exc})") from None
    key = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{__version__}".encode()).hexdigest()[:32]
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = root / "firmware" / key
    if (folder / MANIFEST).is_file():
        return folder
    tmp = folder.with_name(f"{key}.tmp-{os.getpid()}")
    extract(path, tmp, force=True, one_variant=True, progress=progress)
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process filled the cache first: use its copy
        if not (folder / MANIFEST).is_file():
            raise FirmwareError(f"{folder}: cannot write the cache") from None
    return folder


__all__ = ["FoundFile", "ExtractResult", "find_neuralhash", "find_paths", "list_espresso", "extract",
           "firmware_model_dir", "write_files"]
