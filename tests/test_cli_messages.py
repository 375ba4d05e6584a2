"""What the commands say (issue 17): the option to type (item 2), one distance rule with help for every
option (item 11), a database that serve creates (item 10)."""

from __future__ import annotations

import pytest

from neuralhash.cli import build_parser, main
from neuralhash.matching.index import DEFAULT_MAX_DISTANCE, MAX_DISTANCE
from neuralhash.store import HashStore, StoreError


@pytest.fixture()
def two_models(tmp_path):
    db = tmp_path / "two.db"
    with HashStore(db, create=True) as store:
        store.add_hashes("a", [("x.jpg", bytes(12))], model_id="model-one")
        store.add_hashes("b", [("y.jpg", bytes.fromhex("ff" * 12))], model_id="model-two")
    return db


def test_errors_name_the_option_the_user_types(two_models, tmp_path, capsys):
    listing = tmp_path / "l.txt"
    listing.write_text("59a34eabe31910abfb06f308  a.jpg\n")
    assert main(["audit", str(listing), "--reference", str(two_models)]) == 1
    err = capsys.readouterr().err
    assert err.rstrip().endswith("choose one with --reference-model-id"), err
    assert main(["dupes", str(two_models)]) == 1
    assert capsys.readouterr().err.rstrip().endswith("choose one with --model-id")
    assert main(["match", str(two_models), "00" * 12]) == 1
    assert capsys.readouterr().err.rstrip().endswith("choose one with --model-id")
    # The Python API (and the service, which passes its message on) names its parameter.
    with HashStore(two_models) as store, pytest.raises(StoreError, match="choose one with model_id$"):
        store.matcher()


def test_one_distance_rule_with_a_default(two_models, capsys):
    parser = build_parser()
    commands = {"match": [str(two_models), "00" * 12], "dupes": [str(two_models)], "audit": ["l.txt"]}
    for command, operands in commands.items():
        assert parser.parse_args([command, *operands]).max_distance == DEFAULT_MAX_DISTANCE == 4
        assert parser.parse_args([command, *operands, "--max-distance", str(MAX_DISTANCE)]).max_distance == 32
        with pytest.raises(SystemExit) as stop:
            parser.parse_args([command, *operands, "--max-distance", str(MAX_DISTANCE + 1)])
        assert stop.value.code == 2
        assert f"must be between 0 and {MAX_DISTANCE}, not {MAX_DISTANCE + 1}" in capsys.readouterr().err
    assert main(["match", str(two_models), "00" * 12, "--model-id", "model-one"]) == 0  # no --max-distance
    assert capsys.readouterr().out.split() == ["00" * 12, "0", "a", "00" * 12, "x.jpg"]


def _options_without_help(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options_without_help(sub, (*path, name))
        elif action.option_strings and not action.help:
            yield f"{' '.join(path)} {action.option_strings[-1]}"


def test_every_option_has_help():
    assert list(_options_without_help(build_parser())) == []


def test_serve_says_it_creates_a_database_that_does_not_exist(tmp_path, capsys):
    pytest.importorskip("fastapi")
    db = tmp_path / "typo.db"
    assert main(["serve", str(db), "--host", "0.0.0.0"]) == 1  # refused later: no token off loopback
    err = capsys.readouterr().err
    assert f"neuralhash: note: {db} does not exist: serve creates it, an empty database" in err
    assert not db.exists()
