"""The HTTP service: a FastAPI application over :class:`Backend` (the database) and :class:`ImageHasher`.

Every error is one line of JSON, ``{"error": "..."}``, naming the field,
upload, list or database at fault. The service never opens a path a client
names: uploads arrive as request bodies, labels are only stored as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import ipaddress
import json
import re
import secrets
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator, Callable

from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.templating import Jinja2Templates

from .. import __version__
from ..errors import ImageError, NeuralHashError
from ..hashing import DEFAULT_MARGIN
from ..matching.index import MAX_DISTANCE as _MAX_DISTANCE
from ..lists.hashlists import FORMATS as _LIST_FORMATS
from ..files.pathnames import PathNameError, json_fields, name_from_json
from .backend import Backend, BackendError, LookupKey, check_database
from .schemas import (
    AddedHashes,
    DeletedList,
    ErrorResponse,
    HashResponse,
    Health,
    ImportResponse,
    InfoResponse,
    ListInfo,
    LookupResponse,
)
from .hasher import ImageHasher, UploadError

#: The largest distance a lookup may ask for: the one rule of the CLI and the service
#: (neuralhash.matching.index.MAX_DISTANCE, where the reason is given).
MAX_DISTANCE = _MAX_DISTANCE
#: Matches returned per query at most (the nearest), and the default.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: Default body limit for image uploads (bytes).
DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024
#: Default body limit for hash-list imports (bytes): about 7 million ``HEX  PATH`` lines of 80 bytes.
DEFAULT_MAX_IMPORT = 512 * 1024 * 1024
#: Seconds /health waits for each part of the server it checks.
HEALTH_TIMEOUT = 5.0
#: Queries (hashes or images) in one request at most.
MAX_QUERIES = 10_000
#: Matches in one answer at most (all queries together): about 10 MB of JSON. Past it the
#: remaining queries are not searched, and the answer says so.
MAX_RESULTS = 100_000
#: Seconds of searching one request may take; past it the remaining queries are not searched.
MAX_REQUEST_SECONDS = 60.0

HexHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{24}$")]
ListName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


def _reachable(name: str) -> str:
    """A new list's name must be reachable as /lists/NAME: "." and ".." are path steps that
    clients (browsers, curl, requests) resolve away before sending."""
    if name in (".", ".."):
        raise ValueError(f"{name!r} cannot be a list name (clients resolve it as a path step); choose another")
    return name
Distance = Annotated[int, Field(ge=0, le=MAX_DISTANCE, strict=True)]  # strict: true or "8" is not a distance
#: A model id or a prefix of one: printable, one line (the CLI refuses an empty one, lists print it).
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, strict=True)]


@dataclass
class ServeConfig:
    """What ``neuralhash serve`` starts the application with."""

    db: str
    model: Any = None  # a NeuralHash, or None: the service looks up hex hashes only
    host: str = "127.0.0.1"
    token: str | None = None  # required when host is not a loopback address
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_import: int = DEFAULT_MAX_IMPORT
    workers: int = 2  # image-decoding worker processes (0: decode in a thread of the server)
    batch_size: int = 8  # images through the network together at most
    # Without a token, only requests addressed to a loopback name (the Host header): a web page
    # whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is then refused. The command
    # sets it; False here so that test clients and ASGI hosts with names of their own work as before.
    loopback_hosts_only: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServiceError(NeuralHashError):
    """A configuration the service refuses to start with."""


def check_config(config: ServeConfig) -> None:
    if not is_loopback(config.host) and not config.token:
        raise ServiceError(
            f"serving on {config.host} (not a loopback address) needs a bearer token: "
            "--token-file FILE or $NEURALHASH_TOKEN")
    if config.token is not None and (len(config.token) < 16 or not config.token.isprintable()):
        raise ServiceError("the bearer token must be at least 16 printable characters")


# -- request and response bodies -------------------------------------------------------------


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hashes: list[HexHash] = Field(min_length=1, max_length=MAX_QUERIES, description="24 hex digits each")
    max_distance: Distance = Field(description=f"in bits, 0..{MAX_DISTANCE}")
    limit: Limit = Field(DEFAULT_LIMIT, description=f"matches per hash at most, the nearest (1..{MAX_LIMIT})")
    lists: list[ListName] | None = Field(None, description="search only these lists (default: all of the model)")
    model_id: ModelId | None = Field(None, description="the model whose hashes to search (a unique prefix will do); "
                                                   "default: the server's model if stored, else the only one")


#: Names an import's unnamed entries (SOURCE:LINE).
SourceName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]

#: A new list's name: also a path segment of /lists/NAME, so no "/" (a %2F arrives decoded and cannot route).
NewListName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f/]+$"),
                        AfterValidator(_reachable)]
#: A list named in the path of a request that may create it (add, import).
WritableListName = Annotated[ListName, AfterValidator(_reachable)]


class NewList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: NewListName
    model_id: ModelId | None = Field(None, description="default: the server's model")


class HashEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hash: HexHash
    path: str | None = Field(None, description="the label stored with the hash (a file name, an id)")
    path_b64: str | None = Field(None, description="the label's bytes in base64, for a label that is not UTF-8")


class AddHashes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hashes: list[HashEntry] = Field(min_length=1, max_length=MAX_QUERIES)
    model_id: ModelId | None = Field(None, description="the list's model when it is created (default: the server's)")


#: Every error answer, documented on every route.
_ERRORS: dict = {status: {"model": ErrorResponse, "description": what} for status, what in [
    (400, "a malformed request"), (401, "missing or wrong bearer token"), (403, "refused (Host or Origin)"),
    (404, "no such list, model or route"), (409, "conflicts with what is stored"), (413, "body too large"),
    (422, "a field, upload or list that cannot be used"), (500, "internal error"),
    (501, "no model: this server hashes no images"), (503, "the server cannot serve now")]}


# -- errors ----------------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    one_line = " ".join(str(message).split()) if "\n" in str(message) or "\r" in str(message) else str(message)
    return JSONResponse({"error": one_line}, status_code=status, headers=headers)


def _field_name(loc: tuple) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "form", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    name = _field_name(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    value = first.get("input")
    if kind == "string_pattern_mismatch" and "hash" in name:
        return f"{name}: not a 96-bit hash (24 hex digits): {str(value)[:40]!r}"
    if kind == "json_invalid":
        return f"body: not valid JSON ({first.get('ctx', {}).get('error', '')})"
    if kind == "missing":
        return f"{name}: required"
    more = len(exc.errors()) - 1
    return f"{name}: {first.get('msg', 'invalid')}" + (f" (and {more} more)" if more else "")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        # Connection: close: the rest of the body is never read, so the connection cannot be reused.
        super().__init__(413, f"request body larger than the limit of {limit} bytes", {"Connection": "close"})


# -- guards: token and body size, as ASGI middleware ----------------------------------------


def _cross_site(headers: dict) -> bool:
    """Whether a browser says the request comes from another site's page: ``Sec-Fetch-Site``
    cross-site, or an ``Origin`` whose host and port are not the ``Host`` asked for. Clients
    that are not browsers send neither, and are not affected."""
    if headers.get(b"sec-fetch-site", b"") == b"cross-site":
        return True
    origin = headers.get(b"origin")
    if origin is None:
        return False
    try:
        parsed = urllib.parse.urlsplit(origin.decode("latin-1"))
        if not parsed.hostname:  # "null" (a sandboxed page, a file:// page): not this server's page
            return True
        default = {"http": 80, "https": 443}.get(parsed.scheme)
        host = urllib.parse.urlsplit("//" + headers.get(b"host", b"").decode("latin-1"))
        return (parsed.hostname, parsed.port or default) != (host.hostname, host.port or default)
    except ValueError:  # a port that is not a number
        return True


def _bearer_ok(header: bytes, token: bytes) -> bool:
    """``Authorization: Bearer TOKEN``; the scheme's case does not matter (RFC 9110, 11.1)."""
    scheme, _, given = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)


class Guard:
    """Bearer token on every request (when one is set); body limits enforced while the body streams in."""

    def __init__(self, app: Any, *, token: str | None, max_upload: int, max_import: int,
                 loopback_hosts_only: bool = False, inflight: dict | None = None) -> None:
        self.app = app
        self.inflight = inflight if inflight is not None else {"requests": 0}
        self.loopback_hosts_only = loopback_hosts_only
        self.token = token.encode() if token else None
        self.max_upload = max_upload
        self.max_import = max_import

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.token is not None and not _bearer_ok(headers.get(b"authorization", b""), self.token):
            await _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                         {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        if self.loopback_hosts_only:
            host = headers.get(b"host", b"").decode("latin-1")
            try:
                name = urllib.parse.urlsplit("//" + host).hostname or ""
            except ValueError:
                name = ""
            if not is_loopback(name):
                await _error(403, f"Host {host[:100]!r}: this server answers loopback names only "
                                  "(localhost, 127.0.0.1, ::1)")(scope, receive, send)
                return
        if scope.get("method") not in ("GET", "HEAD", "OPTIONS") and _cross_site(headers):
            # A web page of another site may POST a form or a text/plain body to a loopback
            # server without any preflight: without this, any site visited could import a list.
            await _error(403, f"{scope.get('method')} {scope['path']}: refused, the request comes from "
                              "another site's web page (its Origin is not this server)")(scope, receive, send)
            return
        limit = self.max_import if scope["path"].endswith("/import") else self.max_upload
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _error(400, "Content-Length is not a number")(scope, receive, send)
                return
            if too_big:
                await _error(413, f"request body of {int(declared)} bytes is larger than the limit of "
                                  f"{limit} bytes", {"Connection": "close"})(scope, receive, send)
                return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def sending(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.inflight["requests"] += 1
        try:
            await self.app(scope, counted, sending)
        except asyncio.CancelledError:
            # Cut off by the end of the server's grace period: still one line of JSON, not the
            # HTTP server's plain-text 500. What the request was writing has been rolled back
            # (Backend: a write is interrupted, and this is raised only once it has ended).
            if started:
                raise
            await _error(503, f"{scope.get('method')} {scope['path']}: the server is shutting down and its grace "
                              "period ended before this request did; nothing it was writing was stored "
                              "(rolled back): send it again", {"Connection": "close"})(scope, receive, send)
        finally:
            self.inflight["requests"] -= 1


async def _read_body(request: Request) -> bytes:
    """The raw body (the Guard stops it at the limit)."""
    chunks = []
    async for chunk in request.stream():
        chunks.append(chunk)
    return b"".join(chunks)


async def _upload(request: Request, field_name: str) -> tuple[bytes, str]:
    """(bytes, name) of an upload: a multipart field ``field_name``, or the raw body."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        item = _one_file(await request.form(), field_name)
        return await item.read(), item.filename or field_name
    return await _read_body(request), "upload"


def _one_file(form: Any, field_name: str) -> Any:
    """The one file of a multipart form's field; 422 when it is missing or given more than once
    (the last one used to be taken silently)."""
    items = form.getlist(field_name)
    if not items or isinstance(items[0], str):
        raise HTTPException(422, f"{field_name}: required (a file field of the multipart form)")
    if len(items) > 1:
        raise HTTPException(422, f"{field_name}: one file per request, got {len(items)}"
                                 + ("; POST /match takes many images" if field_name == "image" else ""))
    return items[0]


def _form_int(form: Any, name: str, low: int, high: int, default: int | None = None) -> int:
    values = form.getlist(name)
    if not values:
        if default is None:
            raise HTTPException(422, f"{name}: required")
        return default
    if len(values) > 1 or not isinstance(values[0], str) or not re.fullmatch(r"\s*\d{1,6}\s*", values[0]):
        raise HTTPException(422, f"{name}: not a whole number: {str(values[-1])[:40]!r}")
    value = int(values[0])
    if not low <= value <= high:
        raise HTTPException(422, f"{name}: must be between {low} and {high}, got {value}")
    return value


def _form_text(form: Any, name: str) -> str | None:
    values = form.getlist(name)
    if len(values) > 1 or (values and not isinstance(values[0], str)):
        raise HTTPException(422, f"{name}: give it once, as text")
    return values[0] if values else None


def _margins(h: Any) -> dict:
    margins = h.margins
    mask = h.unstable_mask()
    return {
        "margins": [float(f"{float(m):.6g}") for m in margins],
        "unstable_bits": int(mask.sum()),
        "unstable": [int(i) for i in mask.nonzero()[0]],
        "margin_threshold": DEFAULT_MARGIN,
    }


def _found(f: Any) -> dict:
    return {**json_fields(f.path), "list": f.list, "hash": f.hex, "distance": f.distance}


def _model_info(m: Any) -> dict:
    return {"model_id": m.model_id, "description": public_description(getattr(m, "description", "")), "count": m.count}


#: A file-system path inside a model's description ("... from /home/me/nh", "ONNX model /srv/x.onnx"),
#: with the words that lead to it.
_PATH_IN_TEXT = re.compile(r"(?:\s+from|\s*,)?\s*(?:~|\.{1,2})?(?:/|[A-Za-z]:[\\/])[^;,]*")


def public_description(text: str) -> str:
    """A model's description without the server's file-system paths (the page and /info are
    seen by clients; the path of the model's files is the server's business)."""
    return _PATH_IN_TEXT.sub("", text or "").strip(" ;,")


def _list_info(s: Any) -> dict:
    return {"name": s.name, "model_id": s.model_id, "count": s.count}


_RAW_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "image": {"type": "string", "format": "binary"}}, "required": ["image"]}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_RAW_LIST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}}, "required": ["file"]}},
            "text/plain": {"schema": {"type": "string"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


_MATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["max_distance"], "properties": {
            "max_distance": {"type": "integer", "minimum": 0, "maximum": MAX_DISTANCE, "description": "in bits"},
            "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                       "description": "images to hash and match"},
            "hashes": {"type": "array", "items": {"type": "string"},
                       "description": "hex hashes (repeat the field, or separate by commas)"},
            "lists": {"type": "string", "description": "comma-separated list names (default: every list of the model)"},
            "model_id": {"type": "string", "description": "for hex-only queries: the model to search"},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT,
                      "description": "matches per query at most"},
        }}}},
    }
}

_EXPORT_FORMATS = "^(" + "|".join(re.escape(f) for f in _LIST_FORMATS) + ")$"
_MEDIA = {f: "text/csv" if f.endswith("csv") else "application/jsonl" if f == "jsonl" else "text/plain"
          for f in _LIST_FORMATS}


def create_app(config: ServeConfig, *, hasher_class: type[ImageHasher] = ImageHasher) -> FastAPI:
    """The application; the database and the decoding workers open when it starts (its lifespan)."""
    check_config(config)
    check_database(config.db)  # before the server starts: a refused file is a one-line error, not a traceback
    nh = config.model
    state: dict[str, Any] = {}
    inflight = {"requests": 0}  # requests the Guard is running now

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["backend"] = Backend(config.db, default_model=nh.model_id if nh is not None else None)
        await state["backend"].start()
        state["hasher"] = hasher_class(nh, workers=config.workers, batch_size=config.batch_size) if nh else None
        try:
            yield
        finally:
            await state["backend"].stop()
            # The requests cut off by the end of the grace period answer now (503, see Guard).
            deadline = time.monotonic() + 5.0
            while inflight["requests"] and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if state.get("hasher") is not None:
                state["hasher"].close()
            state["backend"].close()

    # FastAPIOffline: /docs and /redoc served from files inside the package, not a CDN (no network at run time).
    app = FastAPIOffline(
        title="neuralhash",
        version=__version__,
        description="NeuralHash hashing and matching against named hash lists. Errors are `{\"error\": \"...\"}`.",
        lifespan=lifespan,
        responses=_ERRORS,  # every route: the errors are {"error": "..."}
    )
    app.add_middleware(Guard, token=config.token, max_upload=config.max_upload, max_import=config.max_import,
                       loopback_hosts_only=config.loopback_hosts_only and not config.token, inflight=inflight)
    templates = Jinja2Templates(directory=str(importlib.resources.files("neuralhash.service") / "templates"))

    def backend() -> Backend:
        return state["backend"]

    def hasher() -> ImageHasher:
        if state.get("hasher") is None:
            raise HTTPException(501, "this server hashes no images: it was started without a model (--model SRC)")
        return state["hasher"]

    # -- error handlers: one line of JSON each --

    # Starlette's own class: routing (404, 405) and form parsing (a bad multipart body) raise it,
    # and a handler of FastAPI's subclass would not see them (they came back as {"detail": ...}).
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if detail in ("Not Found", "Method Not Allowed"):  # say which request
            detail = f"{request.method} {request.url.path}: {detail.lower()}"
        return _error(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, exc: BackendError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(NeuralHashError)
    async def library_error(request: Request, exc: NeuralHashError) -> JSONResponse:
        status = 422 if isinstance(exc, (UploadError, ImageError, PathNameError)) else 500
        return _error(status, str(exc))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}: {exc})")

    # -- hashing --

    async def hash_upload(data: bytes, name: str) -> Any:
        try:
            h = await hasher().hash(data, name)
        except ImageError as exc:
            raise UploadError(str(exc).replace("<bytes>", name, 1)) from None
        return h

    @app.post("/hash", openapi_extra=_RAW_IMAGE_BODY, summary="The NeuralHash of an uploaded image",
              response_model=HashResponse)
    async def hash_image(request: Request) -> dict:
        """Multipart (field `image`) or the raw image as the body. Returns the hash, the 96 margins |v|,
        how many bits are unstable (margin below 0.1) and which, and the model id."""
        hasher()  # 501 before reading the body
        data, name = await _upload(request, "image")
        h = await hash_upload(data, name)
        return {"hash": h.hex, "model_id": nh.model_id, **_margins(h)}

    # -- matching --

    def lookup_key(model_id: str | None, lists: list[str] | None, max_distance: int, limit: int) -> LookupKey:
        return LookupKey(model_id, tuple(lists) if lists is not None else None, max_distance, limit)

    async def answer(key: LookupKey, queries: list[tuple[str, bytes | None, str | None]],
                     model_check: Callable[[str], None] | None = None) -> StreamingResponse:
        """The matches of ``queries`` ((label, digest, error): an error instead of a digest for an
        image that could not be hashed), streamed as JSON a chunk of queries at a time.

        What one request may take is bounded: at most MAX_RESULTS matches in all and
        MAX_REQUEST_SECONDS of searching; past either, the remaining queries are not searched.
        Every query says whether its matches are ``complete``, and the answer says why not."""
        scope = backend().scope_of(key)  # 404 / 422 before the response starts
        if model_check is not None:
            model_check(scope.model_id)
        digests = [d for _, d, _ in queries if d is not None]
        chunks = backend().lookup_chunks(key, digests, scope)
        # The first chunk before the response starts: an error there is still an error status.
        first = await anext_or_none(chunks)

        async def body() -> AsyncIterator[bytes]:
            started = time.monotonic()
            head = {"model_id": scope.model_id, "max_distance": key.max_distance, "limit": key.limit,
                    **{k: v for k, v in scope.as_dict().items() if k != "model_id"}}
            yield json.dumps(head)[:-1].encode() + b', "results": ['
            total, note, pending = 0, None, first
            found: list = []
            more: list = []
            sep = b""
            for label, digest, error in queries:
                if error is not None:
                    item: dict = {"query": label, "error": error}
                else:
                    if not found and note is None:
                        if pending is None:
                            if time.monotonic() - started > MAX_REQUEST_SECONDS:
                                note = (f"the request's time limit ({MAX_REQUEST_SECONDS:g} s) was reached; "
                                        f"the queries from {label!r} on were not searched: send them again")
                            else:
                                pending = await anext_or_none(chunks)
                        if pending is not None:
                            found, more = list(pending[0]), list(pending[1])
                            pending = None
                    if found:
                        matches, cut = found.pop(0), more.pop(0)
                        if total + len(matches) > MAX_RESULTS:
                            matches, cut = matches[:MAX_RESULTS - total], True
                            note = (f"the answer reached its limit of {MAX_RESULTS} matches; the queries "
                                    f"after {label!r} were not searched: send them again, or lower the "
                                    f"limit or max_distance")
                            found, more = [], []
                        total += len(matches)
                        item = {"query": label, "hash": digest.hex(), "complete": not cut,
                                "matches": [_found(f) for f in matches]}
                    else:
                        item = {"query": label, "hash": digest.hex(), "complete": False, "searched": False,
                                "matches": []}
                yield sep + json.dumps(item).encode()
                sep = b", "
                await asyncio.sleep(0)  # a query's answer at a time: the other requests go in between
            tail = {"complete": note is None, "note": note}
            yield b"], " + json.dumps(tail)[1:].encode()

        return _ClosingStream(_closing(body(), chunks), media_type="application/json")

    @app.post("/lookup", summary="Stored hashes near many hex hashes",
              responses={200: {"model": LookupResponse, "description": "per hash, its matches"}})
    async def lookup(body: LookupRequest) -> StreamingResponse:
        """Per hash, the stored hashes within `max_distance` bits, nearest first. The model is
        `model_id`, else that of the `lists` named, else the server's. The answer names the lists
        searched and those left out (another model's) with the reason."""
        key = lookup_key(body.model_id, body.lists, body.max_distance, body.limit)
        return await answer(key, [(h, bytes.fromhex(h), None) for h in body.hashes])

    @app.post("/match", summary="Stored hashes near uploaded images and/or hex hashes", openapi_extra=_MATCH_BODY,
              responses={200: {"model": LookupResponse, "description": "per query, its matches"}})
    async def match(request: Request) -> StreamingResponse:
        """A multipart form. Per query (images first, then hashes, in the order given), the stored
        hashes within `max_distance` bits, nearest first. An image that cannot be hashed gets an
        `error` and the others go on; when no query can be run the answer is that error (422).
        Images are compared with the server's model's hashes only."""
        if not request.headers.get("content-type", "").startswith(("multipart/form-data",
                                                                    "application/x-www-form-urlencoded")):
            raise HTTPException(422, "body: a multipart form (fields max_distance, images, hashes, lists, ...)")
        async with request.form(max_files=MAX_QUERIES, max_fields=MAX_QUERIES + 16) as form:
            return await match_form(form)

    async def match_form(form: Any) -> StreamingResponse:
        max_distance = _form_int(form, "max_distance", 0, MAX_DISTANCE)
        limit = _form_int(form, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
        lists = _form_text(form, "lists")
        model_id = _form_text(form, "model_id")
        if model_id is not None and not re.fullmatch(r"[^\x00-\x1f\x7f]{1,200}", model_id):
            raise HTTPException(422, "model_id: 1-200 printable characters")
        images = form.getlist("images")
        if any(isinstance(item, str) for item in images):
            raise HTTPException(422, "images: files of the multipart form, not text")
        hashes = form.getlist("hashes")
        if any(not isinstance(item, str) for item in hashes):
            raise HTTPException(422, "hashes: text fields, not files")
        hex_texts = [h.strip() for text in hashes for h in text.split(",") if h.strip()]
        for i, text in enumerate(hex_texts):
            if not re.fullmatch(r"[0-9a-fA-F]{24}", text):
                raise HTTPException(422, f"hashes[{i}]: not a 96-bit hash (24 hex digits): {text[:40]!r}")
        if not images and not hex_texts:
            raise HTTPException(422, "images or hashes: give at least one query")
        if len(images) + len(hex_texts) > MAX_QUERIES:
            raise HTTPException(422, f"images and hashes: at most {MAX_QUERIES} queries per request")
        names = [n.strip() for n in lists.split(",")] if lists else None
        if names is not None and not all(names):
            raise HTTPException(422, "lists: an empty list name")
        labels: list[str] = []
        digests: list[bytes] = []
        errors: dict[int, str] = {}
        if images:
            hasher()  # 501 without a model

            async def one(k: int, upload: UploadFile) -> Any:
                return await hash_upload(await upload.read(), upload.filename or f"images[{k}]")

            # All at once: the decoding workers take them in parallel, the network in batches.
            hashed = await asyncio.gather(*(one(k, u) for k, u in enumerate(images)), return_exceptions=True)
            for k, (upload, h) in enumerate(zip(images, hashed)):
                if isinstance(h, NeuralHashError):
                    errors[k] = str(h)
                    digests.append(b"")
                elif isinstance(h, BaseException):
                    raise h
                else:
                    digests.append(h.bytes)
                labels.append(upload.filename or f"images[{k}]")
        labels += hex_texts
        digests += [bytes.fromhex(h) for h in hex_texts]
        if not any(digests):
            raise UploadError(next(iter(errors.values())))
        if model_id is None and images and names is None:
            model_id = nh.model_id

        def same_model(searched: str) -> None:
            if images and nh is not None and searched != nh.model_id:
                raise HTTPException(422, f"lists: the images are hashed with model {nh.model_id[:12]}; the "
                                         f"hashes of {searched[:12]} do not compare with them")

        queries = [(label, d or None, errors.get(i)) for i, (label, d) in enumerate(zip(labels, digests))]
        return await answer(lookup_key(model_id, names, max_distance, limit), queries, same_model)

    # -- lists --

    async def model_for_new_list(model_id: str | None) -> str:
        if model_id is None:
            if nh is None:
                raise HTTPException(422, "model_id: required (this server has no model of its own)")
            return nh.model_id
        try:  # a unique prefix of a stored model's id names that model
            return (await backend().resolve_model(model_id)).model_id
        except BackendError:
            return model_id  # a model not stored yet: its id as given

    @app.get("/lists", summary="Every list: name, model, count", response_model=list[ListInfo])
    async def get_lists() -> list[dict]:
        return [_list_info(s) for s in await backend().lists()]

    @app.post("/lists", status_code=201, summary="Create an empty list", response_model=ListInfo,
              responses={200: {"model": ListInfo, "description": "the list existed already, of this model"}})
    async def create_list(body: NewList, response: Response) -> dict:
        """201 when created; 200 when a list of that name and model exists already (nothing changes);
        409 when the name holds another model's hashes."""
        model = await model_for_new_list(body.model_id)
        existing = await backend().list_model(body.name)
        if existing is not None and existing != model:
            raise HTTPException(409, f"list {body.name!r} holds hashes of model {existing[:12]}, not {model[:12]}; "
                                     "hashes of different models do not mix (choose another list)")
        created = await backend().create_list(body.name, model)
        if existing is not None:
            response.status_code = 200
        return _list_info(created)

    @app.get("/lists/{name}", summary="One list: name, model, count", response_model=ListInfo)
    async def get_list(name: str) -> dict:
        return _list_info(await backend().get_list(name))

    @app.delete("/lists/{name}", summary="Delete a list and its hashes", response_model=DeletedList)
    async def delete_list(name: str) -> dict:
        return {"name": name, "deleted": await backend().delete_list(name)}

    async def list_model(name: str, model_id: str | None) -> str:
        existing = await backend().list_model(name)
        if existing is None:
            return await model_for_new_list(model_id)
        if model_id is not None and not existing.startswith(model_id):
            raise HTTPException(409, f"list {name!r} holds hashes of model {existing[:12]}, not {model_id[:12]}")
        return existing

    @app.post("/lists/{name}/hashes", summary="Add hashes to a list (created if absent)", response_model=AddedHashes)
    async def add_hashes(name: WritableListName, body: AddHashes) -> dict:
        """Committed before the answer: the next lookup finds them."""
        entries = []
        for i, e in enumerate(body.hashes):
            try:
                label = name_from_json(e.model_dump(exclude_none=True))
            except PathNameError as exc:
                raise HTTPException(422, f"hashes[{i}]: {exc}") from None
            entries.append((label if label else e.hash.lower(), bytes.fromhex(e.hash)))
        added = await backend().add_hashes(name, entries, await list_model(name, body.model_id))
        return {"name": name, "added": added}

    @app.post("/lists/{name}/import", openapi_extra=_RAW_LIST_BODY, summary="Import a hash list file into a list",
              response_model=ImportResponse)
    async def import_list(request: Request, name: WritableListName,
                          model_id: Annotated[ModelId | None, Query(description="the list's model if it is new")] = None,
                          source: Annotated[SourceName | None, Query(
                              description="names the entries the file leaves unnamed (SOURCE:LINE); default: "
                                          "the uploaded file's name, else a name unique to this import")] = None,
                          ) -> dict:
        """The body (or multipart field `file`) in any format `neuralhash index import` reads: `HEX  PATH`
        lines, CSV or JSONL. The well-formed entries go in one transaction; malformed lines are skipped
        and reported by number.
        An entry replaces the list's entry of the same name; entries the file leaves unnamed (bare
        hashes, threatexchange lines) are named `SOURCE:LINE`, so two imports never replace each
        other's unnamed entries unless the client gives both the same `source`."""
        model = await list_model(name, model_id)
        # On disk, named: a large list is imported by a child process, which opens it by name.
        with tempfile.NamedTemporaryFile(prefix="neuralhash-import-") as spool:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                item = _one_file(await request.form(), "file")
                source = source or _basename(item.filename)
                while chunk := await item.read(1 << 20):
                    spool.write(chunk)
            else:
                async for chunk in request.stream():
                    spool.write(chunk)
            spool.flush()
            spool.seek(0)
            source = source or _unique_source()
            report = await backend().import_file(spool, name, model, source)
        return {"name": name, "source": source, "imported": report.imported,
                "replaced": getattr(report, "replaced", 0),
                "skipped": [{"line": n, "reason": r} for n, r in report.skipped]}

    @app.get("/lists/{name}/export",
             summary="A list's hashes in any format `index export` writes (extra fields kept by csv and jsonl)",
             response_class=StreamingResponse,
             responses={200: {"description": "the list, streamed", "content": {
                 "text/plain": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}},
                 "application/jsonl": {"schema": {"type": "string"}},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def export_list(name: str, format: Annotated[str, Query(pattern=_EXPORT_FORMATS)] = "text",
                          raw: Annotated[bool, Query(description=(
                              "the stored values as they are: labels' bytes unchanged (not always UTF-8, "
                              "sent as application/octet-stream) and CSV cells not neutralised"))] = False,
                          ) -> StreamingResponse:
        """For people by default: valid UTF-8 (a label's undecodable bytes become U+FFFD; `jsonl`
        keeps them losslessly in `path_b64`), and in CSV a cell a spreadsheet would run as a formula
        (`=`, `+`, `-`, `@`, tab, CR first) starts with an apostrophe. `raw=true` sends the values as
        stored, for tools (`neuralhash index import` reads either back)."""
        from ..lists.hashlists import ListWriter

        columns = await backend().extra_fields(name) if "csv" in format else []
        spreadsheet = "csv" in format and not raw
        cell = _spreadsheet_cell if spreadsheet else (lambda v: v)
        text = (lambda v: v) if raw or format == "jsonl" else _valid_utf8
        writer = ListWriter(format, [cell(c) for c in columns])

        def render(r: Any) -> str:
            extra = None if r.extra is None else {cell(k): cell(v) if isinstance(v, str) else v
                                                  for k, v in r.extra.items()}
            return writer.row(text(cell(r.path)), r.hex, r.model_id, cell(name), extra)

        stream = backend().export(name, render, writer.header())
        first = await anext_or_none(stream)  # a missing list is a 404, not an empty 200
        media = "application/octet-stream" if raw else _MEDIA[format] + "; charset=utf-8"
        return _ClosingStream(_prepend(first, stream), media_type=media)

    # -- status --

    @app.head("/health", include_in_schema=False)
    @app.get("/health", summary="Whether the server can serve (503 if not)", response_model=Health)
    async def health() -> dict:
        """200 when a lookup, the database and the threads requests need answer within
        HEALTH_TIMEOUT seconds; else 503 naming what does not."""
        await backend().health(HEALTH_TIMEOUT)
        return {"status": "ok"}

    @app.get("/info", summary="Version, the server's model, stored models and lists with counts, the limits",
             response_model=InfoResponse)
    async def info() -> dict:
        return {
            "version": __version__,
            "model": None if nh is None else {"model_id": nh.model_id, "description": public_description(nh.description),
                                              "synthetic": bool(getattr(nh, "is_synthetic", False))},
            "models": [_model_info(m) for m in await backend().models()],
            "lists": [_list_info(s) for s in await backend().lists()],
            "max_upload": config.max_upload,
            "max_distance": MAX_DISTANCE,
            "max_limit": MAX_LIMIT,
            "max_queries": MAX_QUERIES,
            "max_results": MAX_RESULTS,
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        model = None if nh is None else {"model_id": nh.model_id, "description": public_description(nh.description),
                                         "synthetic": bool(getattr(nh, "is_synthetic", False))}
        return templates.TemplateResponse(request, "index.html", {
            "version": __version__, "model": model, "max_upload": config.max_upload,
            "max_distance": MAX_DISTANCE, "max_limit": MAX_LIMIT, "default_limit": DEFAULT_LIMIT,
        })

    return app


def _basename(filename: str | None) -> str | None:
    """The last part of an uploaded file's name (a client's path means nothing here)."""
    base = re.split(r"[/\\]", filename or "")[-1].strip()
    return base if base and base.isprintable() and len(base) <= 200 else None


def _unique_source() -> str:
    """A name no other import has: ``upload-20260101T120000Z-1a2b3c``."""
    return f"upload-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _spreadsheet_cell(value: str) -> str:
    """A CSV cell a spreadsheet would run as a formula, as text: an apostrophe first (OWASP's
    advice for CSV injection). Plain numbers such as -5 are left as they are."""
    if value and value[0] in "=+-@\t\r" and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def _valid_utf8(value: str) -> str:
    """A label's undecodable bytes (kept as surrogate escapes) as U+FFFD."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


async def anext_or_none(stream: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


async def _prepend(first: bytes | None, rest: Any) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield first
            async for chunk in rest:
                yield chunk
    finally:
        await rest.aclose()


async def _closing(body: AsyncIterator[bytes], *held: Any) -> AsyncIterator[bytes]:
    """``body``, closing ``held`` (iterators it reads) however it ends."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        for it in held:
            await it.aclose()


class _ClosingStream(StreamingResponse):
    """A streaming response that closes its iterator however the response ends (a client that hangs
    up mid-way included): what the iterator holds is released now, not when it is garbage."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
