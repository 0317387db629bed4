"""Download an image over HTTP(S): resumed with Range, bounded in time and in size, hashed as it streams.

* **Resume**: the bytes already on disk are kept; the request asks for the rest (``Range: bytes=N-``).
  A server that answers 200 instead of 206 sends the whole image again, from the start.
* **Slow retrieval**: no byte for ``stall`` seconds fails the attempt (the engine tries again, from
  where it stopped); the whole download has an overall ``deadline``.
* **Endless data**: nothing past the signed ``size`` is written; a server that sends more fails with
  ``oversize`` (the image is not the one that was signed).
* **Digest**: SHA-256 (hashlib) of everything written, including what an earlier attempt wrote.
* Every chunk is flushed as written, so a killed daemon loses at most the chunk in flight; the file
  is fsync'd every few MiB against power loss.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Final

from agent.errors import EdgeAgentError

CHUNK: Final = 64 * 1024
FSYNC_EVERY: Final = 4 << 20


class DownloadError(EdgeAgentError):
    """An attempt failed; ``transient`` ones are worth another attempt from where they stopped."""

    def __init__(self, reason: str, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


def _kept(destination: Path, size: int) -> int:
    """How many bytes of an earlier attempt are kept (none if more than the image)."""
    have = destination.stat().st_size if destination.exists() else 0
    if have > size:
        destination.unlink()
        return 0
    return have


def _prefix_digest(path: Path, length: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        left = length
        while left and (chunk := f.read(min(1 << 20, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest


async def fetch(
    url: str,
    destination: Path,
    size: int,
    *,
    stall: float,
    deadline: float,
    ca_file: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Bring ``destination`` to the first ``size`` bytes at ``url``; their SHA-256 (hex)."""
    import httpx  # only when downloading: it costs memory the daemon does not otherwise need

    have = _kept(destination, size)
    digest = await asyncio.to_thread(_prefix_digest, destination, have) if have else hashlib.sha256()
    if have == size:
        return digest.hexdigest()
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    headers = {"Range": f"bytes={have}-"} if have else {}
    timeout = httpx.Timeout(connect=stall, read=stall, write=stall, pool=stall)
    try:
        async with asyncio.timeout(deadline):
            async with (
                httpx.AsyncClient(timeout=timeout, verify=verify, follow_redirects=True) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 200 and have:
                    have, digest = 0, hashlib.sha256()  # no Range support: from the start
                elif response.status_code == 206:
                    start = response.headers.get("content-range", "").removeprefix("bytes ").split("-")[0]
                    if start != str(have):
                        raise DownloadError("bad_range", f"asked for byte {have}, got {start!r}", transient=True)
                elif response.status_code != 200:
                    transient = response.status_code >= 500 or response.status_code == 429
                    raise DownloadError(
                        "http_status", f"{url} answered HTTP {response.status_code}", transient=transient
                    )
                await _stream(response.aiter_raw(CHUNK), destination, have, size, digest, progress)
    except TimeoutError:
        raise DownloadError("deadline", f"the download took longer than {deadline:g} s", transient=False) from None
    except httpx.TimeoutException:
        raise DownloadError("stalled", f"no data for {stall:g} s", transient=True) from None
    except httpx.RemoteProtocolError as exc:  # closed before Content-Length was reached
        raise DownloadError("truncated", f"the server closed early: {exc}", transient=True) from None
    except httpx.HTTPError as exc:
        raise DownloadError("connection", f"{type(exc).__name__}: {exc}", transient=True) from None
    return digest.hexdigest()


async def _stream(
    chunks: object,
    destination: Path,
    have: int,
    size: int,
    digest: hashlib._Hash,
    progress: Callable[[int], None] | None,
) -> None:
    from collections.abc import AsyncIterator
    from typing import cast

    written, since_sync = have, 0
    with destination.open("r+b" if have else "wb") as f:
        f.seek(have)
        f.truncate()
        async for chunk in cast(AsyncIterator[bytes], chunks):
            if written + len(chunk) > size:
                keep = size - written
                f.write(chunk[:keep])
                digest.update(chunk[:keep])
                f.flush()
                raise DownloadError("oversize", f"the server sent more than the signed {size} bytes", transient=False)
            f.write(chunk)
            f.flush()
            digest.update(chunk)
            written += len(chunk)
            since_sync += len(chunk)
            if since_sync >= FSYNC_EVERY:
                os.fsync(f.fileno())
                since_sync = 0
            if progress is not None:
                progress(written)
        os.fsync(f.fileno())
    if written < size:
        raise DownloadError("truncated", f"the server closed after {written} of {size} bytes", transient=True)
