"""Running the application under uvicorn until SIGTERM or Ctrl-C.

uvicorn handles both signals: it stops accepting connections, lets the
requests in flight finish (then closes idle keep-alive connections), and runs
the application's shutdown, which stops the decoding workers and closes the
database. Everything committed is in the database; a restart serves it.
"""

from __future__ import annotations

import logging
import signal
import socket
from typing import Callable

from .app import ServeConfig, ServiceError, create_app


def serve(config: ServeConfig, *, port: int = 8000, on_ready: Callable[[str], None] | None = None,
          graceful_timeout: float | None = 30.0, log_level: str = "warning") -> int | None:
    """Serve until a signal stops the server; returns that signal's number (None if none did).

    ``on_ready(url)`` is called once the socket listens. Requests still running
    ``graceful_timeout`` seconds after the signal are cut off.
    """
    import uvicorn

    app = create_app(config)
    sock = _listen(config.host, port)  # bound here: a refused address is our one-line error
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=port, log_level=log_level, access_log=False,
        timeout_graceful_shutdown=graceful_timeout, lifespan="on", server_header=False,
    ))
    logging.getLogger("uvicorn.error").addFilter(_one_line)  # after uvicorn.Config has set up its logging
    if on_ready is not None:
        started = server.startup

        async def startup(sockets=None) -> None:
            await started(sockets=sockets)
            if server.started:
                host = f"[{config.host}]" if ":" in config.host else config.host
                bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
                on_ready(f"http://{host}:{bound}")

        server.startup = startup  # type: ignore[method-assign]
    received: list[int] = []
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; by then
    # the work is done, so the re-raised signal is only noted (the command exits 0).
    previous = {sig: signal.signal(sig, lambda s, f: received.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's way of saying start-up failed (it has logged why)
        raise ServiceError(f"cannot serve on {config.host}:{port}: the server did not start") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if not server.started:
        raise ServiceError(f"cannot serve on {config.host}:{port}: the server did not start")
    return received[0] if received else None


def _one_line(record: logging.LogRecord) -> bool:
    """uvicorn logs what escapes the application with its traceback: a request cut off by the end of
    the grace period (CancelledError) printed one per request. Errors are one line: the message and
    the exception's type and text."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        record.msg = f"{record.getMessage().strip()}: {type(exc).__name__}: {exc}".replace("\n", " ")
        record.args = None
        record.exc_info = record.exc_text = None
    return True


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServiceError(f"cannot serve on {host}:{port}: not an address ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return sock
