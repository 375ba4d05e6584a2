"""Writing output files without destroying what is at the path, and without leaving debris.

:func:`atomic_write` decides by what the path is:

- ``-``: standard output (a file literally named ``-`` is ``./-``);
- a new path or an existing regular file: the bytes go to a temporary file
  in the same folder, are fsynced, and the temporary file is renamed over the
  path, so a reader sees the old file or the new one, never half of one. An
  existing file's permission bits are kept. A read-only file is refused.
- a symbolic link: followed. The file it points to is replaced as above and
  the link stays a link (a dangling link creates its target).
- a FIFO or a character device (``/dev/null``, ``/dev/full``, a terminal):
  written through, never replaced.
- a directory, a socket or a block device: refused.

On Linux the temporary file is created unnamed (``O_TMPFILE``) and only
given a name for the final rename, so even ``kill -9`` leaves nothing behind;
elsewhere it has a hidden name (``.NAME.PID.RANDOM.tmp``). Either way any
exception, Ctrl-C, SIGTERM, SIGHUP or another signal that would end the process
removes it; the signal is then re-delivered, so the process ends as it would have.

Every OSError becomes one :class:`NeuralHashError` line naming the path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import NeuralHashError

STDOUT = "-"
# Signals whose default action ends the process (SIGINT already raises KeyboardInterrupt; SIGKILL cannot
# be caught, which is why the temporary file has no name until the very end).
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")
                 if hasattr(signal, name))


class _Signalled(BaseException):
    """A terminating signal arrived while a temporary file existed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> int:
    """Write ``data`` (bytes, or an iterable of chunks) to ``path`` as the module docstring says.

    Returns the number of bytes written.
    """
    chunks = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if os.fspath(path) in (STDOUT, b"-"):
        return _write_stdout(chunks)
    path = Path(os.fsdecode(path))
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise NeuralHashError(f"{path}: cannot write ({exc.strerror or exc})") from None
    if st is not None:
        mode = st.st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            return _write_through(path, chunks)
        if stat.S_ISDIR(mode):
            raise NeuralHashError(f"{path}: is a directory")
        if not stat.S_ISREG(mode):
            what = "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
            raise NeuralHashError(f"{path}: is {what}; refusing to replace it")
        if not mode & 0o222 or not os.access(target, os.W_OK):
            raise NeuralHashError(f"{path}: is read-only; refusing to replace it")
    return _replace(path, target, chunks, None if st is None else stat.S_IMODE(st.st_mode))


def _write_all(fd: int, chunks: Iterable[bytes]) -> int:
    total = 0
    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        while view:
            n = os.write(fd, view)
            view = view[n:]
            total += n
    return total


def _write_stdout(chunks: Iterable[bytes]) -> int:
    try:
        sys.stdout.flush()
        stream = sys.stdout.buffer
        total = 0
        for chunk in chunks:
            stream.write(chunk)
            total += len(chunk)
        stream.flush()
        return total
    except BrokenPipeError:
        raise  # the reader went away: the CLI stops quietly, as other tools do
    except OSError as exc:
        raise NeuralHashError(f"standard output: cannot write ({exc.strerror or exc})") from None


def _write_through(path: Path, chunks: Iterable[bytes]) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise NeuralHashError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        return _write_all(fd, chunks)
    except OSError as exc:
        raise NeuralHashError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM / SIGHUP raise while a temporary file exists (only where they would simply kill us)."""
    installed = []
    if threading.current_thread() is threading.main_thread():

        def handler(signum, frame):
            raise _Signalled(signum)

        for signum in _SIGNALS:
            try:
                if signal.getsignal(signum) is signal.SIG_DFL:
                    signal.signal(signum, handler)
                    installed.append(signum)
            except (ValueError, OSError):
                pass
    try:
        yield
    finally:
        for signum in installed:
            signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Block the terminating signals for the body; one that arrived meanwhile is delivered after it."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = mask(signal.SIG_BLOCK, {*_SIGNALS, signal.SIGINT})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


def _replace(path: Path, target: Path, chunks: Iterable[bytes], keep_mode: int | None) -> int:
    folder = target.parent
    tmp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    named = False
    fd = -1
    try:
        with _signals_unwind():
            try:
                # Signals are held while the file is created and recorded: one arriving between os.open()
                # and ``named = True`` would otherwise leave a hidden file nobody knows of.
                with _signals_held():
                    fd = _open_unnamed(folder)
                    if fd < 0:
                        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                        named = True
                if keep_mode is not None:
                    os.fchmod(fd, keep_mode)
                total = _write_all(fd, chunks)
                os.fsync(fd)
                if not named:
                    named = True  # from here on, ``tmp`` may exist and must go if anything fails
                    _link_unnamed(fd, tmp)
                os.replace(tmp, target)
                named = False
                return total
            finally:
                if fd >= 0:
                    os.close(fd)
                if named:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
    except _Signalled as exc:
        os.kill(os.getpid(), exc.signum)  # the default action again, now that nothing is left behind
        raise NeuralHashError(f"{path}: interrupted by signal {exc.signum}") from None
    except OSError as exc:
        raise NeuralHashError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _open_unnamed(folder: Path) -> int:
    """An unnamed file in ``folder`` (Linux O_TMPFILE), or -1 where that is not available."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return -1
    try:
        # Readable too, so that the bytes can still be copied out should linking it fail.
        return os.open(folder, flag | os.O_RDWR | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError:
        return -1  # a file system without O_TMPFILE support: fall back to a hidden name


def _link_unnamed(fd: int, name: Path) -> None:
    """Give the unnamed file ``fd`` the name ``name`` (same folder), for the final rename."""
    folder = os.open(name.parent, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        # dst_dir_fd makes CPython call linkat() with AT_SYMLINK_FOLLOW, which resolves the /proc link
        # to the file itself; plain link() would try to link the /proc entry and fail with EXDEV.
        try:
            os.link(f"/proc/self/fd/{fd}", name.name, dst_dir_fd=folder, follow_symlinks=True)
            return
        except OSError:
            pass  # /proc hidden or linkat refused: copy the bytes into a named file instead
        out = os.open(name.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600,
                      dir_fd=folder)
        try:
            os.fchmod(out, stat.S_IMODE(os.fstat(fd).st_mode))
            size, offset = os.fstat(fd).st_size, 0
            while offset < size:
                sent = os.sendfile(out, fd, offset, size - offset)
                if sent == 0:
                    raise OSError(f"short copy at byte {offset} of {size}")
                offset += sent
            os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(folder)
