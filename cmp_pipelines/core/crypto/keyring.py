"""Partner encryption: Fernet tokens, one key set per partner, MultiFernet for rotation.

Key files hold one key a line, newest first: the newest encrypts, any listed key decrypts.
Keys never leave this module in a message.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Iterator
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cmp_pipelines.core.crypto.fernet_stream import decrypt_token, encrypt_chunks, file_chunks
from cmp_pipelines.core.files.errors import FileRejected


class PartnerKeyring:
    def __init__(self, keys_dir: Path):
        self.keys_dir = Path(keys_dir)
        self._cache: dict[str, MultiFernet] = {}
        self._newest: dict[str, bytes] = {}
        self._keys: dict[str, list[bytes]] = {}

    def key_file(self, partner: str) -> Path:
        return self.keys_dir / f"{partner}.keys"

    def has_keys(self, partner: str) -> bool:
        return self.key_file(partner).exists()

    def _fernet(self, partner: str) -> MultiFernet:
        if partner not in self._cache:
            path = self.key_file(partner)
            if not path.exists():
                raise FileRejected(
                    "MISSING_KEYS", f"no key file for partner {partner} (expected {path})", configuration=True
                )
            lines = [
                line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
            ]
            try:
                keys = [Fernet(line) for line in lines]
            except (ValueError, binascii.Error) as exc:
                raise FileRejected(
                    "BAD_KEYS", f"the key file for partner {partner} holds a malformed key", configuration=True
                ) from exc
            if not keys:
                raise FileRejected("MISSING_KEYS", f"the key file for partner {partner} is empty", configuration=True)
            self._cache[partner] = MultiFernet(keys)
            self._newest[partner] = lines[0].encode()
            self._keys[partner] = [line.encode() for line in lines]
        return self._cache[partner]

    def encrypt(self, partner: str, plaintext: bytes) -> bytes:
        return b"".join(self.encrypt_parts(partner, [plaintext]))

    def encrypt_parts(self, partner: str, parts: list[bytes | Path]) -> Iterator[bytes]:
        """The token of the concatenated parts (bytes, local files), streamed: what `encrypt` gives, without
        holding a large output in memory several times over."""
        self._fernet(partner)
        return encrypt_chunks(self._newest[partner], file_chunks(parts))

    def decrypt(self, partner: str, token: bytes) -> bytes:
        fernet = self._fernet(partner)
        stripped = token.strip()  # the same object when there is nothing to strip: no copy of a big token
        if not stripped:
            raise FileRejected("EMPTY_FILE", "the file is empty (0 bytes of ciphertext)")
        if not stripped.startswith(b"gAAAAA"):  # every Fernet token: version byte 0x80, base64url
            raise FileRejected(
                "NOT_ENCRYPTED", f"the file is not a Fernet token for partner {partner} (was it encrypted?)"
            )
        plaintext = decrypt_token(self._keys[partner], stripped)
        if plaintext is not None:
            return plaintext
        try:
            return fernet.decrypt(token)
        except InvalidToken as exc:
            raise FileRejected(
                "DECRYPT_FAILED",
                f"the file cannot be decrypted with partner {partner}'s keys: wrong key, or the ciphertext "
                "was truncated or tampered with",
            ) from exc

    def init_keys(self, partner: str, rotate: bool = False) -> Path:
        """Create a key file (or, with rotate, put a new key first and keep the old ones for decryption)."""
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        path = self.key_file(partner)
        existing = path.read_text().splitlines() if path.exists() else []
        if existing and not rotate:
            return path
        content = "\n".join([Fernet.generate_key().decode(), *[line for line in existing if line.strip()]]) + "\n"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
        self._cache.pop(partner, None)
        self._newest.pop(partner, None)
        return path
