"""The ``neuralhash`` command: a thin layer over the Python API.

Exit codes: 0 success, 1 failure (bad input, verification above tolerance),
2 usage error. Errors are one line on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import NeuralHashError
from .espresso.container import DEFAULT_MAX_DECODED_SIZE


def _out(text: str = "") -> None:
    print(text, flush=True)


def _load(args: argparse.Namespace, *, require_weights: bool = True):
    """The model named by SRC, with --shape / --weights overriding the files found beside it."""
    from dataclasses import replace

    from .espresso import load_model, locate
    from .espresso.model import sources_from_paths

    sources = locate(args.src)
    explicit = sources_from_paths(sources.net, shape=args.shape, weights=args.weights)
    sources = replace(sources, **{k: getattr(explicit, k) for k in ("shape", "weights") if getattr(explicit, k)})
    return load_model(sources, require_weights=require_weights, max_decoded_size=args.max_decoded_size)


# -- decode ----------------------------------------------------------------------------


def cmd_decode(args: argparse.Namespace) -> int:
    from .espresso.model import decode_json_bytes
    from .fileio import atomic_write

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NeuralHashError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text = decode_json_bytes(data, source=str(path), max_decoded_size=args.max_decoded_size)
    if args.output == "-":
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
    else:
        atomic_write(args.output, text)
        print(f"wrote {args.output} ({len(text)} bytes of JSON)", file=sys.stderr)
    return 0


# -- inspect ---------------------------------------------------------------------------


def _shape_list(model, blob: str):
    shape = model.shapes.get(blob)
    return list(shape.nkhw) if shape else None


def cmd_inspect(args: argparse.Namespace) -> int:
    model = _load(args, require_weights=False)
    info = {
        "layers": len(model.layers),
        "layer_types": model.layer_types(),
        "inputs": {b: _shape_list(model, b) for b in model.inputs},
        "outputs": {b: _shape_list(model, b) for b in model.outputs},
        "parameters": model.parameter_count(),
        "transform_params": model.transform_params,
        "files": {
            role: str(getattr(model.sources, role)) if getattr(model.sources, role) else None
            for role in ("net", "shape", "weights", "seed")
        },
    }
    if args.json:
        _out(json.dumps(info, indent=2, sort_keys=True))
        return 0
    _out(f"graph        {model.sources.net}")
    _out(f"layers       {info['layers']}")
    width = max(len(t) for t in info["layer_types"])
    for type_name, count in info["layer_types"].items():
        _out(f"  {type_name:<{width}}  {count:>4}")
    for label in ("inputs", "outputs"):
        for blob, shape in info[label].items():
            _out(f"{label[:-1]:<12} {blob}  {shape if shape else '(no shape file)'}")
    image = model.transform_params.get("image")
    if isinstance(image, dict):
        order = "BGR" if image.get("is_network_bgr") else "RGB"
        biases = " ".join(f"{image.get(k, 0):g}" for k in ("bias_r", "bias_g", "bias_b"))
        _out(f"transform    pixel * {image.get('scale', 1):.10g} + ({biases}), {order}")
    elif model.transform_params:
        _out(f"transform    {json.dumps(model.transform_params, sort_keys=True)}")
    if info["parameters"] is None:
        _out("parameters   unknown (no weights file)")
    else:
        _out(f"parameters   {info['parameters']:,}")
    return 0


# -- convert ---------------------------------------------------------------------------


def _seed_matrix(value: str | None):
    from .hashing.seed import default_seed_matrix, read_seed_file

    if value is None:
        return None
    return read_seed_file(value) if value else default_seed_matrix()


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert, save_model

    start = time.perf_counter()
    model = _load(args)
    parameters = model.parameter_count()
    proto = convert(model, optimize=not args.no_optimize, hash_head=_seed_matrix(args.hash_head))
    del model  # the proto has its own copy of the weights: drop the file's before serialising
    save_model(proto, args.output)
    seconds = time.perf_counter() - start
    size = Path(args.output).stat().st_size
    outputs = ", ".join(o.name for o in proto.graph.output)
    _out(
        f"wrote {args.output}: {len(proto.graph.node)} nodes, {parameters:,} parameters, "
        f"{size / 1e6:.1f} MB, outputs {outputs} ({seconds:.2f} s)"
    )
    return 0


# -- verify ----------------------------------------------------------------------------


def _print_report(report) -> None:
    images = [label for label in report.inputs if not label.startswith("seed ")]
    _out(f"inputs       {len(report.inputs) - len(images)} seeded random, {len(images)} image(s)")
    _out(f"{'output':<24} {'max abs err':>12} {'max rel err':>12} {'limit':>10}")
    for o in report.outputs:
        _out(f"{o.blob:<24} {o.max_abs:>12.3g} {o.max_rel:>12.3g} {o.limit:>10.3g}  {'ok' if o.passed else 'FAIL'}")
    rule = f"atol {report.atol:g} x max(1, largest |reference value|)"
    if report.passed:
        _out(f"PASS: every output within its limit ({rule})")
    else:
        _out(f"FAIL: above the limit ({rule})")
        d = report.divergence
        if d is not None:
            _out(f"first divergence: layer {d.layer!r} ({d.type}), blob {d.blob!r}: max abs err {d.max_abs:.3g} "
                 f"on values up to {d.scale:.3g}")


def cmd_verify(args: argparse.Namespace) -> int:
    import onnx

    from .verify import verify

    model = _load(args)
    proto = None
    if args.onnx:
        try:
            proto = onnx.load(args.onnx)
        except Exception as exc:  # onnx raises protobuf DecodeError and OSError alike
            raise NeuralHashError(f"{args.onnx}: cannot read ONNX model ({exc})") from None
    report = verify(
        model,
        proto,
        images=args.image or (),
        seeds=range(args.seeds),
        batch=args.batch,
        atol=args.atol,
        providers=args.provider,
        optimize=not args.no_optimize,
    )
    _print_report(report)
    return 0 if report.passed else 1


# -- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _out("neuralhash demo: a SYNTHETIC NeuralHash v3b (random, calibrated weights; not Apple's).")
    _out("The hashes below carry no perceptual meaning: they show that every stage works.")
    result = run_demo(Path(args.cache_dir) if args.cache_dir else None,
                      precision="float16" if args.fp16 else "float32", providers=args.provider)
    _out(f"espresso     {result.espresso_dir} ({result.precision}, compressed .net/.shape)")
    _out(f"onnx         {result.onnx_path} (converted in {result.convert_seconds:.2f} s)")
    _print_report(result.report)
    _out("hashes (synthetic model):")
    for path, hex_hash in result.hashes:
        _out(f"{hex_hash}  {path.name}")
    return 0 if result.report.passed else 1


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralhash",
        description="Convert Apple's NeuralHash (Espresso) model to verified ONNX, and compute NeuralHash hashes.",
    )
    parser.add_argument("--version", action="version", version=f"neuralhash {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

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

    src_help = "an Espresso folder (any prefix, .mlmodelc, Vision.framework Resources) or one of its files"

    p = add("decode", cmd_decode, "write the plain JSON of a compressed .espresso.net / .espresso.shape file")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="output path, or - for standard output")
    add_cap(p)

    p = add("inspect", cmd_inspect, "summarise an Espresso model (weights optional)")
    p.add_argument("src", help=src_help)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_files(p)

    p = add("convert", cmd_convert, "convert an Espresso model to ONNX")
    p.add_argument("src", help=src_help)
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--no-optimize", action="store_true", help="a literal layer-by-layer graph, no tidying")
    p.add_argument("--hash-head", nargs="?", const="", default=None, metavar="SEED.dat",
                   help="append the NeuralHash projection; without a file the seed is rebuilt exactly")
    add_files(p)

    p = add("verify", cmd_verify, "check ONNX Runtime against the NumPy reference executor")
    p.add_argument("src", help=src_help)
    p.add_argument("--onnx", help="an already converted model (default: convert in memory)")
    p.add_argument("--image", action="append", metavar="PATH", help="also compare on this image (repeatable)")
    p.add_argument("--seeds", type=int, default=2, help="number of seeded random inputs (default 2)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the random inputs (default 1)")
    p.add_argument("--atol", type=float, default=1e-4, help="tolerance on outputs of order 1, scaled by larger outputs (default 1e-4)")
    p.add_argument("--no-optimize", action="store_true", help="verify the untidied conversion")
    add_provider(p)
    add_files(p)

    p = add("demo", cmd_demo, "run the whole pipeline on the built-in synthetic model")
    p.add_argument("--cache-dir", help="where to write the demo model (default ~/.cache/neuralhash)")
    p.add_argument("--fp16", action="store_true", help="use the float16 variant that current macOS ships")
    add_provider(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except NeuralHashError as exc:
        print(f"neuralhash: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neuralhash: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
