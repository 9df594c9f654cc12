"""Blobs as files under a directory (the default: ``data_dir/blobs``).

A blob is written to a temporary file under ``.tmp/`` beside the blobs, fsynced, then renamed to
its key's path and the directory fsynced: once :meth:`LocalBlobWriter.commit` returns, the bytes
survive a power cut, and a crash before it leaves only a temporary file (swept at start). Reads
and writes run in worker threads (file I/O would block the event loop), a chunk per hop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path

from roost.errors import InvalidInput
from roost.ota.blobs.base import CHUNK_BYTES, BlobStore, BlobWriter

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
# A temporary file untouched this long belongs to an upload that died (a live upload writes to
# its file every few seconds at least); a day leaves room for the slowest link.
STALE_TMP_S = 24 * 3600


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobWriter(BlobWriter):
    """A blob being written to a temporary file."""

    def __init__(self, final: Path, temporary: Path) -> None:
        self.final = final
        self.temporary = temporary
        self._fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def write(self, data: bytes) -> None:
        """Append ``data`` (in a worker thread)."""
        await asyncio.to_thread(self._write_all, data)

    def _commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temporary, self.final)
        _fsync_dir(self.final.parent)

    async def commit(self) -> None:
        """fsync, rename into place, fsync the directory."""
        await asyncio.to_thread(self._commit)

    def _abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.temporary.unlink(missing_ok=True)

    async def abort(self) -> None:
        """Close and remove the temporary file."""
        await asyncio.to_thread(self._abort)


class LocalBlobStore(BlobStore):
    """Blobs as files under ``root``."""

    kind = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    async def start(self) -> None:
        """Create the directory, and sweep temporary files a crash left behind."""
        await asyncio.to_thread(self._prepare)

    async def close(self) -> None:
        """Nothing to release: every read and write closes its file."""

    def _prepare(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.root / TMP_DIR
        tmp.mkdir(mode=0o700, exist_ok=True)
        # Another process sharing the directory may be writing: only old files are swept.
        cutoff = time.time() - STALE_TMP_S
        for entry in tmp.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except OSError:
                pass  # taken by another process's sweep

    def path(self, key: str) -> Path:
        """The file of ``key`` (refusing a key that would leave the root)."""
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            raise InvalidInput(f"not a blob key: {key!r}")
        return self.root.joinpath(*parts)

    async def writer(self, key: str) -> BlobWriter:
        """A writer of ``key`` through a temporary file."""
        final = self.path(key)
        tmp = self.root / TMP_DIR
        temporary = tmp / f"{uuid.uuid4().hex}.part"

        def make() -> LocalBlobWriter:
            tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
            return LocalBlobWriter(final, temporary)

        return await asyncio.to_thread(make)

    async def read(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The bytes ``start``..``end`` of ``key``, read with ``pread`` a chunk at a time."""
        path = self.path(key)
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        try:
            if end is None:
                end = os.fstat(fd).st_size
            position = start
            while position < end:
                data = await asyncio.to_thread(
                    os.pread, fd, min(CHUNK_BYTES, end - position), position
                )
                if not data:  # the file is shorter than promised: stop, the client sees a cut
                    log.error("blob %s ended at %d of %d bytes", key, position, end)
                    return
                position += len(data)
                yield data
        finally:
            os.close(fd)

    async def size(self, key: str) -> int | None:
        """The file's size, or None."""
        try:
            return (await asyncio.to_thread(os.stat, self.path(key))).st_size
        except FileNotFoundError:
            return None

    async def delete(self, key: str) -> None:
        """Remove the file (and its directory when empty)."""

        def remove() -> None:
            path = self.path(key)
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:
                pass  # not empty, or already gone

        await asyncio.to_thread(remove)
