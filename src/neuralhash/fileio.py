"""Writing files safely: a temporary name in the same folder, fsync, then a rename.

A failure at any point removes the temporary file, so no half-written output
is ever left where a user would find it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterable

from .errors import NeuralHashError


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or an iterable of chunks) to ``path`` atomically.

    OSError becomes a NeuralHashError naming the path.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            for chunk in (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise NeuralHashError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise
