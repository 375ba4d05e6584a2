"""The file-name rule of neuralhash.files.pathnames: every format gives the original bytes back."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralhash.files import pathnames

HOSTILE = [
    "plain.jpg",
    "with space .jpg",
    "  leading and trailing  ",
    "new\nline.jpg",
    "carriage\rreturn.jpg",
    "back\\slash.jpg",
    "\\n-literal.jpg",
    "line\u2028separator.jpg",
    "next\u0085line.jpg",
    "comma,\"quote\".jpg",
    "tab\there.jpg",
    os.fsdecode(b"latin1-\xe9t\xe9.jpg"),
    os.fsdecode(b"\xff\xfe\x80.png"),
    "emoji-\U0001f600.png",
]

names = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b and b"/" not in b).map(os.fsdecode)


def text_roundtrip(name: str) -> str:
    line = pathnames.text_line("0" * 24, name)
    raw = line.encode("utf-8", "surrogateescape")
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n"), "one record, one line"
    hex_text, back = pathnames.split_text_line(raw[:-1].decode("utf-8", "surrogateescape"))
    assert hex_text == "0" * 24
    return back


@pytest.mark.parametrize("name", HOSTILE)
def test_text_lines_give_the_bytes_back(name):
    assert pathnames.to_bytes(text_roundtrip(name)) == pathnames.to_bytes(name)


def test_text_escaping_is_sha256sums():
    # GNU sha256sum prints a name with a newline as: \HASH  new\nline
    assert pathnames.text_line("ab" * 12, "new\nline") == "\\" + "ab" * 12 + "  new\\nline\n"
    assert pathnames.text_line("ab" * 12, "a\\b") == "\\" + "ab" * 12 + "  a\\\\b\n"
    assert pathnames.text_line("ab" * 12, "plain") == "ab" * 12 + "  plain\n"


def test_text_lines_from_other_tools():
    assert pathnames.split_text_line("ab" * 12 + " *bin.jpg") == ("ab" * 12, "bin.jpg")
    assert pathnames.split_text_line("ab" * 12 + "\tx.jpg\r") == ("ab" * 12, "x.jpg")
    assert pathnames.split_text_line("ab" * 12) == ("ab" * 12, None)
    with pytest.raises(pathnames.PathNameError):
        pathnames.split_text_line("\\" + "ab" * 12 + "  bad\\q")


@pytest.mark.parametrize("name", HOSTILE)
def test_json_lines_give_the_bytes_back(name):
    line = json.dumps({"hash": "0" * 24, **pathnames.json_fields(name)}, ensure_ascii=False)
    raw = line.encode("utf-8")  # valid UTF-8, always
    assert b"\n" not in raw
    obj = json.loads(raw.decode("utf-8"))
    assert pathnames.to_bytes(pathnames.name_from_json(obj)) == pathnames.to_bytes(name)
    assert ("path_b64" in obj) == (not pathnames.is_utf8(name))


def test_json_rejects_bad_base64():
    with pytest.raises(pathnames.PathNameError):
        pathnames.name_from_json({"path": "x", "path_b64": "not base64!"})
    with pytest.raises(pathnames.PathNameError):
        pathnames.name_from_json({"path": 3})


@pytest.mark.parametrize("name", HOSTILE)
def test_csv_gives_the_bytes_back(name):
    raw = pathnames.csv_row([name, "0" * 24, ""]).encode("utf-8", "surrogateescape")
    text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="surrogateescape", newline="")
    (row,) = list(csv.reader(text))
    assert pathnames.to_bytes(row[0]) == pathnames.to_bytes(name)
    assert row[1:] == ["0" * 24, ""]


def test_csv_rows_match_the_csv_module_where_it_is_right():
    for row in (["a", "b c", ""], ["x,y", 'q"uote', "n\nl"], [""], ["", ""]):
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(row)
        assert pathnames.csv_row(row) == out.getvalue()


@pytest.mark.parametrize("name", HOSTILE)
def test_sqlite_values_give_the_bytes_back(name):
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (path TEXT)")
    db.execute("INSERT INTO t VALUES (?)", (pathnames.sql_value(name),))
    (value,) = db.execute("SELECT path FROM t").fetchone()
    assert pathnames.to_bytes(pathnames.from_sql(value)) == pathnames.to_bytes(name)


@pytest.mark.parametrize("name", HOSTILE)
def test_display_is_one_line(name):
    shown = pathnames.display(name)
    assert "\n" not in shown and "\r" not in shown and "\u2028" not in shown and "\x85" not in shown
    assert "\n".join(f"x{shown}".splitlines()) == f"x{shown}"


@settings(max_examples=300, deadline=None)
@given(names)
def test_every_byte_name_survives_every_format(name):
    want = pathnames.to_bytes(name)
    assert pathnames.to_bytes(text_roundtrip(name)) == want
    obj = json.loads(json.dumps(pathnames.json_fields(name), ensure_ascii=False))
    assert pathnames.to_bytes(pathnames.name_from_json(obj)) == want
    assert pathnames.to_bytes(pathnames.from_sql(pathnames.sql_value(name))) == want


def test_json_fields_under_another_key():
    # compare's "a" / "b" carry names under their own keys, read back by name_from_json(obj, key).
    name = os.fsdecode(b"a\xffb.png")
    obj = json.loads(json.dumps(pathnames.json_fields(name, "a"), ensure_ascii=False))
    assert set(obj) == {"a", "a_b64"}
    assert pathnames.to_bytes(pathnames.name_from_json(obj, "a")) == b"a\xffb.png"
    assert pathnames.json_fields("plain.png", "b") == {"b": "plain.png"}
