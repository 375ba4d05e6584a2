"""The graph builder handed to every layer handler.

It keeps the ONNX graph in SSA form while Espresso blob names may be reused:
every definition of a blob gets its own value name, the last one the blob's
own name (so the graph's outputs are named after their blobs), earlier ones
``<blob>__1``, ``<blob>__2``... The network input keeps its blob name. An
output whose real rank differs from its in-graph layout leaves its name to
the Reshape that gives it that rank.

Besides the value name of each blob, the context tracks its static
per-image Espresso view ``(seq, k, h, w)`` (the batch is symbolic), which
handlers need for explicit padding and for clear errors, and whether it is a
batch-1 constant (``load_constant`` and what is computed from constants only).

Inside the graph a blob is ``[N, k, h, w]`` when its seq is 1 and
``[N, seq, k, h, w]`` otherwise: the batch always leads (Espresso's
``[seq, n, ...]`` order would mix images), and the 4-D form keeps every
image layer (convolution, pooling...) in ONNX's NCHW. Only the graph's
inputs and outputs take the blob's real rank (``BlobShape.onnx_dims``),
through a Reshape where the two differ.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ShapeMismatchError, UnsupportedLayerError, layer_label, unsupported_value
from ..espresso.layers import Layer

Shape = tuple[int, int, int]  # (k, h, w) of a blob whose seq is 1
View = tuple[int, int, int, int]  # (seq, k, h, w)


def as_view(shape: Sequence[int]) -> View:
    """(seq, k, h, w) from a (k, h, w) or (seq, k, h, w) tuple."""
    dims = tuple(int(d) for d in shape)
    return (1, *dims) if len(dims) == 3 else dims  # type: ignore[return-value]


class Context:
    """Builds the node list and initializers of one conversion."""

    def __init__(self, model: Any, *, optimize: bool, input_shapes: dict[str, Shape | View],
                 renamed: Sequence[str] = (), dry: bool = False, integer: Sequence[str] = ()):
        self.model = model
        self.optimize = optimize
        self.dry = dry  # checking only: weights are not read, initializers not made
        self._renamed = set(renamed)  # blobs whose last definition must leave the blob name free
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set(model.inputs)
        for layer in model.layers:
            self._used.update(layer.bottoms)
            self._used.add(layer.top)
            self._used.update(layer.tops)
        self._values: dict[str, str] = {}  # blob -> current ONNX value name
        self._views: dict[str, View] = {}  # ONNX value name -> (seq, k, h, w)
        self._batch1: set[str] = set()  # ONNX value names with a fixed batch of 1
        self.integer: set[str] = set(integer)  # ONNX value names of type int64 (embedding indices)
        self._top_names = self._plan_names()
        self.layer: Layer | None = None
        self._start = 0
        for blob in model.inputs:
            self._values[blob] = blob
            self._views[blob] = as_view(input_shapes[blob])

    # -- names -----------------------------------------------------------------------------

    def _plan_names(self) -> dict[tuple[int, str], str]:
        """The value name of each layer's tops, by (layer index, blob); see the module docstring."""
        definitions: dict[str, list[int]] = {}
        for blob in self.model.inputs:
            definitions[blob] = [-1]
        for index, layer in enumerate(self.model.layers):
            if layer.type == "input":
                continue  # an input layer names the graph input, it defines no new value
            for top in layer.tops:
                definitions.setdefault(top, []).append(index)
        names: dict[tuple[int, str], str] = {}
        for blob, indices in definitions.items():
            is_input = indices[0] == -1
            keep = 0 if is_input else len(indices) - 1  # the definition that keeps the blob name
            if blob in self._renamed:
                keep = -1
            for position, index in enumerate(indices):
                if index == -1:
                    continue
                suffix = position if is_input else position + 1
                names[index, blob] = blob if position == keep else self.unique(f"{blob}__{suffix}")
        for index, layer in enumerate(self.model.layers):
            if layer.type == "input":
                names[index, layer.top] = layer.top
        return names

    def unique(self, base: str) -> str:
        """A value name not used yet, ``base`` when free; it is reserved."""
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name

    def top_name(self, top: str | None = None) -> str:
        """The value name the current layer's top (or its top ``top``) will have."""
        return self._top_names[self._index, top or self.layer.top]

    def planned_name(self, index: int, top: str | None = None) -> str:
        """The value name of layer ``index``'s top (or its top ``top``)."""
        return self._top_names[index, top or self.model.layers[index].top]

    def is_used(self, name: str) -> bool:
        return name in self._used

    def current(self, blob: str) -> str | None:
        """The value name ``blob`` has now (None before it is produced, or if it was fused away)."""
        return self._values.get(blob)

    # -- per layer -------------------------------------------------------------------------

    def begin(self, index: int, layer: Layer) -> None:
        self.layer = layer
        self._index = index
        self._start = len(self.nodes)

    def value(self, blob: str) -> str:
        return self._values[blob]

    def input(self, i: int = 0) -> str:
        """The value name of the current layer's ``i``-th bottom."""
        return self._values[self.layer.bottoms[i]]

    def inputs(self) -> list[str]:
        return [self._values[b] for b in self.layer.bottoms]

    def shape(self, value: str) -> Shape:
        """(k, h, w) of a value; a sequence blob (seq > 1) is refused by the caller's layer."""
        seq, k, h, w = self._views[value]
        if seq != 1:
            raise self.sequence_refused(seq)
        return (k, h, w)

    def view(self, value: str) -> View:
        """(seq, k, h, w) of a value."""
        return self._views[value]

    def in_shape(self, i: int = 0) -> Shape:
        return self.shape(self.input(i))

    def in_view(self, i: int = 0) -> View:
        return self._views[self.input(i)]

    def has_value(self, blob: str) -> bool:
        return blob in self._values

    def sequence_refused(self, seq: int) -> UnsupportedLayerError:
        return UnsupportedLayerError(
            f"{layer_label(self.layer)}: a {self.layer.type} layer on a sequence blob (seq {seq}) is not supported"
        )

    def is_integer(self, value: str) -> bool:
        return value in self.integer

    def is_batch1(self, value: str) -> bool:
        return value in self._batch1

    def expect_inputs(self, count: int | tuple[int, int | None], what: str = "") -> None:
        """Check the number of bottoms: exactly ``count``, or within (low, high or None for no limit)."""
        low, high = (count, count) if isinstance(count, int) else count
        n = len(self.layer.bottoms)
        if n < low or (high is not None and n > high):
            if isinstance(count, int):
                wanted = str(count)
            else:
                wanted = f"at least {low}" if high is None else f"{low} to {high}"
            prefix = f"{what} " if what else ""
            raise UnsupportedLayerError(
                f"{layer_label(self.layer)}: {prefix}with {n} input{'s' if n != 1 else ''} is not supported "
                f"(expects {wanted})"
            )

    def unsupported(self, field: str, value: Any, detail: str = "") -> UnsupportedLayerError:
        """The error for a field value the converter does not handle (raise it)."""
        return unsupported_value(self.layer, field, value, detail)

    def mismatch(self, message: str) -> ShapeMismatchError:
        """The error for inputs whose shapes the layer cannot take (raise it)."""
        return ShapeMismatchError(f"{layer_label(self.layer)}: {message}")

    # -- emitting --------------------------------------------------------------------------

    def const(self, array: np.ndarray, hint: str, *, name: str | None = None) -> str:
        """Add an initializer (float32 or int64 as given); returns its name."""
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        if name is None:
            name = self.unique(f"{self.layer.name}/{hint}")
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value: float, hint: str) -> str:
        return self.const(np.array(value, dtype=np.float32), hint)

    def ints(self, values: Sequence[int], hint: str) -> str:
        return self.const(np.array(list(values), dtype=np.int64), hint)

    def weight(self, role: str, hint: str | None = None, transform=None, *, name: str | None = None) -> str:
        """An initializer from the model's weights file (``model.tensor(layer, role)``).

        When only checking (``dry``), nothing is read: the name is returned alone.
        """
        if self.dry:
            return name or self.unique(f"{self.layer.name}/{hint or role}")
        array = self.model.tensor(self.layer, role)
        if transform is not None:
            array = transform(array)
        return self.const(np.asarray(array, dtype=np.float32), hint or role, name=name)

    def node(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs: Any) -> str:
        """Emit one single-output node; returns its (temporary) output value name."""
        output = self.unique(f"{self.layer.top}/{hint or op_type}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def as5(self, value: str) -> str:
        """``value`` as [N, seq, k, h, w] (a 4-D value gains its size-1 seq axis)."""
        if self._views[value][0] != 1:
            return value
        return self.node("Unsqueeze", [value, self.ints([1], "seq_axis")], "as5d")

    def pack(self, value5: str, view: Sequence[int]) -> str:
        """A [N, seq, k, h, w] value in the context's layout for ``view`` (4-D when seq is 1)."""
        if int(view[0]) != 1:
            return value5
        return self.node("Squeeze", [value5, self.ints([1], "seq_axis")], "as4d")

    def finish(self, value: str, shape: Sequence[int], *, batch1: bool | None = None, top: str | None = None) -> None:
        """Make ``value`` the current layer's top (or its top ``top``): it takes the planned name.

        ``shape`` is (k, h, w) or (seq, k, h, w); the value must be 4-D when seq is 1,
        5-D otherwise. ``batch1`` defaults to "every input is a batch-1 constant"
        (False for a layer without inputs unless given).
        """
        blob = top or self.layer.top
        target = self.top_name(blob)
        if value != target:
            mine = self.nodes[self._start :]
            if any(value in node.output for node in mine):
                for node in mine:
                    for seq in (node.input, node.output):
                        for i, name in enumerate(seq):
                            if name == value:
                                seq[i] = target
                    if node.name == value:
                        node.name = target
            else:
                self.nodes.append(helper.make_node("Identity", [value], [target], name=target))
        if batch1 is None:
            batch1 = bool(self.layer.bottoms) and all(self.is_batch1(v) for v in self.inputs())
        self._values[blob] = target
        self._views[target] = as_view(shape)
        if batch1:
            self._batch1.add(target)
        else:
            self._batch1.discard(target)

    def rebind(self, blob: str, value: str, view: Sequence[int]) -> None:
        """Make ``value`` (already emitted) the current value of ``blob``."""
        self._values[blob] = value
        self._views[value] = as_view(view)

    def placeholder(self, blob: str, view: Sequence[int]) -> None:
        """Stand in for a top that could not be converted, so later layers can still be checked."""
        name = self.unique(f"{blob}/unconverted")
        self._values[blob] = name
        self._views[name] = as_view(view)
