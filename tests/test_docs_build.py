"""The documentation builds with Sphinx, warnings as errors, every page of docs/ included (issue 17, item 4).

The README's docs build command, which this test runs (into a temporary folder):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import gen_commands  # noqa: E402


def _build(source, out) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(source),
                           str(out)], capture_output=True, text=True, env=env, timeout=300)


def test_docs_build_with_warnings_as_errors_and_include_every_page(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    done = _build(ROOT / "docs", tmp_path / "html")
    assert done.returncode == 0, done.stderr[-5000:]
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert (tmp_path / "html" / f"{page.stem}.html").is_file(), f"{page.name} is not in the built site"
    index = (tmp_path / "html" / "index.html").read_text()
    assert all(f'href="{p.stem}.html"' in index for p in (ROOT / "docs").glob("*.md") if p.stem != "index")


def test_a_new_page_needs_no_configuration_and_a_broken_link_fails(tmp_path):
    """Pages added by anyone are in the site with no config edit; a warning fails the build."""
    pytest.importorskip("myst_parser")
    import shutil

    source = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", source, ignore=shutil.ignore_patterns("_build"))
    (source / "zz-new-page.md").write_text("# A new page\n\nSee [matching](matching.md).\n")
    assert _build(source, tmp_path / "ok").returncode == 0
    assert (tmp_path / "ok" / "zz-new-page.html").is_file()
    (source / "zz-new-page.md").write_text("# A new page\n\nSee [nothing](no-such-page.md).\n")
    broken = _build(source, tmp_path / "broken")
    assert broken.returncode != 0 and "no-such-page" in broken.stderr


def test_command_reference_is_generated_from_the_parsers():
    committed = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert committed == gen_commands.render(), "docs/commands.md is out of date: run python docs/gen_commands.py"


def test_command_reference_lists_every_command_and_option():
    """Independent of the generator: walk the parsers and look for each command and option on the page."""
    import argparse

    from neuralhash.cli import build_parser

    page = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        if f"# {path}\n" not in page:
            missing.append(path)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
            elif action.option_strings and action.help != argparse.SUPPRESS and "-h" not in action.option_strings:
                if not any(f"`{o}" in page.split(f"# {path}\n", 1)[-1] for o in action.option_strings):
                    missing.append(f"{path} {action.option_strings[0]}")

    walk(build_parser(), "neuralhash")
    assert not missing, missing
    for path in [*gen_commands.EXIT_CODES, *gen_commands.NOTES]:  # given for commands that exist
        assert f"## {path}\n" in page, path
