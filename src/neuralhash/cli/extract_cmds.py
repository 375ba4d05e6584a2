"""``neuralhash extract``: Apple's NeuralHash files (or any file) out of firmware, one unprivileged command."""

from __future__ import annotations

import argparse
import json
import sys

from .common import out


def add_extract_command(add) -> None:
    p = add("extract", cmd_extract,
            "get NeuralHash's files (or any file) out of firmware: an IPSW, a UDIF .dmg, a GPT disk or APFS "
            "image, or a folder")
    p.add_argument("src", nargs="?", metavar="SRC",
                   help="an IPSW, a .dmg, a raw APFS container or GPT disk image, or a folder (on macOS, "
                        "omitted: the running system)")
    p.add_argument("-o", "--output", metavar="DIR", help="the folder to write the files and manifest.json into")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="show what would be extracted, write nothing")
    what.add_argument("--espresso", action="store_true",
                      help="list every compiled Espresso model in the image (walks the whole tree), write nothing")
    p.add_argument("--path", action="append", metavar="P",
                   help="extract this file (a path from the volume's root) instead of NeuralHash; repeatable")
    p.add_argument("--snapshot", metavar="NAME", help="read the files from this APFS snapshot")
    p.add_argument("--force", action="store_true", help="replace existing files that differ")
    p.add_argument("--json", action="store_true", help="with --list or --espresso: print one JSON object")
    p.set_defaults(subparser=p)


def check_extract_usage(args: argparse.Namespace, sub: argparse.ArgumentParser) -> None:
    if args.src is None and sys.platform != "darwin":
        sub.error("SRC is required (an IPSW, a .dmg, an APFS or GPT image, or a folder); only on macOS does "
                  "an omitted SRC mean the running system")
    if not (args.list or args.espresso) and not args.output:
        sub.error("-o DIR is required (or --list / --espresso to write nothing)")
    if args.espresso and args.path:
        sub.error("--espresso lists models; it does not take --path")
    if args.json and not (args.list or args.espresso):
        sub.error("--json applies to --list and --espresso")


def _progress(message: str) -> None:
    print(f"neuralhash: {message}", file=sys.stderr, flush=True)


def _where(f: dict) -> str:
    return f"{f['volume'] or '-'}" + (f"@{f['snapshot']}" if f.get("snapshot") else "")


def cmd_extract(args: argparse.Namespace) -> int:
    from ..firmware import extract, find_neuralhash, find_paths, list_espresso, open_firmware
    from ..firmware.source import os_version

    src = args.src if args.src is not None else "/"
    if args.list or args.espresso:
        with open_firmware(src) as fw:
            release = os_version(fw)
            if args.espresso:
                items = list_espresso(fw, snapshot=args.snapshot, progress=_progress)
            elif args.path:
                items = [f.describe() for f in find_paths(fw, args.path, snapshot=args.snapshot)]
            else:
                items = [f.describe() for f in find_neuralhash(fw, snapshot=args.snapshot, progress=_progress)]
            layers = fw.layers
        if args.json:
            key = "models" if args.espresso else "files"
            out(json.dumps({"source": src, "layers": layers, "os": release or None, key: items}, indent=2))
            return 0
        out(f"source   {src}: {' > '.join(layers)}")
        if release:
            out(f"os       {release['product']} {release['version']} ({release['build']})")
        for item in items:
            if args.espresso:
                out(f"{_where(item):<16} {item['path']}")
            else:
                out(f"{item['variant'] or '-':<8} {item['size']:>12,}  {_where(item):<16} {item['path']}")
        if args.espresso:
            out(f"{len(items)} Espresso model(s)")
        return 0
    result = extract(src, args.output, paths=args.path, snapshot=args.snapshot, force=args.force,
                     progress=_progress)
    for entry, path in zip(result.manifest["files"], result.files):
        out(f"wrote {path} ({entry['size']:,} bytes, sha256 {entry['sha256'][:16]}...)")
    release = result.manifest.get("os")
    label = f" ({release['product']} {release['version']} ({release['build']}))" if release else ""
    out(f"wrote {result.manifest_path}{label}")
    return 0
