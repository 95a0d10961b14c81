"""The device manufacturer resource: how an enrolment batch reaches a manufacturer.

`DeviceManufacturer` is the interface; the default drops the batch, encrypted for the manufacturer, into
`outbound/device_enrolment/<MANUFACTURER>/` for the file exchange, and the manufacturer's answers come
back as files in `inbound/device_enrolment/<MANUFACTURER>/` (the device enrolment response sensor).
A manufacturer with an enrolment API implements `send_batch` to post the same document there.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.files.store import FileStoreLike


class ManufacturerUnavailable(RuntimeError):
    """The batch could not be delivered: the run fails and a re-run sends the same batch again."""


class DeviceManufacturer(dg.ConfigurableResource):
    def send_batch(self, files: FileStoreLike, keyring: PartnerKeyring, manufacturer: str, file_id: str,
                   parts: Iterable[bytes | Path]) -> str:
        """Deliver the JSON document made of `parts`; returns where it went."""
        raise NotImplementedError


class FileDropManufacturer(DeviceManufacturer):
    def send_batch(self, files: FileStoreLike, keyring: PartnerKeyring, manufacturer: str, file_id: str,
                   parts: Iterable[bytes | Path]) -> str:
        token = keyring.encrypt_parts(manufacturer, list(parts))
        return files.write_parts(f"outbound/device_enrolment/{manufacturer}/{file_id}.json.enc", token)


class HttpManufacturer(DeviceManufacturer):
    """A manufacturer with an enrolment API: POST <url> with the JSON batch (header `Idempotency-Key: <file id>`,
    so a repeat after a lost answer is dropped there); its results still come back as response files."""

    url: str
    timeout_seconds: float = 10.0

    def send_batch(self, files: FileStoreLike, keyring: PartnerKeyring, manufacturer: str, file_id: str,
                   parts: Iterable[bytes | Path]) -> str:
        body = b"".join(part.read_bytes() if isinstance(part, Path) else part for part in parts)
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Idempotency-Key": file_id})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                status = response.status
        except (OSError, ValueError) as exc:
            raise ManufacturerUnavailable(f"enrolment API of {manufacturer} ({self.url}) failed for {file_id}: "
                                          f"{exc}") from exc
        return f"{self.url} (HTTP {status})"
