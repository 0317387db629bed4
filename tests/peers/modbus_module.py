"""A Modbus relay / I/O module: pymodbus's own server, over TCP or RTU.

``python -m tests.peers.modbus_module tcp`` (prints ``{"port": N}``) or ``... rtu --port /dev/pts/N``.
16 coils (the relays) and 16 discrete inputs (contacts, buttons), unit 1. Stdin lines
``{"inputs": {"0": true}}`` set inputs (a module that stops answering is this process killed).
Stdout: ``{"coil": n, "on": bool, "at": monotonic}`` for every coil written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

inputs = [False] * 16
coils = [False] * 16


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def action(
    fc: int, start: int, address: int, count: int, regs: list[int], values: list[int] | list[bool] | None
) -> ExcCodes | None:
    if fc == 2:  # 16 inputs per register (pymodbus's bit addressing): input n is bit n of register 0
        regs[0] = sum(1 << n for n, level in enumerate(inputs) if level)
    if fc in (5, 15) and values is not None:
        now = time.monotonic()
        for offset, value in enumerate(list(values)[: max(count, 1)]):
            coils[address + offset] = bool(value)
            say({"coil": address + offset, "on": bool(value), "at": now})
    return None


async def control() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        ask: dict[str, Any] = json.loads(line)
        for index, level in ask.get("inputs", {}).items():
            inputs[int(index)] = bool(level)
        say({"done": ask})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["tcp", "rtu"])
    parser.add_argument("--port")
    args = parser.parse_args()
    blocks = (
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
        [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)],
    )
    device = SimDevice(id=1, simdata=blocks, action=action)
    server: Any
    if args.transport == "tcp":
        server = ModbusTcpServer(device, address=("127.0.0.1", int(args.port or 0)))
    else:
        server = ModbusSerialServer(device, port=args.port, baudrate=115200)
    serving = asyncio.create_task(server.serve_forever())
    for _ in range(1000):  # until it has bound its port (pymodbus has no event for it)
        if args.transport != "tcp" or getattr(server, "transport", None):
            break
        await asyncio.sleep(0.01)
    if args.transport == "tcp":
        say({"port": server.transport.sockets[0].getsockname()[1]})
    else:
        say({"listening": args.port})
    await asyncio.gather(serving, control())


if __name__ == "__main__":
    asyncio.run(main())
