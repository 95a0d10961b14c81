"""A file-level problem: the whole file is quarantined with this code and message."""

from __future__ import annotations

from cmp_pipelines.core.cards import mask_pans_in


class FileRejected(Exception):
    def __init__(self, code: str, message: str, *, configuration: bool = False):
        message = mask_pans_in(message) or message  # a schema message may quote a header value
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.configuration = configuration  # a CMP configuration error: counts toward the SLA probe
