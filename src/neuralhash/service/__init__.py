"""``neuralhash serve``: hashing and matching over HTTP (FastAPI on uvicorn).

    from neuralhash.service import ServeConfig, create_app, serve
    app = create_app(ServeConfig(db="hashes.db", model=NeuralHash.demo()))   # an ASGI application
    serve(ServeConfig(...), port=8000)                                       # run it until SIGTERM / Ctrl-C

Modules: ``app`` (routes, token and body-size guard, errors), ``backend`` (every
database call, in threads that own their connections), ``hasher`` (decoding in
worker processes, the network in batches). Needs the ``serve`` extra:
``pip install '.[serve]'``.
"""

from __future__ import annotations

from .app import DEFAULT_MAX_IMPORT, DEFAULT_MAX_UPLOAD, ServeConfig, ServiceError, create_app, is_loopback
from .server import serve

__all__ = ["DEFAULT_MAX_IMPORT", "DEFAULT_MAX_UPLOAD", "ServeConfig", "ServiceError", "create_app", "is_loopback",
           "serve"]
