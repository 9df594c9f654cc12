"""Blobs as files under a directory (the default: ``data_dir/blobs``).

A blob is written to a temporary file under ``.tmp/`` beside the blobs, fsynced, then renamed to
its key's path and the directory fsynced: once :meth:`LocalBlobWriter.commit` returns, the bytes
survive a power cut, and a crash before it leaves only a temporary file (swept at start). Writes
run in worker threads (file I/O would block the event loop), a chunk per hop; reads take what
the page cache holds as views of the mapped file and go to a thread for the rest (see
:meth:`LocalBlobStore.read`).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path

from roost.errors import InvalidInput
from roost.ota.blobs.base import CHUNK_BYTES, BlobStore, BlobWriter, Chunk

log = logging.getLogger(__name__)

TMP_DIR = ".tmp"
# A temporary file untouched this long belongs to an upload that died (a live upload writes to
# its file every few seconds at least); a day leaves room for the slowest link.
STALE_TMP_S = 24 * 3600


# preadv(RWF_NOWAIT) (Linux 4.14+) reads only what is in the page cache, without blocking.
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


def _cached(fd: int, position: int, size: int) -> bool:
    """Whether the first and last pages of ``size`` bytes at ``position`` are in the page cache
    (the kernel's readahead fills what lies between); False where the system cannot say."""
    if not _NOWAIT:
        return False
    probe = bytearray(1)
    try:
        return all(
            os.preadv(fd, [probe], offset, _NOWAIT) == 1
            for offset in (position, position + size - 1)
        )
    except OSError:  # EAGAIN: not cached; EOPNOTSUPP: this file system cannot say
        return False


def _load(fd: int, position: int, size: int) -> None:
    """Bring ``size`` bytes at ``position`` into the page cache (in a worker thread)."""
    os.posix_fadvise(fd, position, size, os.POSIX_FADV_WILLNEED)
    os.pread(fd, size, position)


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
    ) -> AsyncGenerator[Chunk, None]:
        """The bytes ``start``..``end`` of ``key``: views of the file mapped into memory.

        A file many devices download stays in the page cache: sending views of the mapping
        copies each byte once (into the socket) and allocates nothing a chunk, where reading
        into a new buffer in a worker thread allocated a mebibyte and made a thread hop a chunk
        (a thousand concurrent downloads ran at under half of nginx's rate). A chunk not in
        the page cache is read into it in a worker thread first, so a cold disk never blocks
        the event loop.
        """
        path = self.path(key)
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        try:
            length = os.fstat(fd).st_size
            if end is None:
                end = length
            if end > length:  # the file is shorter than promised: the client sees a cut
                log.error("blob %s ended at %d of %d bytes", key, length, end)
                end = length
            if start >= end:
                return
            position = start
            while position < end:
                size = min(CHUNK_BYTES, end - position)
                if not _cached(fd, position, size):
                    await asyncio.to_thread(_load, fd, position, size)
                # One mapping a chunk, unmapped when the socket is done with it (the view is
                # its last reference): only the chunks in flight are mapped at any time. A blob
                # file is never written after its commit (a new upload is a new file), so a
                # mapping never sees it shrink (which would fault).
                skip = position % mmap.ALLOCATIONGRANULARITY
                mapped = mmap.mmap(fd, skip + size, access=mmap.ACCESS_READ, offset=position - skip)
                yield memoryview(mapped)[skip:]
                position += size
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
