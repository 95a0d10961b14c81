"""`cmp-pipelines api serve`: uvicorn on loopback, the read model refreshed first when the store is free."""

from __future__ import annotations

import gc
import logging
import os

import uvicorn

from cmp_pipelines.api.app import create_app, publish_if_free
from cmp_pipelines.api.redact import MaskSecrets

PORT_ENV = "CMP_API_PORT"
_MASKED_LOGGERS = ("uvicorn.access", "uvicorn.error", "cmp_pipelines.api")


def mask_logs() -> None:
    """Keys and card numbers never reach the API's logs (see api/redact.py); once per logger."""
    for name in _MASKED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskSecrets) for f in logger.filters):
            logger.addFilter(MaskSecrets())


def serve(host: str = "127.0.0.1", port: int = 8000, access_log: bool = True, workers: int = 1) -> None:
    """Several workers share the SQLite stores safely (each write is one IMMEDIATE transaction)."""
    mask_logs()
    publish_if_free()
    if workers > 1:
        os.environ[PORT_ENV] = str(port)  # each worker builds its app in a new process: the public URL's port
        uvicorn.run("cmp_pipelines.api.server:app_factory", factory=True, workers=workers, host=host, port=port,
                    access_log=access_log, log_level="info")
    else:
        app = create_app(port=port)
        gc.freeze()  # the start-up heap never becomes garbage: keep it out of every later collection
        uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")


def app_factory():
    """What each worker process builds (its own connections; the access-log filter applies in each)."""
    mask_logs()
    app = create_app(port=int(os.environ.get(PORT_ENV, "8000")))
    gc.freeze()
    return app
