"""``smartplus-cloud serve``: the cloud's processes in one program, from one configuration
(``cloud_stub/serveconfig.py``): the embedded broker (when no broker is given), the image server, the
HTTP API (when a port is given) and the issuer and ingest (``cloud_stub/service.py``).

Whatever cannot start (a port in use, the ledger unreachable or at an older schema, a key file the ledger
names missing) is one line and exit 2, before anything is served. SIGTERM or SIGINT stops it gracefully:
the fleet side first (a pass in hand finishes its transaction), then the API (open requests get a few
seconds), the image server and the broker; exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import ssl
import sys
from typing import Any

import structlog

from cloud_stub.errors import CloudError
from cloud_stub.serveconfig import ServeConfig

log = structlog.get_logger("cloud_stub.serving")


def _tls(config: ServeConfig) -> ssl.SSLContext | None:
    broker = config.broker
    if broker.ca_file is None:
        return None
    context = ssl.create_default_context(cafile=str(broker.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if broker.cert_file is not None and broker.key_file is not None:
        context.load_cert_chain(str(broker.cert_file), str(broker.key_file))
    return context


def _say(message: str) -> None:
    print(f"smartplus-cloud: {message}", file=sys.stderr, flush=True)


def run(config: ServeConfig) -> int:
    """Serve until stopped; the exit code (0 stopped, 2 could not start)."""
    from protocol import logs

    logs.configure("info")
    try:
        return asyncio.run(_serve(config))
    except _CannotStart as exc:
        _say(f"error: {exc}")
        return 2


class _CannotStart(Exception):
    pass


async def _serve(config: ServeConfig) -> int:
    from cloud_stub import asgi
    from cloud_stub.http import Served
    from cloud_stub.images import ImageServer
    from cloud_stub.ledger import Ledger
    from cloud_stub.operations import keys
    from cloud_stub.service import CloudService
    from protocol import logs

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    logs.quiet_library_defects(loop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    home = config.keys_home
    started: list[Any] = []  # what to stop, in the reverse order
    ledgers: list[Ledger] = []
    try:
        try:
            ledger = Ledger.open(config.ledger)
            ledgers.append(ledger)
            missing = ledger.read(lambda uow: keys.missing_files(uow, home / "keys"))
            if missing:
                raise _CannotStart(f"key files the ledger names are missing from {home / 'keys'}: {', '.join(missing)}")
            (home / "images").mkdir(parents=True, exist_ok=True)
            addresses = config.broker.addresses() or [("127.0.0.1", config.broker.embedded_port)]
            if not config.broker.urls:
                started.append(await _embedded(*addresses[0]))
            images = await ImageServer(home / "images", config.images.host, config.images.port).start()
            started.append(images)
            served_api = None
            mailer = _mailer(config, ledger)
            if config.api.port is not None:
                api_ledger = Ledger.open(config.ledger)  # its own connections: its writes are news to the issuer
                ledgers.append(api_ledger)
                _thread_budget(config.api.threads)
                web = asgi.application(api_ledger, tls=config.api.tls, poke=mailer.poke if mailer else None)
                served_api = await Served(web, config.api.host, config.api.port).start()
                started.append(served_api)
            password = config.broker.password.get_secret_value() if config.broker.password else None
            (host, port), *fallbacks = addresses
            service = CloudService(
                ledger, home / "keys", host=host, port=port, username=config.broker.username, password=password,
                prefix=config.broker.prefix, image_base=config.images.base or images.url(""),
                interval=config.interval, offline_days=config.offline_days, fallbacks=fallbacks, tls=_tls(config),
                client_id=config.broker.client_id,
            )  # fmt: skip
        except (CloudError, OSError, ssl.SSLError) as exc:
            raise _CannotStart(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        scheme = "mqtts" if config.broker.ca_file else "mqtt"
        where = f", API {served_api.url('v1/')}, portal {served_api.url('')}" if served_api is not None else ""
        _say(
            f"serving: broker {scheme}://{host}:{port}, images {config.images.base or images.url('')}{where},"
            f" ledger {ledger.database.engine.url.database if ledger.database.is_sqlite else 'PostgreSQL'}"
        )
        fleet_side = asyncio.create_task(service.run())
        mail_side = asyncio.create_task(mailer.run()) if mailer is not None else None
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({fleet_side, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for side in (fleet_side, mail_side):
            if side is not None:
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side
        stopped.cancel()
        log.info("serve_stopped")
        return 0
    finally:
        for each in reversed(started):
            with contextlib.suppress(Exception):
                await (each.shutdown() if hasattr(each, "shutdown") else each.stop())
        for each in ledgers:
            each.close()


def _mailer(config: ServeConfig, ledger: Any) -> Any:
    """The mail sender for ``[mail] relay`` (None without one: mail waits in the ledger)."""
    from cloud_stub.mail import Mailer, Relay

    address = config.mail.address()
    if address is None:
        return None
    password = config.mail.password.get_secret_value() if config.mail.password else None
    relay = Relay(address[0], address[1], config.mail.sender, config.mail.starttls, config.mail.username, password)
    return Mailer(ledger, relay)


async def _embedded(host: str, port: int) -> Any:
    try:
        from cloud_stub.broker import start
    except ImportError as exc:
        raise _CannotStart(
            f"the embedded broker needs amqtt ({exc.name or exc}): pip install 'smartplus-edge[embedded]',"
            " or give --broker mqtt://HOST:PORT"
        ) from None
    try:
        return await start(host, port, None, None)
    except Exception as exc:  # amqtt reports a port in use as its own BrokerError
        raise _CannotStart(f"the embedded broker cannot listen on {host}:{port}: {exc}") from None


def run_api(ledger: str, host: str, port: int, workers: int, threads: int = 2) -> int:
    """The HTTP API alone: ``workers`` processes forked after the port is bound, each with its own ledger
    connections and event loop, and ``threads`` requests at a time at the ledger. The first process accepts
    the connections and deals them to the workers in turn (:func:`cloud_stub.http.deal`); on SIGTERM or
    SIGINT it stops accepting, passes the signal on and waits; exit 0 once all stopped cleanly."""
    import os
    import socket

    from cloud_stub.http import Dealt, deal, listening
    from cloud_stub.ledger import Ledger
    from protocol import logs

    logs.configure("info")
    Ledger.open(ledger).close()  # reachable, at the current schema: said once, before any worker starts
    sock = listening(host, port)
    _say(f"serving the API at http://{host}:{sock.getsockname()[1]}/v1/ ({workers} worker process(es))")
    if workers == 1:
        return asyncio.run(_api_worker(ledger, sock, threads))
    children: list[int] = []
    channels: list[socket.socket] = []
    for _ in range(workers):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # a worker: its own event loop and database connections, made after the fork
            for each in (sock, mine, *channels):
                each.close()
            os._exit(asyncio.run(_api_worker(ledger, theirs, threads, dealt=True)))
        theirs.close()
        children.append(pid)
        channels.append(mine)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)
        raise Dealt

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    sock.setblocking(True)
    with contextlib.suppress(Dealt):
        deal(sock, channels)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)  # passed on already: now only waiting
    sock.close()
    for channel in channels:
        channel.close()
    codes = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in children]
    return 0 if all(code == 0 for code in codes) else 1


def _thread_budget(threads: int) -> None:
    """At most ``threads`` requests do their ledger work at once in this process (the API's handlers run in
    anyio's worker threads; its default is 40). The work is mostly Python, holding the GIL: threads beyond a
    couple add no speed, only a queue for the GIL, whose 5 ms turns pile up at the tail (bench api at 20
    clients: p99 0.7 to 1.1 s with 40 threads, 32 to 55 ms with 2; docs/performance.md)."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = threads


async def _api_worker(ledger_where: str, sock: Any, threads: int, *, dealt: bool = False) -> int:
    from cloud_stub import asgi
    from cloud_stub.http import Served
    from cloud_stub.ledger import Ledger

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        book = Ledger.open(ledger_where)
    except CloudError as exc:
        _say(f"error: {exc}")
        return 2
    try:
        _thread_budget(threads)
        web = asgi.application(book)
        served = await (Served(web, dealt=sock) if dealt else Served(web, sock=sock)).start()
        gc.freeze()  # what start-up made stays: the collector no longer walks it (~0.1 s pauses at random requests)
        await stop.wait()
        await served.stop()
    finally:
        book.close()
    return 0
