"""The firmware engine's parts on their own: versions, admission, the table, the boot env, the download."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import random
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.errors import DownloadError, IllegalTransition
from firmware import download, machine
from firmware.admission import HEADROOM, admit
from firmware.download import CHUNK, fetch
from firmware.jobs import Job
from firmware.machine import RESUME, TERMINAL, TRANSITIONS, State
from firmware.slots import FileBootloader, FileSlot
from protocol.claims import FirmwareJobClaims, decode
from protocol.version import newer, parse
from tests.support.brokers import free_port
from tests.support.images import Fault, FaultyImageServer
from tests.support.pki import make_pki


@pytest.mark.parametrize(
    ("candidate", "current", "expected"),
    [
        ("29.30.10.1", "29.30.2.805", True),  # numerically, not as text
        ("29.30.2.805", "29.30.10.1", False),
        ("29.30.2.805", "29.30.2.805", False),
        ("1.2.0", "1.2", False),
        ("1.2.0.1", "1.2", True),
        ("2", "1.99.99", True),
    ],
)
def test_versions_compare_numerically_per_component(candidate: str, current: str, expected: bool) -> None:
    assert newer(candidate, current) is expected


@pytest.mark.parametrize("bad", ["", "1..2", "v1.2", "1.2-rc1", "1." * 9 + "1", "1234567890.1"])
def test_a_malformed_version_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="dotted version"):
        parse(bad)


def _claims(**fields: Any) -> FirmwareJobClaims:
    body = {"aud": "0c110512ab34", "iat": 1, "exp": 2, "seq": 1, "job_id": "j-1", "model": "R29",
            "version": "29.30.10.1", "url": "http://x/i", "size": 100, "sha256": "0" * 64, **fields}  # fmt: skip
    return decode(FirmwareJobClaims, json.dumps(body))


def _job(state: State, job_id: str = "j-0") -> Job:
    return Job(job_id, 1, state, _claims(job_id=job_id, version="29.30.9"), None, 1, None)


@pytest.mark.parametrize(
    ("fields", "active", "action", "reason"),
    [
        ({}, None, "new", None),
        ({"model": "X916"}, None, "reject", "wrong_model"),
        ({"version": "29.30.2.805"}, None, "reject", "downgrade"),  # the same version is not newer
        ({"version": "29.30.2.1"}, None, "reject", "downgrade"),
        ({"version": "29.30.2.1", "allow_downgrade": True}, None, "new", None),
        ({"size": 10_000}, None, "reject", "too_large"),
        ({"size": 900}, None, "reject", "no_space"),  # under the cap, but not beside the headroom in 900 + 8 MiB
        ({}, _job(State.PENDING), "new", None),  # replaces the pending one
        ({}, _job(State.DOWNLOADING, "j-1"), "edit", None),
        ({}, _job(State.INSTALLING), "reject", "busy"),
        ({"cancel": True}, _job(State.VERIFYING, "j-1"), "cancel", None),
        ({"cancel": True}, _job(State.INSTALLING, "j-1"), "reject", "too_late"),
        ({"cancel": True}, _job(State.COMMITTING, "j-1"), "reject", "too_late"),
        ({"cancel": True}, None, "reject", "unknown_job"),
    ],
)
def test_admission(fields: dict[str, Any], active: Job | None, action: str, reason: str | None) -> None:
    free = HEADROOM + (899 if fields.get("size") == 900 else 1000)
    verdict = admit(_claims(**fields), model="R29", running="29.30.2.805", max_size=1000, free=free, active=active)
    assert (verdict.action, verdict.reason) == (action, reason)


def test_the_table_is_complete() -> None:
    states_with_exits = {state for state, _ in TRANSITIONS}
    assert states_with_exits == set(State) - TERMINAL  # every live state can end, no terminal one moves
    assert set(RESUME) == set(State)  # every persisted state has a resume rule
    reachable = {State.PENDING} | set(TRANSITIONS.values())
    assert reachable == set(State)
    with pytest.raises(IllegalTransition):
        machine.step(State.EXECUTED, "due")


def test_a_try_is_spent_by_the_boot_that_uses_it(tmp_path: Path) -> None:
    boot = FileBootloader(tmp_path)
    assert boot.boot() == "a"
    boot.try_once("b")
    assert boot.boot() == "b"  # the try
    assert boot.boot() == "a"  # not committed: back to the good slot
    boot.try_once("b")
    assert boot.boot() == "b"
    boot.mark_good("b")
    assert boot.boot() == "b"
    assert boot.other() == "a"
    boot.mark_bad("b")
    assert boot.boot() == "a"


def test_a_slot_half_written_has_no_version(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.write_bytes(b"x" * 1000)
    slot = FileSlot(tmp_path, "b")
    slot.write(image, "2.0", hashlib.sha256(b"x" * 1000).hexdigest())
    assert (slot.version(), slot.digest()) == ("2.0", hashlib.sha256(b"x" * 1000).hexdigest())
    (tmp_path / "slot-b.json").unlink()  # as write() does first
    assert slot.version() is None


@pytest.fixture
async def served(tmp_path: Path) -> Any:
    (tmp_path / "www").mkdir()
    data = os.urandom(CHUNK * 10 + 17)
    (tmp_path / "www" / "img").write_bytes(data)
    async with FaultyImageServer(tmp_path / "www") as server:
        yield server, data


async def test_a_partial_download_is_resumed_with_range(served: Any, tmp_path: Path) -> None:
    server, data = served
    target = tmp_path / "part"
    target.write_bytes(data[: CHUNK * 4])
    digest = await fetch(server.url("img"), target, len(data), stall=2, deadline=10)
    assert digest == hashlib.sha256(data).hexdigest()
    assert target.read_bytes() == data
    assert server.requests == [("img", f"bytes={CHUNK * 4}-")]
    assert server.sent["img"] == len(data) - CHUNK * 4


async def test_a_server_without_range_support_sends_it_all_again(served: Any, tmp_path: Path) -> None:
    server, data = served
    server.faults["img"] = Fault(ignore_range=True)
    target = tmp_path / "part"
    target.write_bytes(b"\x00" * CHUNK)  # not even the right bytes: they must not survive
    assert await fetch(server.url("img"), target, len(data), stall=2, deadline=10) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("fault", "url", "reason", "transient"),
    [
        (Fault(stall_after=CHUNK), "img", "stalled", True),
        (Fault(close_after=CHUNK * 3), "img", "truncated", True),
        (Fault(extra=CHUNK * 4), "img", "oversize", False),
        (None, "missing", "http_status", False),
    ],
)
async def test_download_failures_are_named(
    served: Any, tmp_path: Path, fault: Fault | None, url: str, reason: str, transient: bool
) -> None:
    server, data = served
    if fault is not None:
        server.faults["img"] = fault
    target = tmp_path / "part"
    with pytest.raises(DownloadError) as caught:
        await fetch(server.url(url), target, len(data), stall=0.5, deadline=10)
    assert (caught.value.reason, caught.value.transient) == (reason, transient)
    assert not target.exists() or target.stat().st_size <= len(data)  # never past the signed size


async def test_the_overall_deadline_bounds_a_slow_server(served: Any, tmp_path: Path) -> None:
    server, data = served
    server.faults["img"] = Fault(delay_per_chunk=0.2)  # never stalls, never finishes in time
    with pytest.raises(DownloadError) as caught:
        await fetch(server.url("img"), tmp_path / "part", len(data), stall=1, deadline=0.5)
    assert caught.value.reason == "deadline"


@contextlib.contextmanager
def _https(directory: Path, cert: Path, key: Path) -> Iterator[str]:
    """The standard library's HTTP server behind TLS, serving ``directory`` (the server end of a test)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_https_downloads_read_the_ca_file_once_and_refuse_a_stranger(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", "dev-1")
    (tmp_path / "www").mkdir()
    data = os.urandom(CHUNK * 3 + 5)
    (tmp_path / "www" / "img").write_bytes(data)
    download._tls_context.cache_clear()
    with _https(tmp_path / "www", pki.server.cert, pki.server.key) as base:
        for n in range(2):
            got = await fetch(f"{base}/img", tmp_path / f"img-{n}", len(data), stall=5, deadline=20, ca_file=pki.ca)
            assert got == hashlib.sha256(data).hexdigest()
        assert download._tls_context.cache_info().misses == 1  # the CA file was read once
        with pytest.raises(DownloadError) as stranger:
            await fetch(f"{base}/img", tmp_path / "x", len(data), stall=5, deadline=20, ca_file=pki.other_ca)
        assert "CERTIFICATE_VERIFY_FAILED" in str(stranger.value)
        with pytest.raises(DownloadError) as missing:
            await fetch(f"{base}/img", tmp_path / "y", len(data), stall=5, deadline=20, ca_file=tmp_path / "nope")
        assert (missing.value.reason, missing.value.transient) == ("bad_ca_file", False)
    with pytest.raises(DownloadError) as refused:  # nothing listens there
        await fetch(f"http://127.0.0.1:{free_port()}/img", tmp_path / "z", 10, stall=1, deadline=2, ca_file=pki.ca)
    assert refused.value.reason == "connection"
    assert download._tls_context.cache_info().currsize == 2  # plain http built no context


def test_on_start_goes_on_from_each_persisted_state_and_rolls_back_anything_else() -> None:
    assert machine.on_start("installing", True) == "booted_new"  # the try was set and it booted
    assert machine.on_start("installing", False) == machine.GO_ON  # install again
    assert machine.on_start("rebooting", False) == "booted_old"  # the try was spent, never committed
    assert machine.on_start("committing", True) == machine.GO_ON  # the health check again
    assert machine.on_start("failed", True) == machine.ROLL_BACK  # died before its slot was marked bad
    assert machine.on_start("executed", True) == machine.NOTHING
    assert machine.on_start("awaiting_window", False) == machine.ROLL_BACK  # another version's state
    for state, rule in machine.RESUME.items():  # every rule names something the engine can do
        for action in rule:
            assert action in {machine.GO_ON, machine.ROLL_BACK, machine.NOTHING} or (state, action) in TRANSITIONS


def test_one_backoff_spreads_a_fleet_and_stays_within_its_bounds() -> None:
    from protocol.backoff import Backoff

    backoff = Backoff(1.0, 10.0)
    fleet = [random.Random(seed) for seed in range(50)]
    for attempt in range(8):
        delays = [backoff.delay(attempt, rng) for rng in fleet]
        assert all(1.0 <= d <= min(10.0, 2.0**attempt) for d in delays)
        if attempt:  # past the first retry, fifty devices do not retry in step
            assert len({round(d, 3) for d in delays}) > 40


@pytest.mark.parametrize(
    ("start", "end", "at", "zone", "inside"),
    [
        ("02:00", "04:00", "2026-11-30T03:00:00+00:00", None, True),
        ("02:00", "04:00", "2026-11-30T04:00:00+00:00", None, False),  # end is not in it
        ("02:00", "04:00", "2026-11-30T01:59:00+00:00", None, False),
        ("23:00", "01:00", "2026-11-30T23:30:00+00:00", None, True),  # spans midnight
        ("23:00", "01:00", "2026-11-30T00:30:00+00:00", None, True),
        ("23:00", "01:00", "2026-11-30T12:00:00+00:00", None, False),
        ("02:00", "04:00", "2026-11-29T19:00:00+00:00", "Asia/Shanghai", True),  # 03:00 in Shanghai
        ("02:00", "04:00", "2026-11-30T03:00:00+00:00", "Asia/Shanghai", False),  # 11:00 there
        ("02:00", "04:00", "2026-11-30T03:00:00+00:00", "Mars/Olympus_Mons", True),  # unknown zone: UTC
        ("05:00", "05:00", "2026-11-30T17:00:00+00:00", None, True),  # start == end: all day
    ],
)
def test_a_window_in_the_sites_local_time(start: str, end: str, at: str, zone: str | None, inside: bool) -> None:
    from datetime import datetime

    from firmware.window import inside as in_window
    from firmware.window import opens_in
    from protocol.claims import Window

    w = Window(start=start, end=end)
    now = datetime.fromisoformat(at).timestamp()
    assert in_window(w, now, zone) is inside
    wait = opens_in(w, now, zone)
    assert (wait == 0) is inside
    if not inside:
        assert in_window(w, now + wait + 1, zone)
        assert 0 < wait <= 24 * 3600
