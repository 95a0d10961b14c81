"""Fernet tokens written piece by piece, for outputs of hundreds of megabytes.

`Fernet.encrypt` builds the whole token in memory and copies the plaintext several times; this writes the
same token format (version 0x80, timestamp, IV, AES-128-CBC with PKCS7, HMAC-SHA256, url-safe base64) from
chunks, with the same `cryptography` primitives, so any Fernet or MultiFernet holding the key decrypts it.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterable, Iterator

from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class _Base64Stream:
    """Url-safe base64 of a byte stream: whole 3-byte groups as they come, the rest (and padding) at the end."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        data = self._rest + data
        whole = len(data) - len(data) % 3
        self._rest = data[whole:]
        return base64.urlsafe_b64encode(data[:whole])

    def close(self) -> bytes:
        rest, self._rest = self._rest, b""
        return base64.urlsafe_b64encode(rest)


def encrypt_chunks(key: bytes, chunks: Iterable[bytes], now: int | None = None) -> Iterator[bytes]:
    """The Fernet token of the concatenated `chunks`, as pieces; `key` is a url-safe base64 Fernet key."""
    raw = base64.urlsafe_b64decode(key)
    if len(raw) != 32:
        raise ValueError("a Fernet key is 32 bytes of url-safe base64")
    signing_key, encryption_key = raw[:16], raw[16:]
    iv = os.urandom(16)
    header = b"\x80" + int(time.time() if now is None else now).to_bytes(8, "big") + iv
    mac = hmac.HMAC(signing_key, hashes.SHA256())
    mac.update(header)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(encryption_key), modes.CBC(iv)).encryptor()
    out = _Base64Stream()
    yield out.feed(header)
    for chunk in chunks:
        block = encryptor.update(padder.update(chunk))
        mac.update(block)
        yield out.feed(block)
    block = encryptor.update(padder.finalize()) + encryptor.finalize()
    mac.update(block)
    yield out.feed(block)
    yield out.feed(mac.finalize())
    yield out.close()


def file_chunks(parts: Iterable[bytes | os.PathLike], size: int = 16 << 20) -> Iterator[bytes]:
    """Byte strings as they are, local files read `size` bytes at a time."""
    for part in parts:
        if isinstance(part, bytes | bytearray):
            yield bytes(part)
            continue
        with open(part, "rb") as handle:
            while chunk := handle.read(size):
                yield chunk
