"""Write docs/commands.md, the command reference, from the `neuralhash` command's argument parsers.

    python docs/gen_commands.py            # rewrite docs/commands.md
    python docs/gen_commands.py --check    # exit 1 if docs/commands.md differs from the parsers

tests/test_docs_build.py checks that the committed page equals what this writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "commands.md"
WIDTH = 100  # usage lines are wrapped at a fixed width, whatever the terminal

HEADER = """\
# Command reference

Generated from the argument parsers of `neuralhash` by `python docs/gen_commands.py`
(a test fails when this page and the parsers disagree). `neuralhash COMMAND --help` prints
the same. Exit codes: 0 success, 1 failure (bad input, a failed item, verification above
tolerance), 2 usage error, 130 Ctrl-C, 141 closed pipe, 143 SIGTERM. Errors are one line on
standard error naming the file, layer or field at fault, never a traceback.

`decode`, `inspect`, `convert` and `verify` take `--max-decoded-size BYTES` (default 64 MiB): a
compressed file whose header or LZFSE blocks declare more is refused before anything is decoded.
The commands that read images take `--max-pixels N`: an image of more pixels is refused from its
header, as a failure of that image (default: Pillow's limit, 89,478,485 pixels; a 99-megapixel
photo needs `--max-pixels 100000000`; with `--scheduler` the limit is resolved here and applied by
the workers). `--workers` above 4 per CPU is capped, with a warning. Usage errors (a bad value,
options that do not go together) are found before any model is loaded, name the option as typed,
and exit with 2.
"""


#: What a command's exit code says beyond 0 success, 1 failure, 2 usage error (the parsers do not say it).
EXIT_CODES = {
    "neuralhash verify": "0 the outputs agree, 1 they do not, 2 nothing to compare (`--seeds 0` without `--image`)",
    "neuralhash hash": "0 every image hashed, 1 any failed, no model, or (with `--scheduler`) the scheduler unreachable",
    "neuralhash index add": "0 every image hashed, 1 any failed",
    "neuralhash index import": "0 every line imported, 1 any malformed line skipped (the rest is imported)",
    "neuralhash audit": "0 nothing flagged, 1 anything flagged, or the list or reference unreadable",
    "neuralhash robustness": "0 every image measured, 1 any image unreadable",
    "neuralhash serve": "0 after SIGTERM or Ctrl-C, 1 cannot start",
}


#: What the help texts leave out, for a few commands.
NOTES = {
    "neuralhash inspect": "Layer count, layers per type and whether each converts, inputs and outputs with shapes, "
                          "`transform_params`, parameter count, a bundle's `coremldata.bin`, a pipeline's stages. "
                          "Layers, parameters or weights it cannot read are listed as problems, not raised. `--json` "
                          "also gives `unsupported` (layer name -> reason) and is always valid JSON (NaN and "
                          "infinities as the strings `\"NaN\"`, `\"Infinity\"`, `\"-Infinity\"`).",
    "neuralhash convert": "The output file appears only when the conversion succeeded; a pipeline writes "
                          "`OUT.stage0.onnx`, `OUT.stage1.onnx`...; a model with gaps gets one error listing every "
                          "unsupported layer.",
    "neuralhash verify": "Prints the largest absolute and relative error per output; on failure, the first "
                         "diverging layer. Images are resized and scaled for the model's input.",
}


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=WIDTH, max_help_position=WIDTH)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps its parsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _argument(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if action.option_strings:
        if action.nargs == 0:
            names = ", ".join(action.option_strings)
        else:
            metavar = formatter._format_args(action, action.dest.upper())
            names = ", ".join(f"{o} {metavar}" for o in action.option_strings)
    else:
        names = formatter._format_args(action, action.dest)
    return f"`{names}`"


def _section(path: str, parser: argparse.ArgumentParser, level: int, children: bool = True) -> list[str]:
    parser.formatter_class = _formatter
    formatter = parser._get_formatter()
    out = [f"{'#' * level} {path}", ""]
    if parser.description:
        text = parser.description[0].upper() + parser.description[1:]
        out += [text if text.endswith(".") else text + ".", ""]
    if path in NOTES:
        out += [NOTES[path], ""]
    if path in EXIT_CODES:
        out += [f"Exit code: {EXIT_CODES[path]}.", ""]
    out += ["```text", parser.format_usage().strip(), "```", ""]
    rows = []
    for group in parser._action_groups:
        for action in group._group_actions:
            if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                       argparse._SubParsersAction)):
                continue
            meaning = formatter._expand_help(action) if action.help else ""
            if group.title not in ("positional arguments", "options", "optional arguments"):
                meaning = f"{meaning} ({group.title})" if meaning else f"({group.title})"
            rows.append(f"| {_argument(action, formatter)} | {_cell(meaning)} |")
    if rows:
        out += ["| argument | meaning |", "|---|---|", *rows, ""]
    for name, child in _subcommands(parser) if children else []:
        out += _section(f"{path} {name}", child, level + 1)
    return out


def render() -> str:
    from neuralhash.cli import build_parser

    parser = build_parser()
    out = [HEADER, *_section("neuralhash", parser, 2, children=False)]
    for name, child in _subcommands(parser):
        out += _section(f"neuralhash {name}", child, 2)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args == ["--check"]:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE}: out of date; run: python docs/gen_commands.py", file=sys.stderr)
            return 1
        return 0
    if args:
        print("usage: python docs/gen_commands.py [--check]", file=sys.stderr)
        return 2
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
