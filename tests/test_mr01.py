"""MR01 frames: the codec on recorded frames, fuzzed, and the UDP transport on a real socket."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drivers.mr01 import TYPES, Frame, FrameError, crc16, encode, listen, parse
from agent.stimuli import Stimulus

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
    assert listener.stats() == {"received": 5, "duplicates": 1, "malformed": {"short": 1}}
