"""Commands on a hash database: index add / import / export / info, match, dupes."""

from __future__ import annotations

import csv
import json
import sys

from ..errors import NeuralHashError
from .common import error_reason, is_hex_hash, load_hasher, out
from .output import Failures, Progress, pass_file_names_through, sigterm_unwinds
from .paths import iter_paths



def _open(path: str, *, create: bool):
    from ..store import HashStore

    return HashStore(path, create=create)


def _rows_writer(fmt: str, columns: list[str]):
    """A function writing one record (dict) per call as text, JSON Lines or CSV."""
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        return lambda record: writer.writerow([record.get(c, "") for c in columns])
    if fmt == "jsonl":
        return lambda record: out(json.dumps(record, ensure_ascii=False))
    return None


def _format(args) -> str:
    return "jsonl" if args.jsonl else "csv" if args.csv else "text"


# -- index add / import / export / info ---------------------------------------------------


def cmd_index_add(args) -> int:
    from ..hashing import IMAGE_EXTENSIONS

    nh = load_hasher(args)
    pass_file_names_through()
    progress = Progress()
    failures = Failures(progress)

    def on_result(path: str, error: str | None) -> None:
        if error is not None:
            failures.report(path, error_reason(path, error))
        progress.update(error is None)

    with _open(args.db, create=True) as store, sigterm_unwinds():
        try:
            report = store.add_images(nh, iter_paths(args.paths, IMAGE_EXTENSIONS, failures),
                                      batch_size=args.batch_size, workers=args.workers, on_result=on_result)
        finally:
            progress.clear()
    print(f"neuralhash: {args.db}: {report.added} added, {report.updated} updated, "
          f"{report.unchanged} unchanged, {len(report.failed)} failed (model {nh.model_id[:12]}: {nh.description})",
          file=sys.stderr, flush=True)
    return 1 if failures.count else 0


def cmd_index_import(args) -> int:
    with _open(args.db, create=True) as store:
        report = store.import_file(args.file, model_id=args.model_id)
    for lineno, reason in report.skipped:
        print(f"neuralhash: {args.file}:{lineno}: {reason}", file=sys.stderr)
    print(f"neuralhash: {args.db}: {report.imported} imported ({report.replaced} replaced), "
          f"{len(report.skipped)} line(s) skipped, model {args.model_id!r}", file=sys.stderr, flush=True)
    return 1 if report.skipped else 0


def cmd_index_export(args) -> int:
    pass_file_names_through()
    with _open(args.db, create=False) as store:
        if args.model_id is not None:
            store.resolve_model(args.model_id)  # a clear error for an unknown id
        write = _rows_writer(_format(args), ["path", "hash", "model"])
        for row in store.export(args.model_id):
            if write is None:
                out(f"{row.hex}  {row.path}")
            else:
                write({"path": row.path, "hash": row.hex, "model": row.model_id})
    return 0


def cmd_index_info(args) -> int:
    with _open(args.db, create=False) as store:
        models = store.models()
    if args.jsonl:
        for m in models:
            out(json.dumps({"model": m.model_id, "description": m.description, "hashes": m.count}))
        return 0
    if not models:
        out(f"{args.db}: no hashes")
    for m in models:
        out(f"{m.count:>10}  {m.model_id}  {m.description}")
    return 0


# -- match / dupes --------------------------------------------------------------------------


def cmd_match(args) -> int:
    from ..hashing.dihedral import dihedral_hashes
    from ..store import search

    pass_file_names_through()
    with _open(args.db, create=False) as store:
        images = [q for q in args.queries if not is_hex_hash(q)]
        nh = load_hasher(args) if images else None
        if args.model_id is not None:
            model = store.resolve_model(args.model_id)
            if nh is not None and nh.model_id != model.model_id:
                print(f"neuralhash: warning: comparing hashes of model {nh.model_id[:12]} ({nh.description}) with "
                      f"stored hashes of model {model.model_id[:12]} ({model.description}), as --model-id asks",
                      file=sys.stderr)
        elif nh is not None:
            model = store.resolve_model(nh.model_id) if any(
                m.model_id == nh.model_id for m in store.models()) else None
            if model is None:
                stored = ", ".join(f"{m.model_id[:12]} ({m.description})" for m in store.models()) or "none"
                raise NeuralHashError(
                    f"{args.db} holds no hashes of the model the queries were hashed with "
                    f"({nh.model_id[:12]}: {nh.description}); stored models: {stored}. "
                    f"Hashes of different models do not compare; pass --model-id to search one anyway")
        else:
            model = store.resolve_model(None)

        queries: list[tuple[str, bytes]] = []
        failed = 0
        for q in args.queries:
            if is_hex_hash(q):
                queries.append((q, bytes.fromhex(q)))
                continue
            try:
                if getattr(args, "dihedral", False):
                    queries.append((q, [h.bytes for h in dihedral_hashes(nh, q, exif_transpose=args.exif_transpose, max_pixels=getattr(args, "max_pixels", None))]))
                else:
                    queries.append((q, nh.hash(q, exif_transpose=args.exif_transpose).bytes))
            except NeuralHashError as exc:
                failed += 1
                print(f"neuralhash: {q}: {error_reason(q, str(exc))}", file=sys.stderr)
        if getattr(args, "dihedral", False):
            return _match_dihedral(args, store, model, queries, failed)
        matches = search(store, model, [h for _, h in queries], args.max_distance)
    write = _rows_writer(_format(args), ["query", "query_hash", "distance", "hash", "path"])
    for m in matches:
        label, digest = queries[m.query]
        record = {"query": label, "query_hash": digest.hex(), "distance": m.distance, "hash": m.hex, "path": m.path}
        if write is None:
            out(f"{label}  {m.distance}  {m.hex}  {m.path}")
        else:
            write(record)
    return 1 if failed else 0


def _match_dihedral(args, store, model, queries: list, failed: int) -> int:
    """match --dihedral: 8 oriented hashes per image (a hex query stands for itself, as 'original')."""
    from ..hashing.dihedral import ORIENTATIONS, best_orientation
    from ..store import search

    n = len(ORIENTATIONS)
    expanded = [(label, h if isinstance(h, list) else [h] * n) for label, h in queries]
    matches = search(store, model, [h for _, hs in expanded for h in hs], args.max_distance)
    rows, ks = best_orientation([m.query for m in matches], [m.row for m in matches],
                                [m.distance for m in matches], n)
    write = _rows_writer(_format(args), ["query", "query_hash", "orientation", "distance", "hash", "path"])
    for r, k in zip(rows.tolist(), ks.tolist()):
        m = matches[r]
        label, hashes = expanded[m.query // n]
        if write is None:
            out(f"{label}  {ORIENTATIONS[k]}  {m.distance}  {m.hex}  {m.path}")
        else:
            write({"query": label, "query_hash": hashes[0].hex(), "orientation": ORIENTATIONS[k],
                   "distance": m.distance, "hash": m.hex, "path": m.path})
    return 1 if failed else 0


def cmd_dupes(args) -> int:
    from ..store import duplicate_groups

    pass_file_names_through()
    with _open(args.db, create=False) as store:
        model = store.resolve_model(args.model_id)
        groups = duplicate_groups(store, model, args.max_distance)
    fmt = _format(args)
    if fmt == "jsonl":
        for k, group in enumerate(groups, 1):
            out(json.dumps({"group": k, "size": len(group),
                            "members": [{"path": h.path, "hash": h.hex} for h in group]}, ensure_ascii=False))
    elif fmt == "csv":
        write = _rows_writer("csv", ["group", "size", "hash", "path"])
        for k, group in enumerate(groups, 1):
            for h in group:
                write({"group": k, "size": len(group), "hash": h.hex, "path": h.path})
    else:
        for k, group in enumerate(groups, 1):
            out(f"# group {k}: {len(group)} images")
            for h in group:
                out(f"{h.hex}  {h.path}")
            out()
    print(f"neuralhash: {len(groups)} group(s) of near-duplicates within {args.max_distance} bits "
          f"({sum(len(g) for g in groups)} images)", file=sys.stderr)
    return 0
