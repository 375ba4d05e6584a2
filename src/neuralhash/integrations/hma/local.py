"""Run Hasher-Matcher-Actioner on this machine as it is deployed: HMA's Flask app under
gunicorn, on PostgreSQL, configured by :data:`~neuralhash.integrations.hma.OMM_CONFIG`.

For the tests, ``benchmarks/bench_hma.py`` and trying HMA out. Standard library only:
HMA and its dependencies live in their own virtual environment (``.venv-hma``, made by
``scripts/hma-venv.sh``), driven here through subprocesses and HTTP::

    venv = find_venv(root)                         # HMAUnavailable says how to make one
    with Database.create(ADMIN_URI) as db, LocalHMA(venv, db.uri, env={...}) as hma:
        hma.request("POST", "/c/banks", json={"name": "KNOWN"})
        hma.flask("build_indices")                  # HMA's own CLI: its index build task

A missing environment or an unreachable PostgreSQL is :class:`HMAUnavailable`, whose
message names what is missing and the command that provides it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from ...errors import NeuralHashError
from . import OMM_CONFIG

#: Environment variable: HMA's virtual environment (default ``.venv-hma`` in the checkout).
VENV_ENV = "NEURALHASH_HMA_VENV"
#: Environment variable: a PostgreSQL URI whose role may create databases.
ADMIN_URI_ENV = "NEURALHASH_HMA_DATABASE_URI"
#: What ``scripts/hma-postgres.sh`` creates (and ``omm_config.py`` uses).
DEFAULT_ADMIN_URI = "postgresql+psycopg2://hma:hma@127.0.0.1:5432/hma"


class HMAUnavailable(NeuralHashError):
    """HMA's environment or PostgreSQL is not there; the message says how to provide it."""


class HMAError(NeuralHashError):
    """HMA failed: a command exited non-zero or the server stopped (the message holds its log's end)."""


def find_venv(root: Path) -> Path:
    """HMA's virtual environment: ``$NEURALHASH_HMA_VENV``, else ``ROOT/.venv-hma``; checked."""
    venv = Path(os.environ.get(VENV_ENV) or Path(root) / ".venv-hma")
    fix = f"make it with scripts/hma-venv.sh HMA_SOURCE {venv} (.ci/run does)"
    if not (venv / "bin" / "gunicorn").is_file():
        raise HMAUnavailable(f"no HMA environment at {venv} (no bin/gunicorn): {fix}")
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import OpenMediaMatch.app"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode:
        raise HMAUnavailable(f"{venv} cannot import HMA ({_last_line(probe.stderr)}): {fix}")
    return venv


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def libpq_uri(uri: str) -> str:
    """A SQLAlchemy URI (``postgresql+psycopg2://...``) as libpq (psql) spells it."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def _with_database(uri: str, name: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


class Database:
    """A throwaway database on the PostgreSQL server of ``admin_uri`` (created by
    :meth:`create`, dropped on exit), so that runs never see each other's banks."""

    def __init__(self, admin_uri: str, name: str) -> None:
        self.admin_uri = admin_uri
        self.name = name
        self.uri = _with_database(admin_uri, name)

    @classmethod
    def create(cls, admin_uri: str | None = None, prefix: str = "neuralhash_hma") -> "Database":
        admin_uri = admin_uri or os.environ.get(ADMIN_URI_ENV) or DEFAULT_ADMIN_URI
        self = cls(admin_uri, f"{prefix}_{uuid.uuid4().hex[:12]}")
        self._create()
        return self

    def _psql(self, sql: str) -> str | None:
        """None when ``sql`` ran, else psql's error."""
        psql = shutil.which("psql")
        if psql is None:
            raise HMAUnavailable("no psql command: install PostgreSQL with scripts/hma-postgres.sh (as root)")
        done = subprocess.run([psql, libpq_uri(self.admin_uri), "-v", "ON_ERROR_STOP=1", "-qc", sql],
                              capture_output=True, text=True, timeout=120)
        return _last_line(done.stderr) if done.returncode else None

    def _create(self) -> None:
        error = self._psql(f"CREATE DATABASE {self.name}")
        if error:
            host = urllib.parse.urlsplit(self.admin_uri).netloc.rpartition("@")[2]
            raise HMAUnavailable(f"PostgreSQL at {host} could not create a database ({error}); "
                                 "start it with scripts/hma-postgres.sh (as root)")

    def drop(self, attempts: int = 10) -> None:
        """Drop it. A plain DROP first: PostgreSQL itself stops an autovacuum worker busy there
        (after a big index upload), which WITH (FORCE) may not (it is not this role's process)."""
        error = None
        for k in range(attempts):
            error = self._psql(f"DROP DATABASE IF EXISTS {self.name}")
            if error is None or self._psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)") is None:
                return
            time.sleep(1 + k)
        raise HMAError(f"could not drop the database {self.name}: {error}")

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc) -> None:
        self.drop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for field, (filename, data) in files.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class LocalHMA:
    """HMA under gunicorn on 127.0.0.1 (a free port unless given), migrated on start.

    ``env`` adds to this process's environment (``NEURALHASH_MODEL``, ``OMM_ROLE_*``,
    ``PYTHONPATH``...); ``log`` is the file gunicorn and HMA write to (default: a file in
    /tmp named after the port). ``workers`` x ``threads`` is gunicorn's concurrency (with
    more than one thread, its gthread worker, which keeps connections alive).
    """

    def __init__(self, venv: Path, database_uri: str, *, env: dict | None = None, port: int | None = None,
                 workers: int = 1, threads: int = 1, log: Path | None = None,
                 config: Path = OMM_CONFIG) -> None:
        self.venv = Path(venv)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers, self.threads = workers, threads
        self.env = {**os.environ, **(env or {}), "OMM_CONFIG": str(config), "OMM_DATABASE_URI": database_uri}
        self.log = Path(log) if log else Path(f"/tmp/neuralhash-hma-{self.port}-{os.getpid()}.log")
        self._proc: subprocess.Popen | None = None

    # -- HMA's own commands

    def flask(self, *args: str, timeout: float = 600, **extra_env: str) -> subprocess.CompletedProcess:
        """``flask --app OpenMediaMatch.app ARGS`` (HMA's CLI: ``build_indices``, ``fetch``, ``db upgrade``)."""
        done = subprocess.run([str(self.venv / "bin" / "flask"), "--app", "OpenMediaMatch.app", *args],
                              capture_output=True, text=True, timeout=timeout, env={**self.env, **extra_env})
        if done.returncode:
            raise HMAError(f"flask {' '.join(args)} exited {done.returncode}: {done.stderr[-3000:]}")
        return done

    def migrate(self) -> None:
        """HMA's scripts/db-migrate.sh: create or upgrade the tables."""
        where = subprocess.run([str(self.venv / "bin" / "python"), "-c",
                                "import OpenMediaMatch, os; print(os.path.dirname(OpenMediaMatch.__file__))"],
                               capture_output=True, text=True, check=True, env=self.env).stdout.strip()
        self.flask("db", "upgrade", "--directory", str(Path(where) / "migrations"), MIGRATION_COMMAND="1")

    # -- the server

    def start(self, timeout: float = 120) -> "LocalHMA":
        self.migrate()
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.venv / "bin" / "gunicorn"), "--bind", f"127.0.0.1:{self.port}",
                 "--workers", str(self.workers), "--threads", str(self.threads), "--timeout", "120",
                 "--no-control-socket", "OpenMediaMatch.app:create_app()"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise HMAError(f"gunicorn exited {self._proc.returncode}: {self.log_tail()}")
            try:
                if self.request("GET", "/status/live", timeout=5)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise HMAError(f"HMA did not answer on {self.base} within {timeout:.0f} s: {self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "LocalHMA":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP

    def request(self, method: str, path: str, *, params: dict | None = None, json_body=None,
                files: dict | None = None, timeout: float = 120) -> tuple[int, object]:
        """One request; returns (status, body as JSON when it is JSON, else text).
        ``files`` maps a form field (HMA wants the content type: ``photo``) to (filename, bytes)."""
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data, headers = None, {}
        if json_body is not None:
            data, headers = json.dumps(json_body).encode(), {"Content-Type": "application/json"}
        elif files:
            data, ctype = _multipart(files)
            headers = {"Content-Type": ctype}
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            status, raw, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
        text = raw.decode("utf-8", errors="replace")
        return status, (json.loads(text) if "json" in ctype and text else text)
