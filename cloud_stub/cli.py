"""``smartplus-cloud``: the cloud's command line, an adapter over the operations (cloud_stub/operations/).

Every ledger command builds its operation's request, runs it as the account ``--as`` names (the platform
operator without one) and prints the result; a refusal names its rule and seed and exits 1, a bad
argument exits 2 (cloud_stub/cli_common.py). ``serve`` runs the cloud: issuer and ingest against a broker,
the image server and the HTTP API, from one configuration (cloud_stub/serveconfig.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import click

from cloud_stub import cli_billing, signing
from cloud_stub.cli_common import DEFAULT_LEDGER, Context, fail, instant, json_option, moment, request, run
from cloud_stub.keys import load_private_key, write_keypair
from cloud_stub.operations import accounts, coupons, ingest, keys, logins, remote, upgrades


class BrokerAddress(click.ParamType[tuple[str, int]]):
    """``mqtt://HOST[:PORT]`` (1883 by default) or ``mqtts://HOST[:PORT]`` (8883) as ``(host, port)``; anything
    else is refused. TLS itself is asked for by ``serve --ca-file``."""

    name = "mqtt://HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, int]:
        from cloud_stub.serveconfig import broker_address

        if isinstance(value, tuple):
            return value
        try:
            return broker_address(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


BROKER = BrokerAddress()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smartplus-edge", prog_name="smartplus-cloud", message="%(prog)s %(version)s")
@click.option(
    "--ledger",
    "ledger_path",
    envvar="SMARTPLUS_CLOUD_LEDGER",
    default=DEFAULT_LEDGER,
    show_default=True,
    metavar="FILE|URL",
    help="The ledger: a SQLite file, or a database URL (postgresql://user@host/db).",
)
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="SMARTPLUS_CLOUD_HOME",
              help="Where keys and images live (default: beside a SQLite ledger, else ./cloud-data).")  # fmt: skip
@click.option("--as", "actor", envvar="SMARTPLUS_CLOUD_AS", help="The account acting (distributor, installer or PM).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--now",
    "now_text",
    envvar="SMARTPLUS_CLOUD_NOW",
    metavar="ISO-8601",
    help="Act as if it were this instant (with its zone): rehearse renewals, expiries and orders.",
)
@click.pass_context
def main(
    ctx: click.Context, ledger_path: str, home: Path | None, actor: str | None, as_json: bool, now_text: str | None
) -> None:
    """The cloud side of the intercom platform (payments simulated, rules real).

    Ledger commands act as one account (--as; without it, as the platform operator) on one ledger
    (--ledger); keys and images live in --home. A refusal names its rule and the seed it comes from and
    exits 1; bad arguments exit 2.
    """
    ctx.obj = Context(ledger_path, actor, as_json, None if now_text is None else moment(now_text, "--now"), home)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default="root", show_default=True, help="File name stem of the key pair.")
def keygen(directory: Path, name: str) -> None:
    """Make an Ed25519 key pair: DIRECTORY/NAME.key.pem (owner-only) and NAME.pub.pem."""
    write_keypair(directory, name)
    click.echo(f"{directory / name}.key.pem")


@main.command()
@click.argument("typ", type=click.Choice(["trust", "entitlements", "firmware-job", "command"]))
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("claims_file", metavar="CLAIMS|-", type=click.File("rb"))
def sign(typ: str, key_file: Path, claims_file: BinaryIO) -> None:
    """Sign a JSON claims object as a compact JWS of TYP and print it."""

    try:
        claims = json.loads(claims_file.read())
        key = load_private_key(key_file)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if not isinstance(claims, dict):
        fail("claims must be a JSON object")
    click.echo(signing.sign(key, typ, claims))


# -- the ledger's operations ------------------------------------------------------------------------
# Accounts, sites, services and payments: cloud_stub/cli_billing.py.
for _command in cli_billing.COMMANDS:
    main.add_command(_command)


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Bring the ledger's schema up to this program's (a SQLite ledger from before Alembic too)."""
    from cloud_stub.errors import LedgerError
    from cloud_stub.storage import migrate as migrations
    from cloud_stub.storage.database import Database, url_of

    state: Context = ctx.obj
    if not state.is_url:
        Path(state.where).parent.mkdir(parents=True, exist_ok=True)
    database = Database(url_of(state.where))
    try:
        before, after = migrations.upgrade(database)
    except LedgerError as exc:
        fail(str(exc))
    finally:
        database.close()
    shown = {"from": before, "to": after}
    click.echo(json.dumps({"ok": True, "result": shown}) if state.as_json else f"ledger: {before} -> {after}")


@main.command("copy-ledger")
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.pass_context
def copy_ledger(ctx: click.Context, source: str, target: str) -> None:
    """Copy a ledger (FROM: a SQLite file or URL, at the current schema) into an empty one (TO: a URL, or
    a SQLite file), then compare every table; exits 1 if any differs."""
    from cloud_stub.errors import LedgerError
    from cloud_stub.storage import copying
    from cloud_stub.storage.database import Database, url_of

    databases = [Database(url_of(where)) for where in (source, target)]
    try:
        copied = copying.copy(*databases)
    except LedgerError as exc:
        fail(str(exc))
    finally:
        for database in databases:
            database.close()
    rows = [{"table": c.table, "rows": c.rows, "same": c.same} for c in copied]
    if ctx.obj.as_json:
        click.echo(json.dumps({"ok": all(c.same for c in copied), "result": rows}))
    else:
        for c in copied:
            click.echo(f"{c.table:16} {c.rows:>9} rows  {'same' if c.same else 'DIFFERS'}")
    if not all(c.same for c in copied):
        sys.exit(1)


@main.command("add-firmware")
@click.argument("model")
@click.argument("version")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--log", "log_text", default="", help="The release notes.")
@click.pass_context
def add_firmware(ctx: click.Context, model: str, version: str, image: Path, log_text: str) -> None:
    """Add an image to the firmware list (the operator's)."""
    entry = request(ctx, upgrades.FirmwareEntry, model=model, version=version, log=log_text)

    def work(book: Any, actor: Any) -> Any:
        name, size, digest = upgrades.store_image(ctx.obj.home / "images", entry.model, entry.version, image)
        asked = upgrades.AddFirmware(**entry.model_dump(), file=name, size=size, sha256=digest)
        return book.call(upgrades.add_firmware, actor, asked)

    run(ctx, work)


@main.command("firmware-list")
@click.pass_context
def firmware_list(ctx: click.Context) -> None:
    """Version, model, log and created time of each image."""
    run(ctx, lambda book, actor: book.read(lambda uow: upgrades.firmware_list(uow, actor)))


@main.command()
@click.argument("ident")
@click.option("--project", required=True)
@click.option("--model", required=True)
@click.option("--version", required=True)
@click.option("--device", "devices", multiple=True, help="A MAC (default: every device of MODEL in the site).")
@click.option("--at", "at_text", help="When (ISO 8601 with a zone); default: right now.")
@click.option("--reset", is_flag=True, help="Reset After Upgrade (cannot be undone).")
@click.option("--wave-size", type=int, help="Phased: this many devices a wave.")
@click.option("--wave-percent", type=float, help="Phased: this share (0-100] of the devices a wave.")
@click.option("--wave-wait", type=float, default=0.0, show_default=True,
              help="Phased: seconds between a wave finishing and the next.")  # fmt: skip
@click.option("--max-failures", type=float, default=0.2, show_default=True,
              help="Phased: the share [0-1) of a wave failed (or rolled back) that pauses the rollout.")  # fmt: skip
@click.pass_context
def upgrade(
    ctx: click.Context,
    ident: str,
    project: str,
    model: str,
    version: str,
    devices: tuple[str, ...],
    at_text: str | None,
    reset: bool,
    wave_size: int | None,
    wave_percent: float | None,
    wave_wait: float,
    max_failures: float,
) -> None:
    """Stage an upgrade of a site's devices of one model: all at once, or phased (--wave-size or
    --wave-percent): in waves that pause themselves when too many of a wave fail."""
    ctx.obj.who()
    asked = request(
        ctx, upgrades.StageUpgrade, id=ident, project=project, model=model, version=version,
        devices=list(devices) or None, at=None if at_text is None else instant(at_text, "--at"), reset=reset,
        wave_size=wave_size, wave_percent=wave_percent, wave_wait=wave_wait, max_failures=max_failures,
    )  # fmt: skip
    run(ctx, lambda book, actor: book.call(upgrades.stage, actor, asked))


@main.group("api-token")
def api_token() -> None:
    """Tokens of the HTTP API (the platform operator's): create, list, revoke."""


@api_token.command("create")
@click.argument("account")
@click.option("--days", type=int, default=None,
              help=f"Valid for 1 to {accounts.MAX_TOKEN_DAYS} days (default {accounts.TOKEN_DAYS}).")  # fmt: skip
@click.option("--expires", "expires_text", metavar="ISO-8601",
              help="Or until when (2027-03-31T00:00:00Z), within as many days.")  # fmt: skip
@click.option("--label", default="", help="What it is for (shown in the list).")
@click.pass_context
def api_token_create(ctx: click.Context, account: str, days: int | None, expires_text: str | None, label: str) -> None:
    """A new token for ACCOUNT: printed once (the ledger keeps its SHA-256), with its id and expiry."""
    expires = None if expires_text is None else instant(expires_text, "--expires")
    asked = request(ctx, accounts.CreateToken, account=account, days=days, expires=expires, label=label)
    run(ctx, lambda book, actor: book.call(accounts.create_token, actor, asked))


@api_token.command("list")
@click.argument("account", required=False)
@click.pass_context
def api_token_list(ctx: click.Context, account: str | None) -> None:
    """The tokens of ACCOUNT (or of every account): id, label, created, expires, state; never the secret."""
    asked = request(ctx, accounts.ListTokens, account=account)
    run(ctx, lambda book, actor: book.read(lambda uow: accounts.tokens(uow, actor, asked)))


@api_token.command("revoke")
@click.argument("token_id", metavar="ID")
@click.pass_context
def api_token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token by its id: from now on it is refused (401)."""
    asked = request(ctx, accounts.RevokeToken, id=token_id)
    run(ctx, lambda book, actor: book.call(accounts.revoke_token, actor, asked))


@main.command("coupon-issue")
@click.argument("account")
@click.option("--value", type=int, required=True, help="What it pays, in cents.")
@click.option("--days", type=int, default=90, show_default=True, help="How long it can be used.")
@click.pass_context
def coupon_issue(ctx: click.Context, account: str, value: int, days: int) -> None:
    """Give ACCOUNT a coupon (the operator, or --as a distributor for an account below it): its code, which
    pays one coupon order of the account's that it covers (docs/portal.md)."""
    asked = request(ctx, coupons.IssueCoupon, account=account, value=value, days=days)
    run(ctx, lambda book, actor: book.call(coupons.issue, actor, asked))


@main.command("portal-login")
@click.argument("account")
@click.option("--email", required=True, help="Where its codes, links and notices go.")
@click.option("--two-factor/--no-two-factor", default=False, help="Email Two-Factor Authorization for Login.")
@click.option("--password-stdin", is_flag=True, help="Read its password from standard input (else a link is mailed).")
@click.option("--url", "base", default="http://localhost:8081", show_default=True,
              help="The portal's address, for the link.")  # fmt: skip
@click.pass_context
def portal_login(
    ctx: click.Context, account: str, email: str, two_factor: bool, password_stdin: bool, base: str
) -> None:
    """Give ACCOUNT a login to the web portal (docs/portal.md): without --password-stdin a link to set its
    password is mailed to --email (it works once, for 7 days). The password never appears on a command line."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    asked = request(ctx, logins.SetLogin, account=account, email=email, two_factor=two_factor, password=password,
                    base=base)  # fmt: skip
    run(ctx, lambda book, actor: book.call(logins.set_login, actor, asked))


def _rollout_command(name: str, action: Callable[..., Any], doc: str) -> None:
    """``name IDENT``: the rollout's operation, as --as."""

    @main.command(name, help=doc)
    @click.argument("ident")
    @click.pass_context
    def command(ctx: click.Context, ident: str) -> None:
        ctx.obj.who()
        run(ctx, lambda book, actor: book.run(lambda uow: action(uow, actor, ident)))


_rollout_command(
    "rollout",
    upgrades.rollout,
    "A phased rollout: its state (running, paused and why, cancelled, completed) and each wave's devices.",
)
_rollout_command("rollout-pause", upgrades.pause, "Hold a running rollout: no wave more until rollout-resume.")
_rollout_command("rollout-resume", upgrades.resume, "Resume a paused rollout (the waves that paused it are excused).")
_rollout_command(
    "rollout-cancel",
    upgrades.cancel,
    "Cancel a rollout: no more waves; devices that have not started get a cancel.",
)


@main.command("upgrades")
@click.option("--project", help="Only this site (default: every site --as acts for).")
@click.option("--status", type=click.Choice(["Pending", "Processing", "Executed"]))
@click.pass_context
def list_upgrades(ctx: click.Context, project: str | None, status: str | None) -> None:
    """The upgrades of the sites --as acts for, newest first, with their status and each device's."""
    asked = request(ctx, upgrades.UpgradeQuery, project=project, status=status)
    run(ctx, lambda book, actor: book.read(lambda uow: upgrades.upgrades(uow, actor, asked)))


@main.command("edit-upgrade")
@click.argument("ident")
@click.option("--at", "at_text", help="The new time (ISO 8601 with a zone).")
@click.option("--right-now", is_flag=True, help="Start it right now instead.")
@click.option("--version", help="Another version of the same model.")
@click.pass_context
def edit_upgrade(ctx: click.Context, ident: str, at_text: str | None, right_now: bool, version: str | None) -> None:
    """Edit an upgrade no device has started: its time or its version."""
    if at_text is not None and right_now:
        raise click.UsageError("--at or --right-now, not both")
    ctx.obj.who()
    at = None if at_text is None else instant(at_text, "--at")
    asked = request(ctx, upgrades.EditUpgrade, id=ident, at=at, right_now=right_now, version=version)
    run(ctx, lambda book, actor: book.call(upgrades.edit, actor, asked))


@main.command("upgrade-status")
@click.argument("ident")
@click.pass_context
def upgrade_status(ctx: click.Context, ident: str) -> None:
    """Each device's status: Pending, Processing, Executed, Failed, Cancelled."""
    run(ctx, lambda book, actor: book.read(lambda uow: upgrades.statuses(uow, actor, ident)))


@main.command("delete-upgrade")
@click.argument("ident")
@click.pass_context
def delete_upgrade(ctx: click.Context, ident: str) -> None:
    """Delete an upgrade no device has started (the devices get a cancel)."""
    ctx.obj.who()
    run(ctx, lambda book, actor: book.run(lambda uow: upgrades.delete(uow, actor, ident)))


def _remote(ctx: click.Context, mac: str, op: str, wait: float) -> None:
    """Queue ``op`` for ``mac``; ``serve`` signs and publishes it; wait for the device's reply and show it."""
    ctx.obj.who()
    asked = request(ctx, remote.AskDevice, mac=mac, op=op)

    def work(book: Any, actor: Any) -> Any:
        ident = book.call(remote.ask, actor, asked)
        deadline = time.monotonic() + wait
        while True:
            reply = book.read(lambda uow: remote.reply(uow, actor, ident))
            if reply is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.1)  # a person waits at a terminal for a device's answer: polled, with a deadline
        if reply is None:
            return {"id": ident, "reply": None, "note": f"no reply within {wait:g} s (is serve running?)"}
        return {"id": ident, "reply": reply}

    run(ctx, work)


def _remote_command(op: str, summary: str) -> click.Command:
    @click.argument("mac")
    @click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for the device's reply.")
    @click.pass_context
    def command(ctx: click.Context, mac: str, wait: float) -> None:
        _remote(ctx, mac, op, wait)

    command.__doc__ = f"{summary} (a signed command, sent by serve); shows the device's reply."
    return main.command(op)(command)


_remote_command("reboot", "Reboot a device remotely")
_remote_command("resync", "Ask a device to report its state again")


@main.command()
@click.argument("project")
@click.pass_context
def alarms(ctx: click.Context, project: str) -> None:
    """Alarms and call alerts the site's devices reported, newest first."""
    run(ctx, lambda book, actor: book.read(lambda uow: ingest.alarms(uow, actor, project)))


PURPOSE = click.Choice(["billing", "releases", "commands"])


@main.command("rotate-key")
@click.option("--purpose", type=PURPOSE, help="The signer to rotate: billing (entitlements), releases (firmware"
              " jobs) or commands. Default: all three.")  # fmt: skip
@click.pass_context
def rotate_key(ctx: click.Context, purpose: str | None) -> None:
    """Bring in a new signer (listed beside the old one until retire-keys); prints the new kids."""
    directory = ctx.obj.home / "keys"
    run(ctx, lambda book, actor: book.run(lambda uow: keys.rotate(uow, actor, directory, purpose)))


@main.command("retire-keys")
@click.option("--purpose", type=PURPOSE, help="Only this signer's old keys (default: every one no longer signing).")
@click.pass_context
def retire_keys(ctx: click.Context, purpose: str | None) -> None:
    """Drop the signing keys no longer in use from the trust document."""
    run(ctx, lambda book, actor: book.run(lambda uow: keys.retire(uow, actor, purpose)))


@main.command("rotate-root")
@click.pass_context
def rotate_root(ctx: click.Context) -> None:
    """Make a new root key: trust documents carry old and new (with the new one's proof), signed by the old."""
    directory = ctx.obj.home / "keys"
    run(ctx, lambda book, actor: book.run(lambda uow: keys.rotate_root(uow, actor, directory)))


@main.command("retire-root")
@click.pass_context
def retire_root(ctx: click.Context) -> None:
    """Drop the old root once every device has taken the rotation: the new root signs trust from now on."""
    run(ctx, lambda book, actor: book.run(lambda uow: keys.retire_root(uow, actor)))


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="SMARTPLUS_SERVE_CONFIG", help="A TOML file (docs/cloud.md 'Running serve').")  # fmt: skip
@click.option("--broker", "brokers", type=BROKER, multiple=True,
              help="mqtt://HOST:PORT of a broker (default: start the embedded amqtt); repeated: the nodes of a"
                   " cluster, the next one tried when a connection is lost.")  # fmt: skip
@click.option("--user", help="The broker user (default: cloud).")
@click.option("--client-id", help="The MQTT client id (default: smartplus-cloud-PORT; one per serve on a broker).")
@click.option("--password", envvar="SMARTPLUS_CLOUD_PASSWORD", help="The broker password (default: cloud).")
@click.option("--port", type=int, help="The embedded broker's port (default 1883).")
@click.option("--images-port", type=int, help="The image server's port (0: any free one; default 8080).")
@click.option("--interval", type=float, help="Seconds between passes (changes are seen at once; default 5).")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Connect with TLS, verifying the broker against this CA (mqtts://).")  # fmt: skip
@click.option(
    "--cert-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cloud's client certificate, for a broker that requires one (mutual TLS; with --key-file).",
)
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--image-base", help="Where devices fetch images: the URL firmware jobs name, up to the model's"
              " directory (default: the image server started here).")  # fmt: skip
@click.option("--api-port", type=int, help="Serve the HTTP API on this port (0: any free one; default: off).")
@click.option("--api-host", help="Where the HTTP API listens (default 127.0.0.1).")
@click.pass_context
def serve(ctx: click.Context, /, config_file: Path | None, **options: Any) -> None:
    """Issue documents, take what devices send, serve images (and the HTTP API): until SIGTERM or Ctrl-C."""
    from cloud_stub import serving
    from cloud_stub.errors import ConfigError
    from cloud_stub.serveconfig import load

    state: Context = ctx.obj
    overrides: dict[str, Any] = {}
    if ctx.parent is not None and ctx.parent.get_parameter_source("ledger_path") not in (
        click.core.ParameterSource.DEFAULT, None
    ):  # fmt: skip
        overrides["ledger"] = state.where
    if state._home is not None:
        overrides["home"] = str(state._home)
    table = {
        "brokers": ("broker", "urls"), "user": ("broker", "username"), "password": ("broker", "password"),
        "port": ("broker", "embedded_port"), "ca_file": ("broker", "ca_file"), "cert_file": ("broker", "cert_file"),
        "key_file": ("broker", "key_file"), "images_port": ("images", "port"), "image_base": ("images", "base"),
        "api_port": ("api", "port"), "api_host": ("api", "host"), "interval": (None, "interval"),
        "client_id": ("broker", "client_id"),
    }  # fmt: skip
    for option, value in options.items():
        if value is None or value == ():
            continue
        section, key = table[option]
        if option == "brokers":
            value = [f"mqtt{'s' if options['ca_file'] else ''}://{host}:{port}" for host, port in value]
        given = str(value) if isinstance(value, Path) else value
        (overrides if section is None else overrides.setdefault(section, {}))[key] = given
    try:
        config = load(config_file, os.environ, overrides)
    except ConfigError as exc:
        fail(str(exc))
    with contextlib.suppress(KeyboardInterrupt):
        code = serving.run(config)
    sys.exit(code)


@main.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the HTTP API listens.")
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True, help="0: any free port.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Worker processes sharing the port (default: one per CPU).")  # fmt: skip
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Requests at the ledger at once in each worker (more only queue for Python's GIL).")  # fmt: skip
@click.pass_context
def api_only(ctx: click.Context, host: str, port: int, workers: int | None, threads: int) -> None:
    """Serve the HTTP API alone, without the issuer, ingest or image server: workers sharing one port (a
    Python process answers on one CPU), and more of them on other machines beside one serve, on one
    PostgreSQL ledger (docs/cloud.md "Growing past one machine"). SIGTERM stops them gracefully."""
    from cloud_stub import serving
    from cloud_stub.errors import CloudError

    try:
        code = serving.run_api(ctx.obj.where, host, port, workers or os.cpu_count() or 1, threads)
    except CloudError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"the API cannot listen on {host}:{port}: {exc.strerror or exc}")
    sys.exit(code)


@main.command()
@click.option("--devices", "count", default=100, show_default=True, help="How many simulated devices.")
@click.option("--broker", "brokers", type=BROKER, multiple=True, default=["mqtt://127.0.0.1:1883"], show_default=True,
              help="Repeated: the nodes of a cluster; the devices are spread over them and move to the next"
                   " one when theirs goes away.")  # fmt: skip
@click.option("--user", default=None)
@click.option("--password", envvar="SMARTPLUS_CLOUD_PASSWORD", default=None)
@click.option("--root", "root_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The root public key (default: the ledger's keys/root.pub.pem).")  # fmt: skip
@click.option("--register", is_flag=True, help="Register the devices in --project first (MACs 0c11 + 8 hex digits).")
@click.option("--project", default=None)
@click.option("--distributor", default=None)
@click.pass_context
def fleet(
    ctx: click.Context,
    count: int,
    brokers: tuple[tuple[str, int], ...],
    user: str | None,
    password: str | None,
    root_file: Path | None,
    register: bool,
    project: str | None,
    distributor: str | None,
) -> None:
    """Run COUNT lightweight simulated devices (one MQTT session each) until interrupted."""
    import asyncio
    import signal

    from cloud_stub.fleet import SimulatedDevice, raise_file_limit, run_fleet, summary
    from cloud_stub.operations import sites
    from protocol.ed25519 import from_pem

    limit = raise_file_limit()
    if count + 64 > limit:
        fail(f"{count} devices need {count + 64} file descriptors; the limit is {limit}")
    macs = [f"0c11{i:08x}" for i in range(count)]
    if register:
        if project is None or distributor is None:
            raise click.UsageError("--register needs --project and --distributor")
        asked = request(ctx, sites.RegisterFleet, macs=macs, distributor=distributor, project=project)
        run(ctx, lambda book, actor: book.call(sites.register_fleet, actor, asked))
    root_path = root_file or ctx.obj.home / "keys" / "root.pub.pem"
    try:
        root = from_pem(root_path.read_bytes())
    except OSError as exc:
        fail(f"no root public key at {root_path} (serve makes the ledger's keys; or give --root): {exc}")
    except ValueError as exc:
        fail(f"the root key at {root_path} is {exc}")
    where = ", ".join(f"{host}:{port}" for host, port in brokers)
    click.echo(f"fleet: {count} devices against {where}", err=True)
    devices = [SimulatedDevice(mac) for mac in macs]

    async def simulate() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop as on Ctrl-C
        with contextlib.suppress(asyncio.CancelledError):
            await run_fleet(devices, brokers, root, username=user, password=password)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(simulate())
    click.echo(summary(devices), err=True)


for _command in main.commands.values():  # --json after the subcommand as well as before it
    json_option(_command)
for _command in api_token.commands.values():
    json_option(_command)


if __name__ == "__main__":  # python -m cloud_stub.cli (the demo starts `serve` this way)
    main()
