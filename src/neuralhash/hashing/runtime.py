"""ONNX Runtime sessions: CPU by default, any installed execution provider on request.

Hashing imports this module: it imports ONNX Runtime only, never the ``onnx`` package
(about a second of start-up that ``neuralhash hash`` does not need).
"""

from __future__ import annotations

import os
from typing import Sequence

import onnxruntime as ort

from ..errors import NeuralHashError, ProviderError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def make_session(
    model: "onnx.ModelProto | str | os.PathLike | bytes",  # noqa: F821 - onnx is not imported here
    providers: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    spinning: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession for ``model`` (a proto, serialised bytes or a path).

    ``providers`` defaults to the CPU; a provider that is not installed is an
    error that lists the installed ones, rather than a silent fallback.

    ``spinning=False`` stops ORT's intra-op threads from busy-waiting after
    every run. Hashing alternates inference with image decoding on the same
    cores, and spinning threads take CPU from the decoders (on 2 cores, turning
    it off made hash_many about 30% faster). It changes no numbers.
    """
    chosen = list(providers or DEFAULT_PROVIDERS)
    installed = available_providers()
    missing = [p for p in chosen if p not in installed]
    if missing:
        raise ProviderError(
            f"execution provider {', '.join(missing)} is not installed (installed: {', '.join(installed)})"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are not ours to print
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto (onnx itself is not imported for hashing)
        model = model.SerializeToString()
    elif not isinstance(model, (bytes, str)):
        model = os.fspath(model)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=chosen)
    except Exception as exc:  # ORT raises its own exception types for unreadable models
        where = model if isinstance(model, str) else "ONNX model"
        raise NeuralHashError(f"{where}: onnxruntime cannot load it ({exc})") from None
