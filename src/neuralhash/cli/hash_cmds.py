"""Commands that hash images: hash, compare."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import NeuralHashError
from ..files.pathnames import json_fields, text_line
from .common import is_hex_hash, load_hasher
from .output import emit, hash_output, pass_file_names_through, sigterm_unwinds, write_out
from .paths import iter_paths


def cmd_hash(args: argparse.Namespace) -> int:
    from ..hashing import IMAGE_EXTENSIONS

    if args.scheduler:
        from .dask_cmds import cmd_hash_on_cluster

        return cmd_hash_on_cluster(args)
    nh = load_hasher(args)
    pass_file_names_through()
    progress, failures, writer = hash_output(args)
    results = nh.hash_many(
        iter_paths(args.paths, IMAGE_EXTENSIONS, failures, null=args.null),
        batch_size=args.batch_size,
        workers=args.workers,
        exif_transpose=args.exif_transpose,
        fast=args.fast,
    )
    with sigterm_unwinds():
        try:
            emit(results, writer, failures, progress)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # stop hash_many's workers when the loop ends early (Ctrl-C, SIGTERM, closed pipe)
            progress.clear()
    if progress.done == 0 and failures.count == 0:
        print("neuralhash: warning: no images found", file=sys.stderr, flush=True)
    return 1 if failures.count else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..hashing import Hash

    operands = [args.a, args.b]
    # A string of exactly 24 hex digits is a hash unless a file of that name exists.
    is_hash = [is_hex_hash(x) for x in operands]
    for x, h in zip(operands, is_hash):
        if not h and not os.path.exists(x):
            raise NeuralHashError(f"{x}: no such file, and not a hash of 24 hex digits")
    nh = load_hasher(args) if not all(is_hash) else None
    hashes = []
    for x, h in zip(operands, is_hash):
        if h:
            hashes.append(Hash.from_hex(x))
        else:
            hashes.append(nh.hash(x, exif_transpose=args.exif_transpose))
    distance = hashes[0].hamming(hashes[1])
    # Operands are carried like hash's file names (neuralhash.files.pathnames): "a" / "a_b64", escaped text lines.
    if args.jsonl:
        obj = {**json_fields(args.a, "a"), **json_fields(args.b, "b"), "hash_a": hashes[0].hex,
               "hash_b": hashes[1].hex, "distance": distance}
        write_out((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
    else:
        text = text_line(hashes[0].hex, args.a) + text_line(hashes[1].hex, args.b) + f"distance {distance}\n"
        write_out(os.fsencode(text))
    return 0

