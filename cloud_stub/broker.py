"""The embedded MQTT broker (amqtt): the demo's default and the tests' first broker.

amqtt 0.12 speaks MQTT 3.1.1 only. With anonymous access allowed it keeps no persistent sessions and
queues nothing for offline clients, so clients here must give a user name: with a password file
(``user:argon2-hash`` lines, :func:`password_line`) passwords are checked; without one any named
client is let in. It cannot require client certificates, and after a client crash it does not send
again what the client had not acknowledged (docs/sync.md). Mosquitto is the reference broker.

``python -m cloud_stub.broker --port N [--password-file F]`` runs it as its own process (tests kill it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from amqtt.broker import Broker


def password_line(user: str, password: str) -> str:
    """A line of an amqtt password file: the user and an Argon2 hash of the password."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    return f"{user}:{PasswordHash((Argon2Hasher(),)).hash(password)}"


def broker_config(
    host: str, port: int, password_file: Path | None = None, tls: tuple[Path, Path] | None = None
) -> dict[str, Any]:
    """amqtt configuration: one TCP listener (TLS with ``(certfile, keyfile)``), named clients only, no $SYS."""
    auth: dict[str, Any] = (
        {"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(password_file)}}
        if password_file is not None
        else {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}}
    )
    listener: dict[str, Any] = {"type": "tcp", "bind": f"{host}:{port}"}
    if tls is not None:
        listener |= {"ssl": True, "certfile": str(tls[0]), "keyfile": str(tls[1])}
    return {"listeners": {"default": listener}, "plugins": auth}


async def start(
    host: str, port: int, password_file: Path | None = None, tls: tuple[Path, Path] | None = None
) -> Broker:
    """Start an amqtt broker in this event loop; ``await broker.shutdown()`` to stop it."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = Broker(broker_config(host, port, password_file, tls))
    await broker.start()
    return broker


async def _serve(host: str, port: int, password_file: Path | None, tls: tuple[Path, Path] | None) -> None:
    broker = await start(host, port, password_file, tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening {host}:{port}", flush=True)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    """Run an amqtt broker until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password-file", type=Path)
    parser.add_argument("--certfile", type=Path, help="TLS: the server's certificate (with --keyfile)")
    parser.add_argument("--keyfile", type=Path)
    args = parser.parse_args()
    tls = (args.certfile, args.keyfile) if args.certfile and args.keyfile else None
    asyncio.run(_serve(args.host, args.port, args.password_file, tls))


if __name__ == "__main__":
    main()
