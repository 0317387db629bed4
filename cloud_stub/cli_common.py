"""What every ``smartplus-cloud`` command shares: the context (ledger, acting account, clock, output), running
one operation on the ledger with refusals mapped to exit codes, and the parsers of dates and items."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click


class Context:
    """The global options: ``--ledger``, ``--as``, ``--json`` and ``--now`` (the clock)."""

    def __init__(self, ledger_path: Path, actor: str | None, as_json: bool, now: float | None = None) -> None:
        self.path, self.actor, self.as_json, self._now = ledger_path, actor, as_json, now

    @property
    def home(self) -> Path:
        return self.path.parent

    def now(self) -> float:
        return self._now if self._now is not None else time.time()

    def ledger(self) -> Any:
        from cloud_stub.ledger import Ledger

        self.home.mkdir(parents=True, exist_ok=True)
        return Ledger(self.path)

    def who(self) -> str:
        if not self.actor:
            fail("this command acts as an account: give --as ACCOUNT")
        return self.actor


# Refusals that are malformed or unknown input rather than a rule of the vendor's: they exit 2, as bad arguments.
BAD_ARGUMENTS = frozenset({"not_found", "bad_mac", "bad_timezone", "bad_setting"})


def fail(message: str) -> NoReturn:
    """A bad argument: one line on stderr, exit 2."""
    click.echo(f"smartplus-cloud: error: {message}", err=True)
    sys.exit(2)


def run(ctx: click.Context, work: Any) -> None:
    """Open the ledger, run ``work(ledger)``, print its result (JSON or lines). A refusal exits 1 with its
    rule and seed; an unknown id (``not_found``) and other bad arguments exit 2, in one line."""
    from cloud_stub.rules import Refused

    state: Context = ctx.obj
    ledger = state.ledger()
    try:
        result = work(ledger)
    except Refused as refused:
        if state.as_json:
            click.echo(json.dumps({"ok": False, "rule": refused.rule, "seed": refused.seed, "message": str(refused)}))
        else:
            click.echo(f"smartplus-cloud: refused: {refused}", err=True)
        sys.exit(2 if refused.rule in BAD_ARGUMENTS else 1)
    except (ValueError, sqlite3.IntegrityError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    finally:
        ledger.close()
    if state.as_json:
        click.echo(json.dumps({"ok": True, "result": result}, default=str))
    elif isinstance(result, list):
        for row in result:
            click.echo(json.dumps(row, default=str) if not isinstance(row, str) else row)
    elif result is not None:
        click.echo(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))


def moment(text: str, option: str) -> float:
    """An ISO 8601 instant with its zone (``2027-01-31T09:00:00+08:00``) as epoch seconds."""
    from protocol.timefmt import epoch_of

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 time (2027-01-31T09:00:00+08:00)")
    if when.tzinfo is None:
        fail(f"{option} {text!r} needs a time zone (Z or +08:00)")
    return epoch_of(when)


def day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        fail(f"{option} {text!r} is not a date (YYYY-MM-DD): {exc}")


def items(values: tuple[str, ...]) -> list[tuple[str, str, str]]:
    chosen = []
    for value in values:
        parts = value.split("/", 2)
        if len(parts) != 3 or not all(parts):
            fail(f"--item {value!r} is not PROJECT/SERVICE/SUBJECT (subject: project, door:ID, account:ID, ...)")
        chosen.append((parts[0], parts[1], parts[2]))
    return chosen


def assignments(values: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value that reads as JSON (true, 12, "x") is taken as such, else as text."""
    found: dict[str, Any] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(f"{value!r} is not KEY=VALUE")
        try:
            found[key] = json.loads(text)
        except ValueError:
            found[key] = text
    return found
