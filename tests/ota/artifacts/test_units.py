"""The pure parts, without a server: Range and validators, signed URL tokens, sealing the key,
control files of Debian packages."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.errors import AuthenticationFailed, ConfigError, InvalidInput
from roost.ota.artifacts import debpkg, signing
from roost.ota.artifacts.downloads import byte_range, plan
from roost.ota.blobs.base import CHUNK_BYTES
from roost.ota.blobs.local import LocalBlobStore

ETAG = '"abc"'


@given(size=st.integers(1, 10_000), start=st.integers(0, 12_000), length=st.integers(1, 3000))
def test_a_satisfiable_range_stays_inside_the_file(size: int, start: int, length: int) -> None:
    chosen = byte_range(f"bytes={start}-{start + length - 1}", size)
    if start >= size:
        assert chosen == (-1, -1)
    else:
        assert chosen == (start, min(start + length, size))


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        ("bytes=0-", 10, (0, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=-0", 10, (-1, -1)),
        ("bytes=5-2", 10, None),
        ("bytes=0-1,3-4", 10, None),
        ("items=0-1", 10, None),
        ("bytes=-", 10, None),
    ],
)
def test_range_forms(header: str, size: int, want: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == want


def test_plan_follows_the_conditional_headers() -> None:
    assert plan("GET", {}, 10, ETAG).status == 200
    assert plan("GET", {"if-none-match": 'W/"abc", "x"'}, 10, ETAG).status == 304
    assert plan("GET", {"if-none-match": "*"}, 10, ETAG).status == 304
    assert plan("GET", {"range": "bytes=2-"}, 10, ETAG) == plan(
        "GET", {"range": "bytes=2-9"}, 10, ETAG
    )
    assert plan("GET", {"range": "bytes=2-", "if-range": '"old"'}, 10, ETAG).status == 200
    assert plan("GET", {"range": "bytes=20-"}, 10, ETAG).status == 416


def test_signed_url_tokens_round_trip_and_refuse_tampering() -> None:
    signer = signing.UrlSigner("secret")
    token = signer.make("t1", "fw-1", "dev:1", 2_000_000_000)
    assert signer.check(token, 1_900_000_000) == ("t1", "fw-1", "dev:1")
    with pytest.raises(AuthenticationFailed, match="expired"):
        signer.check(token, 2_000_000_001)
    with pytest.raises(AuthenticationFailed, match="signature"):
        signing.UrlSigner("another secret").check(token, 0)
    payload, mac = token.split(".")
    other = signer.make("t2", "fw-1", "dev:1", 2_000_000_000).split(".")[0]
    with pytest.raises(AuthenticationFailed):
        signer.check(f"{other}.{mac}", 0)
    with pytest.raises(AuthenticationFailed):
        signer.check("%%%", 0)


def test_the_sealed_key_opens_only_with_its_secret() -> None:
    key = signing.ed25519.Ed25519PrivateKey.generate()
    sealed = signing.seal(key, "one")
    assert signing.key_id_of(signing.unseal(sealed, "one").public_key()) == signing.key_id_of(
        key.public_key()
    )
    with pytest.raises(ConfigError):
        signing.unseal(sealed, "two")


def test_control_paragraphs() -> None:
    fields = debpkg.parse_control(
        "Package: a\nVersion: 1:2.0-1\nDescription: short\n long\n .\n more\n"
    )
    assert fields == {"Package": "a", "Version": "1:2.0-1", "Description": "short\nlong\n.\nmore"}
    with pytest.raises(InvalidInput):
        debpkg.parse_control(" starts with a continuation\n")
    with pytest.raises(InvalidInput):
        debpkg.parse_control("no colon here\n")
    with pytest.raises(InvalidInput, match="ar archive"):
        debpkg.control_fields(b"PK\x03\x04 a zip")


def test_local_blob_reads_come_back_whole_whether_cached_or_not(tmp_path: Path) -> None:
    """A range read gives the file's bytes when the page cache holds them (views of the mapped
    file) and when it does not (read into the cache in a worker thread first)."""
    data = os.urandom(3 * CHUNK_BYTES + 12345)

    async def scenario() -> list[bytes]:
        store = LocalBlobStore(tmp_path / "blobs")
        await store.start()
        writer = await store.writer("t/a/1")
        await writer.write(data)
        await writer.commit()
        path = store.path("t/a/1")
        got = []
        for start, end in ((0, None), (5, CHUNK_BYTES + 7), (len(data) - 3, None), (9, 9)):
            fd = os.open(path, os.O_RDONLY)
            try:  # out of the page cache: the cold path
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            cold = b"".join([bytes(c) async for c in store.read("t/a/1", start, end)])
            warm = b"".join([bytes(c) async for c in store.read("t/a/1", start, end)])
            assert cold == warm
            got.append(cold)
        await store.close()
        return got

    whole, middle, tail, empty = asyncio.run(scenario())
    assert whole == data
    assert middle == data[5 : CHUNK_BYTES + 7]
    assert tail == data[-3:]
    assert empty == b""
