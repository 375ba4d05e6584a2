"""Commands on Espresso models: decode, inspect, convert, verify, demo."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from ..errors import ConversionError, NeuralHashError
from .common import load_espresso, model_source, out


def cmd_decode(args: argparse.Namespace) -> int:
    from ..espresso.model import decode_json_bytes
    from ..files.fileio import atomic_write

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NeuralHashError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text = decode_json_bytes(data, source=str(path), max_decoded_size=args.max_decoded_size)
    atomic_write(args.output, text)  # "-" is standard output
    if args.output != "-":
        print(f"wrote {args.output} ({len(text)} bytes of JSON)", file=sys.stderr)
    return 0


def shape_list(model, blob: str):
    shape = model.shapes.get(blob)
    return list(shape.nkhw) if shape else None


def onnx_shape(model, blob: str):
    """How the blob appears in the converted model: ``["batch", ...]`` at its real rank (seq included)."""
    shape = model.shapes.get(blob)
    return ["batch", *shape.onnx_dims] if shape else None


def json_safe(value):
    """``value`` with every non-finite float replaced by the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.

    ``inspect --json`` prints it with ``allow_nan=False``: always valid JSON, whatever the model holds.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _number(value, spec: str = "g") -> str:
    """A parameter for a text line: numbers formatted, anything else (text, huge integers) shown as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    try:
        return format(float(value), spec)
    except OverflowError:
        return str(value)


def _bundle_json(model):
    info = model.bundle_info
    if info is None:
        return None
    return info.to_json() if info.readable else {"error": info.error}


def _inspect_pipeline(args: argparse.Namespace, exc) -> int:
    from ..espresso.bundle import pipeline_advice

    stages = [{"stage": s.index, "path": str(s.path), "kind": s.kind, "model_type": s.model_type}
              for s in exc.stages]
    advice = pipeline_advice(exc.path, exc.stages)
    if args.json:
        out(json.dumps({"pipeline": str(exc.path), "stages": stages, "advice": advice}, indent=2, sort_keys=True))
        return 0
    out(f"pipeline     {exc.path} ({len(stages)} stages)")
    for s in exc.stages:
        out(f"  stage {s.index:<3} {s.describe()}")
    out(f"converts     {advice}")
    return 0


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
    from ..errors import PipelineError

    try:
        model = load_espresso(args, require_weights=False, strict=False)
    except PipelineError as exc:
        return _inspect_pipeline(args, exc)
    unsupported, converts = _converts(model)
    info = {
        "layers": len(model.layers),
        "layer_types": model.layer_types(),
        "inputs": {b: shape_list(model, b) for b in model.inputs},
        "outputs": {b: shape_list(model, b) for b in model.outputs},
        "onnx_shapes": {b: onnx_shape(model, b) for b in (*model.inputs, *model.outputs)},
        "parameters": None if model.problems else model.parameter_count(),
        "unsupported": unsupported,
        "transform_params": model.transform_params,
        "problems": model.problems,
        "coreml": _bundle_json(model),
        "files": {
            role: str(getattr(model.sources, role)) if getattr(model.sources, role) else None
            for role in ("net", "shape", "weights", "seed", "coremldata")
        },
    }
    if args.json:
        out(json.dumps(json_safe(info), indent=2, sort_keys=True, allow_nan=False))
        return 0
    for name, reason in unsupported.items():  # what stops a conversion comes first
        out(f"unsupported  {reason}")
    out(f"graph        {model.sources.net}")
    out(f"layers       {info['layers']}")
    width = max((len(t) for t in info["layer_types"]), default=0)
    out(f"  {'type':<{width}}  {'count':>5}  converts")
    for type_name, count in info["layer_types"].items():
        out(f"  {type_name:<{width}}  {count:>5}  {converts[type_name]}")
    for label in ("inputs", "outputs"):
        for blob, shape in info[label].items():
            if not shape:
                out(f"{label[:-1]:<12} {blob}  (no shape file)")
                continue
            onnx_dims = ", ".join(str(d) for d in info["onnx_shapes"][blob])
            out(f"{label[:-1]:<12} {blob}  n,k,h,w {shape}  seq {model.shapes[blob].seq}  ONNX [{onnx_dims}]")
    bundle_images = {f.name: f.color_space for f in model.bundle_info.inputs if f.kind == "image"} \
        if model.bundle_info is not None and model.bundle_info.readable else {}
    for name, params in _image_transforms(model.transform_params):
        grey = bundle_images.get(name or (model.inputs[0] if model.inputs else "")) == "grayscale"
        order = "grayscale" if grey else "BGR" if params.get("is_network_bgr") else "RGB"
        biases = " ".join(_number(params.get(k, 0)) for k in ("bias_r", "bias_g", "bias_b"))
        prefix = f"{name}: " if name else ""
        out(f"transform    {prefix}pixel * {_number(params.get('scale', 1), '.10g')} + ({biases}), {order}")
    if model.transform_params and not _image_transforms(model.transform_params):
        out(f"transform    {json.dumps(json_safe(model.transform_params), sort_keys=True, allow_nan=False)}")
    if info["parameters"] is None:
        out("parameters   unknown (" + ("no weights file" if model.weights is None else "see the problems below") + ")")
    else:
        out(f"parameters   {info['parameters']:,}")
    bundle = model.bundle_info
    if bundle is not None:
        if not bundle.readable:
            out(f"coreml       coremldata.bin not readable: {bundle.error}")
        else:
            for f in bundle.inputs + bundle.outputs:
                role = "input" if f in bundle.inputs else "output"
                if f.kind == "image":
                    detail = f"image {f.width}x{f.height} {f.color_space}"
                elif f.kind == "multiArray":
                    detail = f"array {list(f.shape) if f.shape else '(flexible shape)'} {f.data_type}"
                else:
                    detail = f.kind
                out(f"coreml       {role} {f.name!r}: {detail}")
            if bundle.class_labels:
                shown = ", ".join(str(v) for v in bundle.class_labels[:10])
                more = ", ..." if len(bundle.class_labels) > 10 else ""
                out(f"coreml       classifier: {len(bundle.class_labels)} {bundle.class_label_type} class labels "
                    f"({shown}{more}) -> {bundle.predicted_feature!r}, probabilities {bundle.predicted_probabilities!r}")
            elif bundle.labels_note:
                out(f"coreml       classifier: {bundle.labels_note}")
            for key, value in bundle.metadata.items():
                out(f"coreml       {key}: {value}")
    for problem in model.problems:
        out(f"problem      {problem}")
    return 0


def _image_transforms(transform: dict) -> list[tuple[str, dict]]:
    """Per-input image preprocessing: ``{"image": {...}}`` (NeuralHash) or keyed by input blob (Xcode models)."""
    if isinstance(transform.get("image"), dict) and "scale" in transform["image"]:
        return [("", transform["image"])]
    return [(k, v) for k, v in transform.items() if isinstance(v, dict) and "scale" in v]


def seed_matrix(value: str | None):
    from ..hashing.seed import default_seed_matrix, read_seed_file

    if value is None:
        return None
    return read_seed_file(value) if value else default_seed_matrix()


def cmd_convert(args: argparse.Namespace) -> int:
    from ..espresso import pipeline_stages

    args.src = model_source(args.src)

    stages = () if (args.shape or args.weights) else pipeline_stages(args.src)
    if stages:
        return _convert_pipeline(args, stages)
    _write_onnx(args, _convert_one(args, args.src), args.output)
    return 0


def _convert_one(args: argparse.Namespace, src):
    """(proto, parameters, seconds) for one Espresso model."""
    from ..convert import convert

    start = time.perf_counter()
    model = load_espresso(argparse.Namespace(**{**vars(args), "src": src}))
    parameters = model.parameter_count()
    proto = convert(model, optimize=not args.no_optimize, hash_head=seed_matrix(args.hash_head),
                    with_preprocessing=getattr(args, "with_preprocessing", False))
    return proto, parameters, time.perf_counter() - start


def _write_onnx(args: argparse.Namespace, converted, output: str) -> None:
    from ..convert import save_model

    proto, parameters, seconds = converted
    save_model(proto, output)  # "-" is standard output; see fileio.atomic_write for other paths
    outputs = ", ".join(o.name for o in proto.graph.output)
    line = (f"wrote {output}: {len(proto.graph.node)} nodes, {parameters:,} parameters, "
            f"{proto.ByteSize() / 1e6:.1f} MB, outputs {outputs} ({seconds:.2f} s)")
    if output == "-":
        print(f"neuralhash: {line}", file=sys.stderr, flush=True)  # standard output holds the model
    else:
        out(line)


def stage_output(output: str, index: int) -> str:
    """``OUT.onnx`` -> ``OUT.stage0.onnx`` (any other name gets ``.stage0.onnx`` appended)."""
    stem = output[: -len(".onnx")] if output.endswith(".onnx") else output
    return f"{stem}.stage{index}.onnx"


def _convert_pipeline(args: argparse.Namespace, stages) -> int:
    """Every stage converted in memory first, then one ONNX file per stage: none is written if one fails."""
    where = stages[0].path.parent
    if args.output == "-":
        raise NeuralHashError(f"{where}: a pipeline of {len(stages)} stages converts to one ONNX file per "
                              "stage; -o - cannot hold them (give -o OUT.onnx for OUT.stage0.onnx...)")
    if args.hash_head is not None:
        raise NeuralHashError(f"{where}: --hash-head applies to one model; convert the last stage alone "
                              f"({stages[-1].path}) to add it")
    if not any(stage.kind == "espresso" for stage in stages):
        from ..espresso.bundle import pipeline_advice

        listed = ", ".join(s.describe() for s in stages)
        raise NeuralHashError(f"{where}: a pipeline of {len(stages)} stages: {listed}; {pipeline_advice(where, stages)}")
    for stage in stages:
        if stage.kind != "espresso":
            what = {"pipeline": "is itself a pipeline (convert it on its own)",
                    "ml program": "is an ML Program (model.mil)"}.get(stage.kind, "has no Espresso model")
            kind = f" ({stage.model_type})" if stage.model_type and stage.kind != "pipeline" else ""
            raise NeuralHashError(f"{where}: stage {stage.index} ({stage.path.name}) {what}{kind}; "
                                  "the pipeline cannot be converted stage by stage")
    converted = []
    for stage in stages:
        try:
            converted.append(_convert_one(args, stage.path))
        except NeuralHashError as exc:
            raise NeuralHashError(f"{where}: stage {stage.index} ({stage.path.name}) fails: {exc}") from None
    for stage, result in zip(stages, converted):
        _write_onnx(args, result, stage_output(args.output, stage.index))
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

    from ..convert.verify import verify

    model = load_espresso(args)
    proto = None
    if args.onnx:
        try:
            proto = onnx.load(args.onnx)
        except Exception as exc:  # onnx raises protobuf DecodeError and OSError alike
            raise NeuralHashError(f"{args.onnx}: cannot read ONNX model ({exc})") from None
    try:
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
    except ConversionError as exc:
        if args.onnx:  # a given ONNX file that does not fit the model: name it
            raise ConversionError(f"{args.onnx}: {exc}") from None
        raise
    print_report(report)
    return 0 if report.passed else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    out("neuralhash demo: a SYNTHETIC NeuralHash v3b (random, calibrated weights; not Apple's).")
    out("The hashes below carry no perceptual meaning: they show that every stage works and how fast;")
    out("matching quality can only be judged with Apple's model (see the README).")
    result = run_demo(Path(args.cache_dir) if args.cache_dir else None,
                      precision="float16" if args.fp16 else "float32", providers=args.provider)
    out(f"espresso     {result.espresso_dir} ({result.precision}, compressed .net/.shape)")
    out(f"onnx         {result.onnx_path} (converted in {result.convert_seconds:.2f} s)")
    print_report(result.report)
    out("hashes (synthetic model):")
    for path, hex_hash in result.hashes:
        out(f"{hex_hash}  {path.name}")
    return 0 if result.report.passed else 1

