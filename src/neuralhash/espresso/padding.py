"""How a convolution's or pool's ``pad_mode`` pads one spatial axis (shared by the converter and the reference).

Evidence (ESPRESSO.md):

- 0: explicit ``pad_t``/``pad_b`` (rows) and ``pad_l``/``pad_r`` (columns);
- 1: TensorFlow's SAME, output ``ceil(size / stride)``, an odd extra row or
  column after (bottom / right): NeuralHash's stride-2 layers;
- 2: VALID, no padding (*unverified* beyond 1x1 stride-1 kernels and
  MNISTClassifier's 2x2 stride-2 pools, whose shape file it reproduces);
- 4: "same" computed at run time, seen with every ``pad_*`` field 0 on
  stride-1 kernels that keep the spatial size (MNISTClassifier: 28 -> 28;
  a copy with explicit pads of 1 reproduces the shape file and classifies
  drawn digits). Where the total padding is odd (an even kernel, or stride 2)
  no file shows which side takes the extra pixel: that case is refused.
"""

from __future__ import annotations

PAD_MODES = {0: "explicit pad_t/pad_b/pad_l/pad_r", 1: "SAME, an odd extra pixel after",
             2: "VALID", 4: "same, symmetric"}


class PaddingRefused(ValueError):
    """A pad mode, or a case of one, that is not evidenced: (field, value, detail) for the layer's error."""

    def __init__(self, field: str, value, detail: str = ""):
        super().__init__(detail)
        self.field, self.value, self.detail = field, value, detail


def axis_padding(pad_mode: int, axis: str, size: int, extent: int, stride: int,
                 pads: tuple[int, int]) -> tuple[int, int]:
    """(pad before, pad after) along one spatial axis (``axis`` is "height" or "width", for messages).

    ``extent`` is the window's extent, ``(kernel - 1) * dilation + 1``; ``pads`` the
    explicit fields of that axis. Raises :class:`PaddingRefused` for what is not evidenced.
    """
    if pad_mode == 0:
        return pads
    if pad_mode == 2:
        return 0, 0
    if pad_mode not in (1, 4):
        raise PaddingRefused("pad_mode", pad_mode, f"known modes: {', '.join(f'{k} ({v})' for k, v in PAD_MODES.items())}")
    out = -(-size // stride)
    total = max((out - 1) * stride + extent - size, 0)
    if pad_mode == 1:
        return total // 2, total - total // 2
    if any(pads):
        raise PaddingRefused("pad_mode", 4, f"with explicit padding {list(pads)} on the {axis} (seen only with 0)")
    if total % 2:
        pixel = "row" if axis == "height" else "column"
        raise PaddingRefused(
            "pad_mode", 4,
            f"on a {axis} of {size} with a window of {extent} and stride {stride} the padding is {total}, odd: "
            f"which side takes the extra {pixel} is not evidenced by any file")
    return total // 2, total // 2


class WindowTooSmall(ValueError):
    """The padded input is smaller than the window (a shape mismatch)."""


def axis_window(pad_mode: int, axis: str, size: int, kernel: int, stride: int, dilation: int,
                pads: tuple[int, int]) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one axis (floor output size)."""
    extent = (kernel - 1) * dilation + 1
    before, after = axis_padding(pad_mode, axis, size, extent, stride, pads)
    padded = size + before + after
    if padded < extent:
        raise WindowTooSmall(f"input {axis} {size} (padded to {padded}) is smaller than the window extent {extent}")
    return (padded - extent) // stride + 1, before, after
