"""Download an image over HTTP(S): resumed with Range, bounded in time and in size, hashed as it streams.

* **Where it goes**: a :class:`Sink`: a file (:class:`FileSink`, the default), or straight into a slot
  that is a block device (``firmware/slots.py``'s ``DeviceStream``: one pass, no copy).
* **Resume**: the bytes already in place are kept (a file's size; a device's last durable offset); the
  request asks for the rest (``Range: bytes=N-``). A server that answers 200 instead of 206 sends the
  whole image again, from the start.
* **Slow retrieval**: no byte for ``stall`` seconds fails the attempt (the engine tries again, from
  where it stopped); the whole download has an overall ``deadline``.
* **Endless data**: nothing past the signed ``size`` is written; a server that sends more fails with
  ``oversize`` (the image is not the one that was signed).
* **Digest**: SHA-256 (hashlib) of everything written, including what an earlier attempt wrote.
* Every chunk is written as it is read, so a killed daemon has on disk all it received (it fetches
  nothing again, bench/bench_firmware.py). The file is not fsync'd: a power cut can only cost bytes
  at its end, the verifying state hashes the file from disk before anything is installed, and the
  slot write is fsync'd. (Measured: fsync'ing every 16 MiB and at the end cost a third of the time.)

It runs in a worker thread on the standard library's ``http.client``, with the hashing in a second
thread so that it overlaps the network on the other core: measured 3x faster than an asyncio client
(httpx) here, with nothing more to import. ``fetch`` is the asyncio face of it; cancelling it stops
the worker at the next chunk (at most ``stall`` seconds).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.client
import queue
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final, Protocol
from urllib.parse import urlsplit

from agent.errors import DownloadError, DownloadInterrupted, EdgeAgentError

CHUNK: Final = 256 * 1024
MAX_REDIRECTS: Final = 3


class _Stopped(EdgeAgentError):
    """The caller went away (the job was cancelled): stop at the next chunk (never leaves this module)."""


class _Hasher:
    """SHA-256 fed from a queue by a thread of its own (hashlib releases the GIL on large buffers)."""

    def __init__(self, digest: hashlib._Hash) -> None:
        self.digest = digest
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="firmware-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self.digest.hexdigest()


class Sink(Protocol):
    """Where a download goes, resumable: what an earlier attempt left, then the rest, in order."""

    def kept(self, size: int) -> int:
        """How many bytes of an earlier attempt at this image are in place (0: start again)."""

    def prefix_digest(self, length: int) -> hashlib._Hash:
        """SHA-256 over the first ``length`` bytes in place (a resumed download's digest goes on from it)."""

    def begin(self, have: int) -> None:
        """Get ready to write from byte ``have`` on (what lies beyond it is dropped)."""

    def write(self, chunk: bytes) -> None:
        """The next bytes of the image."""

    def end(self, complete: bool) -> None:
        """Stop writing (``complete``: the whole image was written); what is kept is what ``kept`` says next."""


class FileSink:
    """A download into a file: what a killed process received is in the page cache, kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def kept(self, size: int) -> int:
        have = self.path.stat().st_size if self.path.exists() else 0
        if have > size:
            self.path.unlink()
            return 0
        return have

    def prefix_digest(self, length: int) -> hashlib._Hash:
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            left = length
            while left and (chunk := f.read(min(1 << 20, left))):
                digest.update(chunk)
                left -= len(chunk)
        return digest

    def begin(self, have: int) -> None:
        self._file = f = self.path.open("r+b" if have else "wb")
        f.seek(have)
        f.truncate()

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)
        self._file.flush()  # a killed process leaves it in the page cache: nothing received is lost

    def end(self, complete: bool) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The context for https downloads, built once per CA file and its modification time (a CA file
    replaced is read again): reading the CA store takes ~18 ms, more than a tenth of a 64 MiB image's
    download (bench/bench_firmware.py), and http:// never needs it."""
    try:
        stamp = ca_file.stat().st_mtime_ns if ca_file is not None else 0
    except OSError:
        stamp = -1  # missing: create_default_context says so
    try:
        return _tls_context(ca_file, stamp)
    except (OSError, ssl.SSLError) as exc:
        raise DownloadError("bad_ca_file", f"the CA file {ca_file} cannot be used: {exc}") from None


@functools.lru_cache(maxsize=4)
def _tls_context(ca_file: Path | None, _stamp: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def _connect(url: str, timeout: float, ca_file: Path | None) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError("bad_url", f"{url!r} is not an http(s) URL")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        context = tls_context(ca_file)
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context), path
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), path


def _download(
    url: str,
    sink: Sink,
    size: int,
    stall: float,
    deadline: float,
    ca_file: Path | None,
    progress: Callable[[int], None] | None,
    stop: threading.Event,
    monotonic: Callable[[], float],
) -> str:
    """The worker thread's whole job: one attempt, resumed from what is on disk."""
    ends_at = monotonic() + deadline
    have = sink.kept(size)
    digest = sink.prefix_digest(have) if have else hashlib.sha256()
    if have == size:
        return digest.hexdigest()
    for _ in range(MAX_REDIRECTS + 1):
        connection, path = _connect(url, stall, ca_file)
        headers = {"Range": f"bytes={have}-"} if have else {}
        response: http.client.HTTPResponse | None = None
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("location"):
                url = response.getheader("location", "")
                connection.close()
                continue
            if response.status == 200 and have:
                have, digest = 0, hashlib.sha256()  # no Range support: from the start
            elif response.status == 206:
                start = (response.getheader("content-range") or "").removeprefix("bytes ").split("-")[0]
                if start != str(have):
                    raise DownloadInterrupted("bad_range", f"asked for byte {have}, got {start!r}")
            elif response.status != 200:
                failure = DownloadInterrupted if response.status >= 500 or response.status == 429 else DownloadError
                raise failure("http_status", f"{url} answered HTTP {response.status}")
            return _stream(response, sink, have, size, digest, ends_at, deadline, progress, stop, monotonic)
        except TimeoutError:
            raise DownloadInterrupted("stalled", f"no data for {stall:g} s") from None
        except http.client.IncompleteRead as exc:
            raise DownloadInterrupted("truncated", f"the server closed early: {exc!r}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadInterrupted("connection", f"{type(exc).__name__}: {exc}") from None
        finally:
            if response is not None:
                response.close()
            connection.close()
    raise DownloadError("redirects", f"more than {MAX_REDIRECTS} redirects")


def _stream(
    response: http.client.HTTPResponse,
    sink: Sink,
    have: int,
    size: int,
    digest: hashlib._Hash,
    ends_at: float,
    deadline: float,
    progress: Callable[[int], None] | None,
    stop: threading.Event,
    monotonic: Callable[[], float],
) -> str:
    hasher = _Hasher(digest)
    written = have
    sink.begin(have)
    try:
        while chunk := response.read(CHUNK):
            if stop.is_set():
                raise _Stopped
            if monotonic() > ends_at:
                raise DownloadError("deadline", f"the download took longer than {deadline:g} s")
            if written + len(chunk) > size:
                raise DownloadError("oversize", f"the server sent more than the signed {size} bytes")
            sink.write(chunk)
            hasher.update(chunk)
            written += len(chunk)
            if progress is not None:
                progress(written)
    finally:
        sink.end(written == size)
        result = hasher.finish()
    if written < size:
        raise DownloadInterrupted("truncated", f"the server closed after {written} of {size} bytes")
    return result


async def fetch(
    url: str,
    destination: Path | Sink,
    size: int,
    *,
    stall: float,
    deadline: float,
    ca_file: Path | None = None,
    progress: Callable[[int], None] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> str:
    """Bring ``destination`` (a file, or a :class:`Sink`) to the first ``size`` bytes at ``url``; their
    SHA-256 (hex).

    ``monotonic`` times the deadline (injected, as the engine's clocks are).
    """
    sink = FileSink(destination) if isinstance(destination, Path) else destination
    stop = threading.Event()
    worker = asyncio.ensure_future(
        asyncio.to_thread(_download, url, sink, size, stall, deadline, ca_file, progress, stop, monotonic)
    )
    worker.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, even if abandoned
    try:
        async with asyncio.timeout(deadline + stall):
            return await asyncio.shield(worker)
    except TimeoutError:
        stop.set()
        raise DownloadError("deadline", f"the download took longer than {deadline:g} s") from None
    except asyncio.CancelledError:
        stop.set()  # the worker ends at its next chunk (within stall seconds); its _Stopped is dropped
        raise
