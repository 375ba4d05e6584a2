"""What every command shares: one-line output, loading models, option helpers."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

from ..espresso.container import DEFAULT_MAX_DECODED_SIZE

SRC_HELP = ("an Espresso folder (any prefix, .mlmodelc, Vision.framework Resources) or one of its files, "
            "firmware holding NeuralHash (an IPSW, a .dmg, an APFS or GPT image), or 'demo' for the synthetic "
            "demo model")
MODEL_HELP = ("the model: omitted, the system one (macOS Vision.framework, or the folders in "
              "$NEURALHASH_MODEL_PATH); on Linux pass it: an Espresso folder or file, an .onnx file, "
              "firmware holding NeuralHash (an IPSW, a .dmg, an APFS or GPT image), or 'demo' for the synthetic model")
SEED_HELP = "the 96x128 seed (projection) file (default: the one beside the model, else rebuilt exactly)"


def out(text: str = "") -> None:
    print(text, flush=True)


def firmware_src(src: str) -> str:
    """SRC itself, or for firmware (an IPSW, a .dmg, an APFS or GPT image) the cache folder NeuralHash was
    extracted into (once: later runs reuse it)."""
    from ..firmware import firmware_model_dir, sniff

    if os.path.isfile(src) and sniff(src) is not None:
        return os.fspath(firmware_model_dir(src, progress=lambda m: print(f"neuralhash: {m}", file=sys.stderr)))
    return src


def load_espresso(args: argparse.Namespace, *, require_weights: bool = True, strict: bool = True):
    """The model named by SRC, with --shape / --weights overriding the files found beside it."""
    from dataclasses import replace

    from ..espresso import load_model, locate
    from ..espresso.model import sources_from_paths

    sources = locate(model_source(args.src))
    explicit = sources_from_paths(sources.net, shape=args.shape, weights=args.weights)
    sources = replace(sources, **{k: getattr(explicit, k) for k in ("shape", "weights") if getattr(explicit, k)})
    return load_model(sources, require_weights=require_weights, max_decoded_size=args.max_decoded_size,
                      strict=strict)


def demo_source(src: str) -> str:
    """SRC as given, or for ``demo`` the synthetic demo model's folder (written on first use), as --model."""
    if src != "demo":
        return src
    from ..demo import demo_model_dir

    return str(demo_model_dir())


def model_source(src: str) -> str:
    """SRC as a folder or file of Espresso files: ``demo`` and firmware resolved to their cache folders."""
    return firmware_src(demo_source(src))


#: Pillow's default MAX_IMAGE_PIXELS (the help text states it without importing Pillow).
PILLOW_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3

SYNTHETIC_WARNING = "neuralhash: warning: the demo model has synthetic weights; its hashes carry no perceptual meaning"


def load_hasher(args: argparse.Namespace):
    """The NeuralHash named by --model (None: the system model), with the synthetic warning."""
    from ..errors import ModelNotFoundError
    from ..hashing import NeuralHash

    try:
        nh = NeuralHash.from_source(args.model, seed=args.seed, providers=getattr(args, "provider", None),
                                    max_pixels=getattr(args, "max_pixels", None))
    except ModelNotFoundError as exc:
        if args.model is not None:
            raise
        raise ModelNotFoundError(f"{exc} (here: --model FOLDER, or --model demo)") from None
    if getattr(nh, "is_synthetic", False):
        print(SYNTHETIC_WARNING, file=sys.stderr, flush=True)
    return nh


def error_reason(path: str, error: str) -> str:
    """The library's message without a leading ``PATH: `` (the CLI names the path itself)."""
    prefix = f"{path}: "
    return error[len(prefix):] if error.startswith(prefix) else error


def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def int_between(minimum: int, maximum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum} and {maximum}, not {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text!r}")
    return value


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def cap_workers(args: argparse.Namespace) -> None:
    """``args.workers`` capped at ``MAX_WORKERS_PER_CPU`` (4) per CPU of this machine, with a warning."""
    workers = getattr(args, "workers", None)
    if workers is None:
        return
    from ..hashing.pipeline import MAX_WORKERS_PER_CPU

    cap = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if workers > cap:
        print(f"neuralhash: warning: --workers {workers} capped to {cap} "
              f"({MAX_WORKERS_PER_CPU} per CPU; this machine has {os.cpu_count() or 1})", file=sys.stderr, flush=True)
        args.workers = cap


def check_providers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--provider names an installed onnxruntime execution provider (before any model is loaded)."""
    wanted = getattr(args, "provider", None)
    if not wanted:
        return
    from ..hashing.runtime import available_providers

    installed = available_providers()
    missing = [p for p in wanted if p not in installed]
    if missing:
        parser.error(f"argument --provider: {missing[0]!r} is not installed (installed: {', '.join(installed)})")


def add_cap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-decoded-size", type=int_at_least(1), default=DEFAULT_MAX_DECODED_SIZE, metavar="BYTES",
                   help="refuse compressed files that decode to more than this (default 64 MiB)")


def add_files(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", metavar="FILE", help="the .espresso.shape file, when not beside the graph")
    p.add_argument("--weights", metavar="FILE", help="the .espresso.weights file, when not beside the graph")
    add_cap(p)


def add_provider(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", action="append", metavar="NAME",
                   help="onnxruntime execution provider, repeatable (default CPUExecutionProvider)")


def add_model(p: argparse.ArgumentParser) -> None:
    """--model / --seed / --provider / --max-pixels: which NeuralHash computes image hashes, on what."""
    p.add_argument("--model", metavar="SRC", default=None, type=non_empty, help=MODEL_HELP)
    p.add_argument("--seed", metavar="FILE", default=None, type=non_empty, help=SEED_HELP)
    add_provider(p)
    add_max_pixels(p)


def add_max_distance(p: argparse.ArgumentParser, what: str = "matching distance") -> None:
    """--max-distance D: 0..MAX_DISTANCE bits, default DEFAULT_MAX_DISTANCE (one rule for the commands and
    the service: neuralhash.matching.index)."""
    from ..matching.index import DEFAULT_MAX_DISTANCE, MAX_DISTANCE

    p.add_argument("--max-distance", type=int_between(0, MAX_DISTANCE), default=DEFAULT_MAX_DISTANCE, metavar="D",
                   help=f"{what} in bits, 0..{MAX_DISTANCE} (default {DEFAULT_MAX_DISTANCE}; unrelated hashes "
                        "lie about 48 bits apart)")


def add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=int_at_least(1), default=None, metavar="N",
                   help="refuse images of more than N pixels, from their header (default: Pillow's limit, "
                        f"{PILLOW_MAX_PIXELS:,}; decompression bombs)")


_HEX_HASH = re.compile(r"[0-9a-fA-F]{24}")


def is_hex_hash(text: str) -> bool:
    """A query operand is a hash when it is 24 hex digits and no file has that name."""
    return bool(_HEX_HASH.fullmatch(text)) and not os.path.exists(text)
