"""The device manufacturer resource: how an enrolment batch reaches a manufacturer.

`DeviceManufacturer` is the interface; the default drops the batch, encrypted for the manufacturer, into
`outbound/device_enrolment/<MANUFACTURER>/` for the file exchange, and the manufacturer's answers come
back as files in `inbound/device_enrolment/<MANUFACTURER>/` (the device enrolment response sensor).
A manufacturer with an enrolment API implements `send_batch` to post the same document there.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import dagster as dg

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.files.store import FileStoreLike


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
