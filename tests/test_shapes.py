"""Shape-file entries as Espresso means them: seq, _rank, and the rank of entries without one."""

from __future__ import annotations

import pytest

from neuralhash.errors import GraphError
from neuralhash.espresso import BlobShape, EspressoModel
from neuralhash.espresso.model import _parse_shapes, shapes_document


def parse(entry: dict) -> BlobShape:
    return _parse_shapes({"layer_shapes": {"b": entry}}, "test.shape")["b"]


@pytest.mark.parametrize(
    "entry,rank,dims",
    [
        ({"n": 1, "k": 1, "h": 1, "w": 64, "_rank": 2}, 2, (64,)),  # a newer file's dense output
        ({"n": 1, "k": 128, "h": 1, "w": 1, "_rank": 4}, 4, (128, 1, 1)),  # NeuralHash's logits
        ({"n": 1, "k": 4, "h": 25, "w": 439, "_rank": 3}, 3, (4, 25, 439)),  # a rank never drops an axis above 1
        # CardScan files: no _rank, seq named where a blob lives on the sequence axis (SSDOcr)
        ({"n": 1, "k": 1, "h": 3420, "w": 4}, 3, (3420, 4)),
        ({"n": 1, "k": 1, "h": 3420, "w": 10}, 3, (3420, 10)),
        ({"n": 1, "k": 11, "h": 1, "w": 1, "seq": 3420}, 5, (3420, 11, 1, 1)),
        ({"n": 1, "k": 3, "h": 1, "w": 1}, 4, (3, 1, 1)),  # UxModel's three classes
        ({"n": 1, "k": 3, "h": 375, "w": 600}, 4, (3, 375, 600)),
        ({"n": 1, "k": 1, "h": 1, "w": 64}, 2, (64,)),  # agrees with the newer files' _rank 2
    ],
)
def test_rank_and_onnx_dims(entry, rank, dims):
    shape = parse(entry)
    assert shape.rank == rank and shape.rank_declared == ("_rank" in entry)
    assert shape.view == (entry.get("seq", 1), entry["k"], entry["h"], entry["w"])
    assert shape.onnx_dims == dims


@pytest.mark.parametrize(
    "entry,field",
    [({"k": 1, "_rank": 6}, "_rank"), ({"k": 1, "_rank": "4"}, "_rank"), ({"k": 1, "_rank": True}, "_rank"),
     ({"k": 1, "seq": -1}, "seq"), ({"k": 1.5}, "k")],
)
def test_bad_entries_name_the_blob_and_field(entry, field):
    with pytest.raises(GraphError, match=rf"test.shape: shape of blob 'b': field '{field}'"):
        parse(entry)


def test_shape_document_round_trip():
    shapes = {"a": BlobShape(1, 11, 1, 1, rank=5, seq=3420, rank_declared=False),
              "b": BlobShape(1, 1, 1, 64, rank=2), "c": (1, 3, 4, 5)}
    doc = shapes_document(shapes)
    assert doc["layer_shapes"]["a"] == {"k": 11, "w": 1, "n": 1, "h": 1, "seq": 3420}
    assert doc["layer_shapes"]["c"]["_rank"] == 4
    back = _parse_shapes(doc, "x")
    assert back["a"] == shapes["a"] and back["b"] == shapes["b"] and back["c"] == BlobShape(1, 3, 4, 5)


def test_layers_with_several_tops_are_a_valid_graph():
    layers = [{"type": "split_nd", "name": "s", "bottom": "x", "top": "a,b", "nd_axis": 1},
              {"type": "elementwise", "name": "sum", "bottom": "a,b", "top": "y", "operation": 0, "alpha": 1.0}]
    model = EspressoModel.from_layers(layers, None, {"x": (1, 4, 1, 1)})
    assert model.layers[0].tops == ("a", "b")
    assert model.inputs == ["x"] and model.outputs == ["y"]
