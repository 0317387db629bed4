"""The floor of ``bench_hardware``: a bare OSDP control panel that sets a Modbus coil on every card read.

``python -m bench.floor_door TTY KEYHEX MODBUS_PORT``: the same two libraries the agent uses (libosdp in
control-panel mode, pymodbus's async TCP client), wired directly: no credential lookup, no decision,
no journal, no event. Prints ``ready`` once the reader is online, runs until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import osdp
from pymodbus.client import AsyncModbusTcpClient

from agent.drivers.osdp import FdChannel, open_tty


async def main(tty: str, key: bytes, port: int) -> None:
    loop = asyncio.get_running_loop()
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await client.connect()
    reads: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def on_event(_pd: int, event: dict[str, Any]) -> int:
        if event.get("event") == osdp.Event.CardRead:
            loop.call_soon_threadsafe(reads.put_nowait, event)
        return 0

    fd = open_tty(tty, 9600)
    info = osdp.PDInfo(1, FdChannel(fd), scbk=key, flags=[osdp.LibFlag.EnforceSecure])
    cp = osdp.ControlPanel([info], log_level=osdp.LogLevel.Emergency, event_handler=on_event)
    cp.start()
    for _ in range(600):  # 30 s at most
        if cp.is_online(1):
            break
        await asyncio.sleep(0.05)
    print("ready", flush=True)

    async def serve() -> None:
        while True:
            await reads.get()
            await client.write_coil(0, True, device_id=1)

    server = asyncio.create_task(serve())
    await loop.run_in_executor(None, sys.stdin.read)
    server.cancel()
    cp.teardown()
    client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])))
