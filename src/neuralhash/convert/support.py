"""The table of supported Espresso layers (docs/models.md), generated from the handler registries.

:data:`LAYER_NOTES` says what is handled per layer type; the operation codes
and activation modes are listed from the registries themselves, named by
:data:`ELEMENTWISE_NAMES` and :data:`ACTIVATION_NAMES`. Tests hold all three
to ``HANDLERS`` of the converter and of the reference executor, and
docs/models.md to :func:`layer_table`.
"""

from __future__ import annotations

ELEMENTWISE_NAMES = {
    0: "sum, or x + alpha with one input", 1: "product, or x * alpha with one input", 2: "x + alpha",
    3: "x * alpha", 10: "alpha / x", 22: "min", 23: "max", 24: "abs", 25: "max(x, alpha)", 27: "exp",
    33: "a - b", 102: "a / b", 119: "clip",
}
ACTIVATION_NAMES = {
    0: "ReLU", 1: "tanh", 2: "leaky ReLU", 3: "sigmoid", 5: "scaled tanh", 6: "linear", 7: "clip to [0, 1]",
    8: "ELU", 9: "thresholded ReLU", 10: "softplus", 12: "softsign", 25: "SiLU", 26: "hard swish",
}

# One row per handled type, in the table's order ({codes} is filled from the registry).
LAYER_NOTES = {
    "convolution": "grouped and depthwise, strides, dilation, fused ReLU or tanh; `pad_mode` 0 (explicit), "
                   "1 (SAME), 2 (VALID), 4 (\"same\" where the padding is symmetric; odd padding is refused)",
    "batchnorm": "instance normalisation (`training` 1); inference batch norm (`training` 0)",
    "elementwise": "operations {codes}; broadcasting, sequence blobs",
    "activation": "modes {codes}",
    "pool": "max and average, global or windowed, every padding mode; `top_shape_style` 0, others where the "
            "shape file shows floor or ceil",
    "inner_product": "weights `[nC, nB]` or transposed float16, biases, fused ReLU or tanh; `is_lookup` 1: an "
                     "embedding table (ONNX `Gather`, int64 index input)",
    "softmax": "over k",
    "softmax_nd": "over `nd_axis`, counted over the blob's own rank",
    "concat": "along k",
    "general_concat": "N-D (`nd_mode` 1) along `axis`, counted over the blob's rank",
    "sequence_concat": "along seq",
    "flatten": "`mode` 0 (channels-first) and 1 (channels-last), each sequence item on its own",
    "reshape": "`dst_seq` / `dst_k` / `dst_h` / `dst_w` with one -1, the batch kept, `dst_nd_rank` checked; "
               "`mode` 1 where it cannot differ",
    "transpose": "any permutation of seq, k, h and w (`axis_*`); the batch stays",
    "slice": "along w, h, k or seq, `start` / `end`, stride 1",
    "general_slice": "per axis `begin_*` / `end_*` / `stride_*` with masks and negative bounds, squeezing; "
                     "not the batch",
    "reduce": "`mode` 0 (sum) over `axis_mode` 4 (k)",
    "general_padding": "constant padding (`pad_fill_mode` 0)",
    "expand_dims": "as the shape file shows (no data moves)",
    "squeeze": "as the shape file shows (no data moves)",
    "split_nd": "along `nd_axis`, parts sized by the shape file",
    "upsample": "nearest and bilinear, integer factors",
    "load_constant": "a constant blob `[1, k, h, w]`",
    "input": "the graph input",
}


def _codes(names: dict[int, str], registered) -> str:
    return ", ".join(f"{code} ({names[code]})" for code in sorted(registered))


def layer_table() -> str:
    """The Markdown table of supported layer types (what docs/models.md holds between its markers)."""
    from . import ACTIVATION_MODES, ELEMENTWISE_OPERATIONS

    codes = {"elementwise": _codes(ELEMENTWISE_NAMES, ELEMENTWISE_OPERATIONS),
             "activation": _codes(ACTIVATION_NAMES, ACTIVATION_MODES)}
    rows = ["| layer type | what is handled |", "|---|---|"]
    for name, note in LAYER_NOTES.items():
        rows.append(f"| `{name}` | {note.format(codes=codes.get(name, ''))} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m neuralhash.convert.support: the table to paste into docs/models.md
    print(layer_table())
