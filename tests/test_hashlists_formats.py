"""index import / export in every hash-list format (neuralhash.lists.hashlists), extra fields kept, and
threatexchange's own files: written by its real CLI and read back, or written here and read by it."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuralhash.lists import hashlists
from neuralhash.files.pathnames import csv_row, text_line
from neuralhash.store import HashStore
from conftest import threatexchange_runner

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "neuralhash.cli", *args], input=stdin, capture_output=True,
                          env=env, timeout=120)


def _ok(*args: str) -> bytes:
    got = _cli(*args)
    assert got.returncode == 0, got.stderr.decode(errors="replace")
    return got.stdout


def _hashes(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [bytes(row).hex() for row in rng.integers(0, 256, (n, 12), dtype=np.uint8)]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("line,fmt", [
    ("59a34eabe31910abfb06f308  photo.jpg", "text"),
    ("59a34eabe31910abfb06f308", "text"),
    ("\\59a34eabe31910abfb06f308  a\\nb.jpg", "text"),
    ("59a34eabe31910abfb06f308 photo.jpg", "text"),            # one space, a name: lenient text
    ("59a34eabe31910abfb06f308  'x' POSITIVE_CLASS", "text"),   # two spaces: always text
    ("# a comment", "text"),
    ("not a hash", "text"),
    ('{"hash": "59a34eabe31910abfb06f308"}', "jsonl"),
    ("path,hash,error", "csv"),
    ("Label , HASH", "csv"),
    ("neuralhash 59a34eabe31910abfb06f308", "tx-file"),
    ("pdq " + "0" * 64, "tx-file"),
    ("neuralhash 59a34eabe31910abfb06f308 'Known list' INVESTIGATION_SEED", "tx-dataset"),
    ("neuralhash 59a34eabe31910abfb06f308 \"it's\" POSITIVE_CLASS a,b", "tx-dataset"),
    ("neuralhash 59a34eabe31910abfb06f308 DISPUTED", "tx-dataset"),            # dataset -P -c NAME
    ("59a34eabe31910abfb06f308 'Known list' NEGATIVE_CLASS", "tx-dataset"),    # dataset -P -s neuralhash
    ("59a34eabe31910abfb06f308 INVESTIGATION_SEED", "tx-dataset"),            # -s and -c
    ("signal_type,signal_str,collab,category,tags", "tx-dataset-csv"),
])
def test_the_first_line_tells_the_format(line, fmt):
    assert hashlists.detect_format(line) == fmt


def test_format_forces_a_reading(tmp_path):
    # A text list whose names look like threatexchange's opinions, after ONE space: detected as a
    # dataset (by the documented rule), read as names when --format text says so.
    path = tmp_path / "odd.txt"
    path.write_bytes(b"59a34eabe31910abfb06f308 'x' POSITIVE_CLASS\n")
    db = str(tmp_path / "db.sqlite")
    _ok("index", "import", db, str(path), "--list", "auto")
    _ok("index", "import", db, str(path), "--list", "forced", "--format", "text")
    with HashStore(db) as store:
        auto = list(store.export(list_name="auto"))
        forced = list(store.export(list_name="forced"))
    assert [(h.path, h.extra) for h in auto] == [("odd.txt:1", {"collab": "x", "category": "POSITIVE_CLASS",
                                                                  "tags": []})]
    assert [(h.path, h.extra) for h in forced] == [("'x' POSITIVE_CLASS", None)]
    bad = _cli("index", "import", db, str(path), "--format", "yaml")
    assert bad.returncode == 2 and b"invalid choice" in bad.stderr


# --------------------------------------------------------------------------- extra fields


NAMES = ["plain.jpg", os.fsdecode(b"bad\xff.jpg"), 'comma, "quote".jpg', "new\nline.jpg", "caf\u00e9.jpg"]


def _csv_source(hashes: list[str]) -> bytes:
    """A CSV in export's layout (path,hash,model,list) plus label columns, hostile cells included."""
    rows = [["path", "hash", "model", "list", "label", "note, with comma", "score"]]
    cells = ["", 'say "hi"', "two\nlines", os.fsdecode(b"raw\xfebyte"), "\u2028sep"]
    for k, (name, h) in enumerate(zip(NAMES, hashes)):
        rows.append([name, h, "m", "lab", f"label{k}", cells[k], str(k / 3)])
    return "".join(csv_row(r) for r in rows).encode("utf-8", "surrogateescape")


def test_csv_extra_columns_come_back_byte_for_byte(tmp_path):
    hashes = _hashes(len(NAMES), 1)
    source = _csv_source(hashes)
    (tmp_path / "lab.csv").write_bytes(source)
    db = str(tmp_path / "db.sqlite")
    _ok("index", "import", db, str(tmp_path / "lab.csv"), "--model-id", "m")
    assert _ok("index", "export", db, "--csv") == source
    assert _ok("index", "export", db, "--format", "csv") == source

    # Through JSON Lines into another database and back to CSV: the same bytes again.
    jsonl = _ok("index", "export", db, "--jsonl")
    records = [json.loads(line) for line in jsonl.splitlines()]
    assert records[0] == {"path": "plain.jpg", "hash": hashes[0], "model": "m", "list": "lab", "label": "label0",
                          "note, with comma": "", "score": "0.0"}
    assert records[1]["path_b64"] == "YmFk/y5qcGc="  # b"bad\xff.jpg"
    assert records[3]["note, with comma"] == os.fsdecode(b"raw\xfebyte")  # as a \udcfe escape: UTF-8 JSON
    assert jsonl.decode("utf-8")
    (tmp_path / "lab.jsonl").write_bytes(jsonl)
    db2 = str(tmp_path / "db2.sqlite")
    _ok("index", "import", db2, str(tmp_path / "lab.jsonl"), "--model-id", "m")
    assert _ok("index", "export", db2, "--csv") == source


def test_a_foreign_csv_keeps_its_columns(tmp_path):
    hashes = _hashes(3, 2)
    src = tmp_path / "partner.csv"
    src.write_text("case id,hash,severity,path\r\n"
                   f"C-1,{hashes[0].upper()},high,a.jpg\r\n"
                   f"C-2,{hashes[1]},,\r\n"
                   f"C-3,{hashes[2]}\r\n", newline="")  # a short row: its missing cell is no field
    db = str(tmp_path / "db.sqlite")
    _ok("index", "import", db, str(src), "--model-id", "m")
    rows = list(csv.DictReader(io.StringIO(_ok("index", "export", db, "--csv").decode(), newline="")))
    assert [list(r) for r in rows][0] == ["path", "hash", "model", "list", "case id", "severity"]
    assert [(r["path"], r["hash"], r["case id"], r["severity"]) for r in rows] == [
        ("a.jpg", hashes[0], "C-1", "high"), ("partner.csv:3", hashes[1], "C-2", ""),
        ("partner.csv:4", hashes[2], "C-3", "")]
    with HashStore(db) as store:
        assert [h.extra for h in store.export()] == [{"case id": "C-1", "severity": "high"},
                                                      {"case id": "C-2", "severity": ""}, {"case id": "C-3"}]


def test_jsonl_extra_keys_keep_their_json_values(tmp_path):
    hashes = _hashes(4, 3)
    records = [
        {"hash": hashes[0], "path": "a.jpg", "label": "cat", "score": 0.25, "tags": ["x", "y"],
         "source": {"partner": "p", "ids": [1, 2]}, "flag": True, "none": None},
        {"path": "b.jpg", "hash": hashes[1]},
        {"hash": hashes[2], "path": "\u00e9t\u00e9.jpg", "note": "\u2028 and \U0001f600"},
        {"hash": hashes[3], "path_b64": "YmFk/y5qcGc=", "path": "bad\ufffd.jpg", "label": "dog"},
    ]
    src = tmp_path / "labels.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"hash": "%s", "x": NaN}\n' % hashes[0])
    db = str(tmp_path / "db.sqlite")
    got = _cli("index", "import", db, str(src), "--model-id", "m")
    assert got.returncode == 1 and b"labels.jsonl:5: not a JSON object (NaN is not JSON)" in got.stderr
    back = [json.loads(line) for line in _ok("index", "export", db, "--jsonl").splitlines()]
    assert back == [{**r, "model": "m", "list": "labels"} for r in records]
    # CSV: every field a column, in first-appearance order; a value that is not a string as its JSON.
    table = _ok("index", "export", db, "--csv").decode("utf-8", "surrogateescape")
    rows = list(csv.reader(io.StringIO(table, newline="")))
    assert rows[0] == ["path", "hash", "model", "list", "label", "score", "tags", "source", "flag", "none", "note"]
    assert rows[1][4:] == ["cat", "0.25", '["x", "y"]', '{"partner": "p", "ids": [1, 2]}', "true", "", ""]
    assert rows[4][:2] == [os.fsdecode(b"bad\xff.jpg"), hashes[3]]  # CSV: the name's own bytes


def test_formats_without_room_drop_fields_and_say_so(tmp_path):
    hashes = _hashes(2, 4)
    src = tmp_path / "l.jsonl"
    src.write_text(f'{{"hash": "{hashes[0]}", "path": "a\\\\b.jpg", "label": "x"}}\n'
                   f'{{"hash": "{hashes[1]}", "path": "c.jpg"}}\n')
    db = str(tmp_path / "db.sqlite")
    _ok("index", "import", db, str(src))
    text = _cli("index", "export", db)
    assert text.stdout.decode() == text_line(hashes[0], "a\\b.jpg") + text_line(hashes[1], "c.jpg")
    assert text.stderr.decode().strip() == ("neuralhash: note: the text format has no place for 1 entries' extra "
                                            "fields; not written (--format jsonl or csv keeps them)")
    tx = _cli("index", "export", db, "--format", "tx-file")
    assert tx.stdout.decode() == f"neuralhash {hashes[0]}\nneuralhash {hashes[1]}\n"
    assert b"2 entries' names and 1 entries' extra fields" in tx.stderr
    assert _cli("index", "export", db, "--jsonl").stderr == b""


def test_bad_extra_fields_fail_loudly(tmp_path):
    db = str(tmp_path / "db.sqlite")
    twice = tmp_path / "twice.csv"
    twice.write_text(f"hash,label,label\n{_hashes(1, 5)[0]},a,b\n")
    got = _cli("index", "import", db, str(twice))
    assert got.returncode == 1
    assert got.stderr.decode().strip().endswith("twice.csv:1: the column 'label' appears twice")
    assert b"Traceback" not in got.stderr and len(got.stderr.splitlines()) == 1
    with HashStore(db) as store:
        assert store.lists() == []  # all or nothing

    # More distinct fields than CSV columns are allowed: one line, nothing on standard output.
    many = tmp_path / "many.jsonl"
    with open(many, "w") as fh:
        for k, h in enumerate(_hashes(hashlists.MAX_EXTRA_COLUMNS + 1, 6)):
            fh.write(json.dumps({"hash": h, f"field{k}": k}) + "\n")
    _ok("index", "import", db, str(many))
    got = _cli("index", "export", db, "--csv")
    assert got.returncode == 1 and got.stdout == b""
    assert b"too many for CSV columns; export JSON Lines" in got.stderr and len(got.stderr.splitlines()) == 1
    assert len(_ok("index", "export", db, "--jsonl").splitlines()) == hashlists.MAX_EXTRA_COLUMNS + 1


def test_a_database_without_the_extra_column(tmp_path):
    hashes = _hashes(2, 7)
    db = str(tmp_path / "db.sqlite")
    plain = tmp_path / "plain.txt"
    plain.write_text(f"{hashes[0]}  a.jpg\n")
    _ok("index", "import", db, str(plain))
    columns = lambda: [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(images)")]  # noqa: E731
    assert "extra" not in columns()  # a plain list changes nothing in the schema
    assert _ok("index", "export", db, "--csv").decode() == f"path,hash,model,list\na.jpg,{hashes[0]},imported,plain\n"
    labelled = tmp_path / "lab.csv"
    labelled.write_text(f"hash,path,label\n{hashes[1]},b.jpg,x\n")
    _ok("index", "import", db, str(labelled))
    assert "extra" in columns()
    assert _ok("index", "export", db, "--csv").decode() == (
        f"path,hash,model,list,label\na.jpg,{hashes[0]},imported,plain,\nb.jpg,{hashes[1]},imported,lab,x\n")


def test_standard_input_with_a_forced_format_and_a_damaged_extra(tmp_path):
    hashes = _hashes(2, 12)
    db = str(tmp_path / "db.sqlite")
    data = f"neuralhash {hashes[0]} 'c' POSITIVE_CLASS t1\nneuralhash {hashes[1]} 'c' NEGATIVE_CLASS\n".encode()
    got = _cli("index", "import", db, "-", "--format", "tx-dataset", stdin=data)
    assert got.returncode == 0, got.stderr
    assert _ok("index", "export", db, "--list", "imported", "--format", "tx-dataset") == data
    # --format text on the same bytes: every line malformed (no hash first), reported, exit 1.
    got = _cli("index", "import", db, "-", "--format", "text", "--list", "as-text", stdin=data)
    assert got.returncode == 1 and b"-:1: not a 96-bit hash" in got.stderr

    con = sqlite3.connect(db)
    con.execute("UPDATE images SET extra = '[1, 2]' WHERE id = (SELECT min(id) FROM images)")
    con.commit()
    con.close()
    got = _cli("index", "export", db, "--jsonl")
    assert got.returncode == 1 and b"Traceback" not in got.stderr
    assert got.stderr.decode().strip().endswith("its extra fields are not a JSON object")


# --------------------------------------------------------------------------- threatexchange's formats

tx = pytest.importorskip("threatexchange")


@pytest.fixture(scope="module")
def tx_run(tmp_path_factory):
    """The real threatexchange CLI with the extension added; returns a command's standard output."""
    run = threatexchange_runner(tmp_path_factory)
    run("config", "extensions", "add", "neuralhash.integrations.threatexchange")
    return lambda *args: run(*args).stdout


def _neuralhash_lines(data: bytes, sep: bytes = b"\n") -> bytes:
    """threatexchange prints signal types in set order: keep the neuralhash lines (and a CSV header)."""
    lines = data.split(sep)
    keep = [ln for ln in lines if ln.startswith((b"neuralhash", b"signal_type"))]
    return b"".join(ln + sep for ln in keep)


def test_threatexchange_reads_our_signal_file_and_we_read_its_exports(tx_run, tmp_path):
    hashes = _hashes(12, 8)
    db = str(tmp_path / "db.sqlite")
    listing = tmp_path / "Known list.txt"
    listing.write_text("".join(text_line(h, f"photos/{k}.jpg") for k, h in enumerate(hashes)))
    _ok("index", "import", db, str(listing), "--list", "Known list")

    # Our tx-file export is the file threatexchange's local-file collaboration reads.
    signal_file = tmp_path / "signals.txt"
    signal_file.write_bytes(_ok("index", "export", db, "--format", "tx-file"))
    tx_run("config", "collab", "edit", "local_file", "--create", "--filename", str(signal_file), "Known list")
    tx_run("fetch")
    assert _neuralhash_lines(tx_run("dataset", "-P", "-S")) == signal_file.read_bytes()

    # `dataset -P` prints exactly what our tx-dataset export of the same list prints (the list's
    # name as the collaboration, threatexchange's default opinion), and reads back to the same.
    printed = _neuralhash_lines(tx_run("dataset", "-P"))
    assert printed == _ok("index", "export", db, "--format", "tx-dataset")
    printed_csv = _neuralhash_lines(tx_run("dataset", "-P", "--csv"), b"\r\n")
    assert printed_csv.startswith(b"signal_type,signal_str,collab,category,tags\r\n")
    assert printed_csv == _ok("index", "export", db, "--format", "tx-dataset-csv")

    for name, data, fmt in [("ds.txt", printed, "tx-dataset"), ("ds.csv", printed_csv, "tx-dataset-csv"),
                            ("sig.txt", signal_file.read_bytes(), "tx-file")]:
        (tmp_path / name).write_bytes(data)
        other = str(tmp_path / f"{name}.sqlite")
        _ok("index", "import", other, str(tmp_path / name))  # detected
        assert _ok("index", "export", other, "--format", fmt) == data, fmt
        with HashStore(other) as store:
            rows = list(store.export())
        assert [r.hex for r in rows] == hashes
        first = 2 if fmt == "tx-dataset-csv" else 1  # after the header
        assert [r.path for r in rows] == [f"{name}:{k + first}" for k in range(len(hashes))]
        if fmt != "tx-file":
            assert {json.dumps(r.extra, sort_keys=True) for r in rows} == {
                '{"category": "INVESTIGATION_SEED", "collab": "Known list", "tags": []}'}

    # With -s (no type) and -c (no collaboration): the same hashes and opinions.
    short = tmp_path / "short.txt"
    short.write_bytes(tx_run("dataset", "-P", "-s", "neuralhash", "-c", "Known list"))
    assert short.read_bytes().split(b"\n")[0] == f"{hashes[0]} INVESTIGATION_SEED".encode()
    _ok("index", "import", db, str(short))
    with HashStore(db) as store:
        rows = list(store.export(list_name="short"))
    assert [(r.hex, r.extra) for r in rows] == [(h, {"category": "INVESTIGATION_SEED", "tags": []}) for h in hashes]


def test_signals_of_other_types_are_reported_not_imported(tmp_path):
    h = _hashes(2, 9)
    src = tmp_path / "mixed.txt"
    src.write_text(f"neuralhash {h[0]}\npdq {'0' * 64}\n\n{h[1]}\nneuralhash nothex\n")
    db = str(tmp_path / "db.sqlite")
    got = _cli("index", "import", db, str(src))
    assert got.returncode == 1
    err = got.stderr.decode().splitlines()
    assert err[0].endswith("mixed.txt:2: a 'pdq' signal, not neuralhash")
    assert err[1].endswith("mixed.txt:5: not a 96-bit hash (24 hex digits): 'nothex'")
    with HashStore(db) as store:
        assert [(r.path, r.hex) for r in store.export()] == [("mixed.txt:1", h[0]), ("mixed.txt:4", h[1])]


def _tx_printed(entries) -> tuple[bytes, bytes]:
    """(dataset -P text, dataset -P --csv) that threatexchange's DatasetCommand prints for ``entries``:
    (collab, hex, metadata object)."""
    from threatexchange.cli.dataset_cmd import DatasetCommand

    from neuralhash.integrations.threatexchange import NeuralHashSignal

    text, table = io.StringIO(), io.StringIO()
    cmd = DatasetCommand(print_signals=True)
    with contextlib.redirect_stdout(text):
        for collab, hex_text, meta in entries:
            cmd._print_stdout(collab, NeuralHashSignal, hex_text, meta)
    writer = csv.DictWriter(table, list(hashlists.TX_CSV_COLUMNS))
    writer.writeheader()
    for collab, hex_text, meta in entries:
        cmd._print_csv(writer, collab, NeuralHashSignal, hex_text, meta)
    return text.getvalue().encode(), table.getvalue().encode()


def test_opinions_tags_and_odd_collaborations_round_trip(tmp_path):
    from threatexchange.exchanges import fetch_state as st

    class Tagged(st.FetchedSignalMetadata):
        def __init__(self, category, tags):
            self.opinion = st.SignalOpinion(False, category, tags)

        def get_as_opinions(self):
            return [self.opinion]

    class OwnSummary(Tagged):  # an API that prints its own summary (as StopNCII's metadata does)
        def __str__(self):
            return "Blocked by 3 owners: a, b"

    h = _hashes(5, 10)
    entries = [
        ("Known list", h[0], Tagged(st.SignalOpinionCategory.POSITIVE_CLASS, ["violent", "graphic"])),
        ("it's \"quoted\"", h[1], Tagged(st.SignalOpinionCategory.NEGATIVE_CLASS, [])),
        ("caf\u00e9\ttab", h[2], Tagged(st.SignalOpinionCategory.INVESTIGATION_SEED, ["one tag"])),
        ("Known list", h[3], OwnSummary(st.SignalOpinionCategory.POSITIVE_CLASS, ["x"])),
        ("Known list", h[4], st.FetchedSignalMetadata()),
    ]
    printed, printed_csv = _tx_printed(entries)
    db = str(tmp_path / "db.sqlite")
    for name, data, fmt in [("ds.txt", printed, "tx-dataset"), ("ds.csv", printed_csv, "tx-dataset-csv")]:
        (tmp_path / name).write_bytes(data)
        _ok("index", "import", db, str(tmp_path / name), "--list", fmt)
        assert _ok("index", "export", db, "--list", fmt, "--format", fmt) == data, fmt
    with HashStore(db) as store:
        text_rows = [r.extra for r in store.export(list_name="tx-dataset")]
    text_rows[0]["tags"].sort()  # threatexchange prints a set: in no fixed order, kept as printed
    assert text_rows[0] == {"collab": "Known list", "category": "POSITIVE_CLASS", "tags": ["graphic", "violent"]}
    assert text_rows[1] == {"collab": "it's \"quoted\"", "category": "NEGATIVE_CLASS", "tags": []}
    assert text_rows[2] == {"collab": "caf\u00e9\ttab", "category": "INVESTIGATION_SEED", "tags": ["one tag"]}
    assert text_rows[3] == {"collab": "Known list", "metadata": "Blocked by 3 owners: a, b"}
    # The text form's opinions carried into the CSV form give threatexchange's CSV rows; the summary
    # of an API's own (no category) becomes a column of its own.
    crossed = list(csv.reader(io.StringIO(_ok("index", "export", db, "--list", "tx-dataset", "--format",
                                              "tx-dataset-csv").decode(), newline="")))
    theirs = list(csv.reader(io.StringIO(printed_csv.decode(), newline="")))
    assert crossed[0] == [*theirs[0], "metadata"]
    assert [row[:5] for row in crossed[1:4]] == theirs[1:4] and {row[5] for row in crossed[1:4]} == {""}
    assert crossed[4] == ["neuralhash", h[3], "Known list", "", "", "Blocked by 3 owners: a, b"]


def test_broken_threatexchange_lines_are_skipped_with_reasons(tmp_path):
    h = _hashes(1, 11)[0]
    src = tmp_path / "broken.txt"
    src.write_text(f"neuralhash {h} 'Known list' INVESTIGATION_SEED\n"
                   f"neuralhash {h} 'unclosed INVESTIGATION_SEED\n"
                   f"neuralhash {h} 'x'\n"
                   f"neuralhash {h} 'x'INVESTIGATION_SEED\n")
    got = _cli("index", "import", str(tmp_path / "db.sqlite"), str(src))
    assert got.returncode == 1
    err = got.stderr.decode().splitlines()
    assert err[0].endswith("broken.txt:2: the collaboration's name is not a quoted string")
    assert err[1].endswith("broken.txt:3: no opinion after the collaboration's name")
    assert err[2].endswith("broken.txt:4: no opinion after the collaboration's name")
    assert err[3].endswith("1 imported (0 replaced), 3 line(s) skipped, model 'imported'")
