"""Test inputs for ``neuralhash extract``: the demo model's files laid out as Apple ships them, in images.

iOS: ``System/Library/Frameworks/Vision.framework/NeuralHashv3b-current.espresso.*`` and the seed file,
case-sensitive (normalization-insensitive) volume, wrapped in GPT, then an LZFSE UDIF, then an IPSW zip.
macOS: the same files in ``Vision.framework/Versions/A/Resources``, reached through the framework's
symbolic links ``Resources -> Versions/Current/Resources`` and ``Versions/Current -> A``, on a
case-insensitive volume.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np

import apfs_writer as W

VISION = "System/Library/Frameworks/Vision.framework"
SEED_NAME = "neuralhash_128x96_seed1.dat"
MODEL_NAMES = tuple(f"NeuralHashv3b-current.espresso.{ext}" for ext in ("net", "shape", "weights"))


def seed_file_bytes() -> bytes:
    """A seed file: 128-byte header and Apple's projection (rebuilt by numpy, as the package does)."""
    from neuralhash.hashing.seed import default_seed_matrix

    return bytes(128) + np.ascontiguousarray(default_seed_matrix(), dtype="<f4").tobytes()


def demo_files(cache: Path) -> dict[str, bytes]:
    """name -> bytes of the demo model's Espresso files and a seed file."""
    from neuralhash.demo import demo_model_dir

    folder = demo_model_dir(cache)
    files = {name: (folder / name).read_bytes() for name in MODEL_NAMES}
    files[SEED_NAME] = seed_file_bytes()
    return files


def system_version(product: str, version: str, build: str) -> bytes:
    return plistlib.dumps({"ProductName": product, "ProductVersion": version, "ProductBuildVersion": build})


def ios_container(files: dict[str, bytes], *, version: str = "15.0", build: str = "19A346", **kw) -> W.Image:
    tree = {f"{VISION}/{name}": data for name, data in files.items()}
    tree["System/Library/CoreServices/SystemVersion.plist"] = system_version("iPhone OS", version, build)
    tree["usr/lib/dyld"] = b"not a model"
    return W.build_apfs(tree, volume="System", role=1, case_insensitive=False, **kw)


def macos_container(files: dict[str, bytes], **kw) -> W.Image:
    tree = {f"{VISION}/Versions/A/Resources/{name}": data for name, data in files.items()}
    tree["System/Library/CoreServices/SystemVersion.plist"] = system_version("macOS", "12.6", "21G115")
    links = {f"{VISION}/Resources": "Versions/Current/Resources", f"{VISION}/Versions/Current": "A",
             # An absolute link that would leave the image: resolved inside it (and finds nothing there).
             f"{VISION}/Versions/A/Escape": "/../../../../etc"}
    return W.build_apfs(tree, links, volume="Macintosh HD", role=1, case_insensitive=True, **kw)


def ios_ipsw(path: Path, files: dict[str, bytes], **kw) -> Path:
    dmg = W.udif(W.wrap_gpt(ios_container(files, **{k: v for k, v in kw.items() if k in ("version", "build")})))
    # The largest .dmg is not the root file system: the manifest, not the size, decides.
    decoy = np.random.default_rng(0).bytes(len(dmg) + (1 << 20))
    return W.ipsw(path, dmg, decoy=decoy, **{k: v for k, v in kw.items() if k in ("version", "build")})
