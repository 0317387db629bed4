"""What the firmware engine is handed (docs/firmware.md "Theory of operation"): a store for its own table,
a place for its events, and the points where tests crash or fail it. Protocols, so that firmware/ imports
nothing of the agent but its leaf modules (the errors, and the durable files the file slots write: an
import-linter contract in pyproject.toml); the daemon hands in the agent's store and outbox
(agent/runtime/firmware_ports.py) and its crash and fault points (agent/runtime/faults.py)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Transaction(Protocol):
    """One transaction of the device's database: the engine's rows and its events commit together."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


class Store(Protocol):
    """The device's database: ``transaction("DEFERRED")`` to read, the default to write."""

    def transaction(self, mode: str = ...) -> AbstractAsyncContextManager[Transaction]: ...


class Events(Protocol):
    """Where the engine's ``firmware`` events go, to be sent to the cloud and never lost."""

    async def add_in(self, tx: Transaction, kind: str, data: dict[str, Any], at: float) -> None:
        """Queue the event in ``tx``: it is kept if and only if the transaction commits."""

    async def add(self, kind: str, data: dict[str, Any], at: float) -> None:
        """Queue the event in a transaction of its own."""


class Faults(Protocol):
    """Crash and fault points (``agent/runtime/faults.py`` in the daemon): where tests kill the daemon, or
    make a step fail, at a chosen instant. A module with these two functions is one."""

    def crash_point(self, name: str) -> None: ...

    def fault_point(self, name: str) -> None: ...


class NoFaults:
    """No crash or fault points (the engine's default: a test that wants them hands the agent's)."""

    def crash_point(self, name: str) -> None:
        """Nothing."""

    def fault_point(self, name: str) -> None:
        """Nothing."""
