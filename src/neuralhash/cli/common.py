"""What every command shares: one-line output, loading models, option helpers."""

from __future__ import annotations

import argparse
import os
import re
import sys

from ..espresso.container import DEFAULT_MAX_DECODED_SIZE

SRC_HELP = "an Espresso folder (any prefix, .mlmodelc, Vision.framework Resources) or one of its files"
MODEL_HELP = ("the model: omitted, the system one (macOS Vision.framework, or the folders in "
              "$NEURALHASH_MODEL_PATH); on Linux pass it: an Espresso folder or file, an .onnx file, "
              "or 'demo' for the synthetic model")
SEED_HELP = "the 96x128 seed (projection) file (default: the one beside the model, else rebuilt exactly)"


def out(text: str = "") -> None:
    print(text, flush=True)


def load_espresso(args: argparse.Namespace, *, require_weights: bool = True, strict: bool = True):
    """The model named by SRC, with --shape / --weights overriding the files found beside it."""
    from dataclasses import replace

    from ..espresso import load_model, locate
    from ..espresso.model import sources_from_paths

    sources = locate(args.src)
    explicit = sources_from_paths(sources.net, shape=args.shape, weights=args.weights)
    sources = replace(sources, **{k: getattr(explicit, k) for k in ("shape", "weights") if getattr(explicit, k)})
    return load_model(sources, require_weights=require_weights, max_decoded_size=args.max_decoded_size,
                      strict=strict)


SYNTHETIC_WARNING = "neuralhash: warning: the demo model has synthetic weights; its hashes carry no perceptual meaning"


def load_hasher(args: argparse.Namespace):
    """The NeuralHash named by --model (None: the system model), with the synthetic warning."""
    from ..errors import ModelNotFoundError
    from ..hashing import NeuralHash

    try:
        nh = NeuralHash.from_source(args.model, seed=args.seed, providers=getattr(args, "provider", None))
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


def add_cap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-decoded-size", type=int, default=DEFAULT_MAX_DECODED_SIZE, metavar="BYTES",
                   help="refuse compressed files that decode to more than this (default 64 MiB)")


def add_files(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", metavar="FILE", help="the .espresso.shape file, when not beside the graph")
    p.add_argument("--weights", metavar="FILE", help="the .espresso.weights file, when not beside the graph")
    add_cap(p)


def add_provider(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", action="append", metavar="NAME",
                   help="onnxruntime execution provider, repeatable (default CPUExecutionProvider)")


def add_model(p: argparse.ArgumentParser) -> None:
    """--model / --seed / --provider: which NeuralHash computes image hashes."""
    p.add_argument("--model", metavar="SRC", default=None, help=MODEL_HELP)
    p.add_argument("--seed", metavar="FILE", default=None, help=SEED_HELP)
    add_provider(p)


_HEX_HASH = re.compile(r"[0-9a-fA-F]{24}")


def is_hex_hash(text: str) -> bool:
    """A query operand is a hash when it is 24 hex digits and no file has that name."""
    return bool(_HEX_HASH.fullmatch(text)) and not os.path.exists(text)
