"""MR01 frames: the codec on recorded frames, fuzzed, and the UDP transport on a real socket."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.mr01 import (
    TYPES,
    Frame,
    Mr01Udp,
    crc16,
    encode,
    encode_authenticated,
    listen,
    load_keys,
    parse,
)
from agent.errors import FrameError
from agent.local.stimuli import Stimulus

FRAMES = Path(__file__).parent / "data" / "mr01_frames.txt"


def recorded() -> list[tuple[str, str]]:
    rows = []
    for line in FRAMES.read_text().splitlines():
        if line and not line.startswith("#"):
            frame, expected = line.split(" ", 1)
            rows.append((frame, expected))
    return rows


def test_the_checksum_is_crc16_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogue's check value for CRC-16/CCITT-FALSE


@pytest.mark.parametrize(("frame", "expected"), recorded(), ids=[e for _, e in recorded()])
def test_recorded_frames(frame: str, expected: str) -> None:
    if expected.startswith("error:"):
        with pytest.raises(FrameError) as caught:
            parse(bytes.fromhex(frame))
        assert caught.value.reason == expected.removeprefix("error:")
    else:
        kind, sensor, data = expected.split(":", 2)
        parsed = parse(bytes.fromhex(frame))
        assert (parsed.kind, parsed.sensor, parsed.data) == (kind, sensor, json.loads(data))


@settings(max_examples=3000)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_are_refused_with_a_reason(data: bytes) -> None:
    reasons = {"short", "bad_magic", "bad_version", "bad_length", "bad_crc", "unknown_type", "bad_payload"}
    outcome: Frame | str
    try:
        outcome = parse(data)
    except FrameError as exc:
        outcome = exc.reason
    assert isinstance(outcome, Frame) or outcome in reasons


@settings(max_examples=3000)
@given(
    st.sampled_from(sorted(TYPES.values())),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 2**32 - 1),
    st.integers(0, 100),
    st.integers(0, 31),
    st.integers(0, 255),
)
def test_a_corrupted_frame_is_never_taken_for_another(
    kind: str, mac: bytes, counter: int, value: int, position: int, flip: int
) -> None:
    """Round trip, then one byte changed: either refused, or (the checksum cannot catch everything
    but a one-byte change it always does) never accepted as something else."""
    payload = {"presence": value % 2, "fall": value, "battery": value}.get(kind)
    frame = encode(kind, mac, counter, payload)
    assert parse(frame).kind == kind
    if flip == 0 or position >= len(frame):
        return
    mutated = bytearray(frame)
    mutated[position] ^= flip
    with pytest.raises(FrameError):
        parse(bytes(mutated))


async def test_the_transport_delivers_new_frames_and_drops_repeats_and_garbage() -> None:
    got: list[Stimulus] = []
    arrived = asyncio.Event()

    def sink(stimulus: Stimulus) -> None:
        got.append(stimulus)
        if len(got) == 3:  # the last datagram sent: every one before it has been read
            arrived.set()

    listener = await listen("127.0.0.1:0", sink, lambda: 1_795_000_000.0)
    try:
        mac = bytes.fromhex("0c1105a1b2c3")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in (
                encode("fall", mac, 1, 90),
                encode("fall", mac, 1, 90),  # a retransmission: same counter
                b"garbage",
                encode("presence", mac, 2, 1),
                encode("battery", mac, 3, 55),
            ):
                sender.sendto(datagram, ("127.0.0.1", listener.port))
        async with asyncio.timeout(5):
            await arrived.wait()
    finally:
        assert listener.transport is not None
        listener.transport.close()
    assert [(s.kind, s.source, dict(s.data)) for s in got] == [
        ("fall", "mr01-0c1105a1b2c3", {}),
        ("presence", "mr01-0c1105a1b2c3", {"present": True}),
        ("battery", "mr01-0c1105a1b2c3", {"percent": 55}),
    ]
    assert listener.stats() == {
        "address": "127.0.0.1",
        "received": 5,
        "duplicates": 1,
        "malformed": {"short": 1},
        "keys": 0,
    }


# -- who may send (issue 12) --------------------------------------------------------------------------

MAC = bytes.fromhex("0c1105a1b2c3")
KEY = bytes(range(32))


def _listener(keys: dict[bytes, bytes] | None = None) -> tuple[Mr01Udp, list[Stimulus]]:
    taken: list[Stimulus] = []
    return Mr01Udp(taken.append, lambda: 0.0, keys), taken


def test_a_frame_from_another_host_counts_only_with_its_sensors_tag() -> None:
    """From 192.0.2.9: a plain frame is refused (unauthenticated), a tag under another key (bad_tag), an
    unknown sensor (unauthenticated); the frame tagged under the sensor's key is taken."""
    listener, taken = _listener({MAC: KEY})
    remote = ("192.0.2.9", 7700)
    listener.datagram_received(encode("fall", MAC, 1, 90), remote)
    listener.datagram_received(encode_authenticated("fall", MAC, 2, bytes(32), 90), remote)
    listener.datagram_received(encode_authenticated("fall", bytes(6), 3, KEY, 90), remote)
    listener.datagram_received(encode_authenticated("fall", MAC, 4, KEY, 90), remote)
    assert [s.kind for s in taken] == ["fall"]
    assert listener.malformed == {"unauthenticated": 2, "bad_tag": 1}


def test_an_authenticated_frame_replayed_is_refused() -> None:
    """A recorded authenticated frame sent again later (its counter below the last taken) is refused;
    the very same frame again at once is a retransmission, dropped as a duplicate."""
    listener, taken = _listener({MAC: KEY})
    remote = ("192.0.2.9", 7700)
    old, new = encode_authenticated("fall", MAC, 5, KEY, 90), encode_authenticated("bed_exit", MAC, 6, KEY)
    for datagram in (old, new, new, old):
        listener.datagram_received(datagram, remote)
    assert [s.kind for s in taken] == ["fall", "bed_exit"]
    assert (listener.duplicates, listener.malformed) == (1, {"replayed": 1})


def test_loopback_takes_plain_and_authenticated_frames() -> None:
    """A bridge on the device itself may send plain frames; tagged ones are verified all the same."""
    listener, taken = _listener({MAC: KEY})
    local = ("127.0.0.1", 7700)
    listener.datagram_received(encode("fall", MAC, 1, 90), local)
    listener.datagram_received(encode_authenticated("bed_exit", MAC, 2, KEY), local)
    listener.datagram_received(encode_authenticated("bed_exit", MAC, 3, bytes(32)), local)
    assert [s.kind for s in taken] == ["fall", "bed_exit"]
    assert listener.malformed == {"bad_tag": 1}


@given(st.binary(max_size=80), st.sampled_from(["127.0.0.1", "192.0.2.9", "::1", "fe80::1%eth0", "junk"]))
@settings(max_examples=300)
def test_any_datagram_from_anywhere_is_taken_or_refused_with_a_reason(data: bytes, host: str) -> None:
    """Whatever the bytes and the peer, the listener refuses with a reason or takes a frame: it never raises."""
    listener, taken = _listener({MAC: KEY})
    listener.datagram_received(data, (host, 1))
    assert len(taken) + sum(listener.malformed.values()) + listener.duplicates == 1


def test_sensor_keys_are_read_from_an_owner_only_file(tmp_path: Path) -> None:
    """Keys are secrets: a file others may read is refused; a malformed line is named."""
    keys = tmp_path / "mr01.keys"
    keys.write_text(f"# sensor  key\n{MAC.hex()} {KEY.hex()}\n")
    keys.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        load_keys(keys)
    keys.chmod(0o600)
    assert load_keys(keys) == {MAC: KEY}
    keys.write_text(f"{MAC.hex()} {KEY.hex()}\nAA:BB:CC secret\n")
    with pytest.raises(ValueError, match="line 2"):
        load_keys(keys)
