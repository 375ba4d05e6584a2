"""Hashing on a Dask cluster (neuralhash.hashing.distributed, ``neuralhash hash --scheduler``).

One LocalCluster of two worker processes (one thread each) serves the module;
every result is compared with single-process hashing of the same files
(``NeuralHash.hash_many(paths, workers=0)``, or the plain command's output).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")
pytest.importorskip("fsspec")

import pandas as pd  # noqa: E402

from neuralhash.hashing import distributed as nhd  # noqa: E402
from neuralhash.cli import dask_cmds, main  # noqa: E402
from neuralhash.errors import NeuralHashError  # noqa: E402
from neuralhash.hashing.seed import HASH_BITS  # noqa: E402

from conftest import draw_image  # noqa: E402

# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _env(module_env):
    yield


def _image(path: Path, seed: int, size=(160, 120)) -> str:
    return str(draw_image(path, seed, size))


@pytest.fixture(scope="module")
def folder(tmp_path_factory, module_env) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(10):
        _image(root / f"img{i:02d}.{'jpg' if i % 3 == 0 else 'png'}", i)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    return root


@pytest.fixture(scope="module")
def paths(folder) -> list[str]:
    """Generated images, the package's samples, a corrupt file and a missing one, in a mixed order."""
    from neuralhash.demo.synthetic import sample_image_paths

    generated = sorted(str(p) for p in folder.iterdir())
    samples = [str(p) for p in sample_image_paths()]
    return generated[:4] + samples + [str(folder / "missing.png")] + generated[4:]


@pytest.fixture(scope="module")
def nh(module_env):
    from neuralhash.hashing import NeuralHash

    return NeuralHash.demo()


@pytest.fixture(scope="module")
def ref(nh, paths):
    """path -> HashResult, single process."""
    return {r.path: r for r in nh.hash_many(paths, workers=0)}


@pytest.fixture(scope="module")
def cluster(module_env):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        yield client


def _check(frame: pd.DataFrame, expected_paths: list[str], ref) -> None:
    """Every path once, in order, with the single-process hash, margins and error."""
    assert list(frame["path"]) == expected_paths
    assert list(frame.index) == list(range(len(expected_paths)))
    for row in frame.itertuples():
        want = ref[row.path]
        if want.ok:
            assert row.hash == want.hash.hex and _null(row.error)
            got = np.asarray(row.margins, dtype=np.float32)
            assert got.shape == (HASH_BITS,) and np.array_equal(got, want.hash.margins)
        else:
            assert _null(row.hash) and _null(row.margins)
            assert row.error == want.error


def _null(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x))


# -- the Python API ------------------------------------------------------------------------


def test_hash_paths_equals_single_process(client, nh, paths, ref):
    df = nhd.hash_paths(paths, model=nh, client=client, paths_per_task=3)
    assert list(df.columns) == list(nhd.COLUMNS)
    assert df.npartitions == -(-len(paths) // 3)
    assert df.divisions[0] == 0 and df.divisions[-1] == len(paths) - 1
    frame = client.compute(df).result()  # client is not the default one: computed through it
    _check(frame, paths, ref)
    assert sum(r.ok for r in ref.values()) == len(paths) - 2  # the corrupt and the missing file failed
    assert ref[paths[-1]].ok is True
    # as HashResults (what the CLI prints): values rebuilt exactly from hash + margins
    for result in nhd.to_results(frame):
        want = ref[result.path]
        assert result.ok == want.ok and result.error == want.error
        if want.ok:
            assert result.hash == want.hash and np.array_equal(result.hash.values, want.hash.values)


def test_model_is_built_once_per_worker_and_default_client(client, paths, ref):
    with client.as_current():
        frame = nhd.hash_paths(paths, model="demo", paths_per_task=2).compute()  # a spec, loaded here once
    _check(frame, paths, ref)
    builds = client.run(lambda: __import__("neuralhash.hashing.distributed").hashing.distributed._BUILDS)
    assert sorted(builds.values()) == [1, 1]  # two runs, one model, built once by each worker


def test_without_a_client_the_error_says_how_to_make_one(paths):
    if getattr(distributed.client, "_get_global_client", lambda: None)() is not None:
        pytest.skip("another test left a default client")
    with pytest.raises(NeuralHashError, match="no Dask client.*Client\\("):
        nhd.hash_paths(paths, model="demo")


def test_glob_directory_and_file_urls(client, nh, folder, ref, tmp_path):
    pngs = sorted(str(p) for p in folder.glob("*.png"))
    frame = client.compute(nhd.hash_paths(str(folder / "*.png"), model=nh, client=client)).result()
    _check(frame, pngs, ref)
    walked = client.compute(nhd.hash_paths(str(folder), model=nh, client=client)).result()  # a folder: its images
    assert list(walked["path"]) == sorted(str(p) for p in folder.iterdir())

    # file:// URLs go through fsspec on the workers (bytes, then decode): same hashes, errors name the URL
    local = [str(folder / "img01.png"), str(folder / "img03.jpg"), str(folder / "corrupt.png"),
             str(folder / "missing.png")]
    urls = ["file://" + p for p in local]
    frame = client.compute(nhd.hash_paths(urls, model=nh, client=client)).result()
    assert list(frame["path"]) == urls
    assert list(frame["hash"][:2]) == [ref[p].hash.hex for p in local[:2]]
    assert np.array_equal(np.asarray(frame["margins"][1], np.float32), ref[local[1]].hash.margins)
    assert frame["error"][2] == f"{urls[2]}: not an image, or a format Pillow cannot read"
    assert frame["error"][3] == f"{urls[3]}: no such file"
    globbed = client.compute(nhd.hash_paths(f"file://{folder}/img0[12].png", model=nh, client=client)).result()
    assert list(globbed["path"]) == [f"file://{folder}/img01.png", f"file://{folder}/img02.png"]
    with pytest.raises(NeuralHashError, match="no file matches"):
        nhd.hash_paths(str(folder / "*.nothing"), model=nh, client=client)
    odd = _image(tmp_path / "a[1].png", 3)  # an existing file is a file, whatever its name
    frame = client.compute(nhd.hash_paths(odd, model=nh, client=client)).result()
    assert list(frame["path"]) == [odd] and frame["hash"][0] == nh.hash(odd).hex


def test_relative_paths_are_read_from_the_callers_directory(client, nh, folder, monkeypatch):
    # The workers started elsewhere (their working directory is not the caller's).
    monkeypatch.chdir(folder.parent)
    names = [f"{folder.name}/img01.png", f"{folder.name}/img03.jpg", f"{folder.name}/missing.png"]
    frame = client.compute(nhd.hash_paths(names, model=nh, client=client)).result()
    assert list(frame["path"]) == names
    assert list(frame["hash"][:2]) == [nh.hash(n).hex for n in names[:2]]
    assert frame["error"][2] == f"{names[2]}: no such file"  # named as given, like the plain command
    assert all(cwd != str(folder.parent) for cwd in client.run(os.getcwd).values())


def test_iter_batches_streams_in_order(client, nh, paths, ref):
    frames = list(nhd.iter_batches(paths, model=nh, client=client, paths_per_task=2, window=3))
    assert [len(f) for f in frames] == [2] * (len(paths) // 2) + [1] * (len(paths) % 2)
    _check(pd.concat(frames), paths, ref)
    assert list(nhd.iter_batches([], model=nh, client=client)) == []
    empty = nhd.hash_paths([], model=nh, client=client).compute()
    assert list(empty.columns) == list(nhd.COLUMNS) and len(empty) == 0


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # inside dask's read_parquet, with pandas 3.1
def test_to_parquet_reads_back_with_pandas_and_dask(client, nh, paths, ref, tmp_path):
    df = nhd.hash_paths(paths, model=nh, client=client, paths_per_task=5)
    out = tmp_path / "hashes"
    assert nhd.to_parquet(df, out, client=client) == len(paths)
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"part.{i:05d}.parquet" for i in range(df.npartitions)]
    back = pd.read_parquet(out)
    _check(back, paths, ref)
    assert list(dd.read_parquet(str(out)).compute(scheduler="sync")["path"]) == paths
    with pytest.raises(NeuralHashError, match="already holds Parquet files"):
        nhd.to_parquet(df, out, client=client)


class _FakeFuture:
    def __init__(self, outcome):
        self.outcome = outcome

    def result(self):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def release(self):
        pass

    def cancel(self):
        pass


class _PoisonClient:
    """Runs tasks in this process; any task holding 'poison' fails as if it killed every worker."""

    def __init__(self):
        self.submitted = []

    def submit(self, func, start, chunk, model, *, key, pure, **options):
        self.submitted.append(list(chunk))
        if any("poison" in p for p in chunk):
            return _FakeFuture(distributed.KilledWorker(key, "tcp://worker", 3))
        return _FakeFuture(nhd._frame(start, chunk, ["0" * 24] * len(chunk),
                                      np.ones((len(chunk), HASH_BITS), np.float32), [None] * len(chunk)))


def test_a_task_that_kills_its_workers_is_split_and_the_culprit_reported():
    # Dask gives up on a task after distributed.scheduler.allowed-failures worker deaths
    # (KilledWorker, never a hang); iter_batches then reruns its paths one per task.
    fake = _PoisonClient()
    paths = ["a", "b", "c-poison", "d", "e", "f"]
    frame = pd.concat(nhd._stream(fake, None, paths, 4, 2, {}))
    assert list(frame["path"]) == paths and list(frame.index) == list(range(6))
    assert frame["error"][2].startswith("c-poison: the Dask worker hashing this image died on every attempt")
    assert frame["hash"].isna().tolist() == [False, False, True, False, False, False]
    assert fake.submitted == [["a", "b", "c-poison", "d"], ["e", "f"], ["a"], ["b"], ["c-poison"], ["d"]]


def test_killed_worker_tasks_are_rerun(client, cluster, nh, paths, ref):
    many = paths * 8
    df = nhd.hash_paths(many, model=nh, client=client, paths_per_task=2)
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    future = client.compute(df)
    deadline = time.monotonic() + 60
    while not any("neuralhash" in str(k) and "neuralhash-model" not in str(k)  # a hashing task, not the model's
                  for k in client.processing(workers=[victim]).get(victim, ())):
        assert time.monotonic() < deadline, "the victim worker never got a task"
        time.sleep(0.005)
    assert not future.done()
    os.kill(pids[victim], signal.SIGKILL)  # mid-run: its tasks must be rerun elsewhere
    frame = future.result(timeout=120)
    assert len(frame) == len(many) and list(frame["path"]) == many  # each path exactly once, in order
    _check(frame, many, ref)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert victim not in client.run(os.getpid)


# -- the command line ----------------------------------------------------------------------


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", [[], ["--jsonl", "--margins"], ["--csv", "--margins"]], ids=["text", "jsonl", "csv"])
def test_cli_output_is_byte_for_byte_the_plain_commands(cluster, paths, fmt, capsys):
    plain = _run(capsys, ["hash", "--model", "demo", *fmt, *paths])
    on_cluster = _run(capsys, ["hash", "--model", "demo", *fmt, "--scheduler", cluster.scheduler_address, *paths])
    assert plain[0] == on_cluster[0] == 1  # the corrupt and the missing file
    assert on_cluster[1] == plain[1]
    assert on_cluster[2] == plain[2]
    assert "missing.png: no such file" in on_cluster[2]


def test_max_pixels_applies_on_the_workers(client, cluster, nh, paths, capsys):
    """The limit is resolved on the client and applied by the workers, as the plain command applies it."""
    small = 1000  # below every test image
    frame = client.compute(nhd.hash_paths(paths, model=nh, client=client, max_pixels=small)).result()
    single = {r.path: r for r in nh.hash_many(paths, workers=0, max_pixels=small)}
    for result in nhd.to_results(frame):
        assert result.ok == single[result.path].ok and result.error == single[result.path].error
    assert not any(r.ok for r in single.values()) and any("--max-pixels" in r.error for r in single.values())
    plain = _run(capsys, ["hash", "--model", "demo", "--max-pixels", str(small), *paths])
    on_cluster = _run(capsys, ["hash", "--model", "demo", "--max-pixels", str(small),
                               "--scheduler", cluster.scheduler_address, *paths])
    assert plain == on_cluster and plain[0] == 1


def test_cli_directory_and_url_glob(cluster, folder, capsys):
    plain = _run(capsys, ["hash", "--model", "demo", "--jsonl", str(folder)])
    on_cluster = _run(capsys, ["hash", "--model", "demo", "--jsonl", "--scheduler", cluster.scheduler_address,
                               str(folder)])
    assert on_cluster == plain
    code, out, _ = _run(capsys, ["hash", "--model", "demo", "--scheduler", cluster.scheduler_address,
                                 f"file://{folder}/img0[12].png"])
    hexes = {json.loads(line)["path"]: json.loads(line).get("hash") for line in plain[1].splitlines()}
    assert code == 0
    assert out.splitlines() == [f"{hexes[str(folder / n)]}  file://{folder}/{n}" for n in ("img01.png", "img02.png")]


def test_cli_local_cluster_with_parquet(paths, ref, tmp_path, capsys):
    out_dir = tmp_path / "pq"
    plain = _run(capsys, ["hash", "--model", "demo", "--jsonl", *paths])
    code, out, err = _run(capsys, ["hash", "--model", "demo", "--jsonl", "--scheduler", "local", "--workers", "1",
                                   "--parquet", str(out_dir), *paths])
    assert (code, out, err) == plain
    _check(pd.read_parquet(out_dir), paths, ref)
    code, _, err = _run(capsys, ["hash", "--model", "demo", "--scheduler", "local", "--parquet", str(out_dir),
                                 *paths])
    assert code == 1 and "already holds Parquet files" in err


def test_cli_unreachable_scheduler_is_a_clear_error(paths, capsys, monkeypatch):
    monkeypatch.setattr(dask_cmds, "CONNECT_TIMEOUT", 1)
    start = time.monotonic()
    code, out, err = _run(capsys, ["hash", "--model", "demo", "--scheduler", "tcp://127.0.0.1:1", paths[0]])
    assert code == 1 and out == ""
    assert err.startswith("neuralhash: error: cannot reach the Dask scheduler at tcp://127.0.0.1:1 within 1 s")
    assert "Traceback" not in err and time.monotonic() - start < 15
    code, _, err = _run(capsys, ["hash", "--model", "demo", "--scheduler", "no:such:::address", paths[0]])
    assert code == 1 and err.startswith("neuralhash: error: --scheduler 'no:such:::address': invalid address")


def test_without_dask_the_error_says_how_to_install(paths, capsys, monkeypatch):
    for name in ("dask", "dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)  # `import dask` now raises ImportError
    code, out, err = _run(capsys, ["hash", "--model", "demo", "--scheduler", "local", paths[0]])
    assert code == 1 and out == ""
    assert err.startswith("neuralhash: error: hashing on a Dask cluster needs the optional extra: "
                          "pip install '.[dask]' in a checkout")
    with pytest.raises(NeuralHashError, match=r"pip install '\.\[dask\]'"):
        nhd.hash_paths(paths, model="demo")


def test_other_commands_never_import_dask(paths, ref):
    image = next(p for p in paths if ref[p].ok)
    code = (
        "import sys\n"
        "from neuralhash.cli import main\n"
        "import neuralhash.hashing.distributed\n"
        f"rc = main(['hash', '--model', 'demo', '--workers', '0', {image!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "print(rc, loaded, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.splitlines()[-1] == "0 []", proc.stderr


# -- hostile file names (issue 10) ------------------------------------------------------------

HOSTILE = [b"bad \xff\xfe.png", b"new\nline.png", b"cr\rx.png", b"back\\slash.png", "sep\u2028.png".encode(),
           b"  lead.png"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, module_env) -> list[str]:
    """Real images under names that are not UTF-8 or hold line breaks, as os.fsdecode's strings."""
    root = os.fsencode(tmp_path_factory.mktemp("hostile"))
    out = []
    for i, name in enumerate(HOSTILE):
        tmp = _image(Path(os.fsdecode(root)) / f"t{i}.png", 20 + i)
        path = os.path.join(root, name)
        os.rename(os.fsencode(tmp), path)
        out.append(os.fsdecode(path))
    return out + [os.fsdecode(os.path.join(root, b"missing \xff\n.png"))]


def test_names_that_are_not_utf8_survive_the_cluster(client, nh, hostile, tmp_path):
    """One such name used to abort the whole run (pyarrow refuses lone surrogates); now every name comes back."""
    ref = {r.path: r for r in nh.hash_many(hostile, workers=0)}
    frame = client.compute(nhd.hash_paths(hostile, model=nh, client=client, paths_per_task=3)).result()
    results = list(nhd.to_results(frame))
    assert [os.fsencode(r.path) for r in results] == [os.fsencode(p) for p in hostile]
    for r in results:
        want = ref[r.path]
        assert (r.hash.hex if r.ok else r.error) == (want.hash.hex if want.ok else want.error)
    # path_bytes is set exactly for the names that are not UTF-8; path then shows them readably.
    assert [not _null(b) for b in frame["path_bytes"]] == [not _utf8(os.fsencode(p)) for p in hostile]
    assert nhd.to_parquet(frame_to_dask(frame), tmp_path / "pq", client=client) == len(hostile)
    back = pd.read_parquet(tmp_path / "pq")
    names = [p.encode("utf-8") if _null(b) else bytes(b) for p, b in zip(back["path"], back["path_bytes"])]
    assert names == [os.fsencode(p) for p in hostile]


def frame_to_dask(frame: pd.DataFrame):
    return dd.from_pandas(frame, npartitions=2)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("fmt", [[], ["--jsonl", "--margins"], ["--csv"]], ids=["text", "jsonl", "csv"])
def test_cli_hostile_names_byte_for_byte(cluster, hostile, fmt, capsysbinary):
    plain = (main(["hash", "--model", "demo", "--workers", "0", *fmt, *hostile]), *capsysbinary.readouterr())
    on_cluster = (main(["hash", "--model", "demo", *fmt, "--scheduler", cluster.scheduler_address, *hostile]),
                  *capsysbinary.readouterr())
    assert on_cluster == plain
    assert plain[0] == 1 and plain[2].count(b"\n") == 2  # the warning, and the missing file on one line
    assert os.fsencode(hostile[0]) in plain[1] or fmt  # text: the name's own bytes


def test_cli_unreadable_folder_is_a_row_of_the_parquet(folder, tmp_path, monkeypatch, capsysbinary):
    locked = str(folder)
    real = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.fsdecode(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # as without read permission (root reads everything)
    image = _image(tmp_path / "one.png", 3)
    code = main(["hash", "--model", "demo", "--jsonl", "--scheduler", "local", "--workers", "1",
                 "--parquet", str(tmp_path / "pq"), locked, image])
    out, err = capsysbinary.readouterr()
    assert code == 1
    rows = [json.loads(line) for line in out.decode().splitlines()]
    assert rows[0] == {"path": locked, "error": "cannot read directory (Permission denied)"}
    assert rows[1]["path"] == image and "hash" in rows[1]
    assert f"neuralhash: {locked}: cannot read directory (Permission denied)".encode() in err
    back = pd.read_parquet(tmp_path / "pq")
    assert list(back["path"]) == [locked, image]
    assert back["error"][0] == f"{locked}: cannot read directory (Permission denied)" and _null(back["error"][1])
