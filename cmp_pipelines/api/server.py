"""`cmp-pipelines api serve`: uvicorn on loopback, the read model refreshed first when the store is free."""

from __future__ import annotations

import logging

import uvicorn

from cmp_pipelines.api.app import MaskCardNumbers, create_app, publish_if_free


def serve(host: str = "127.0.0.1", port: int = 8000, access_log: bool = True) -> None:
    logging.getLogger("uvicorn.access").addFilter(MaskCardNumbers())
    publish_if_free()
    uvicorn.run(create_app(), host=host, port=port, access_log=access_log, log_level="info")
