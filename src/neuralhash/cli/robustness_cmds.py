"""The robustness command: every image edited every way, a report of how each hash moved."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from ..errors import NeuralHashError, install_hint
from .common import error_reason, load_hasher, out
from .output import Failures, Progress, pass_file_names_through, sigterm_unwinds
from .paths import iter_paths

HINT = install_hint("robustness")


def _choose_edits(spec: str | None):
    from ..robustness.edits import default_edits, edit_families

    edits = default_edits()
    if not spec:
        return edits
    families = edit_families(edits)
    wanted = [f.strip() for f in spec.split(",") if f.strip()]
    if not wanted:
        raise NeuralHashError(f"--edits: no edit family in {spec!r}; the families: {', '.join(families)}")
    unknown = [f for f in wanted if f not in families]
    if unknown:
        raise NeuralHashError(f"--edits: unknown edit family {unknown[0]!r}; the families: {', '.join(families)}")
    return [e for e in edits if e.family in wanted]


def _choose_hashes(spec: str | None) -> list[str]:
    from ..robustness.hashers import HASHER_NAMES

    if not spec:
        return list(HASHER_NAMES)
    by_lower = {n.lower(): n for n in HASHER_NAMES}
    wanted = [f.strip() for f in spec.split(",") if f.strip()]
    if not wanted:
        raise NeuralHashError(f"--hashes: no hash in {spec!r}; choose among {', '.join(HASHER_NAMES)}")
    unknown = [f for f in wanted if f.lower() not in by_lower]
    if unknown:
        raise NeuralHashError(f"--hashes: unknown hash {unknown[0]!r}; choose among {', '.join(HASHER_NAMES)}")
    return [by_lower[f.lower()] for f in wanted]


def check_robustness_usage(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Every option checked before a model is loaded or an image read: exit 2 naming the option."""
    if args.list_edits:
        return
    if not args.out:
        parser.error("--out DIR is required")
    if not args.images:
        parser.error("IMAGES are required (or --list-edits)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"argument --out: {args.out} exists and is not a folder")
    for choose, spec in ((_choose_edits, args.edits), (_choose_hashes, args.hashes)):
        try:
            choose(spec)
        except NeuralHashError as exc:
            parser.error(str(exc))


def cmd_list_edits() -> int:
    from ..robustness.edits import default_edits

    for e in default_edits():
        out(f"{e.family:<16} {e.label:<24} {e.description}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    if args.list_edits:
        return cmd_list_edits()
    from ..hashing import IMAGE_EXTENSIONS

    for module, name in (("matplotlib", "matplotlib"), ("jinja2", "Jinja2")):  # first: not after a whole run
        if importlib.util.find_spec(module) is None:
            raise NeuralHashError(f"the robustness report needs {name}: {HINT}")
    from ..robustness import measure, terminal_summary, write_report

    edits = _choose_edits(args.edits)
    hashes = _choose_hashes(args.hashes)
    pass_file_names_through()
    listing = Failures(Progress())
    images = list(iter_paths(args.images, IMAGE_EXTENSIONS, listing))  # before the model: a typo costs no load
    if not images:
        raise NeuralHashError("no images found in " + " ".join(args.images))
    nh = load_hasher(args) if "NeuralHash" in hashes else None
    progress = Progress(total=len(images))
    with sigterm_unwinds():
        try:
            result = measure(images, nh, edits=edits, seed=args.random_seed, hashers=hashes, workers=args.workers,
                             max_side=args.max_side, max_pixels=args.max_pixels,
                             progress=lambda done, total: progress.update(True))
        finally:
            progress.clear()
    failures = Failures(progress)
    for f in result.failures:
        where = f.image if f.edit is None else f"{f.image} [{f.edit}]"
        failures.report(where, error_reason(f.image, f.reason))
    for note in result.notes:
        print(f"neuralhash: note: {note}", file=sys.stderr, flush=True)
    write_report(result, args.out)
    out(terminal_summary(result, args.out))
    unread = sum(f.edit is None for f in result.failures)
    return 1 if unread or listing.count else 0
