"""Writing results: one line per item as it arrives, a progress line, failures on stderr."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time

from .common import error_reason


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
    """Failures reported on standard error as ``neuralhash: PATH: reason``, and counted."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.count = 0

    def report(self, path: str, reason: str) -> None:
        with self.progress.lock:
            self.count += 1
            self.progress.clear()
            print(f"neuralhash: {path}: {reason}", file=sys.stderr, flush=True)


def round6(x: float) -> float:
    return float(f"{float(x):.6g}")


def margins_of(h):
    margins = getattr(h, "margins", None)
    if margins is None:
        return None, None
    return [round6(m) for m in margins], h.unstable_bits()


class Writer:
    """One output line per result, flushed at once: text, JSON Lines or CSV."""

    def __init__(self, fmt: str, with_margins: bool, progress: Progress) -> None:
        self.fmt = fmt
        self.with_margins = with_margins
        self.progress = progress
        self.csv = None
        if fmt == "csv":
            import csv

            self.csv = csv.writer(sys.stdout, lineterminator="\n")
            header = ["path", "hash", "error"] + (["unstable_bits", "margins"] if with_margins else [])
            self._emit(lambda: self.csv.writerow(header))

    def _emit(self, write) -> None:
        self.progress.before_stdout()
        write()
        sys.stdout.flush()

    @staticmethod
    def reason(result) -> str:
        return error_reason(result.path, result.error or "failed")

    def write(self, result) -> None:
        path = result.path
        if self.fmt == "text":
            if result.ok:
                self._emit(lambda: sys.stdout.write(f"{result.hash.hex}  {path}\n"))
            return
        if self.fmt == "jsonl":
            if result.ok:
                obj = {"path": path, "hash": result.hash.hex}
                if self.with_margins:
                    obj["margins"], obj["unstable_bits"] = margins_of(result.hash)
            else:
                obj = {"path": path, "error": self.reason(result)}
            line = json.dumps(obj, ensure_ascii=False)
            self._emit(lambda: sys.stdout.write(line + "\n"))
            return
        if result.ok:
            row = [path, result.hash.hex, ""]
            if self.with_margins:
                margins, unstable = margins_of(result.hash)
                row += ["" if unstable is None else unstable,
                        "" if margins is None else " ".join(f"{m:.6g}" for m in margins)]
        else:
            row = [path, "", self.reason(result)] + (["", ""] if self.with_margins else [])
        self._emit(lambda: self.csv.writerow(row))


def hash_output(args) -> tuple[Progress, Failures, Writer]:
    """The progress line, failure reporter and result writer of a hash command's options."""
    fmt = "jsonl" if args.jsonl else "csv" if args.csv else "text"
    progress = Progress()
    return progress, Failures(progress), Writer(fmt, args.margins, progress)


def emit(results, writer: Writer, failures: Failures, progress: Progress) -> None:
    """Write every result, report each failure on standard error, count both."""
    for result in results:
        writer.write(result)
        if not result.ok:
            failures.report(result.path, writer.reason(result))
        progress.update(result.ok)


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

