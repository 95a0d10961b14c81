"""`cmp-pipelines api serve`: uvicorn on loopback, the read model refreshed first when the store is free."""

from __future__ import annotations

import gc
import logging
import os

import uvicorn

from cmp_pipelines.api.app import MaskCardNumbers, create_app, publish_if_free

PORT_ENV = "CMP_API_PORT"


def serve(host: str = "127.0.0.1", port: int = 8000, access_log: bool = True, workers: int = 1) -> None:
    """Several workers share the SQLite stores safely (each write is one IMMEDIATE transaction)."""
    logging.getLogger("uvicorn.access").addFilter(MaskCardNumbers())
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
    logging.getLogger("uvicorn.access").addFilter(MaskCardNumbers())
    app = create_app(port=int(os.environ.get(PORT_ENV, "8000")))
    gc.freeze()
    return app
