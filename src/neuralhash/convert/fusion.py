"""Layer-chain fusions applied when optimizing.

NeuralHash (a MobileNetV3) spells hard-swish as four elementwise layers and
hard-sigmoid as the first three of them::

    t1 = x + 3              operation 2, alpha 3
    t2 = clip(t1, 0, 6)     operation 119, alpha 0, beta 6
    t3 = t2 * (1/6)         operation 3 (or 1 with one input), alpha 1/6
    y  = x * t3             operation 1, two inputs       (hard-swish only)

A chain becomes one ONNX ``HardSwish`` (all four layers, the multiply taking
the chain's own ``x``) or ``HardSigmoid(alpha=s, beta=a*s)`` (the first three:
``clip(x + a, 0, hi) * s`` with ``s > 0`` and ``hi * s == 1``). A chain is
fused only when each intermediate blob is read by the next layer of the chain
alone, is not a model output, and is defined once, and when ``x`` is not
redefined inside the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..espresso.layers import Elementwise, Layer
from .context import Context

_TOL = 1e-6


@dataclass(frozen=True)
class Fusion:
    kind: str  # "HardSwish" or "HardSigmoid"
    layers: tuple[Layer, ...]
    x: str  # the blob the chain reads
    alpha: float = 0.0
    beta: float = 0.0

    def emit(self, ctx: Context) -> None:
        """Called at the chain's last layer (ctx's current layer)."""
        x = ctx.value(self.x)
        if self.kind == "HardSwish":
            y = ctx.node("HardSwish", [x])
        else:
            y = ctx.node("HardSigmoid", [x], alpha=self.alpha, beta=self.beta)
        ctx.finish(y, ctx.shape(x), batch1=ctx.is_batch1(x))


def _unary_op(layer: Layer | None, *operations: int) -> bool:
    return (
        isinstance(layer, Elementwise)
        and layer.operation in operations
        and len(layer.bottoms) == 1
        and not layer.fused_relu
    )


def plan_fusions(model) -> dict[str, Fusion]:
    """Map every layer of every fusable chain (by layer name) to its Fusion."""
    layers = model.layers
    readers: dict[str, list[int]] = {}
    for index, layer in enumerate(layers):
        for blob in layer.bottoms:
            readers.setdefault(blob, []).append(index)
    writers: dict[str, list[int]] = {}
    for index, layer in enumerate(layers):
        writers.setdefault(layer.top, []).append(index)
    outputs = set(model.outputs) | set(model.inputs)

    def sole_reader(blob: str) -> int | None:
        """The index of the only layer reading ``blob``, when it is a private intermediate."""
        if blob in outputs or len(writers.get(blob, ())) != 1 or len(readers.get(blob, ())) != 1:
            return None
        return readers[blob][0]

    plan: dict[str, Fusion] = {}
    for i1, l1 in enumerate(layers):
        if l1.name in plan or not _unary_op(l1, 2):
            continue
        i2 = sole_reader(l1.top)
        l2 = layers[i2] if i2 is not None else None
        if not _unary_op(l2, 119) or l2.alpha != 0.0:
            continue
        i3 = sole_reader(l2.top)
        l3 = layers[i3] if i3 is not None else None
        if not _unary_op(l3, 3, 1):
            continue
        a, hi, s = l1.alpha, l2.beta, l3.alpha
        if not (s > 0 and abs(hi * s - 1.0) <= _TOL):
            continue
        x = l1.bottoms[0]
        chain: tuple[Layer, ...] = (l1, l2, l3)
        i4 = sole_reader(l3.top)
        l4 = layers[i4] if i4 is not None else None
        if (
            isinstance(l4, Elementwise)
            and l4.operation == 1
            and not l4.fused_relu
            and len(l4.bottoms) == 2
            and set(l4.bottoms) == {x, l3.top}
            and abs(a - 3.0) <= _TOL
            and abs(s - 1.0 / 6.0) <= _TOL
            and not any(layers[j].top == x for j in range(i1, i4 + 1))
        ):
            fusion = Fusion("HardSwish", chain + (l4,), x)
        elif not any(layers[j].top == x for j in range(i1, i3 + 1)):
            fusion = Fusion("HardSigmoid", chain, x, alpha=s, beta=a * s)
        else:
            continue
        for layer in fusion.layers:
            plan[layer.name] = fusion
    return plan
