"""Counts in messages agree with their nouns: "(1 hash)", never "(1 hashes)" (issue 17, item 6)."""

from __future__ import annotations

from neuralhash.cli import main


def _import(db, tmp_path, name, hex_hash, model_id, capsys):
    listing = tmp_path / f"{name}.txt"
    listing.write_text(f"{hex_hash}  {name}.jpg\n")
    assert main(["index", "import", str(db), str(listing), "--model-id", model_id]) == 0
    capsys.readouterr()


def test_remove_list_counts_one_hash(tmp_path, capsys):
    db = tmp_path / "photos.db"
    _import(db, tmp_path, "one", "59a34eabe31910abfb06f308", "model-a", capsys)
    assert main(["index", "remove-list", str(db), "one"]) == 0
    err = capsys.readouterr().err
    assert err.rstrip().endswith("list 'one' removed (1 hash)"), err


def test_several_models_message_counts_one_hash(tmp_path, capsys):
    db = tmp_path / "photos.db"
    _import(db, tmp_path, "one", "59a34eabe31910abfb06f308", "model-a", capsys)
    _import(db, tmp_path, "two", "0123456789abcdef01234567", "model-b", capsys)
    assert main(["match", str(db), "59a34eabe31910abfb06f308", "--max-distance", "4"]) != 0
    err = capsys.readouterr().err
    assert "(1 hash, " in err and "1 hashes" not in err, err
