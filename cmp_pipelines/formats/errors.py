"""A file-level problem: the whole file is quarantined with this code and message."""

from __future__ import annotations


class FileRejected(Exception):
    def __init__(self, code: str, message: str, *, configuration: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.configuration = configuration  # a CMP configuration error: counts toward the SLA probe
