"""``edge-agent``: the device's command line. Names, outputs and exit codes are relied on by tools
outside the project (issue "Agent core", item 6): change none of them.

Exit codes: 0 success (``check``: allowed); 1 refused or denied; 2 an error (bad config, bad
arguments, unusable store), printed as one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any, NoReturn, TypeVar

import click

from agent.errors import BadRequest, ConfigError, ControlError, DocumentRefused, EdgeAgentError

T = TypeVar("T")

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 2
STATUS_SECONDS = 5.0  # edge-agent status waits this long for a running daemon before reading the store


def _fail(message: str) -> NoReturn:
    click.echo(f"edge-agent: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _with_device(config_file: str | None, work: Callable[[Any], Awaitable[T]], *, whole: bool = False) -> T:
    """Load the config, open the device, run ``work(device)``, close; map errors to exit 2.

    Only the keys every command needs are read (``agent/core_config.py``) unless ``whole``: the daemon's
    sections are the daemon's, and building their models was a third of a cold ``check``.
    """
    from agent.clock import ClockSource
    from agent.core_config import CoreConfig, config_path, load_core_config, load_trust_roots
    from agent.device import Device
    from protocol import logs

    async def run() -> T:
        path = config_path(config_file, os.environ)
        config: CoreConfig
        if whole:
            from agent.config import load_config

            config = load_config(path, os.environ)
        else:
            config = load_core_config(path, os.environ)
        logs.configure(config.log_level)
        device = await Device.open(config, load_trust_roots(config), ClockSource.system())
        try:
            return await work(device)
        finally:
            await device.close()

    try:
        return asyncio.run(run())
    except ConfigError as exc:
        _fail(f"config error: {exc}")
    except (BadRequest, DocumentRefused):
        raise
    except EdgeAgentError as exc:
        _fail(f"error: {exc}")


config_option = click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="The agent's TOML configuration (default: $EDGE_AGENT_CONFIG).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smartplus-edge", prog_name="edge-agent", message="%(prog)s %(version)s")
def main() -> None:
    """The intercom device agent: signed entitlements, enforced locally."""


def _read_document(source: str) -> bytes:
    from protocol.jws import MAX_DOCUMENT_BYTES

    stream: IO[bytes]
    try:
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        _fail(f"error: cannot read {source}: {exc.strerror or exc}")
    with stream:
        return stream.read(MAX_DOCUMENT_BYTES + 1)  # one byte more is enough to refuse it as oversized


@main.command()
@click.argument("source", metavar="FILE|-")
@config_option
@json_option
def accept(source: str, config_file: str | None, as_json: bool) -> None:
    """Verify a signed document (any typ) and, if valid, store it as if it came over MQTT.

    Exit 0 when accepted (or already in force), 1 with the reason when refused.
    """
    from agent.ports import Accepted

    token = _read_document(source)
    try:
        outcome = _with_device(config_file, lambda device: device.accept(token))
    except DocumentRefused as refused:
        import structlog

        structlog.get_logger("agent.cli").warning("document_refused", reason=refused.reason, detail=refused.detail)
        if as_json:
            click.echo(json.dumps({"result": "refused", "reason": refused.reason, "detail": refused.detail}))
        else:
            click.echo(f"refused: {refused.reason}: {refused.detail}")
        sys.exit(EXIT_REFUSED)
    result = "accepted" if isinstance(outcome, Accepted) else "already_in_force"
    if as_json:
        click.echo(json.dumps({"result": result, "typ": outcome.typ, "seq": outcome.seq}))
    elif result == "accepted":
        click.echo(f"accepted: {outcome.typ} seq {outcome.seq}")
    else:
        click.echo(f"already in force: {outcome.typ} seq {outcome.seq}")


@main.command()
@click.argument("action")
@click.argument("subject", required=False)
@config_option
@json_option
def check(action: str, subject: str | None, config_file: str | None, as_json: bool) -> None:
    """Whether ACTION on SUBJECT is allowed now: exit 0 allowed, 1 denied, 2 error.

    SUBJECT is door:<id>, account:<id>, apartment:<id>, or a count for attendance.
    """
    from protocol.timefmt import to_rfc3339

    async def decide(device: Any) -> Any:
        return device.decide(action, subject)

    try:
        decision = _with_device(config_file, decide)
    except BadRequest as exc:
        _fail(f"error: {exc}")
    if as_json:
        click.echo(json.dumps(decision.as_json(action, subject)))
    else:
        verdict = "allowed" if decision.allowed else "denied"
        until = f" until {to_rfc3339(decision.expires)}" if decision.expires is not None else ""
        click.echo(f"{verdict} {decision.reason}{until}: {decision.detail}")
    sys.exit(EXIT_OK if decision.allowed else EXIT_REFUSED)


def _daemon_status(config_file: str | None) -> dict[str, Any] | None:
    """The running daemon's status (its control socket's ``status``), or None if none answers."""
    from agent.control import server as control
    from agent.core_config import config_path, load_core_config

    try:
        config = load_core_config(config_path(config_file, os.environ), os.environ)
    except ConfigError as exc:
        _fail(f"config error: {exc}")

    async def ask() -> dict[str, Any]:
        async with asyncio.timeout(STATUS_SECONDS):
            return await control.request(config.control_socket, {"op": "status"})

    try:
        response = asyncio.run(ask())
    except (ControlError, TimeoutError):
        return None  # no daemon (or a stuck one): what the store says
    status = response.get("status") if response.get("ok") else None
    return {**status, "daemon": True} if isinstance(status, dict) else None


def _running_lines(status: dict[str, Any]) -> list[str]:
    """What only a running daemon knows, for the text status."""
    if not status.get("daemon"):
        return ["daemon       not running (read from the store)"]
    outbox = status["outbox"]
    lines = [
        f"daemon       running, {'connected' if status['connected'] else 'not connected'}; outbox {outbox['depth']}"
        f" queued, {outbox['held']} held"
    ]
    drivers = status["drivers"]
    doors = ", ".join(f"{door} {state}" for door, state in drivers["doors"].items())
    lines.append(f"doors        {doors or '-'}")
    for name, stats in drivers.items():
        if isinstance(stats, dict) and name != "doors":
            shown = ", ".join(f"{k} {v}" for k, v in stats.items() if not isinstance(v, dict))
            lines.append(f"  {name:<10} {shown}")
    return lines


def _print_status(status: dict[str, Any]) -> None:
    lines = [
        f"device       {status['device_id']} ({status['model']}, firmware {status['firmware_version']})",
        f"mode         {status['mode']}",
        f"trusted time {status['trusted_time']}",
    ]
    if status["project"]:
        lines.append(f"project      {status['project']['id']} ({status['project']['type']})")
    if status["document"]:
        doc = status["document"]
        lines.append(f"document     seq {doc['seq']}, issued {doc['iat']}, in force until {doc['exp']}")
    else:
        lines.append("document     none accepted yet")
    if status["trust"]:
        keys = ", ".join(status["trust"]["signing_keys"]) or "none"
        lines.append(f"trust        seq {status['trust']['seq']}, signing keys: {keys}")
    lines.append(f"next expiry  {status['next_expiry'] or '-'}")
    firmware = status.get("firmware")
    if firmware:
        line = f"firmware     {firmware['version']} on slot {firmware['slot']}"
        job = firmware["job"]
        if job:
            reason = f" ({job['reason']})" if job["reason"] else ""
            line += f"; job {job['job_id']} -> {job['version']}: {job['state']}{reason}"
        lines.append(line)
    lines += _running_lines(status)
    if status["services"]:
        lines.append("services")
        for s in status["services"]:
            state = "active" if s["active"] else "expired"
            extra = f" plan {s['plan']}" if "plan" in s else ""
            extra += "" if s["known"] else " (unknown service)"
            lines.append(f"  {s['service']:<20} {s['subject']:<24} {s['expires']}  {state}{extra}")
    click.echo("\n".join(lines))


@main.command()
@config_option
@json_option
def status(config_file: str | None, as_json: bool) -> None:
    """The device, its mode, the document in force, each service, trusted time, the next expiry; with a
    running daemon, what it knows too (doors, readers, modules, the outbox, the connection).

    Asks the daemon over the control socket when one runs (``"daemon": true``); otherwise reads the store
    (``"daemon": false``, without what only a running daemon knows)."""

    async def read(device: Any) -> Any:
        from agent.runtime.status import gather
        from firmware.engine import offline_status

        return gather(device, await offline_status(device.config, device.store)).as_json()

    result = _daemon_status(config_file)
    if result is None:
        result = {**_with_device(config_file, read, whole=True), "daemon": False}
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_status(result)


@main.command()
@config_option
def run(config_file: str | None) -> None:
    """Run the daemon: the MQTT session, the outbox, the control socket. SIGTERM or SIGINT stops it (exit 0)."""
    from agent import daemon
    from agent.clock import ClockSource
    from agent.config import config_path, load_config, load_trust_roots
    from protocol import logs

    try:
        config = load_config(config_path(config_file, os.environ), os.environ)
        roots = load_trust_roots(config)
    except ConfigError as exc:
        _fail(f"config error: {exc}")
    logs.configure(config.log_level)
    try:
        outcome = asyncio.run(daemon.run(config, roots, ClockSource.system()))
    except ConfigError as exc:
        _fail(f"config error: {exc}")
    except EdgeAgentError as exc:
        _fail(f"error: {exc}")
    if outcome is daemon.Outcome.RESTART:
        daemon.restart_in_place()
    if outcome is daemon.Outcome.REBOOT:
        from firmware.engine import EXIT_REBOOT

        click.echo(f"edge-agent: rebooting into the new firmware slot (exit {EXIT_REBOOT})", err=True)
        sys.exit(EXIT_REBOOT)
    if outcome is daemon.Outcome.FAILED:
        _fail("error: a daemon task ended unexpectedly (see the daemon_task_ended log event)")


@main.command()
@config_option
@click.option("--held", is_flag=True, help="Only what waits behind a denied decision.")
@json_option
def events(config_file: str | None, held: bool, as_json: bool) -> None:
    """What the outbox holds, oldest first (works while the daemon runs)."""
    from agent.entitlements import policy
    from agent.outbox import queued
    from agent.outbox.events import GATED_ACTIONS

    async def listing(device: Any) -> list[dict[str, Any]]:
        now = device.clock.now()
        denied = frozenset(g for g in GATED_ACTIONS if not policy.decide(device.entitlements, now, g).allowed)
        rows: list[dict[str, Any]] = await queued(device.store, denied, held_only=held)
        return rows

    rows = _with_device(config_file, listing)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("the outbox is empty" + (" of held events" if held else ""))
        return
    click.echo(f"{'seq':>8}  {'type':<12} {'kind':<20} {'source':<16} {'queued at':<25} held since")
    for row in rows:
        seq = row["seq"] if row["seq"] is not None else "reply"
        since = row["held_since"] or ("held" if row["held"] else "-")
        click.echo(
            f"{seq:>8}  {row['type']:<12} {row['kind']:<20} {row['source'] or '-':<16} {row['queued_at']:<25} {since}"
        )


def _print_simulated(kind: str, result: dict[str, Any]) -> None:
    lines = [f"{kind}:"]
    lines += [f"  {note}" for note in result["notes"]]
    for action in result["actions"]:
        args = ", ".join(f"{k}={v}" for k, v in action["args"].items())
        lines.append(f"  did    {action['driver']}.{action['op']}({args})")
    for d in result["decisions"]:
        verdict = "allowed" if d["allowed"] else "denied"
        subject = f" {d['subject']}" if d["subject"] is not None else ""
        lines.append(f"  asked  {d['action']}{subject}: {verdict} ({d['reason']}: {d['detail']})")
    for e in result["events"]:
        if "error" in e:
            lines.append(f"  event  {e['type']} {e['kind']} NOT queued: {e['error']}")
        else:
            held = ", held" if e["held"] else ""
            lines.append(f"  event  {e['type']} {e['kind']} seq {e['seq']}{held} (durable)")
    if not (result["actions"] or result["events"]):
        lines.append("  nothing to do")
    click.echo("\n".join(lines))


@main.command()
@config_option
@click.argument("kind")
@click.option("--source", default=None, help="The device or sensor that reported it (MR01 kinds need one).")
@click.option(
    "--data", "data_text", default="{}", help='The stimulus as JSON, e.g. \'{"door": "door-1", "value": "1234"}\'.'
)
@json_option
def simulate(config_file: str | None, kind: str, source: str | None, data_text: str, as_json: bool) -> None:
    """Hand a driver event (card, pin, exit_button, door_open, tamper, call, fall...) to the running daemon.

    Prints what the daemon did and why; exits 0 once the resulting events are durable, 2 on a bad
    kind, bad JSON or no running daemon (docs/drivers.md lists the kinds and their data).
    """
    from agent.config import config_path, load_config
    from agent.control import server as control
    from protocol import boundedjson

    try:
        data = boundedjson.loads(data_text)
    except ValueError as exc:
        _fail(f"--data is not JSON: {exc}")
    try:
        config = load_config(config_path(config_file, os.environ), os.environ)
    except ConfigError as exc:
        _fail(f"config error: {exc}")
    request = {"op": "simulate", "kind": kind, "source": source, "data": data}

    async def ask() -> dict[str, Any]:
        async with asyncio.timeout(30):
            return await control.request(config.control_socket, request)

    try:
        response = asyncio.run(ask())
    except ControlError as exc:
        _fail(str(exc))
    except TimeoutError:
        _fail("the daemon did not answer within 30 s")
    if not response.get("ok"):
        error = response.get("error", {})
        _fail(f"{error.get('code')}: {error.get('message')}")
    result = {k: v for k, v in response.items() if k not in ("ok", "id")}
    failed = any("error" in e for e in result["events"])
    if as_json:
        click.echo(json.dumps(result))
    else:
        _print_simulated(kind, result)
    if failed:
        sys.exit(EXIT_ERROR)


@main.command()
@config_option
@json_option
def doctor(config_file: str | None, as_json: bool) -> None:
    """Check the config, keys and certificates, clock, broker, disk and database, the daemon, and the
    wired readers and modules.

    Exit 0 when nothing failed (warnings included), 1 when a check failed, 2 when the config is unusable.
    """
    from agent.config import config_path, load_config
    from agent.runtime import doctor as checks
    from agent.store import sidecar

    try:
        config = load_config(config_path(config_file, os.environ), os.environ)
    except ConfigError as exc:
        _fail(f"config error: {exc}")
    from protocol import logs

    logs.configure("warning")  # what the drivers log while probing goes to stderr, never into --json
    findings = [checks.Finding("config", "ok", f"device {config.device_id} ({config.model})")]
    findings.append(checks.trust_roots(config))
    findings += checks.certificates(config)
    findings += checks.client_key(config)
    floor = sidecar.load(config.data_dir).anchor
    findings.append(checks.clock(floor.trusted_at if floor else None))
    findings += checks.disk(config)

    async def online() -> list[Any]:
        return [await checks.broker(config), await checks.daemon(config), *await checks.hardware(config)]

    findings += asyncio.run(online())
    if as_json:
        click.echo(json.dumps([f.as_json() for f in findings]))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        for f in findings:
            click.echo(f"{marks[f.status]}  {f.check:<20} {f.detail}")
    if any(f.status == "fail" for f in findings):
        sys.exit(EXIT_REFUSED)
