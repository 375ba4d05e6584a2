"""docs/models.md's table of supported layers is generated from both handler registries, so it cannot over-claim."""

from __future__ import annotations

from conftest import ROOT

from neuralhash import convert, reference
from neuralhash.convert.support import ACTIVATION_NAMES, ELEMENTWISE_NAMES, LAYER_NOTES, layer_table

BEGIN, END = "<!-- layer-table: begin -->", "<!-- layer-table: end -->"


def test_notes_cover_exactly_the_registered_types():
    assert set(LAYER_NOTES) == set(convert.HANDLERS) == set(reference.HANDLERS)


def test_names_cover_exactly_the_registered_codes():
    assert set(ELEMENTWISE_NAMES) == set(convert.ELEMENTWISE_OPERATIONS) == set(reference.ELEMENTWISE_OPERATIONS)
    assert set(ACTIVATION_NAMES) == set(convert.ACTIVATION_MODES) == set(reference.ACTIVATION_MODES)


def test_docs_table_is_the_generated_one():
    text = (ROOT / "docs" / "models.md").read_text()
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == layer_table(), "regenerate it: python -m neuralhash.convert.support"
