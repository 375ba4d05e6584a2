"""Commands on a hash database: index add / import / export / lists / remove-list / info / upgrade, match, dupes.

File names are written by the rules of :mod:`neuralhash.files.pathnames` (text
escaped like ``sha256sum``, ``path_b64`` in JSONL for names that are not
UTF-8, CSV quoted), so that ``index import`` reads back what they print.
"""

from __future__ import annotations

import json
import os
import sys

from ..errors import NeuralHashError
from ..hashing.model_ids import short_model_id
from ..files.pathnames import csv_row, display, json_fields, text_line
from .common import error_reason, is_hex_hash, load_hasher, out
from .output import Failures, Progress, pass_file_names_through, sigterm_unwinds
from .paths import iter_paths


class UsageError(NeuralHashError):
    """A bad argument found after parsing: the command exits 2."""


def _open(path: str, *, create: bool):
    from ..store import HashStore

    return HashStore(path, create=create)


def _rows_writer(fmt: str, columns: list[str], name_columns: tuple[str, ...] = ("path",)):
    """A function writing one record (dict) per call as JSON Lines or CSV (None for text)."""
    if fmt == "csv":
        sys.stdout.write(csv_row(columns))
        return lambda record: sys.stdout.write(csv_row(record.get(c, "") for c in columns))
    if fmt == "jsonl":
        def write(record):
            obj = {}
            for key, value in record.items():
                if key in name_columns and isinstance(value, str):
                    fields = json_fields(value)
                    obj[key] = fields["path"]
                    if "path_b64" in fields:
                        obj[f"{key}_b64"] = fields["path_b64"]
                else:
                    obj[key] = value
            sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        return write
    return None


def _format(args) -> str:
    return "jsonl" if args.jsonl else "csv" if args.csv else "text"


def _split_lists(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise UsageError(f"argument --list: {text!r} is not a comma-separated list of names")
    return names


def _model_id(store, given: str | None) -> str | None:
    """The full id of the stored model ``given`` names (exactly or as a unique start), else ``given``
    itself: a new model name. The start of several ids is an error, never a new name."""
    if given is None:
        return None
    from ..hashing.model_ids import WELL_KNOWN_MODELS

    if given.lower() in WELL_KNOWN_MODELS:  # "NeuralHash-v3b" is Apple's model too
        return given.lower()
    if any(m.model_id.startswith(given) for m in store.models()):
        return store.resolve_model(given).model_id
    return given


# -- index add / import / export / lists / info ------------------------------------------------


def cmd_index_add(args) -> int:
    from ..hashing import IMAGE_EXTENSIONS

    nh = load_hasher(args)
    pass_file_names_through()
    progress = Progress()
    failures = Failures(progress)

    def on_result(path: str, error: str | None) -> None:
        if error is not None:
            failures.report(display(path), error_reason(path, error))
        progress.update(error is None)

    with _open(args.db, create=True) as store, sigterm_unwinds():
        try:
            report = store.add_images(nh, iter_paths(args.paths, IMAGE_EXTENSIONS, failures, null=args.null), list_name=args.list,
                                      batch_size=args.batch_size, workers=args.workers, on_result=on_result)
        finally:
            progress.clear()
    print(f"neuralhash: {display(args.db)}: list {args.list!r}: {report.added} added, {report.updated} updated, "
          f"{report.unchanged} unchanged, {len(report.failed)} failed "
          f"(model {short_model_id(nh.model_id)}: {nh.description})",
          file=sys.stderr, flush=True)
    return 1 if failures.count or report.failed else 0


def cmd_index_import(args) -> int:
    pass_file_names_through()
    source = sys.stdin.buffer if args.file == "-" else args.file
    with _open(args.db, create=True) as store:
        model_id = _model_id(store, args.model_id)
        report = store.import_file(source, list_name=args.list or ("imported" if args.file == "-" else None),
                                   model_id=model_id, format=args.format)
    for lineno, reason in report.skipped:
        print(f"neuralhash: {display(args.file)}:{lineno}: {reason}", file=sys.stderr)
    if report.skipped_total > len(report.skipped):
        print(f"neuralhash: {display(args.file)}: {report.skipped_total - len(report.skipped)} more malformed "
              f"line(s) not listed", file=sys.stderr)
    print(f"neuralhash: {display(args.db)}: list {report.list!r}: {report.imported} imported "
          f"({report.replaced} replaced), {report.skipped_total} line(s) skipped, "
          f"model {short_model_id(report.model_id)!r}",
          file=sys.stderr, flush=True)
    return 1 if report.skipped_total else 0


def cmd_index_export(args) -> int:
    from ..lists.hashlists import HashListError, ListWriter

    pass_file_names_through()
    fmt = args.format or _format(args)
    with _open(args.db, create=False) as store:
        model_id = store.resolve_model(args.model_id).model_id if args.model_id is not None else None
        columns = store.extra_fields(list_name=args.list, model_id=model_id) if "csv" in fmt else []
        writer = ListWriter(fmt, columns)
        sys.stdout.write(writer.header())
        try:
            for row in store.export(list_name=args.list, model_id=model_id):
                sys.stdout.write(writer.row(row.path, row.hex, row.model_id, row.list, _extra(args.db, row)))
        except HashListError as exc:
            raise NeuralHashError(f"{display(args.db)}: {exc}") from None
    sys.stdout.flush()
    lost = [f"{n} entries' names" for n in [writer.dropped_names] if n]
    lost += [f"{n} entries' extra fields" for n in [writer.dropped_extras] if n]
    if lost:
        print(f"neuralhash: note: the {fmt} format has no place for {' and '.join(lost)}; not written "
              f"(--format jsonl or csv keeps them)", file=sys.stderr)
    return 0


def _extra(db: str, row):
    """A row's extra fields; a value that is not a JSON object (a database edited by hand) is an error."""
    try:
        extra = row.extra
    except ValueError:
        extra = ()
    if extra is not None and not isinstance(extra, dict):
        raise NeuralHashError(f"{display(db)}: row {row.row} ({display(row.path)}): its extra fields are not a "
                              f"JSON object")
    return extra


def cmd_index_lists(args) -> int:
    with _open(args.db, create=False) as store:
        lists = store.lists()
    if args.jsonl:
        for lst in lists:
            out(json.dumps({"list": lst.name, "model": lst.model_id, "hashes": lst.count}))
        return 0
    if not lists:
        print(f"neuralhash: {display(args.db)}: no lists", file=sys.stderr)
    for lst in lists:
        out(f"{lst.count:>10}  {short_model_id(lst.model_id)}  {lst.name}")
    return 0


def cmd_index_remove_list(args) -> int:
    with _open(args.db, create=True) as store:
        removed = store.delete_list(args.name)
    print(f"neuralhash: {display(args.db)}: list {args.name!r} removed ({removed} hash{'' if removed == 1 else 'es'})",
          file=sys.stderr)
    return 0


def cmd_index_info(args) -> int:
    with _open(args.db, create=False) as store:
        models = store.models()
    from .model_id_cmds import model_description

    if args.jsonl:
        for m in models:
            out(json.dumps({"model": m.model_id, "description": model_description(m.model_id, m.description),
                            "hashes": m.count}))
        return 0
    if not models:
        out(f"{display(args.db)}: no hashes")
    for m in models:
        out(f"{m.count:>10}  {m.model_id}  {model_description(m.model_id, m.description)}")
    return 0


def cmd_index_upgrade(args) -> int:
    from ..store import SCHEMA_VERSION

    with _open(args.db, create=True) as store:
        state = "verified"
        if not store.verify_index():
            store.rebuild_index()  # it matched the rows' generation, not the rows: altered by hand?
            state = "rebuilt (it disagreed with the rows)"
    print(f"neuralhash: {display(args.db)}: schema {SCHEMA_VERSION}, packed index {state}", file=sys.stderr)
    return 0


# -- match / dupes --------------------------------------------------------------------------


def _check_queries(queries: list[str]) -> None:
    for q in queries:
        if not is_hex_hash(q) and not os.path.exists(q):
            raise UsageError(f"argument QUERY: {display(q)!r}: not a hash of 24 hex digits, nor a file")


def _search_model(args, store, nh, lists: list[str] | None) -> str:
    """The model whose hashes match searches: --model-id, else the queries' model, else that of the
    lists named, else the only one stored."""
    if args.model_id is not None:
        model = store.resolve_model(args.model_id, option="--model-id")
        if nh is not None and nh.model_id != model.model_id:
            print(f"neuralhash: warning: comparing hashes of model {short_model_id(nh.model_id)} ({nh.description}) "
                  f"with stored hashes of model {short_model_id(model.model_id)} ({model.description}), "
                  "as --model-id asks", file=sys.stderr)
        return model.model_id
    if nh is not None:
        return nh.model_id
    if lists:
        named = [lst.model_id for lst in store.lists() if lst.name == lists[0]]
        if named:
            return named[0]  # search_scope checks the other lists named hold the same model
    return store.resolve_model(None, option="--model-id").model_id


def report_scope(db: str, scope) -> None:
    """One line on standard error: the lists searched and those skipped with the reason, plus how to
    label a list so that it is searched (issue 17: a list imported under another id was skipped silently)."""
    print(f"neuralhash: {display(db)}: {scope.describe()}", file=sys.stderr)
    if scope.skipped:
        print(f"neuralhash: note: hashes of different models never compare; a list of hashes made with model "
              f"{short_model_id(scope.model_id)} elsewhere is searched once imported with --model-id {scope.model_id} "
              f"(`neuralhash models {display(db)}` shows the stored models)", file=sys.stderr)


def cmd_match(args) -> int:
    from ..hashing.dihedral import dihedral_hashes
    from ..store.scope import search_scope

    pass_file_names_through()
    lists = _split_lists(args.list)
    _check_queries(args.queries)
    with _open(args.db, create=False) as store:
        images = [q for q in args.queries if not is_hex_hash(q)]
        nh = load_hasher(args) if images else None
        model_id = _search_model(args, store, nh, lists)
        scope = search_scope(store.lists(), model_id, lists, where=display(args.db))
        report_scope(args.db, scope)
        if not scope.searched:
            described = f" ({nh.description})" if nh is not None and nh.model_id == model_id else ""
            raise NeuralHashError(
                f"{display(args.db)} holds no hashes of model {short_model_id(model_id)}{described}, the model "
                "the queries were hashed with; nothing to search. Pass --model-id to search another model's hashes "
                "anyway")
        matcher = store.matcher(model_id, lists)

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
                print(f"neuralhash: {display(q)}: {error_reason(q, str(exc))}", file=sys.stderr)
        if getattr(args, "dihedral", False):
            return _match_dihedral(args, matcher, queries, failed)
        found = matcher.query([h for _, h in queries], args.max_distance)
    write = _rows_writer(_format(args), ["query", "query_hash", "distance", "hash", "path", "list"],
                         ("query", "path"))
    for (label, digest), hits in zip(queries, found):
        if not hits:
            print(f"neuralhash: {display(label)}: no match within {args.max_distance} bits", file=sys.stderr)
        for m in hits:
            if write is None:
                # sha256sum's rule: a line holding an escaped name starts with a backslash.
                sys.stdout.write(_match_line(label, [str(m.distance), display(m.list)], m))
            else:
                write({"query": label, "query_hash": digest.hex(), "distance": m.distance, "hash": m.hex,
                       "path": m.path, "list": m.list})
    sys.stdout.flush()
    return 1 if failed else 0


def _match_line(label: str, columns: list[str], m) -> str:
    """``QUERY  COLUMNS...  HASH  PATH`` (columns: [orientation,] distance, list); sha256sum's rule: a
    line holding an escaped name starts with a backslash."""
    line = text_line(m.hex, m.path)
    mark, line = ("\\", line[1:]) if line.startswith("\\") else ("", line)
    return f"{mark}{'  '.join([display(label), *columns])}  {line}"


def _match_dihedral(args, matcher, queries: list, failed: int) -> int:
    """match --dihedral: 8 oriented hashes per image (a hex query stands for itself, as 'original');
    per stored hash the nearest orientation (the first in ORIENTATIONS order on a tie)."""
    from ..hashing.dihedral import ORIENTATIONS, best_orientation

    n = len(ORIENTATIONS)
    expanded = [(label, h if isinstance(h, list) else [h] * n) for label, h in queries]
    found = matcher.query([h for _, hs in expanded for h in hs], args.max_distance)
    hits = [(position, m) for position, per_query in enumerate(found) for m in per_query]
    rows, ks = best_orientation([position for position, _ in hits], [m.row for _, m in hits],
                                [m.distance for _, m in hits], n)
    write = _rows_writer(_format(args), ["query", "query_hash", "orientation", "distance", "hash", "path", "list"],
                         ("query", "path"))
    matched = set()
    for r, k in zip(rows.tolist(), ks.tolist()):
        position, m = hits[r]
        label, hashes = expanded[position // n]
        matched.add(position // n)
        if write is None:
            sys.stdout.write(_match_line(label, [ORIENTATIONS[k], str(m.distance), display(m.list)], m))
        else:
            write({"query": label, "query_hash": hashes[0].hex(), "orientation": ORIENTATIONS[k],
                   "distance": m.distance, "hash": m.hex, "path": m.path, "list": m.list})
    for q, (label, _) in enumerate(expanded):
        if q not in matched:
            print(f"neuralhash: {display(label)}: no match within {args.max_distance} bits in any orientation",
                  file=sys.stderr)
    sys.stdout.flush()
    return 1 if failed else 0


def cmd_dupes(args) -> int:
    pass_file_names_through()
    lists = _split_lists(args.list)
    with _open(args.db, create=False) as store:
        from ..store.scope import search_scope

        model_id = args.model_id
        if model_id is None and lists:
            model_id = next((lst.model_id for lst in store.lists() if lst.name == lists[0]), None)
        model_id = store.resolve_model(model_id, option="--model-id").model_id
        scope = search_scope(store.lists(), model_id, lists, where=display(args.db))
        report_scope(args.db, scope)
        groups = store.duplicate_groups(model_id, args.max_distance, lists=lists)
    fmt = _format(args)
    if fmt == "jsonl":
        for k, group in enumerate(groups, 1):
            members = []
            for h in group:
                members.append({**json_fields(h.path), "hash": h.hex, "list": h.list})
            sys.stdout.write(json.dumps({"group": k, "size": len(group), "members": members},
                                        ensure_ascii=False) + "\n")
    elif fmt == "csv":
        write = _rows_writer("csv", ["group", "size", "hash", "path", "list"])
        for k, group in enumerate(groups, 1):
            for h in group:
                write({"group": k, "size": len(group), "hash": h.hex, "path": h.path, "list": h.list})
    else:
        for k, group in enumerate(groups, 1):
            sys.stdout.write(f"# group {k}: {len(group)} images\n")
            for h in group:
                sys.stdout.write(text_line(h.hex, h.path))
            sys.stdout.write("\n")
    sys.stdout.flush()
    print(f"neuralhash: {len(groups)} group(s) of near-duplicates within {args.max_distance} bits "
          f"({sum(len(g) for g in groups)} images)", file=sys.stderr)
    return 0
