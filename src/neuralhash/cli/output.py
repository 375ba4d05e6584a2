"""Writing results: one line per item as it arrives, a progress line, failures on stderr.

File names are carried by the rule of :mod:`neuralhash.files.pathnames`: records are
written to standard output as bytes (a text line holds the name's own bytes,
JSON is UTF-8 with ``path_b64`` for names that are not, CSV is UTF-8 with the
name's undecodable bytes as they are), and every message on standard error
shows a name through :func:`~neuralhash.files.pathnames.display`, so it stays one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import deque

from ..errors import NeuralHashError
from ..hashing.hash import HashResult
from ..files.pathnames import csv_row, display, json_fields, text_line
from .common import error_reason


class StandardOutputError(NeuralHashError):
    """Standard output cannot be written (a full disk, an I/O error); a closed pipe stays BrokenPipeError."""


class CheckedStdout:
    """Standard output for the time of a command: a failed write or flush raises :class:`StandardOutputError`.

    Every command's ``print()`` goes through it, so a full disk is one line
    whichever command writes. The first failure is kept (:attr:`failure`): a
    caller that swallowed it cannot turn a lost output into success. A closed
    pipe stays BrokenPipeError (the command stops quietly).
    """

    def __init__(self, stream) -> None:
        self.stream = stream
        self.failure: StandardOutputError | None = None

    def _checked(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.failure = self.failure or StandardOutputError(f"standard output: {exc.strerror or exc}")
            raise self.failure from None

    def write(self, text: str) -> int:
        return self._checked(self.stream.write, text)

    def flush(self) -> None:
        self._checked(self.stream.flush)

    def write_bytes(self, data: bytes) -> None:
        buffer = getattr(self.stream, "buffer", None)
        if buffer is None:  # a text-only stream (an embedding program's): the bytes as surrogate escapes
            self.write(data.decode("utf-8", "surrogateescape"))
            self.flush()
            return
        self.flush()  # whatever print() left in the text layer goes first
        self._checked(buffer.write, data)
        self._checked(buffer.flush)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def write_out(data: bytes) -> None:
    """``data`` written to standard output as they are, and flushed (see :class:`CheckedStdout`)."""
    stream = sys.stdout
    (stream if isinstance(stream, CheckedStdout) else CheckedStdout(stream)).write_bytes(data)


def one_line(text: str) -> str:
    """A message (it may quote a file name) as valid UTF-8 on one line, for a JSON or CSV record."""
    return display(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class Progress:
    """A one-line counter and rate on standard error, only when it is a terminal.

    Updates are throttled; :meth:`clear` wipes the line before anything else is
    written to the terminal, and at the end.
    """

    INTERVAL = 0.25

    def __init__(self, stream=None, total: int | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total  # known: draw a bar with an estimate of the time left
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        try:
            self.stdout_is_tty = bool(sys.stdout.isatty())
        except (AttributeError, ValueError):
            self.stdout_is_tty = False
        self.start = time.perf_counter()
        self.last = 0.0
        self.shown = False
        self.done = 0
        self.failed = 0
        # Guards the terminal line should the path generator ever run in another thread.
        self.lock = threading.RLock()

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < self.INTERVAL:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        failed = f", {self.failed} failed" if self.failed else ""
        if self.total:
            filled = min(20, 20 * self.done // self.total)
            left = (self.total - self.done) / max(rate, 1e-9)
            line = (f"neuralhash: [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} image(s), "
                    f"{left:.0f} s left{failed}")
        else:
            line = f"neuralhash: {self.done} image(s), {rate:.1f}/s{failed}"
        with self.lock:
            self.stream.write(f"\r\x1b[K{line}")
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        with self.lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.shown = False

    def before_stdout(self) -> None:
        # Only a terminal shared by both streams needs the progress line out of the way.
        if self.stdout_is_tty:
            self.clear()


class Failures:
    """Failures reported on standard error as ``neuralhash: PATH: reason``, and counted.

    With ``records`` (a command whose output lists failures, ``--jsonl`` or
    ``--csv``), a path that never reaches the hasher (an unreadable folder) is
    also kept there as an error result, for the output to write in its turn.
    """

    def __init__(self, progress: Progress, records: "deque[HashResult] | None" = None) -> None:
        self.progress = progress
        self.count = 0
        self.records = records

    def report(self, path: str, reason: str) -> None:
        with self.progress.lock:
            self.count += 1
            self.progress.clear()
            print(f"neuralhash: {display(path)}: {display(reason)}", file=sys.stderr, flush=True)

    def unlisted(self, path: str, reason: str) -> None:
        """A path the walk could not list (a folder): reported, and an error record when the output has them."""
        self.report(path, reason)
        if self.records is not None:
            self.records.append(HashResult(path, None, f"{path}: {reason}"))


def round6(x: float) -> float:
    return float(f"{float(x):.6g}")


def margins_of(h):
    margins = getattr(h, "margins", None)
    if margins is None:
        return None, None
    return [round6(m) for m in margins], h.unstable_bits()


class Writer:
    """One output record per result, written to standard output at once: text, JSON Lines or CSV.

    Text has a line per hashed image (failures are on standard error only);
    JSON Lines and CSV have a record for every failure too.
    """

    def __init__(self, fmt: str, with_margins: bool, progress: Progress) -> None:
        self.fmt = fmt
        self.with_margins = with_margins
        self.progress = progress
        if fmt == "csv":
            header = ["path", "hash", "error"] + (["unstable_bits", "margins"] if with_margins else [])
            self._emit(csv_row(header).encode("ascii"))

    @property
    def lists_failures(self) -> bool:
        return self.fmt != "text"

    def _emit(self, data: bytes) -> None:
        self.progress.before_stdout()
        write_out(data)

    @staticmethod
    def reason(result) -> str:
        return error_reason(result.path, result.error or "failed")

    def write(self, result) -> None:
        data = self.encode(result)
        if data:
            self._emit(data)

    def encode(self, result) -> bytes:
        """The bytes of ``result``'s record (empty for a failure in text)."""
        path = result.path
        if self.fmt == "text":
            # The name's own bytes, escaped like sha256sum's when it holds \\, \n or \r.
            return os.fsencode(text_line(result.hash.hex, path)) if result.ok else b""
        if self.fmt == "jsonl":
            obj = json_fields(path)
            if result.ok:
                obj["hash"] = result.hash.hex
                if self.with_margins:
                    obj["margins"], obj["unstable_bits"] = margins_of(result.hash)
            else:
                obj["error"] = one_line(self.reason(result))
            return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        if result.ok:
            row = [path, result.hash.hex, ""]
            if self.with_margins:
                margins, unstable = margins_of(result.hash)
                row += ["" if unstable is None else unstable,
                        "" if margins is None else " ".join(f"{m:.6g}" for m in margins)]
        else:
            row = [path, "", one_line(self.reason(result))] + (["", ""] if self.with_margins else [])
        # UTF-8, the name's undecodable bytes as they are (pathnames' CSV rule).
        return csv_row(row).encode("utf-8", "surrogateescape")


def hash_output(args) -> tuple[Progress, Failures, Writer]:
    """The progress line, failure reporter and result writer of a hash command's options."""
    fmt = "jsonl" if args.jsonl else "csv" if args.csv else "text"
    progress = Progress()
    writer = Writer(fmt, args.margins, progress)
    return progress, Failures(progress, deque() if writer.lists_failures else None), writer


def write_unlisted(writer: Writer, failures: Failures) -> None:
    """The error records of the folders that could not be listed so far (already reported on stderr)."""
    records = failures.records
    while records:
        writer.write(records.popleft())


def emit(results, writer: Writer, failures: Failures, progress: Progress) -> None:
    """Write every result, report each failure on standard error, count both.

    Folders the walk could not list get their error record just before the next
    result (the walk runs ahead of the hashing), or at the end.
    """
    for result in results:
        write_unlisted(writer, failures)
        writer.write(result)
        if not result.ok:
            failures.report(result.path, writer.reason(result))
        progress.update(result.ok)
    write_unlisted(writer, failures)


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that hash_many's worker processes are shut down.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """


@contextlib.contextmanager
def sigterm_unwinds():
    """While hashing, SIGTERM (``kill``, ``timeout``) unwinds like Ctrl-C instead of orphaning workers."""

    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pass_file_names_through() -> None:
    """File names that are not valid in the locale's encoding print as their original bytes."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError, OSError):
            pass

