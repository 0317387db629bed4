"""An OSDP reader: libosdp's peripheral device on an inherited pseudo-terminal descriptor.

``python -m tests.peers.osdp_reader --fd N --address A --key HEX`` (``--key -`` for none: the
default install key). Stdin lines: ``{"card": "hex", "bits": 26}``, ``{"keys": "1234#"}``,
``{"tamper": 1, "power": 0}``. Stdout lines: ``{"started": true}`` once it reads the line,
``{"online": true}`` once the control panel has it in Secure Channel, then each command it received
(``{"command": 2, ...}`` LED, 3 buzzer, 8 keyset).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import osdp

from agent.drivers.osdp import FdChannel  # the channel is glue: the protocol is libosdp's own


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, default=lambda b: b.hex()) + "\n")
    sys.stdout.flush()


def answer(command: dict[str, object]) -> tuple[int, None]:
    say({**command, "at": time.monotonic()})
    return 0, None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--address", type=int, default=1)
    parser.add_argument("--key", default="-")
    args = parser.parse_args()
    key = None if args.key == "-" else bytes.fromhex(args.key)
    caps = osdp.PDCapabilities(
        [
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CardDataFormat, 1, 1),
            (osdp.Capability.CommunicationSecurity, 1, 1),
        ]
    )
    flags = [osdp.LibFlag.EnforceSecure] if key is not None else [osdp.LibFlag.InstallMode]
    pd = osdp.PeripheralDevice(
        osdp.PDInfo(args.address, FdChannel(args.fd), scbk=key, flags=flags),
        caps,
        log_level=osdp.LogLevel.Emergency,
        command_handler=answer,
    )
    pd.start()
    say({"started": True})  # reading the line from now: a panel started before would find stale polls queued

    def announce() -> None:
        while not (pd.is_online() and pd.is_sc_active()):
            time.sleep(0.02)
        say({"online": True})

    threading.Thread(target=announce, daemon=True).start()
    for line in sys.stdin:
        ask = json.loads(line)
        if "card" in ask:
            event = {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "direction": 0,
                "format": osdp.CardFormat.Wiegand,
                "length": ask.get("bits", len(ask["card"]) * 4),
                "data": bytes.fromhex(ask["card"]),
            }
        elif "keys" in ask:
            event = {"event": osdp.Event.KeyPress, "reader_no": 0, "data": ask["keys"].encode()}
        else:
            report = bytes([int(ask.get("tamper", 0)), int(ask.get("power", 0))])
            event = {"event": osdp.Event.Status, "type": osdp.StatusReportType.Local, "report": report}
        pd.submit_event(event)
        say({"submitted": ask, "at": time.monotonic()})
    pd.teardown()


if __name__ == "__main__":
    main()
