"""The blob store port: where artifact bytes live, written once and read by ranges.

A blob is written through a :class:`BlobWriter` (chunks in order, then :meth:`BlobWriter.commit`
makes it durable and visible under its key, or :meth:`BlobWriter.abort` leaves nothing behind)
and read back with :meth:`BlobStore.read` over any byte range, in chunks of about
:data:`CHUNK_BYTES`. Keys are ``/``-separated names chosen by the caller (artifacts use
``<tenant>/<artifact id>/<random>``, so a deleted artifact's id reused later never meets its old
bytes). :func:`open_blob_store` picks the backend from ``ROOST_BLOB_URL``.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from pathlib import Path
from urllib.parse import urlsplit

from roost.errors import ConfigError

# Downloads are read and sent in pieces of this size: large enough that the per-piece Python work
# (a thread hop, an ASGI message) is a small part of moving a mebibyte, small enough that a
# thousand concurrent downloads hold at most a GiB in flight (mostly in kernel socket buffers).
CHUNK_BYTES = 1024 * 1024
#: A piece read from a blob: bytes, or a view of the blob (a mapped file: no copy in Python).
Chunk = bytes | bytearray | memoryview


class BlobWriter(abc.ABC):
    """One blob being written: :meth:`write` in order, then exactly one of commit or abort."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Append ``data``."""

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the blob durable and readable under its key (acknowledged means kept)."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Forget everything written; nothing stays under the key or in temporary space."""


class BlobStore(abc.ABC):
    """Where artifact bytes live."""

    #: A short name of the backend (``file``, ``s3``), for logs and /readyz-like reports.
    kind: str = ""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections (and create what the backend needs)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abc.abstractmethod
    async def writer(self, key: str) -> BlobWriter:
        """A writer of a new blob named ``key``."""

    @abc.abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncGenerator[Chunk, None]:
        """The bytes ``start`` to ``end`` (exclusive; None: to the end), in chunks."""

    @abc.abstractmethod
    async def size(self, key: str) -> int | None:
        """The blob's size in bytes, or None when there is no such blob."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the blob (nothing happens when it is already gone)."""


def open_blob_store(url: str, data_dir: Path) -> BlobStore:
    """The blob store ``url`` names: empty or ``file://PATH`` for a directory (default
    ``data_dir/blobs``), ``s3://bucket/prefix?endpoint=…&region=…`` for an S3-compatible
    service (needs the ``roost[s3]`` extra)."""
    scheme = urlsplit(url).scheme if url else "file"
    if scheme == "file":
        from roost.ota.blobs.local import LocalBlobStore

        path = urlsplit(url).path if url else ""
        return LocalBlobStore(Path(path) if path else data_dir / "blobs")
    if scheme == "s3":
        try:
            from roost.ota.blobs.s3 import S3BlobStore
        except ImportError as exc:  # the optional dependency is missing
            raise ConfigError(
                f"ROOST_BLOB_URL {url!r} needs the S3 client: pip install 'roost[s3]' ({exc})"
            ) from exc
        return S3BlobStore.from_url(url)
    raise ConfigError(f"ROOST_BLOB_URL: unknown scheme {scheme!r} (use file:// or s3://)")
