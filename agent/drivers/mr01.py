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
    17+N   16    (authenticated frames) HMAC-SHA-256 of bytes 0 to 16+N under the sensor's key, truncated

:func:`parse` turns bytes into a :class:`Frame` or raises :class:`FrameError` naming what is wrong;
it never raises anything else, whatever the bytes (tests/test_mr01.py fuzzes it). The transport
drops retransmissions by counter and hands each new frame to the daemon as a stimulus.

Who may send (issue 12). The listener binds loopback unless configured otherwise. A frame from
another host counts only if it is *authenticated*: the frame followed by a 16-byte tag, the
HMAC-SHA-256 of the frame under that sensor's key (``[drivers] mr01_keys``, a file readable by the
agent only), and its counter above the last one taken from that sensor (a replay is refused; the
sensor keeps its counter across its own restarts). Frames from loopback (a bridge on the device
itself) may be plain or authenticated. Refusals: ``unauthenticated`` (no tag, or no key for the
sensor), ``bad_tag``, ``replayed``.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import ipaddress
import re
import struct
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple, cast

import structlog

from agent.drivers.keyfile import read_private
from agent.errors import FrameError
from agent.local.stimuli import Stimulus

log = structlog.get_logger("agent.drivers.mr01")

MAGIC: Final = b"\xa5\x5a"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBB6sIB")  # magic, version, type, mac, counter, length
MAX_PAYLOAD: Final = 16
TYPES: Final = {1: "heartbeat", 2: "presence", 3: "fall", 4: "bed_exit", 5: "battery"}
CODES: Final = {name: code for code, name in TYPES.items()}
_PAYLOAD_SIZE: Final = {"heartbeat": 0, "presence": 1, "fall": 1, "bed_exit": 0, "battery": 1}


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


TAG_BYTES: Final = 16


def tag(frame: bytes, key: bytes) -> bytes:
    """The authentication tag of ``frame`` under a sensor's ``key``."""
    return hmac.new(key, frame, hashlib.sha256).digest()[:TAG_BYTES]


def encode_authenticated(kind: str, mac: bytes, counter: int, key: bytes, value: int | None = None) -> bytes:
    """A frame with its tag, as a sensor on the network sends it."""
    frame = encode(kind, mac, counter, value)
    return frame + tag(frame, key)


def authenticate(datagram: bytes, keys: Mapping[bytes, bytes]) -> bytes:
    """The frame inside an authenticated ``datagram`` once its tag verifies; :class:`FrameError` otherwise."""
    if len(datagram) < HEADER.size + 2 + TAG_BYTES or datagram[:2] != MAGIC:
        raise FrameError("unauthenticated", "a frame from another host must carry its tag")
    frame, received = datagram[:-TAG_BYTES], datagram[-TAG_BYTES:]
    key = keys.get(frame[4:10])
    if key is None:
        raise FrameError("unauthenticated", f"no key for sensor {frame[4:10].hex()}")
    if not hmac.compare_digest(tag(frame, key), received):
        raise FrameError("bad_tag", f"the tag of sensor {frame[4:10].hex()}'s frame does not verify")
    return frame


def load_keys(path: Path) -> dict[bytes, bytes]:
    """Sensor keys from ``path``: lines of ``<mac, 12 hex digits> <key, 32-64 hex digits>``, ``#`` comments.

    ``ValueError`` names the line that is wrong, or the file if others may read it (keys are secrets).
    """
    text = read_private(path)
    keys: dict[bytes, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if (
            len(fields) != 2
            or not re.fullmatch(r"[0-9a-f]{12}", fields[0])
            or not re.fullmatch(r"(?:[0-9a-fA-F]{2}){16,32}", fields[1])
        ):
            raise ValueError(f"{path} line {number}: expected '<mac, 12 lowercase hex> <key, 32-64 hex digits>'")
        keys[bytes.fromhex(fields[0])] = bytes.fromhex(fields[1])
    return keys


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

    def __init__(
        self, sink: Callable[[Stimulus], None], now: Callable[[], float], keys: Mapping[bytes, bytes] | None = None
    ) -> None:
        self._sink, self._now = sink, now
        self._keys: Mapping[bytes, bytes] = keys or {}
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
            authenticated = not _is_loopback(addr) or _tagged(data)  # loopback: plain or authenticated
            frame = parse(authenticate(data, self._keys) if authenticated else data)
            if authenticated and frame.counter < self._last.get(frame.sensor, -1):
                raise FrameError("replayed", f"counter {frame.counter} of {frame.sensor} is below the last taken")
        except FrameError as exc:
            if not self.malformed[exc.reason]:
                log.warning("mr01_frame_refused", reason=exc.reason, error=str(exc), peer=str(addr[0])[:64])
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

    @property
    def address(self) -> str:
        assert self.transport is not None
        return str(self.transport.get_extra_info("sockname")[0])

    def stats(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "received": self.received,
            "duplicates": self.duplicates,
            "malformed": dict(self.malformed),
            "keys": len(self._keys),
        }


def _tagged(data: bytes) -> bool:
    """Whether a datagram carries a tag after its frame (the frame's length byte says where it ends)."""
    return len(data) >= HEADER.size + 2 + TAG_BYTES and len(data) == HEADER.size + data[14] + 2 + TAG_BYTES


def _is_loopback(addr: Any) -> bool:
    try:
        return ipaddress.ip_address(str(addr[0]).split("%", 1)[0]).is_loopback
    except (ValueError, IndexError, TypeError):
        return False


async def listen(
    address: str,
    sink: Callable[[Stimulus], None],
    now: Callable[[], float],
    keys: Mapping[bytes, bytes] | None = None,
) -> Mr01Udp:
    """Bind ``host:port`` (``port`` alone: loopback) and deliver frames to ``sink``; frames from another
    host count only when authenticated under ``keys``."""
    host, _, port = address.rpartition(":")
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: Mr01Udp(sink, now, keys), local_addr=(host or "127.0.0.1", int(port))
    )
    return protocol


class Mr01Input:
    """The MR01 transport as an input source (``agent/drivers/registry.py``): listens on ``address``."""

    name = "mr01"

    def __init__(self, address: str, now: Callable[[], float], keys: Mapping[bytes, bytes]) -> None:
        self._address, self._now, self._keys = address, now, keys
        self.listener: Mr01Udp | None = None

    async def run(self, sink: Callable[[Stimulus], None]) -> None:
        """Bind and deliver each new frame to ``sink`` until cancelled; then stop listening."""
        self.listener = await listen(self._address, sink, self._now, self._keys)
        log.info("mr01_listening", address=self._address, port=self.listener.port)
        try:
            await asyncio.Event().wait()
        finally:
            self.close()

    def close(self) -> None:
        """Stop listening."""
        if self.listener is not None and self.listener.transport is not None:
            self.listener.transport.close()

    def stats(self) -> dict[str, Any] | None:
        """What it received and refused (None before it listens)."""
        return None if self.listener is None else {"port": self.listener.port, **self.listener.stats()}
