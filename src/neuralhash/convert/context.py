"""The graph builder handed to every layer handler.

It keeps the ONNX graph in SSA form while Espresso blob names may be reused:
every definition of a blob gets its own value name, the last one the blob's
own name (so the graph's outputs are named after their blobs), earlier ones
``<blob>__1``, ``<blob>__2``... The network input keeps its blob name.

Besides the value name of each blob, the context tracks its static
``[k, h, w]`` (the batch is symbolic), which handlers need for explicit
padding and for clear errors, and whether it is a batch-1 constant
(``load_constant`` and what is computed from constants only).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ShapeMismatchError, UnsupportedLayerError, layer_label, unsupported_value
from ..espresso.layers import Layer

Shape = tuple[int, int, int]




class Context:
    """Builds the node list and initializers of one conversion."""

    def __init__(self, model: Any, *, optimize: bool, input_shapes: dict[str, Shape]):
        self.model = model
        self.optimize = optimize
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._used: set[str] = set(model.inputs)
        for layer in model.layers:
            self._used.update(layer.bottoms)
            self._used.add(layer.top)
        self._values: dict[str, str] = {}  # blob -> current ONNX value name
        self._shapes: dict[str, Shape] = {}  # ONNX value name -> [k, h, w]
        self._batch1: set[str] = set()  # ONNX value names with a fixed batch of 1
        self._top_names = self._plan_names()
        self.layer: Layer | None = None
        self._start = 0
        for blob in model.inputs:
            self._values[blob] = blob
            self._shapes[blob] = input_shapes[blob]

    # -- names -----------------------------------------------------------------------------

    def _plan_names(self) -> dict[int, str]:
        """The value name of each layer's top (by layer index); see the module docstring."""
        definitions: dict[str, list[int]] = {}
        for blob in self.model.inputs:
            definitions[blob] = [-1]
        for index, layer in enumerate(self.model.layers):
            if layer.type == "input":
                continue  # an input layer names the graph input, it defines no new value
            definitions.setdefault(layer.top, []).append(index)
        names: dict[int, str] = {}
        for blob, indices in definitions.items():
            is_input = indices[0] == -1
            keep = 0 if is_input else len(indices) - 1  # the definition that keeps the blob name
            for position, index in enumerate(indices):
                if index == -1:
                    continue
                suffix = position if is_input else position + 1
                names[index] = blob if position == keep else self.unique(f"{blob}__{suffix}")
        for index, layer in enumerate(self.model.layers):
            if layer.type == "input":
                names[index] = layer.top
        return names

    def unique(self, base: str) -> str:
        """A value name not used yet, ``base`` when free; it is reserved."""
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        return name

    def top_name(self) -> str:
        """The value name the current layer's top will have."""
        return self._top_names[self._index]

    def planned_name(self, index: int) -> str:
        """The value name of layer ``index``'s top."""
        return self._top_names[index]

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
        return self._shapes[value]

    def in_shape(self, i: int = 0) -> Shape:
        return self._shapes[self.input(i)]

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

    def weight(self, role: str, hint: str | None = None, transform=None) -> str:
        """An initializer from the model's weights file (``model.tensor(layer, role)``)."""
        array = self.model.tensor(self.layer, role)
        if transform is not None:
            array = transform(array)
        return self.const(np.asarray(array, dtype=np.float32), hint or role)

    def node(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs: Any) -> str:
        """Emit one single-output node; returns its (temporary) output value name."""
        output = self.unique(f"{self.layer.top}/{hint or op_type}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    def finish(self, value: str, shape: Shape, *, batch1: bool | None = None) -> None:
        """Make ``value`` the current layer's top: it takes the planned top name.

        ``batch1`` defaults to "every input is a batch-1 constant" (False for a
        layer without inputs unless given).
        """
        target = self.top_name()
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
        self._values[self.layer.top] = target
        self._shapes[target] = tuple(int(d) for d in shape)  # type: ignore[assignment]
        if batch1:
            self._batch1.add(target)
        else:
            self._batch1.discard(target)
