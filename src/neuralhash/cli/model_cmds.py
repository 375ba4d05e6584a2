"""Commands on Espresso models: decode, inspect, convert, verify, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import NeuralHashError
from .common import load_espresso, out


def cmd_decode(args: argparse.Namespace) -> int:
    from ..espresso.model import decode_json_bytes
    from ..fileio import atomic_write

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


def shape_list(model, blob: str):
    shape = model.shapes.get(blob)
    return list(shape.nkhw) if shape else None


def _converts(model) -> tuple[dict[str, str], dict[str, str]]:
    """(unsupported layer name -> reason, layer type -> "yes" / "no" / "partly"); never fails."""
    from ..convert import unsupported_layers

    try:
        unsupported = unsupported_layers(model)
    except NeuralHashError as exc:  # the check itself could not run: say so for every type
        return {"*": str(exc)}, {t: "unknown" for t in model.layer_types()}
    failing: dict[str, int] = {}
    for layer in model.layers:
        if layer.name in unsupported:
            failing[layer.type] = failing.get(layer.type, 0) + 1
    verdict = {}
    for type_name, count in model.layer_types().items():
        bad = failing.get(type_name, 0)
        verdict[type_name] = "yes" if bad == 0 else ("no" if bad == count else "partly")
    return unsupported, verdict


def cmd_inspect(args: argparse.Namespace) -> int:
    model = load_espresso(args, require_weights=False)
    unsupported, converts = _converts(model)
    info = {
        "layers": len(model.layers),
        "layer_types": model.layer_types(),
        "inputs": {b: shape_list(model, b) for b in model.inputs},
        "outputs": {b: shape_list(model, b) for b in model.outputs},
        "parameters": model.parameter_count(),
        "unsupported": unsupported,
        "transform_params": model.transform_params,
        "files": {
            role: str(getattr(model.sources, role)) if getattr(model.sources, role) else None
            for role in ("net", "shape", "weights", "seed")
        },
    }
    if args.json:
        out(json.dumps(info, indent=2, sort_keys=True))
        return 0
    out(f"graph        {model.sources.net}")
    out(f"layers       {info['layers']}")
    width = max(len(t) for t in info["layer_types"])
    out(f"  {'type':<{width}}  {'count':>5}  converts")
    for type_name, count in info["layer_types"].items():
        out(f"  {type_name:<{width}}  {count:>5}  {converts[type_name]}")
    for name, reason in unsupported.items():
        out(f"unsupported  {reason}")
    for label in ("inputs", "outputs"):
        for blob, shape in info[label].items():
            out(f"{label[:-1]:<12} {blob}  {shape if shape else '(no shape file)'}")
    image = model.transform_params.get("image")
    if isinstance(image, dict):
        order = "BGR" if image.get("is_network_bgr") else "RGB"
        biases = " ".join(f"{image.get(k, 0):g}" for k in ("bias_r", "bias_g", "bias_b"))
        out(f"transform    pixel * {image.get('scale', 1):.10g} + ({biases}), {order}")
    elif model.transform_params:
        out(f"transform    {json.dumps(model.transform_params, sort_keys=True)}")
    if info["parameters"] is None:
        out("parameters   unknown (no weights file)")
    else:
        out(f"parameters   {info['parameters']:,}")
    return 0


def seed_matrix(value: str | None):
    from ..hashing.seed import default_seed_matrix, read_seed_file

    if value is None:
        return None
    return read_seed_file(value) if value else default_seed_matrix()


def cmd_convert(args: argparse.Namespace) -> int:
    from ..convert import convert, save_model

    start = time.perf_counter()
    model = load_espresso(args)
    parameters = model.parameter_count()
    proto = convert(model, optimize=not args.no_optimize, hash_head=seed_matrix(args.hash_head))
    del model  # the proto has its own copy of the weights: drop the file's before serialising
    save_model(proto, args.output)
    seconds = time.perf_counter() - start
    size = Path(args.output).stat().st_size
    outputs = ", ".join(o.name for o in proto.graph.output)
    out(
        f"wrote {args.output}: {len(proto.graph.node)} nodes, {parameters:,} parameters, "
        f"{size / 1e6:.1f} MB, outputs {outputs} ({seconds:.2f} s)"
    )
    return 0


def print_report(report) -> None:
    images = [label for label in report.inputs if not label.startswith("seed ")]
    out(f"inputs       {len(report.inputs) - len(images)} seeded random, {len(images)} image(s)")
    out(f"{'output':<24} {'max abs err':>12} {'max rel err':>12} {'limit':>10}")
    for o in report.outputs:
        out(f"{o.blob:<24} {o.max_abs:>12.3g} {o.max_rel:>12.3g} {o.limit:>10.3g}  {'ok' if o.passed else 'FAIL'}")
    rule = f"atol {report.atol:g} x max(1, largest |reference value|)"
    if report.passed:
        out(f"PASS: every output within its limit ({rule})")
    else:
        out(f"FAIL: above the limit ({rule})")
        d = report.divergence
        if d is not None:
            out(f"first divergence: layer {d.layer!r} ({d.type}), blob {d.blob!r}: max abs err {d.max_abs:.3g} "
                 f"on values up to {d.scale:.3g}")


def cmd_verify(args: argparse.Namespace) -> int:
    import onnx

    from ..verify import verify

    model = load_espresso(args)
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
        max_input_size=args.max_input_size,
    )
    print_report(report)
    return 0 if report.passed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    out("neuralhash demo: a SYNTHETIC NeuralHash v3b (random, calibrated weights; not Apple's).")
    out("The hashes below carry no perceptual meaning: they show that every stage works.")
    result = run_demo(Path(args.cache_dir) if args.cache_dir else None,
                      precision="float16" if args.fp16 else "float32", providers=args.provider)
    out(f"espresso     {result.espresso_dir} ({result.precision}, compressed .net/.shape)")
    out(f"onnx         {result.onnx_path} (converted in {result.convert_seconds:.2f} s)")
    print_report(result.report)
    out("hashes (synthetic model):")
    for path, hex_hash in result.hashes:
        out(f"{hex_hash}  {path.name}")
    return 0 if result.report.passed else 1

