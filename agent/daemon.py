"""``edge-agent run``: the long-running daemon, and the composition root that builds it.

The tasks that run, all in one :class:`asyncio.TaskGroup` (``Daemon.serve``):

``outbox``
    the outbox's writer: group commits of new events and PUBACKs (``agent/outbox/``);
``session``
    the MQTT session: connect, subscribe, take documents, pump the outbox, publish the state report,
    reconnect with backoff (``agent/sync/session.py``; its own tasks live and die with a connection);
``housekeeping``
    what the entitlements allow as time passes: gates opened and closed, expiry notices, the trusted
    clock persisted (``agent/runtime/housekeeping.py``);
``local``
    the doors and sensors: input drivers' stimuli through the local logic to the outputs
    (``agent/local/side.py``; each input source runs as a task of the local side's own TaskGroup);
``firmware``
    the one active firmware job through its state machine (``firmware/engine.py``);
``refusals``
    refused documents reported, coalesced in floods (``agent/intake/``);
``restart``
    after a ``reboot`` command: waits for its reply to leave, then stops the daemon to start afresh;
``quarantine``
    once, after a corrupt database was set aside: reports it as an event;
``inventory``
    once, after the start: what the device is made of, for the state report (``agent/runtime/inventory.py``);
``metrics``, ``watchdog``
    when configured: the Prometheus port, systemd's watchdog pings;
``stop``
    waits for SIGTERM, SIGINT, a reboot into a new slot or a restart.

Beside them, the control socket's server (``agent/control/server.py``) serves each connection as a task of
its own, answering with the ops of ``agent/control/ops.py``. Every view of the device's state (the
socket's ``status``, the metrics, the state report) is one :class:`agent.runtime.status.View`.

Each part is handed what it uses: the session its ``[mqtt]`` section and a pump (``agent/sync/pump.py``),
the firmware engine its settings and ports (``firmware/ports.py``, ``agent/runtime/firmware_ports.py``),
the local side its ``[drivers]`` section; the local side, intake, housekeeping, the control ops and the
status view what they use of the device (``agent/ports.py``), the store and ``now`` (trusted time), never
the :class:`~agent.device.Device` itself. The directions are import-linter contracts in pyproject.toml.

Start: open the store, quarantining it if it is corrupt (``agent/store/quarantine.py``), load what is in
force, boot the firmware slot and resume its job, and enforce from the store before the first
connection. Stop (SIGTERM, SIGINT): stop taking work, say ``online: false``, let the writer finish
what is queued, persist the clock and the exact event counter, exit 0, all within a few seconds. A
``reboot`` command stops the same way after its reply is sent (or after a short wait), then the
process replaces itself with a fresh one (``os.execv``).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import signal
import sys
from enum import Enum
from typing import Any, Final

import structlog

from agent.clock import ClockSource
from agent.config import Config
from agent.control.ops import ControlOps
from agent.control.server import ControlServer
from agent.device import Device
from agent.drivers import registry as drivers
from agent.entitlements import policy
from agent.errors import ConfigError, OutboxFull, StoreCorrupt, StoreTooNew
from agent.intake import handlers
from agent.intake.dispatch import Intake
from agent.intake.handlers import After
from agent.intake.poison import PoisonList
from agent.local.side import LocalSide
from agent.outbox import Outbox, Pump
from agent.outbox.events import NewEvent
from agent.runtime import diagnostics, faults, heap, inventory, sdnotify
from agent.runtime.firmware_ports import FirmwareEvents, ResetAfterUpgrade
from agent.runtime.housekeeping import Housekeeping, notices_raised
from agent.runtime.metrics import Metrics, Tls
from agent.runtime.status import Running, View, gather
from agent.runtime.version import build_info
from agent.store.quarantine import Salvage, restore, salvage_and_move
from agent.store.rollback import restore_snapshot
from agent.sync.session import Session
from agent.sync.state import StateReport
from firmware.backends import backend as firmware_backend
from firmware.context import EngineContext
from firmware.engine import Engine
from firmware.settings import firmware_settings
from protocol import logs
from protocol.ed25519 import PublicKey
from protocol.topics import Topics

log = structlog.get_logger("agent.daemon")

_STOP_SECONDS: Final = 3.0
_REPLY_WAIT: Final = 2.0


class Outcome(Enum):
    """How :meth:`Daemon.serve` ended."""

    STOPPED = "stopped"
    RESTART = "restart"
    FAILED = "failed"  # a task ended on its own: a bug; the supervisor starts the daemon again
    REBOOT = "reboot"  # a firmware slot is to be booted: exit EXIT_REBOOT, the supervisor starts us again


class Daemon:
    """The device's daemon: holdings, outbox, session, control socket, housekeeping."""

    def __init__(
        self,
        config: Config,
        device: Device,
        outbox: Outbox,
        poison: PoisonList,
        raised: set[str],
        quarantined: Salvage | None,
    ) -> None:
        self.config = config
        self.device = device
        self.outbox = outbox
        self.topics = Topics(config.mqtt.topic_prefix, config.device_id)
        self.stop = asyncio.Event()
        self._outcome = Outcome.STOPPED
        self._quarantined = quarantined
        self._restart_asked = asyncio.Event()
        self._control_gid: int | None = None
        self.housekeeping = Housekeeping(
            device, device.store, device.clock.now, outbox, raised, state_changed=lambda: self.session.republish_state()
        )
        hardware = drivers.build(config.drivers, device.clock.now, config.data_dir)
        self.local = LocalSide(
            config.drivers, device, device.store, device.clock.now, outbox, hardware.outputs, hardware.inputs
        )
        connected = asyncio.Event()  # set while the session is subscribed
        self.firmware = Engine(
            EngineContext(
                firmware_settings(config),
                device.store,
                FirmwareEvents(outbox),
                device.clock.now,
                config.data_dir,
                backend=firmware_backend(config),
                connected=connected,
                on_change=self._firmware_changed,
                on_reboot=self._reboot,
                reset=ResetAfterUpgrade(outbox),
                busy=self.local.busy,
                zone=self.local.zone,
                faults=faults,
            )
        )
        table = handlers.table(
            admit_job=self.firmware.admit_in,
            commands_handler=handlers.Commands(outbox, device.decide, device.clock.now, self._diagnostics),
        )
        self.intake = Intake(device.accept, device.store, device.clock.now, outbox, poison, table, after=self._taken)
        self.session = Session(
            config.mqtt,
            config.device_id,
            self.topics,
            handle=self.intake.take,
            pump=Pump(outbox),
            state=self._state_report,
            clock=device.clock,
            connected=connected,
        )
        self.metrics = None if config.metrics.port is None else Metrics(self._metrics_sample, build_info(config))
        self.inventory: dict[str, Any] | None = None  # agent/runtime/inventory.py, once collected
        self.ops = ControlOps(device.decide, device.clock.now, outbox, self.local, self.view, self.metrics)

    @classmethod
    async def open(cls, config: Config, roots: tuple[PublicKey, ...], source: ClockSource) -> Daemon:
        """Open everything the daemon holds; quarantine a corrupt database and start afresh."""
        quarantined = None
        try:
            device = await Device.open(config, roots, source, daemon=True)
        except StoreTooNew:  # newer firmware migrated the database, then rolled back to us
            restored = await asyncio.to_thread(restore_snapshot, config.data_dir)
            if restored is None:
                raise
            log.warning(
                "store_restored_after_rollback",
                snapshot=str(restored.snapshot),
                moved_to=str(restored.moved_to),
                events_carried=restored.events,
                jobs_carried=restored.jobs,
            )
            device = await Device.open(config, roots, source, daemon=True)
        except StoreCorrupt as exc:
            quarantined = await asyncio.to_thread(salvage_and_move, config.data_dir)
            log.error(
                "store_quarantined",
                error=str(exc),
                moved_to=str(quarantined.moved_to),
                salvaged_events=len(quarantined.outbox),
            )
            await restore(config, quarantined)
            device = await Device.open(config, roots, source, daemon=True)
        try:
            outbox = await Outbox.open(
                device.store,
                config.device_id,
                device.clock,
                data_dir=config.data_dir,
                max_events=config.outbox.max_events,
            )
            raised = await notices_raised(device.store)
            poison = await PoisonList.load(device.store)
        except BaseException:
            await device.close()
            raise
        try:
            daemon = cls(config, device, outbox, poison, raised, quarantined)  # drivers are built here: ConfigError
            if config.control.group is not None:
                try:
                    daemon._control_gid = grp.getgrnam(config.control.group).gr_gid
                except KeyError:
                    raise ConfigError("control.group", f"no group named {config.control.group!r}") from None
        except BaseException:
            await device.close()
            raise
        return daemon

    async def view(self) -> View:
        """The device's state now: what the control socket, the metrics and the state report show."""
        reserve = self.device.store.reserve
        running = Running(
            depth=self.outbox.depth,
            held=await self.outbox.held(),
            evicted=dict(self.outbox.evicted),
            reserve=None if reserve is None else reserve.figures(),
            connected=self.session.connected.is_set(),
            connections=self.session.connections,
            failures=self.session.failures,
            dropped=self.session.dropped,
            failed=self.intake.failed,
            refused=self.intake.refused,
            drivers=self.local.status(),
            inventory=self.inventory,
        )
        return gather(self.device, await self.firmware.status(), running)

    async def _inventory(self) -> None:
        """Collect the inventory now and every ``[inventory] interval_seconds``; the state goes out again
        when it changed."""
        while True:
            try:
                found = await inventory.collect(self.config)
            except Exception as exc:  # a defect in collecting: the state report goes on without it
                log.exception("inventory_failed", error=repr(exc)[:200])
            else:
                if found != self.inventory:
                    self.inventory = found
                    self.session.republish_state()
            await asyncio.sleep(self.config.inventory.interval_seconds)

    def _diagnostics(self, lines: int) -> dict[str, Any]:
        """collect_diagnostics' report: from memory and the file system, never the store (it runs inside
        the command's transaction)."""
        return diagnostics.collect(
            self.config,
            self.device.clock.now(),  # trusted time: the wall clock is checked against it
            self.session.connected.is_set(),
            self.local.status(),
            lines,
        )

    async def _metrics_sample(self) -> dict[str, Any]:
        return (await self.view()).sample()

    async def _state_report(self) -> StateReport:
        return (await self.view()).state_report()

    async def _watchdog(self, period: float) -> None:
        """Ping systemd's watchdog from the event loop: a loop that hangs stops the pings."""
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(period)

    def _firmware_changed(self) -> None:
        self.session.republish_state()
        self.local.changed()  # a reset after upgrade wiped credentials and settings

    def _reboot(self) -> None:
        self._outcome = Outcome.REBOOT
        self.stop.set()

    def _changed(self) -> None:
        self.housekeeping.poke()
        self.local.changed()

    def _taken(self, typ: str, after: After) -> None:
        """A document committed (the intake table's handler said what else to do)."""
        self._changed()
        if after.firmware:
            self.firmware.wake()
        if after.resync:
            self.session.republish_state(force=True)
        if after.restart:
            self._restart()

    # -- running -------------------------------------------------------------------------------------
    async def serve(self) -> Outcome:
        """Run until :attr:`stop` is set; then stop cleanly and say how it ended."""
        control = ControlServer(self.config.control_socket, self.ops.table(), group=self._control_gid)
        server: asyncio.Server | None = None
        try:  # whatever fails from here, the store is closed: its thread would keep the process from exiting
            server = await control.start()
            self.firmware.boot()  # what the bootloader chose is what runs: a pending try is spent now
            await self.firmware.resume()
            await self.housekeeping.refresh_when_possible()  # enforce from the store before the first connection
            log.info(
                "daemon_started",
                device_id=self.config.device_id,
                mode=policy.mode(self.device.entitlements, self.device.clock.now()),
            )
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self.outbox.run(), name="outbox")
                if self._quarantined is not None:  # its durability needs the writer running
                    tasks.create_task(self._report_quarantine(self._quarantined), name="quarantine")
                working = [
                    tasks.create_task(self.session.run(), name="session"),
                    tasks.create_task(self.housekeeping.run(), name="housekeeping"),
                    tasks.create_task(self.local.run(), name="local"),
                    tasks.create_task(self.firmware.run(), name="firmware"),
                    tasks.create_task(self.intake.run(), name="refusals"),
                    tasks.create_task(self._restart_when_asked(), name="restart"),
                    tasks.create_task(self._inventory(), name="inventory"),
                ]
                m = self.config.metrics
                if self.metrics is not None and m.port is not None:
                    tls = (
                        None if m.tls_cert is None or m.tls_key is None else Tls(m.tls_cert, m.tls_key, m.tls_client_ca)
                    )
                    working.append(tasks.create_task(self.metrics.serve(m.address, m.port, tls), name="metrics"))
                period = sdnotify.watchdog_period()
                if period is not None:
                    working.append(tasks.create_task(self._watchdog(period), name="watchdog"))
                stopping = tasks.create_task(self.stop.wait(), name="stop")
                sdnotify.notify(f"READY=1\nSTATUS=serving {self.config.device_id}")
                done, _ = await asyncio.wait([stopping, writer, *working], return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stopping}:  # only stop may end first: anything else is a bug to see
                    failure = None if task.cancelled() else task.exception()
                    log.error("daemon_task_ended", task=task.get_name(), error=repr(failure))
                    self._outcome = Outcome.FAILED
                stopping.cancel()
                sdnotify.notify("STOPPING=1")
                server.close()
                for task in working:
                    task.cancel()
                await asyncio.wait(working, timeout=_STOP_SECONDS)
                try:
                    await asyncio.wait_for(self.outbox.close(), _STOP_SECONDS)
                except TimeoutError:  # exit anyway: transactions are cancellation-safe
                    log.error("outbox_close_timeout", seconds=_STOP_SECONDS)
                    writer.cancel()
        finally:
            if server is not None:  # ours to remove (not another daemon's, when that one refused this start)
                server.close()
                with contextlib.suppress(OSError):
                    control.path.unlink()
            await self.device.close()
        log.info("daemon_stopped", outcome=self._outcome.value)
        return self._outcome

    def _restart(self) -> None:
        self._restart_asked.set()

    async def _restart_when_asked(self) -> None:
        """A ``reboot`` command: let its reply leave (or wait a little), then stop to start afresh."""
        await self._restart_asked.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_REPLY_WAIT):
                while True:
                    self.outbox.drained.clear()
                    if not (await self.outbox.replies_queued() and self.session.connected.is_set()):
                        break
                    await self.outbox.drained.wait()
        self._outcome = Outcome.RESTART
        self.stop.set()
        await asyncio.Event().wait()  # stopped with the others: ending on its own would read as a failure

    async def _report_quarantine(self, salvage: Salvage) -> None:
        data = {"moved_to": salvage.moved_to.name, "salvaged_events": len(salvage.outbox)}
        with contextlib.suppress(OutboxFull):
            await self.outbox.add(NewEvent("health", "store_quarantined", "store", data, self.device.clock.now()))


def log_tasks() -> None:
    """Log every task and where it waits (SIGUSR1): how to see what a stuck daemon is waiting for."""
    for task in asyncio.all_tasks():
        frames: list[str] = []
        awaited: Any = task.get_coro()
        while (frame := getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)) is not None:
            frames.append(f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        log.warning("task_dump", task=task.get_name(), frames=frames, awaiting=repr(awaited)[:200])


async def run(config: Config, roots: tuple[PublicKey, ...], source: ClockSource) -> Outcome:
    """Open the daemon, serve until SIGTERM or SIGINT, stop cleanly. SIGUSR1 logs its tasks."""
    daemon = await Daemon.open(config, roots, source)
    heap.freeze()  # what start-up built stays; full collections no longer walk it (agent/runtime/heap.py)
    loop = asyncio.get_running_loop()
    logs.quiet_library_defects(loop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_tasks)
    try:
        return await daemon.serve()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(signum)


def restart_in_place() -> None:
    """Replace this process with a fresh run of the same command (the ``reboot`` command)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)  # noqa: S606 -- the same interpreter and arguments
