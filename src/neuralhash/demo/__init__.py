"""The built-in demo: the whole pipeline on a synthetic NeuralHash, no Apple files needed.

It writes the synthetic v3b model as real compressed Espresso files into a
cache folder, reads them back, converts them (with the hash head), verifies
the ONNX model against the reference executor, and hashes the sample images
that ship with the package. The weights are synthetic: the hashes carry no
perceptual meaning, they only show that every stage works.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .. import __version__

if TYPE_CHECKING:
    from ..convert.verify import VerificationReport

#: Bumped when the demo's weights change (r2: the synthetic mark of hashing.model_ids), so that a
#: cache written by an earlier revision is not used.
DEMO_REVISION = 2

#: The demo's ONNX model (with the hash head), beside its Espresso files; NeuralHash.demo() runs it.
DEMO_ONNX = "model.onnx"


def cache_root() -> Path:
    """``$NEURALHASH_CACHE``, else ``$XDG_CACHE_HOME/neuralhash``, else ``~/.cache/neuralhash``."""
    if os.environ.get("NEURALHASH_CACHE"):
        return Path(os.environ["NEURALHASH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "neuralhash"


@dataclass
class DemoResult:
    espresso_dir: Path
    onnx_path: Path
    precision: str
    convert_seconds: float
    report: "VerificationReport"
    hashes: list[tuple[Path, str]]


def demo_model_dir(cache_dir: Path | None = None, precision: str = "float32") -> Path:
    """Write the synthetic model once per version and precision; later calls reuse it."""
    from .synthetic import write_neuralhash_v3b

    folder = (cache_dir or cache_root()) / f"demo-{__version__}-r{DEMO_REVISION}-{precision}"
    if (folder / "COMPLETE").is_file():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_neuralhash_v3b(tmp, precision=precision, calibrate=True)
    (tmp / "COMPLETE").write_text("synthetic NeuralHash v3b, written by neuralhash demo\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def run_demo(
    cache_dir: Path | None = None,
    *,
    precision: str = "float32",
    providers: Sequence[str] | None = None,
) -> DemoResult:
    from ..convert import convert, save_model
    from ..espresso import load_model
    from ..hashing.image import bits_to_hex, preprocess
    from ..hashing.seed import default_seed_matrix
    from ..hashing.runtime import make_session
    from .synthetic import sample_image_paths
    from ..convert.verify import verify

    folder = demo_model_dir(cache_dir, precision)
    model = load_model(folder)
    start = time.perf_counter()
    proto = convert(model, hash_head=default_seed_matrix())
    onnx_path = folder / DEMO_ONNX
    save_model(proto, onnx_path)
    seconds = time.perf_counter() - start
    images = sample_image_paths()
    report = verify(model, proto, images=images, seeds=(0,), providers=providers)
    session = make_session(proto, providers)
    batch = np.stack([preprocess(p) for p in images])
    bits = session.run(["hash_bits"], {model.inputs[0]: batch})[0]
    hashes = [(p, bits_to_hex(b)) for p, b in zip(images, bits)]
    return DemoResult(folder, onnx_path, precision, seconds, report, hashes)
