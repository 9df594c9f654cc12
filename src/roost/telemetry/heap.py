"""Give the memory a burst of ingest freed back to the operating system once the burst is over.

A burst allocates large buffers (batches, blobs, compaction's arrays) on the C heap. Python frees
them, but glibc's malloc keeps the freed pages mapped: the heap only shrinks from its top, and
one small live block near the top pins everything below it. After an overload the process so
kept ~1 GB of free heap for good (issue 11.3). Two remedies, both glibc's own knobs:

* :func:`configure_allocator` fixes malloc's mmap threshold. glibc raises it by itself (up to
  32 MiB) each time a large mapped block is freed, after which every batch column and compaction
  array lands on the heap; fixed, each gets a mapping of its own, unmapped when freed.
* ``malloc_trim(0)`` hands every free page of every arena back (``madvise``):
  :class:`HeapKeeper` calls it once ingest and compaction go quiet, and then at most every few
  seconds while compaction alone catches up.

Off glibc (musl, macOS) there is nothing to call and both do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import sys
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# How often the keeper looks at the activity counters. Five seconds: a lull that long means the
# burst is over (group commits come every few ms under load), and a trim (a few ms to walk the
# free lists; pages come back on the next allocations) every five seconds costs nothing.
CHECK_EVERY_S = 5.0


# Blocks at least this large get a mapping of their own, kept fixed: an overload's batch columns
# (500,000 points: 4 MB each) and compaction's arrays go back to the OS as soon as they are freed,
# while a request-sized buffer (a 5,000-point HTTP batch: its body, columns and blob, 40-300 KB)
# stays on the heap. At glibc's starting value (128 KiB) those buffers were mapped and unmapped
# at every request, page faults that cost HTTP ingest ~6 % (BENCHMARKS.md, issue 11.3).
MMAP_THRESHOLD_BYTES = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


_LIBC = _load_libc()
_TRIM: Callable[[int], int] | None = _LIBC.malloc_trim if _LIBC is not None else None


def configure_allocator() -> bool:
    """Fix malloc's mmap threshold (see the module docstring); True where glibc took it."""
    return _LIBC is not None and bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; True if any was returned (glibc only).

    ctypes drops the GIL for the call, so a thread can run it beside the event loop.
    """
    return bool(_TRIM(0)) if _TRIM is not None else False


class HeapKeeper:
    """Trims the heap after activity stops (see the module docstring).

    ``ingest`` and ``background`` are counters that grow with work done: items committed, and
    points compacted. A tick without new ingest but with work since the last trim trims (after
    ``release_caches``, which empties caches that are only worth their memory under load), so
    the trims follow compaction's catch-up after a burst and stop once everything is quiet.
    """

    def __init__(
        self,
        ingest: Callable[[], int],
        background: Callable[[], int],
        release_caches: Callable[[], Awaitable[None]] | None = None,
        *,
        every_s: float = CHECK_EVERY_S,
    ) -> None:
        self._ingest = ingest
        self._background = background
        self._release_caches = release_caches
        self.every_s = every_s
        self.trims = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching (nothing to do where the C library cannot trim)."""
        if _TRIM is not None and self._task is None:
            configure_allocator()
            self._task = asyncio.create_task(self._run(), name="heap-keeper")

    async def close(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        ingest, background = self._ingest(), self._background()
        trimmed = (ingest, background)
        while True:
            await asyncio.sleep(self.every_s)
            now = (self._ingest(), self._background())
            quiet = now[0] == ingest
            ingest, background = now
            if quiet and now != trimmed:
                trimmed = now
                try:
                    if self._release_caches is not None:
                        await self._release_caches()
                    await asyncio.to_thread(release_free_memory)
                except Exception:  # pragma: no cover - a failed trim only keeps memory
                    log.exception("returning free memory failed")
                self.trims += 1
