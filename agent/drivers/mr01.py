"""MR01 sensor frames over UDP: the codec (pure) and the transport (docs/drivers.md "MR01 frames").

The MR01 (mmWave fall and bed-exit sensor) sends one frame per datagram::

    offset size  field
    0      2     magic A5 5A
    2      1     version (1)
    3      1     type: 01 heartbeat, 02 presence, 03 fall, 04 bed exit, 05 battery
    4      6     sensor MAC
    10     4     frame counter, big-endian (a retransmission repeats it)
    14     1     payload length N (0-16)
    15     N     payload: presence 1 byte (0 absent, 1 present); fall 1 byte (confidence 0-100);
                 battery 1 byte (percent 0-100); heartbeat and bed exit none
    15+N   2     CRC-16/CCITT-FALSE of bytes 0 to 14+N, big-endian

:func:`parse` turns bytes into a :class:`Frame` or raises :class:`FrameError` naming what is wrong;
it never raises anything else, whatever the bytes (tests/test_mr01.py fuzzes it). The transport
drops retransmissions by counter and hands each new frame to the daemon as a stimulus.
"""

from __future__ import annotations

import asyncio
import binascii
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, NamedTuple, cast

import structlog

from agent.errors import EdgeAgentError
from agent.stimuli import Stimulus

log = structlog.get_logger("agent.drivers.mr01")

MAGIC: Final = b"\xa5\x5a"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBB6sIB")  # magic, version, type, mac, counter, length
MAX_PAYLOAD: Final = 16
TYPES: Final = {1: "heartbeat", 2: "presence", 3: "fall", 4: "bed_exit", 5: "battery"}
CODES: Final = {name: code for code, name in TYPES.items()}
_PAYLOAD_SIZE: Final = {"heartbeat": 0, "presence": 1, "fall": 1, "bed_exit": 0, "battery": 1}


class FrameError(EdgeAgentError):
    """A datagram that is not a valid MR01 frame; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Frame(NamedTuple):
    kind: str
    sensor: str  # "mr01-" and the MAC in hex
    counter: int
    data: dict[str, Any]


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF)."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode(kind: str, mac: bytes, counter: int, value: int | None = None) -> bytes:
    """A frame, as a sensor sends it (for tests, the benchmark and the demo)."""
    payload = b"" if value is None else bytes([value])
    body = HEADER.pack(MAGIC, VERSION, CODES[kind], mac, counter, len(payload)) + payload
    return body + crc16(body).to_bytes(2, "big")


def parse(datagram: bytes) -> Frame:
    """The frame in ``datagram``; :class:`FrameError` if it is not one."""
    if len(datagram) < HEADER.size + 2:
        raise FrameError("short", f"{len(datagram)} bytes is shorter than a frame ({HEADER.size + 2})")
    magic, version, code, mac, counter, length = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise FrameError("bad_magic", "the frame does not start with A5 5A")
    if version != VERSION:
        raise FrameError("bad_version", f"frame version {version} is not {VERSION}")
    if length > MAX_PAYLOAD or len(datagram) != HEADER.size + length + 2:
        raise FrameError("bad_length", f"payload length {length} does not match the {len(datagram)}-byte datagram")
    end = HEADER.size + length
    if crc16(datagram[:end]) != int.from_bytes(datagram[end : end + 2], "big"):
        raise FrameError("bad_crc", "the checksum does not match")
    kind = TYPES.get(code)
    if kind is None:
        raise FrameError("unknown_type", f"frame type {code:#04x} is not one of {sorted(TYPES)}")
    payload = datagram[HEADER.size : end]
    if len(payload) != _PAYLOAD_SIZE[kind]:
        raise FrameError("bad_payload", f"a {kind} frame carries {_PAYLOAD_SIZE[kind]} payload bytes, not {length}")
    data: dict[str, Any] = {}
    if kind == "presence":
        if payload[0] > 1:
            raise FrameError("bad_payload", f"presence is 0 or 1, not {payload[0]}")
        data["present"] = payload[0] == 1
    elif kind in ("fall", "battery"):
        if payload[0] > 100:
            raise FrameError("bad_payload", f"a {kind} value is 0-100, not {payload[0]}")
        data["confidence" if kind == "fall" else "percent"] = payload[0]
    return Frame(kind, f"mr01-{mac.hex()}", counter, data)


def to_stimulus(frame: Frame, at: float) -> Stimulus:
    """The stimulus a frame is (fall confidence is for the log only: the sensor already decided)."""
    data = {k: v for k, v in frame.data.items() if k != "confidence"}
    return Stimulus(frame.kind, frame.sensor, data, at)


class Mr01Udp(asyncio.DatagramProtocol):
    """Listens for MR01 frames; each new one goes to ``sink`` as a stimulus."""

    RECEIVE_BUFFER: Final = 4 * 1024 * 1024  # a burst of 10,000 frames must not overflow the socket

    def __init__(self, sink: Callable[[Stimulus], None], now: Callable[[], float]) -> None:
        self._sink, self._now = sink, now
        self._last: dict[str, int] = {}
        self.received = 0
        self.duplicates = 0
        self.malformed: Counter[str] = Counter()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RECEIVE_BUFFER)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        try:
            frame = parse(data)
        except FrameError as exc:
            if not self.malformed[exc.reason]:
                log.warning("mr01_frame_refused", reason=exc.reason, error=str(exc), peer=str(addr[0]))
            self.malformed[exc.reason] += 1
            return
        if self._last.get(frame.sensor) == frame.counter:
            self.duplicates += 1
            return
        self._last[frame.sensor] = frame.counter
        self._sink(to_stimulus(frame, self._now()))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def stats(self) -> dict[str, Any]:
        return {"received": self.received, "duplicates": self.duplicates, "malformed": dict(self.malformed)}


async def listen(address: str, sink: Callable[[Stimulus], None], now: Callable[[], float]) -> Mr01Udp:
    """Bind ``host:port`` and deliver frames to ``sink``."""
    host, _, port = address.rpartition(":")
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: Mr01Udp(sink, now), local_addr=(host, int(port)))
    return protocol
