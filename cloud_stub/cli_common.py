"""What every ``smartplus-cloud`` command shares: the context (the ledger, who acts, the clock, the output),
running one operation with the cloud's errors mapped to exit codes, and the parsers of dates and items.

The CLI is an adapter: it builds an operation's typed request from its options, runs the operation
(``cloud_stub/operations``) as the actor ``--as`` names (the platform operator without it) and prints the
typed result. It holds no rule and runs no SQL.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from cloud_stub.ledger import Ledger
    from cloud_stub.operations.authority import Actor

T = TypeVar("T")
# Refusals that are malformed or unknown input rather than a rule of the vendor's: exit 2, as bad arguments.
BAD_ARGUMENTS: Final = frozenset({"not_found", "bad_mac", "bad_timezone", "bad_setting", "bad_account"})
DEFAULT_LEDGER: Final = "cloud-data/ledger.db"


class Context:
    """The global options: ``--ledger`` (and ``--home``), ``--as``, ``--json`` and ``--now`` (the clock)."""

    def __init__(
        self, ledger: str, actor: str | None, as_json: bool, now: float | None = None, home: Path | None = None
    ) -> None:
        self.where, self.actor, self.as_json, self._now, self._home = ledger, actor, as_json, now, home

    @property
    def is_url(self) -> bool:
        return "://" in self.where

    @property
    def home(self) -> Path:
        """Where keys and images live: ``--home``, else beside a SQLite ledger, else ./cloud-data."""
        if self._home is not None:
            return self._home
        return Path("cloud-data") if self.is_url else Path(self.where).parent

    @property
    def path(self) -> str:
        return self.where

    def now(self) -> float:
        return self._now if self._now is not None else time.time()

    def ledger(self) -> Ledger:
        from cloud_stub.ledger import Ledger

        return Ledger.open(self.where, clock=self.now)

    def acting(self, ledger: Ledger) -> Actor:
        """Who acts: the account ``--as`` names, else the platform operator."""
        from cloud_stub.operations import authority

        if not self.actor:
            return authority.OPERATOR
        return ledger.read(lambda uow: authority.resolve(uow, str(self.actor)))

    def who(self) -> str:
        if not self.actor:
            fail("this command acts as an account: give --as ACCOUNT")
        return self.actor


def fail(message: str) -> NoReturn:
    """A bad argument: one line on stderr, exit 2."""
    click.echo(f"smartplus-cloud: error: {message}", err=True)
    sys.exit(2)


def request(ctx: click.Context, model: Callable[..., T], /, **fields: Any) -> T:
    """An operation's request from the options; a field that does not fit is one line, exit 2 (a field
    refused by one of the vendor's rules, a malformed MAC say, is that rule's refusal)."""
    from pydantic import ValidationError

    from cloud_stub.errors import Refused

    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        seed = (first.get("ctx") or {}).get("seed")
        if seed:
            refuse(ctx, Refused(first["type"], describe(exc), str(seed)))
        fail(describe(exc))


def refuse(ctx: click.Context, refused: Any) -> NoReturn:
    """A refusal: its rule and seed (JSON with --json), exit 1; 2 for an unknown id or a malformed value."""
    state: Context = ctx.obj
    if state.as_json:
        click.echo(json.dumps({"ok": False, "rule": refused.rule, "seed": refused.seed, "message": str(refused)}))
    else:
        click.echo(f"smartplus-cloud: refused: {refused}", err=True)
    sys.exit(2 if refused.rule in BAD_ARGUMENTS else 1)


def describe(exc: Any) -> str:
    """One line naming the first field a pydantic model refused."""
    from cloud_stub.errors import first_invalid

    where, message = first_invalid(exc)
    return f"{where}: {message}" if where else message


def run(
    ctx: click.Context, work: Callable[[Ledger, Actor], Any], *, render: Callable[[Any], str] | None = None
) -> None:
    """Open the ledger, run ``work(ledger, actor)``, print its result (JSON, or lines for a person).
    A refusal exits 1 with its rule and seed; an unknown id and other bad arguments exit 2, in one line."""
    from cloud_stub.errors import BadRequest, LedgerError, Refused

    state: Context = ctx.obj
    try:
        ledger = state.ledger()
    except LedgerError as exc:
        fail(str(exc))
    try:
        result = work(ledger, state.acting(ledger))
    except Refused as refused:
        refuse(ctx, refused)
    except (BadRequest, LedgerError) as exc:
        fail(str(exc))
    finally:
        ledger.close()
    shown = _plain(result)
    if state.as_json:
        click.echo(json.dumps({"ok": True, "result": shown}, default=str))
    elif render is not None:
        click.echo(render(shown))
    elif isinstance(shown, list):
        for row in shown:
            click.echo(json.dumps(row, default=str) if not isinstance(row, str) else row)
    elif shown is not None:
        click.echo(shown if isinstance(shown, str) else json.dumps(shown, indent=2, default=str))


def _plain(result: Any) -> Any:
    """A result as JSON-ready data (pydantic models dumped)."""
    from pydantic import BaseModel

    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [_plain(r) for r in result]
    return result


def when(epoch: float | None) -> str:
    """An instant for a person: ``2026-12-01 09:00:00 UTC``."""
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def moment(text: str, option: str) -> float:
    """An ISO 8601 instant with its zone (``2027-01-31T09:00:00+08:00``) as epoch seconds."""
    from protocol.timefmt import epoch_of

    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 time (2027-01-31T09:00:00+08:00)")
    if instant.tzinfo is None:
        fail(f"{option} {text!r} needs a time zone (Z or +08:00)")
    return epoch_of(instant)


def instant(text: str, option: str) -> datetime:
    """An ISO 8601 instant with its zone, as an aware datetime."""
    return datetime.fromtimestamp(moment(text, option), UTC)


def day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        fail(f"{option} {text!r} is not a date (YYYY-MM-DD): {exc}")


def items(values: tuple[str, ...]) -> list[str]:
    """``--item`` values, each ``SITE/SERVICE/SUBJECT``."""
    for value in values:
        parts = value.split("/", 2)
        if len(parts) != 3 or not all(parts):
            fail(f"--item {value!r} is not SITE/SERVICE/SUBJECT (subject: project, door:ID, account:ID, ...)")
    return list(values)


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


def json_option(command: click.Command) -> click.Command:
    """``--json`` after the subcommand too (``payments --json``), as well as before it."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Context).as_json = True  # type: ignore[union-attr]

    command.params.append(
        click.Option(["--json"], is_flag=True, expose_value=False, callback=set_json, is_eager=False,
                     help="Print one JSON object.")
    )  # fmt: skip
    return command
