"""``neuralhash serve``: the HTTP service over a hash database (see neuralhash.service)."""

from __future__ import annotations

import argparse
import os
import re
import sys

from ..errors import ModelNotFoundError, NeuralHashError, install_hint
from .common import add_model, int_at_least, int_between

TOKEN_ENV = "NEURALHASH_TOKEN"
SERVE_EXTRA = f"`neuralhash serve` needs the optional extra: {install_hint('serve')}"


def byte_size(text: str) -> int:
    """``52428800``, ``50M``, ``50MiB``, ``1G``: binary multiples."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size in bytes (e.g. 52428800, 50M, 1G): {text!r}")
    value = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 byte")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, 0..3600."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 3600:  # NaN fails too
        raise argparse.ArgumentTypeError(f"not a number of seconds between 0 and 3600: {text!r}")
    return value


def add_serve_command(add) -> None:
    p = add("serve", cmd_serve, "serve hashing and matching over HTTP (OpenAPI docs at /docs)")
    p.add_argument("db", metavar="DB", help="the SQLite hash database (created when absent)")
    add_model(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int_between(0, 65535), default=8000, help="TCP port (default 8000; 0: any free one)")
    p.add_argument("--token-file", metavar="FILE",
                   help=f"a file holding the bearer token every request must carry (or ${TOKEN_ENV})")
    p.add_argument("--max-upload", type=byte_size, default=None, metavar="BYTES",
                   help="largest request body for images and hashes (default 50M)")
    p.add_argument("--max-import", type=byte_size, default=None, metavar="BYTES",
                   help="largest hash-list file for POST /lists/NAME/import (default 512M)")
    p.add_argument("--workers", type=int_at_least(0), default=None, metavar="N",
                   help="image-decoding worker processes (default: one per CPU; 0: in the server process)")
    p.add_argument("--grace-period", type=seconds, default=30.0, metavar="SECONDS",
                   help="on SIGTERM or Ctrl-C, how long requests in flight may still run (default 30); "
                        "those cut off answer 503 and what they were writing is rolled back")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default warning; info logs every start and stop)")


def _token(args) -> str | None:
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as fh:
                token = fh.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise NeuralHashError(f"{args.token_file}: cannot read the token file "
                                  f"({getattr(exc, 'strerror', None) or exc})") from None
        if not token:
            raise NeuralHashError(f"{args.token_file}: the token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def cmd_serve(args) -> int:
    try:
        from ..service import DEFAULT_MAX_IMPORT, DEFAULT_MAX_UPLOAD, ServeConfig, serve
    except ImportError as exc:
        if exc.name in ("fastapi", "uvicorn", "starlette", "multipart", "python_multipart", "jinja2", "pydantic"):
            raise NeuralHashError(SERVE_EXTRA) from None
        raise
    from .common import load_hasher

    token = _token(args)
    try:
        nh = load_hasher(args)
    except ModelNotFoundError:
        if args.model is not None:
            raise
        nh = None
        print("neuralhash: no model (--model SRC): serving hash lookups only; POST /hash answers 501",
              file=sys.stderr, flush=True)
    config = ServeConfig(
        db=args.db, model=nh, host=args.host, token=token,
        max_upload=args.max_upload or DEFAULT_MAX_UPLOAD, max_import=args.max_import or DEFAULT_MAX_IMPORT,
        workers=args.workers if args.workers is not None else (os.cpu_count() or 1),
        loopback_hosts_only=True,
    )

    def ready(url: str) -> None:
        model = f"model {nh.model_id[:12]} ({nh.description})" if nh is not None else "no model"
        print(f"neuralhash: serving {args.db} on {url} ({model}; API docs at {url}/docs)", file=sys.stderr,
              flush=True)

    stopped_by = serve(config, port=args.port, on_ready=ready, log_level=args.log_level,
                       graceful_timeout=args.grace_period)
    print("neuralhash: stopped" + (" (signal %d)" % stopped_by if stopped_by else ""), file=sys.stderr, flush=True)
    return 0
