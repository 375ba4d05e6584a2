"""The ``neuralhash`` command: a thin layer over the Python API.

One module per family of commands: ``model_cmds`` (decode, inspect, convert,
verify, demo), ``hash_cmds`` (hash, compare; ``dask_cmds`` on a cluster),
``index_cmds`` (index, match, dupes), ``audit_cmds`` (audit), ``robustness_cmds`` (robustness),
``serve_cmds`` (serve), ``extract_cmds`` (extract);
``common``, ``output`` and ``paths`` hold what they share.

Exit codes: 0 success, 1 failure (bad input, a failed item, verification
above tolerance), 2 usage error, 130 Ctrl-C, 141 closed pipe, 143 SIGTERM.
Errors are one line on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .. import __version__
from ..errors import NeuralHashError
from ..lists.hashlists import FORMATS
from .audit_cmds import add_audit_command
from .common import (SRC_HELP, add_cap, add_files, add_max_distance, add_model, add_provider, cap_workers,
                     check_providers, int_at_least, int_between, non_empty, positive_float)
from .extract_cmds import add_extract_command, check_extract_usage
from .hash_cmds import cmd_compare, cmd_hash
from .index_cmds import (
    UsageError,
    cmd_dupes,
    cmd_index_add,
    cmd_index_export,
    cmd_index_import,
    cmd_index_info,
    cmd_index_lists,
    cmd_index_remove_list,
    cmd_index_upgrade,
    cmd_match,
)
from .model_id_cmds import add_models_command
from .model_cmds import cmd_convert, cmd_decode, cmd_demo, cmd_inspect, cmd_verify
from ..files.pathnames import display
from .output import CheckedStdout, StandardOutputError, Terminated, pass_file_names_through, write_out
from .robustness_cmds import cmd_robustness
from .serve_cmds import add_serve_command


#: --batch-size above this holds batch x 1.5 MB of network input for no gain (batches save no CPU).
MAX_BATCH = 256


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralhash",
        description="Convert Apple's NeuralHash (Espresso) model to verified ONNX, and compute NeuralHash hashes.",
    )
    parser.add_argument("--version", action="version", version=f"neuralhash {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func, subparser=p)  # usage errors name the command: "neuralhash verify: error: ..."
        return p

    p = add("decode", cmd_decode, "write the plain JSON of a compressed .espresso.net / .espresso.shape file")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="output path, or - for standard output")
    add_cap(p)

    p = add("inspect", cmd_inspect, "summarise an Espresso model (weights optional)")
    p.add_argument("src", help=SRC_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_files(p)

    p = add("convert", cmd_convert, "convert an Espresso model to ONNX")
    p.add_argument("src", help=SRC_HELP)
    p.add_argument("-o", "--output", required=True,
                   help="the .onnx file to write, or - for standard output (a pipeline writes OUT.stageN.onnx)")
    p.add_argument("--no-optimize", action="store_true", help="a literal layer-by-layer graph, no tidying")
    p.add_argument("--hash-head", nargs="?", const="", default=None, metavar="SEED.dat",
                   help="append the NeuralHash projection; without a file the seed is rebuilt exactly")
    p.add_argument("--with-preprocessing", action="store_true",
                   help="take the image as Core ML does (uint8 pixels) and, for a classifier, output the class label")
    add_files(p)

    p = add("verify", cmd_verify, "check ONNX Runtime against the NumPy reference executor")
    p.add_argument("src", help=SRC_HELP)
    p.add_argument("--onnx", help="an already converted model (default: convert in memory)")
    p.add_argument("--image", action="append", metavar="PATH", help="also compare on this image (repeatable)")
    p.add_argument("--seeds", type=int_at_least(0), default=2, metavar="N",
                   help="number of seeded random inputs (default 2; 0 needs --image)")
    p.add_argument("--batch", type=int_at_least(1), default=1, metavar="N",
                   help="batch size of the random inputs (default 1)")
    p.add_argument("--max-input-size", type=int_at_least(1), default=64 << 20, metavar="BYTES",
                   help="refuse inputs larger than this as float32, batch included (default 64 MiB)")
    p.add_argument("--atol", type=positive_float, default=1e-4, metavar="X", help="tolerance on outputs of order 1, scaled by larger outputs (default 1e-4)")
    p.add_argument("--no-optimize", action="store_true", help="verify the untidied conversion")
    add_provider(p)
    add_files(p)
    p.set_defaults(subparser=p)

    p = add("demo", cmd_demo, "run the whole pipeline on the built-in synthetic model")
    p.add_argument("--cache-dir", help="where to write the demo model (default ~/.cache/neuralhash)")
    p.add_argument("--fp16", action="store_true", help="use the float16 variant that current macOS ships")
    add_provider(p)

    p = add("hash", cmd_hash, "print the NeuralHash of images, one line per image")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="an image file, a directory (searched recursively for images), or - to read paths from stdin")
    add_null(p)
    add_model(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--jsonl", action="store_true", help="one JSON object per image")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.add_argument("--margins", action="store_true",
                   help="with --jsonl or --csv: also the 96 per-bit margins |v| and the count of unstable bits")
    p.add_argument("--batch-size", type=int_between(1, MAX_BATCH), default=4, metavar="N",
                   help=f"images per network run (default 4, at most {MAX_BATCH}; larger batches save no CPU here and cost memory)")
    p.add_argument("--workers", type=int_at_least(0), default=None, metavar="N",
                   help="image-decoding worker processes (default: one per CPU; 0: decode in this process)")
    p.add_argument("--fast", action="store_true",
                   help="faster image loading that may change a few bits (not the reference pipeline)")
    p.add_argument("--exif-transpose", action="store_true",
                   help="apply the EXIF orientation first (the reference pipeline does not)")
    cluster = p.add_argument_group("on a Dask cluster (the extra 'dask')")
    cluster.add_argument("--scheduler", metavar="ADDRESS", type=non_empty,
                         help="hash on a Dask cluster: its scheduler address (tcp://host:8786), "
                              "or 'local' for a LocalCluster on this machine")
    cluster.add_argument("--parquet", metavar="DIR",
                         help="with --scheduler: also write the results (path, hash, margins, error) as Parquet")
    cluster.add_argument("--paths-per-task", type=int_at_least(1), default=None, metavar="N",
                         help="with --scheduler: paths per Dask task (default: up to 64, fewer for small inputs)")
    p.set_defaults(subparser=p)

    p = add("compare", cmd_compare, "the Hamming distance between two images or hashes")
    p.add_argument("a", metavar="A", help="an image path or a hash of 24 hex digits")
    p.add_argument("b", metavar="B", help="an image path or a hash of 24 hex digits")
    add_model(p)
    p.add_argument("--jsonl", action="store_true", help="print one JSON object")
    p.add_argument("--exif-transpose", action="store_true",
                   help="apply the EXIF orientation first (the reference pipeline does not)")

    add_index_commands(add)
    add_models_command(add)
    add_audit_command(add)

    p = add("robustness", cmd_robustness,
            "how hashes move under everyday edits: NeuralHash beside pHash, dHash and PDQ, as an HTML report")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or directories (searched recursively), or - to read paths from stdin")
    p.add_argument("--out", metavar="DIR", help="the report folder (index.html, summary.md, CSV, PNG)")
    add_model(p)
    p.add_argument("--random-seed", type=int_at_least(0), default=0, metavar="N",
                   help="seed of the random edits (noise, overlay positions); default 0")
    p.add_argument("--edits", metavar="FAMILY,...", help="only these edit families (see --list-edits)")
    p.add_argument("--hashes", metavar="NAME,...", help="only these hashes: NeuralHash, pHash, dHash, PDQ")
    p.add_argument("--workers", type=int_at_least(0), default=None, metavar="N",
                   help="processes that edit and decode (default: one per CPU; 0: this process)")
    p.add_argument("--max-side", type=int_at_least(1), default=None, metavar="PX",
                   help="shrink originals to this longer side before editing (e.g. 1024: camera photos "
                        "run ~13x faster; default: as they are)")
    p.add_argument("--list-edits", action="store_true", help="print the catalogue of edits and exit")
    p.set_defaults(subparser=p)

    add_serve_command(add)
    add_extract_command(add)
    return parser


def _add_output_format(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")


def add_index_commands(add) -> None:
    """index add / import / export / lists / remove-list / info / upgrade, match, dupes."""
    db_help = "the SQLite database file (created by index add / import)"
    index = add("index", None, "store hashes in a SQLite database of named lists: add images, import or export lists")
    sub = index.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    def action(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func, subparser=p)
        p.add_argument("db", metavar="DB", help=db_help)
        return p

    p = action("add", cmd_index_add, "hash images into a list of the database; unchanged files are skipped")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, directories (recursive), or - for stdin")
    add_null(p)
    p.add_argument("--list", default="images", metavar="NAME", help="the list to add to (default 'images')")
    add_model(p)
    p.add_argument("--batch-size", type=int_between(1, MAX_BATCH), default=4, metavar="N",
                   help=f"images per network run (default 4, at most {MAX_BATCH})")
    p.add_argument("--workers", type=int_at_least(0), default=None, metavar="N",
                   help="image-decoding worker processes (default: one per CPU; 0: decode in this process)")

    p = action("import", cmd_index_import, "import a hash list into a list: HEX  PATH lines, CSV, JSONL, or "
                                           "threatexchange's signal files and dataset exports")
    p.add_argument("file", metavar="FILE", help="the hash list, or - for standard input")
    p.add_argument("--list", default=None, metavar="NAME",
                   help="the list to import into (default: the file's name without extension)")
    p.add_argument("--model-id", default="imported", type=non_empty,
                   help="the model that made the hashes: 'neuralhash-v3b' for Apple's NeuralHash, a stored id "
                        "(or its unique start; see `neuralhash models`), or a new name (default 'imported', "
                        "which no model's hashes are compared with)")
    p.add_argument("--format", choices=FORMATS, default=None, metavar="NAME",
                   help=f"the list's format: {', '.join(FORMATS)} (default: told by its first line)")

    p = action("export", cmd_index_export, "write stored hashes out (HEX  PATH lines, or --jsonl / --csv / "
                                           "--format NAME)")
    p.add_argument("--list", default=None, metavar="NAME", help="only this list")
    p.add_argument("--model-id", default=None, type=non_empty, help="only the hashes of this model (an id or its unique start)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--jsonl", action="store_true", help="one JSON object per line (--format jsonl)")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row (--format csv)")
    fmt.add_argument("--format", choices=FORMATS, default=None, metavar="NAME",
                     help=f"any format index import reads: {', '.join(FORMATS)} (default text)")

    p = action("lists", cmd_index_lists, "the lists in the database: hashes, model, name")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per list")

    p = action("remove-list", cmd_index_remove_list, "remove a list and its hashes")
    p.add_argument("name", metavar="NAME")

    p = action("info", cmd_index_info, "the models in the database and their hash counts")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per model")

    action("upgrade", cmd_index_upgrade,
           "upgrade a database written by an older version, and verify its packed index")

    p = add("match", cmd_match, "stored hashes within a distance of images or hashes, nearest first")
    p.set_defaults(subparser=p)
    p.add_argument("db", metavar="DB", help=db_help)
    p.add_argument("queries", nargs="+", metavar="QUERY", help="an image path or a hash of 24 hex digits")
    add_max_distance(p)
    p.add_argument("--list", default=None, metavar="NAME[,NAME]", help="search only these lists")
    p.add_argument("--model-id", default=None, type=non_empty,
                   help="search the stored hashes of this model, an id or its unique start "
                        "(default: the model the queries are hashed with)")
    add_model(p)
    p.add_argument("--exif-transpose", action="store_true",
                   help="apply the EXIF orientation to query images first (the reference pipeline does not)")
    p.add_argument("--dihedral", action="store_true",
                   help="also match the 7 rotations/flips of each query image; reports the orientation that matched")
    _add_output_format(p)

    p = add("dupes", cmd_dupes, "groups of near-duplicates in the database, largest first")
    p.set_defaults(subparser=p)
    p.add_argument("db", metavar="DB", help=db_help)
    add_max_distance(p)
    p.add_argument("--list", default=None, metavar="NAME[,NAME]", help="group only the hashes of these lists")
    p.add_argument("--model-id", default=None, type=non_empty,
                   help="the model whose hashes to group, an id or its unique start (default: the only one)")
    _add_output_format(p)


def check_usage(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """What argparse cannot check alone, before anything is loaded: usage errors exit 2 naming the option."""
    sub = getattr(args, "subparser", parser)
    if args.command == "hash":
        if args.margins and not (args.jsonl or args.csv):
            sub.error("--margins needs --jsonl or --csv")
        if not args.scheduler:
            for option, value in (("--parquet", args.parquet), ("--paths-per-task", args.paths_per_task)):
                if value is not None:
                    sub.error(f"{option} needs --scheduler (use --scheduler local on one machine)")
    if getattr(args, "null", False) and "-" not in getattr(args, "paths", ()):
        sub.error("--null applies to the paths read from standard input: give - as a PATH")
    if args.command == "verify" and args.seeds == 0 and not args.image:
        sub.error("--seeds 0 needs at least one --image: there would be nothing to compare")
    if args.command == "extract":
        check_extract_usage(args, sub)
    if args.command == "robustness":
        from .robustness_cmds import check_robustness_usage

        check_robustness_usage(args, sub)
    # Files named by options must exist: found now, not after a model is converted.
    for option in ("onnx", "image", "shape", "weights", "seed", "hash_head"):
        values = getattr(args, option, None)
        for value in values if isinstance(values, list) else [values]:
            if value and not os.path.isfile(value):
                what = "no such file" if not os.path.exists(value) else "not a file"
                sub.error(f"argument --{option.replace('_', '-')}: {what}: {value}")
    check_providers(args, sub)
    cap_workers(args)
    if args.command == "serve" and not os.path.lexists(args.db):
        # Said, not silent: a misspelt name would serve an empty database that matches nothing.
        print(f"neuralhash: note: {display(args.db)} does not exist: serve creates it, an empty database "
              "(lists are added with POST /lists/NAME/import)", file=sys.stderr, flush=True)


def add_null(p: argparse.ArgumentParser) -> None:
    p.add_argument("-0", "--null", action="store_true",
                   help="paths read from - are NUL-separated (find -print0), so names may hold newlines")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_usage(args, parser)
    pass_file_names_through()  # undecodable bytes of a file name in a message print as themselves
    stdout = sys.stdout = CheckedStdout(sys.stdout)
    try:
        code = args.func(args)
        write_out(b"")  # a full disk shows here, not in the interpreter's own last flush
        if stdout.failure is not None:  # a write failed and something caught the error
            raise stdout.failure
        return code
    except StandardOutputError as exc:
        print(f"neuralhash: {exc}", file=sys.stderr)
        _discard_stdout()
        return 1
    except UsageError as exc:
        args.subparser.error(str(exc))  # exits 2, as argparse does
    except NeuralHashError as exc:
        # Messages quote file names: control characters escaped, so the error stays one line.
        print(f"neuralhash: error: {display(str(exc))}", file=sys.stderr)
        return 1
    except MemoryError:
        print("neuralhash: error: out of memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neuralhash: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("neuralhash: terminated", file=sys.stderr)
        return 143
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other command-line tools do.
        _discard_stdout()
        return 141
    finally:
        if sys.stdout is stdout:
            sys.stdout = stdout.stream


def _discard_stdout() -> None:
    """Point standard output at /dev/null: what is still buffered for it cannot be written anyway, and
    the interpreter's last flush must not print a traceback of its own."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file descriptor (captured output)
        pass
