"""The package's folders follow the data (issue 17, item 15): no loose modules at the top, and the
design page names every folder, so a newcomer can find their way by reading one list."""

from __future__ import annotations

import re

from conftest import ROOT

PACKAGE = ROOT / "src" / "neuralhash"


def test_only_the_entry_points_and_the_exception_hierarchy_sit_at_the_top():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "errors.py"]


def test_the_design_page_names_every_folder_of_the_package():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    tree = (ROOT / "docs" / "design.md").read_text(encoding="utf-8").split("```", 2)[1]
    named = set(re.findall(r"^  (\w+)/", tree, flags=re.M))
    assert named == folders


def test_the_public_api_is_unchanged():
    import neuralhash

    for name in ("NeuralHash", "Hash", "HashResult", "HashIndex", "load_model", "convert", "NeuralHashError"):
        assert getattr(neuralhash, name) is not None
    assert callable(neuralhash.convert)
