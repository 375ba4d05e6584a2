"""The command line: decode and inspect on the real files, and clean errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from neuralhash.cli import main
from neuralhash.espresso import encode_container


def test_decode_real_file_gives_published_bytes(real_dir, tmp_path, capsys):
    out = tmp_path / "net.json"
    assert main(["decode", str(real_dir / "NeuralHashv3b-current.espresso.shape"), "-o", str(out)]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == (
        "f4fe7e9d854fd0f0585a732bd5a8dcb7de8dfcbbd946d68c10e821b9691b1db8"
    )


def test_decode_bad_file_is_one_line_error_and_no_output(tmp_path, capsys):
    bad = tmp_path / "bad.espresso.net"
    bad.write_bytes(b"pbze" + b"\0" * 40)
    out = tmp_path / "out.json"
    assert main(["decode", str(bad), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("neuralhash: error: ") and str(bad) in err and "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temporary file left behind either


def test_inspect_json_keys(real_dir, capsys):
    assert main(["inspect", str(real_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == 225
    assert info["layer_types"]["convolution"] == 54
    assert info["inputs"] == {"image": [1, 3, 360, 360]}
    assert info["outputs"] == {"leaf/logits": [1, 128, 1, 1]}
    assert info["parameters"] is None
    assert info["transform_params"]["image"]["is_network_bgr"] is False


def test_inspect_text(real_dir, capsys):
    assert main(["inspect", str(real_dir)]) == 0
    text = capsys.readouterr().out
    assert "layers       225" in text and "image  n,k,h,w [1, 3, 360, 360]  seq 1  ONNX [batch, 3, 360, 360]" in text and "RGB" in text


def test_decode_cap_is_an_option(tmp_path, capsys):
    f = tmp_path / "big.espresso.net"
    f.write_bytes(encode_container(b"{" + b" " * 5000 + b"}"))
    assert main(["decode", str(f), "-o", "-", "--max-decoded-size", "100"]) == 1
    assert "above the limit of 100" in capsys.readouterr().err


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["convert"])
    assert exc.value.code == 2


def test_explicit_weights_and_shape_paths(tmp_path, capsys):
    """Files that do not share a prefix are given one by one."""
    import numpy as np

    from neuralhash.espresso import write_espresso

    layer = {"type": "activation", "name": "relu", "bottom": "x", "top": "y", "mode": 0}
    layer_ip = {"type": "inner_product", "name": "fc", "bottom": "y", "top": "z", "nB": 4, "nC": 2,
                "has_biases": 0, "blob_weights": 1}
    sources = write_espresso(tmp_path / "a", "net", layers=[layer, layer_ip],
                             shapes={"x": (1, 4, 1, 1), "y": (1, 4, 1, 1), "z": (1, 2, 1, 1)},
                             blobs={1: np.ones((2, 4), np.float32)})
    other = tmp_path / "elsewhere"
    other.mkdir()
    weights = other / "w.bin"
    shape = other / "s.json"
    sources.weights.rename(weights)
    sources.shape.rename(shape)
    assert main(["inspect", str(sources.net), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] is None
    assert main(["inspect", str(sources.net), "--json", "--weights", str(weights), "--shape", str(shape)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 8 and info["inputs"] == {"x": [1, 4, 1, 1]}
    assert main(["convert", str(sources.net), "-o", str(tmp_path / "m.onnx"), "--weights", str(weights),
                 "--shape", str(shape)]) == 0
    assert main(["inspect", str(sources.net), "--weights", str(other / "missing")]) == 1
    assert "weights file not found" in capsys.readouterr().err
