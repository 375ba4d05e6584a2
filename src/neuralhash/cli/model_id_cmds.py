"""``neuralhash models [DB] [--model SRC]``: model ids, the names hashes are stored and matched under.

With DB: every model the database holds hashes of, with what it is, its lists and their counts.
With --model (or without DB): the id of that model, the one ``index add`` and ``match`` use.
"""

from __future__ import annotations

import argparse
import json

from ..files.pathnames import display
from .common import add_model, load_hasher, out


def add_models_command(add) -> None:
    p = add("models", cmd_models,
            "model ids: those a database holds hashes of (with their lists), or a model's own id")
    p.add_argument("db", metavar="DB", nargs="?", default=None,
                   help="a hash database: list its models, their lists and hash counts")
    add_model(p)
    p.add_argument("--jsonl", action="store_true", help="one JSON object per model")
    p.set_defaults(subparser=p)


def model_description(model_id: str, stored: str = "") -> str:
    """What a stored model is: a well-known id's meaning, else the description stored with it."""
    from ..hashing.model_ids import well_known_description

    return well_known_description(model_id) or stored or "no description"


def cmd_models(args: argparse.Namespace) -> int:
    if args.db is not None:
        _list_database(args)
    if args.db is None or args.model is not None:
        nh = load_hasher(args)
        if args.jsonl:
            out(json.dumps({"model": nh.model_id, "description": nh.description, "source": "--model"}))
        else:
            out(f"{nh.model_id}  {nh.description}")
    return 0


def _list_database(args: argparse.Namespace) -> None:
    from ..store import HashStore

    with HashStore(args.db, create=False) as store:
        models, lists = store.models(), store.lists()
    if not models and not args.jsonl:
        out(f"{display(args.db)}: no models (no hashes yet)")
    for m in models:
        own = [lst for lst in lists if lst.model_id == m.model_id]
        if args.jsonl:
            out(json.dumps({"model": m.model_id, "description": model_description(m.model_id, m.description),
                            "hashes": m.count, "lists": [{"name": lst.name, "hashes": lst.count} for lst in own]},
                           ensure_ascii=False))
            continue
        out(f"{m.model_id}  {model_description(m.model_id, m.description)}")
        for lst in own:
            out(f"  {lst.count:>10}  {display(lst.name)}")
