"""The partner cipher resource: Fernet keys per partner from `$CMP_KEYS_DIR`."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.settings import paths


class PartnerCipher(dg.ConfigurableResource):
    keys_dir: str | None = None

    def keyring(self) -> PartnerKeyring:
        return PartnerKeyring(Path(self.keys_dir) if self.keys_dir else paths().keys_dir)
