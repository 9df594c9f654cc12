"""Receiving an upload: the body streamed into a blob writer, hashed and measured on the way.

The body's pieces (tens of KiB each, as the HTTP server reads them) are gathered into pieces of
:data:`~roost.ota.blobs.base.CHUNK_BYTES`, each hashed (SHA-256, SHA-1, MD5) in a worker thread
(hashlib releases the GIL) and written. Nothing but the current piece (and, for a Debian package,
its first bytes) is held. Any failure (too large, cut short, an error of the store) aborts the
writer: nothing stays.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from roost.errors import InvalidInput, PayloadTooLarge
from roost.ota.blobs.base import CHUNK_BYTES, BlobStore, BlobWriter


@dataclass
class Received:
    """A body written (not yet committed) with its hashes, size and first bytes."""

    writer: BlobWriter
    size: int
    sha256: str
    sha1: str
    md5: str
    prefix: bytes


class _Hashes:
    """SHA-256, SHA-1 and MD5 of a stream (SHA-1 and MD5: hawkBit's DDI names them)."""

    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = hashlib.sha1(usedforsecurity=False)
        self.md5 = hashlib.md5(usedforsecurity=False)

    def update(self, data: bytes) -> None:
        for digest in (self.sha256, self.sha1, self.md5):
            digest.update(data)


async def receive(
    store: BlobStore,
    key: str,
    body: AsyncIterator[bytes],
    *,
    max_bytes: int,
    keep_prefix: int = 0,
    expected_size: int | None = None,
) -> Received:
    """Stream ``body`` into a new blob ``key``; 413 past ``max_bytes``, 422 when it ends before
    ``expected_size`` (a Content-Length not met). The caller commits or aborts the writer."""
    writer = await store.writer(key)
    hashes = _Hashes()
    size = 0
    prefix = bytearray()
    piece = bytearray()

    async def flush() -> None:
        data = bytes(piece)
        piece.clear()
        await asyncio.to_thread(hashes.update, data)
        await writer.write(data)

    try:
        async for data in body:
            if not data:
                continue
            size += len(data)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"the artifact is larger than the {max_bytes}-byte limit "
                    "(ROOST_ARTIFACT_MAX_BYTES)"
                )
            if len(prefix) < keep_prefix:
                prefix += data[: keep_prefix - len(prefix)]
            piece += data
            if len(piece) >= CHUNK_BYTES:
                await flush()
        if piece:
            await flush()
        if expected_size is not None and size != expected_size:
            raise InvalidInput(
                f"the upload was cut short: {size} of the {expected_size} bytes announced arrived"
            )
    except BaseException:
        await asyncio.shield(writer.abort())
        raise
    return Received(
        writer,
        size,
        hashes.sha256.hexdigest(),
        hashes.sha1.hexdigest(),
        hashes.md5.hexdigest(),
        bytes(prefix),
    )
