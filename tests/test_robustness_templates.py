"""The robustness report's HTML comes from Jinja2 templates, its content unchanged (issue 17, item 14).

The content of index.html for fixed inputs (every element, its attributes and its text, with
whitespace between tags ignored) was recorded from the f-string renderer before the move to
templates, in tests/data/robustness_report_html.json; the page rendered now must give the same.
The plots are replaced by fixed bytes, so the record does not depend on matplotlib's drawing.
Regenerate the record (only when a change of content is meant) with:

    PYTHONPATH=src python tests/test_robustness_templates.py
"""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
RECORD = HERE / "data" / "robustness_report_html.json"
sys.path.insert(0, str(HERE))


class _Events(HTMLParser):
    """(start, tag, attributes) / (end, tag) / (text, words) / (decl, text): the page's content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[list] = []

    def handle_starttag(self, tag, attrs):
        self.events.append(["start", tag, sorted([k, v] for k, v in attrs)])

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        self.events.append(["end", tag])

    def handle_data(self, data):
        text = " ".join(data.split())
        if text:
            if self.events and self.events[-1][0] == "text":
                self.events[-1][1] += " " + text
            else:
                self.events.append(["text", text])

    def handle_decl(self, decl):
        self.events.append(["decl", decl])


def events(page: str) -> list[list]:
    parser = _Events()
    parser.feed(page)
    parser.close()
    return parser.events


def _cases():
    from neuralhash.robustness.results import HasherInfo
    from test_robustness_report import EDITS, make_result

    full = make_result()
    full.max_side = 1024
    full.nearest_other = {"NeuralHash": np.array([[40, 41, 39, 44, 45, 20], [38, -1, 36, 42, 43, 35],
                                                  [35, 36, 30, 47, 46, 33]], dtype=np.int32),
                          "pHash": np.array([[6, 7, 5, 6, 6, 10], [5, -1, 6, 6, 7, 9], [6, 6, 8, 9, 9, 7]],
                                            dtype=np.int32)}
    single = make_result(synthetic=False, images=["only.png"])
    single.sizes = [(0, 0)]
    single.distances = {k: v[:1] for k, v in single.distances.items()}
    single.distinct = {k: v[:0] for k, v in single.distinct.items()}
    single.pairs = np.zeros((0, 2), dtype=np.int64)
    single.failures, single.notes = [], []
    single.hashers = [HasherInfo("NeuralHash", 96, "Apple's model")]
    single.distances = {"NeuralHash": single.distances["NeuralHash"]}
    single.distinct = {"NeuralHash": single.distinct["NeuralHash"]}
    assert len(single.edits) == len(EDITS)
    return {"full": full, "single": single}


def _render(result) -> str:
    from neuralhash.robustness import report

    plots = {name: f"png bytes of {name}".encode() for name in report.PLOT_FILES.values()}
    return report.render_html(result, report.summarise(result), plots)


def _current() -> dict[str, list]:
    return {name: events(_render(result)) for name, result in _cases().items()}


def test_html_content_is_the_recorded_one():
    pytest.importorskip("jinja2")
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    current = _current()
    assert set(current) == set(recorded)
    for name in recorded:
        want, got = recorded[name], current[name]
        for k, (a, b) in enumerate(zip(want, got)):
            assert a == b, f"{name}: element {k} differs: recorded {a!r}, rendered {b!r}"
        assert len(want) == len(got), name


def test_html_comes_from_templates_not_strings_in_code():
    """No markup is assembled in Python: report.py holds no HTML tags (the templates do)."""
    source = (HERE.parent / "src" / "neuralhash" / "robustness" / "report.py").read_text(encoding="utf-8")
    tags = re.findall(r"<(?:table|tr|td|th|h1|h2|figure|figcaption|details|div|dl|ul|li|span)\b", source)
    assert not tags, tags[:10]
    templates = HERE.parent / "src" / "neuralhash" / "robustness" / "templates"
    assert (templates / "report.html").is_file()


def test_input_text_is_escaped_in_the_page():
    page = _render(_cases()["full"])
    assert "<script>" not in page and "&lt;script&gt;a|b.jpg" in page
    assert "<b>note</b>" not in page and "&lt;b&gt;note&lt;/b&gt;" in page


def test_jinja2_missing_is_one_error_before_anything_is_written(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from neuralhash.errors import NeuralHashError
    from neuralhash.robustness.report import write_report

    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(NeuralHashError, match=re.escape("needs jinja2: pip install '.[robustness]'")):
        write_report(_cases()["full"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


if __name__ == "__main__":
    RECORD.parent.mkdir(exist_ok=True)
    cases = _current()  # one element a line: a change of content reads as a small diff
    RECORD.write_text("{\n" + ",\n".join(
        f"{json.dumps(name)}: [\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in cases[name]) + "\n]"
        for name in cases) + "\n}\n", encoding="utf-8")
    print(f"wrote {RECORD}")
