"""Fernet for the floors, with the same raw libraries the flows use: pybase64's codec, `cryptography`'s AES-CBC,
PKCS7 and HMAC-SHA256. (`cryptography.fernet` spends most of a big token's time in Python's base64 codec; the
flows no longer do, so a floor built on it would flatter their ratios.)"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pybase64
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class FloorFernet:
    def __init__(self, keys: list[bytes | str]):
        self.keys = [base64.urlsafe_b64decode(k) for k in keys]  # newest first

    def encrypt(self, data: bytes) -> bytes:
        signing, key = self.keys[0][:16], self.keys[0][16:]
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        body = (b"\x80" + int(time.time()).to_bytes(8, "big") + iv
                + encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize())
        mac = hmac.HMAC(signing, hashes.SHA256())
        mac.update(body)
        return pybase64.b64encode(body + mac.finalize(), altchars=b"-_")

    def encrypt_file(self, source: Path, target: Path, chunk: int = 16 << 20) -> None:
        """The token of `source` into `target`, durable, a chunk at a time on one thread (no whole-file copies)."""
        signing, key = self.keys[0][:16], self.keys[0][16:]
        iv = os.urandom(16)
        head = b"\x80" + int(time.time()).to_bytes(8, "big") + iv
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        mac = hmac.HMAC(signing, hashes.SHA256())
        mac.update(head)
        carry = head
        with open(source, "rb") as plain, open(target, "wb") as out:
            while True:
                data = plain.read(chunk)
                block = encryptor.update(padder.update(data)) if data else \
                    encryptor.update(padder.finalize()) + encryptor.finalize()
                mac.update(block)
                carry += block
                if not data:
                    carry += mac.finalize()
                whole = len(carry) - len(carry) % 3 if data else len(carry)
                out.write(pybase64.b64encode(carry[:whole], altchars=b"-_"))
                carry = carry[whole:]
                if not data:
                    break
            out.flush()
            os.fsync(out.fileno())

    def decrypt(self, token: bytes) -> bytes:
        data = pybase64.b64decode(token, altchars=b"-_", validate=True)
        view = memoryview(data)
        for raw in self.keys:
            mac = hmac.HMAC(raw[:16], hashes.SHA256())
            mac.update(view[:-32])
            try:
                mac.verify(data[-32:])
            except Exception:  # noqa: BLE001 - another key may verify
                continue
            decryptor = Cipher(algorithms.AES(raw[16:]), modes.CBC(data[9:25])).decryptor()
            padded = decryptor.update(view[25:-32]) + decryptor.finalize()
            return padded[:-padded[-1]]
        raise ValueError("no key verifies the token")
