"""``neuralhash audit LIST``: check a hash list before trusting it (see :mod:`neuralhash.lists.audit`)."""

from __future__ import annotations

import argparse
import json

from .common import add_max_distance, int_at_least, out


def add_audit_command(add) -> None:
    from ..lists.audit import DEFAULT_LIMIT

    p = add("audit", cmd_audit, "check a hash list: malformed, degenerate and duplicate entries; with a "
                                "reference set, over-broad entries and the expected false-match rate")
    p.add_argument("list", metavar="LIST", help="a hash list: HEX  PATH lines, CSV with a hash column, or JSONL")
    p.add_argument("--reference", metavar="DB_OR_LIST",
                   help="hashes of ordinary distinct images: a neuralhash database or a hash list")
    p.add_argument("--reference-model-id", metavar="ID", default=None,
                   help="with a database holding several models: whose hashes to use")
    add_max_distance(p)
    p.add_argument("--limit", type=int_at_least(0), default=DEFAULT_LIMIT, metavar="N",
                   help=f"list at most N items of each kind (default {DEFAULT_LIMIT}; counts are always complete)")
    p.add_argument("--json", action="store_true", help="one JSON object")


def cmd_audit(args: argparse.Namespace) -> int:
    from ..lists.audit import audit, format_text, read_hash_list, read_reference

    reference = (read_reference(args.reference, model_id=args.reference_model_id, option="--reference-model-id")
                 if args.reference else None)
    report = audit(read_hash_list(args.list), reference, max_distance=args.max_distance, limit=args.limit)
    if args.json:
        out(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        for line in format_text(report):
            out(line)
    return 1 if report.flagged else 0
