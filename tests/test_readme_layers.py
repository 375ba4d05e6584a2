"""The table of supported layers (docs/models.md) is held to both handler registries, so it cannot over-claim."""

from __future__ import annotations

import re

from conftest import ROOT

from neuralhash import convert, reference


def _table() -> dict[str, str]:
    text = (ROOT / "docs" / "models.md").read_text()
    section = re.split(r"^#+ Supported Espresso layers\n", text, maxsplit=1, flags=re.M)[1]
    section = re.split(r"^#+ ", section, maxsplit=1, flags=re.M)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            for name in re.findall(r"`([a-z_0-9]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def _codes(description: str) -> set[int]:
    return {int(n) for n in re.findall(r"\b(\d+) \(", description)}


def test_table_lists_exactly_the_registered_types():
    rows = _table()
    assert set(rows) == set(convert.HANDLERS) == set(reference.HANDLERS)


def test_table_lists_exactly_the_registered_codes():
    rows = _table()
    assert _codes(rows["elementwise"]) == set(convert.ELEMENTWISE_OPERATIONS) == set(reference.ELEMENTWISE_OPERATIONS)
    assert _codes(rows["activation"]) == set(convert.ACTIVATION_MODES) == set(reference.ACTIVATION_MODES)
