"""The streamed Fernet token is a Fernet token: the library decrypts it, whatever the chunking."""

from __future__ import annotations

import os

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cmp_pipelines.formats.encryption import PartnerKeyring
from cmp_pipelines.formats.fernet_stream import encrypt_chunks


@pytest.mark.parametrize("sizes", [[], [0], [1], [2], [3], [15], [16], [17], [1, 2, 3, 4, 5], [100_000, 7, 65_536],
                                   [3_000_001]])
def test_library_decrypts_what_is_streamed(sizes):
    key = Fernet.generate_key()
    chunks = [os.urandom(n) for n in sizes]
    token = b"".join(encrypt_chunks(key, chunks))
    assert Fernet(key).decrypt(token) == b"".join(chunks)


def test_wrong_key_and_tampering_are_refused():
    key = Fernet.generate_key()
    token = b"".join(encrypt_chunks(key, [b"pay 12.34"]))
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(token)
    with pytest.raises(InvalidToken):
        Fernet(key).decrypt(token[:-8] + b"AAAAAAAA")


def test_keyring_streams_with_the_newest_key_and_rotation_still_decrypts(tmp_path):
    keyring = PartnerKeyring(tmp_path)
    keyring.init_keys("CARDPAY")
    part = tmp_path / "rows.json"
    part.write_bytes(b'[{"a":1}]' * 1000)
    before = b"".join(keyring.encrypt_parts("CARDPAY", [b'{"rows":', part, b"}"]))
    keyring.init_keys("CARDPAY", rotate=True)
    after = b"".join(keyring.encrypt_parts("CARDPAY", [b"x"]))
    newest, older = (tmp_path / "CARDPAY.keys").read_text().split()
    assert Fernet(newest).decrypt(after) == b"x"
    assert keyring.decrypt("CARDPAY", before) == b'{"rows":' + b'[{"a":1}]' * 1000 + b"}"
    assert MultiFernet([Fernet(older)]).decrypt(before).startswith(b'{"rows":')
