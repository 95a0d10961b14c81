"""The streamed Fernet token is a Fernet token: the library decrypts it, whatever the chunking; and the fast
decrypt path agrees with the library on every token, or steps aside for it."""

from __future__ import annotations

import os

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from cmp_pipelines.core.crypto.fernet_stream import decrypt_token, encrypt_chunks, read_ahead
from cmp_pipelines.core.crypto.keyring import PartnerKeyring
from cmp_pipelines.core.files.errors import FileRejected


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


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 100_003])
def test_fast_decrypt_reads_library_tokens_under_any_listed_key(size):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    plaintext = os.urandom(size)
    token = Fernet(old).encrypt(plaintext)
    assert decrypt_token([new, old], token) == plaintext
    assert decrypt_token([new], token) is None  # no key verifies: the library decides (and refuses)


def test_fast_decrypt_steps_aside_for_what_is_not_strictly_a_good_token():
    key = Fernet.generate_key()
    token = Fernet(key).encrypt(b"pay 12.34")
    flipped = token[:40] + (b"A" if token[40:41] != b"A" else b"B") + token[41:]
    for bad in (flipped, token[:-8], token + b"\n", token[:30] + b"\n" + token[30:], b"gAAAAA!!"):
        assert decrypt_token([key], bad) is None, bad


def test_keyring_decrypts_fast_and_refuses_tampering_and_wrong_keys_with_the_library_error(tmp_path):
    keyring = PartnerKeyring(tmp_path)
    keyring.init_keys("PAYPOINT")
    token = keyring.encrypt("PAYPOINT", b'{"header":{}}')
    assert keyring.decrypt("PAYPOINT", token) == b'{"header":{}}'
    wrapped = token[:30] + b"\n" + token[30:] + b"\n"  # the library's lenient base64 still reads this
    assert keyring.decrypt("PAYPOINT", wrapped) == b'{"header":{}}'
    flipped = token[:60] + (b"A" if token[60:61] != b"A" else b"B") + token[61:]
    with pytest.raises(FileRejected) as refused:
        keyring.decrypt("PAYPOINT", flipped)
    assert refused.value.code == "DECRYPT_FAILED"
    other = PartnerKeyring(tmp_path / "other")
    other.init_keys("PAYPOINT")
    with pytest.raises(FileRejected) as refused:
        other.decrypt("PAYPOINT", token)
    assert refused.value.code == "DECRYPT_FAILED"


def test_read_ahead_keeps_order_raises_the_producers_error_and_stops_when_abandoned():
    assert list(read_ahead(bytes([n]) for n in range(50))) == [bytes([n]) for n in range(50)]

    def failing():
        yield b"a"
        raise OSError("disk gone while reading the plaintext")

    with pytest.raises(OSError, match="disk gone"):
        list(read_ahead(failing()))

    produced = []

    def counted():
        for n in range(1000):
            produced.append(n)
            yield b"x"

    stream = read_ahead(counted())
    next(stream)
    stream.close()
    assert len(produced) <= 2, "an abandoned stream computes at most one item ahead"
