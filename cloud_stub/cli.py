"""``smartplus-cloud``: the cloud stub's command line."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import click

from cloud_stub.keys import load_private_key, write_keypair


class BrokerAddress(click.ParamType[tuple[str, int]]):
    """``mqtt://HOST[:PORT]`` (1883 by default) or ``mqtts://HOST[:PORT]`` (8883) as ``(host, port)``; anything
    else is refused. TLS itself is asked for by ``serve --ca-file``."""

    name = "mqtt://HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(str(value))
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/"):
            self.fail(f"{value!r} is not mqtt://HOST[:PORT] (or mqtts://)", param, ctx)
        return parts.hostname, port


BROKER = BrokerAddress()


class Context:
    def __init__(self, ledger_path: Path, actor: str | None, as_json: bool) -> None:
        self.path, self.actor, self.as_json = ledger_path, actor, as_json

    @property
    def home(self) -> Path:
        return self.path.parent

    def ledger(self) -> Any:
        from cloud_stub.ledger import Ledger

        self.home.mkdir(parents=True, exist_ok=True)
        return Ledger(self.path)

    def who(self) -> str:
        if not self.actor:
            click.echo("smartplus-cloud: error: this command acts as an account: give --as ACCOUNT", err=True)
            sys.exit(2)
        return self.actor


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--ledger",
    "ledger_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SMARTPLUS_CLOUD_LEDGER",
    default=Path("cloud-data/ledger.db"),
    show_default=True,
    help="The ledger's SQLite file.",
)
@click.option("--as", "actor", envvar="SMARTPLUS_CLOUD_AS", help="The account acting (distributor, installer or PM).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def main(ctx: click.Context, ledger_path: Path, actor: str | None, as_json: bool) -> None:
    """The cloud side of the intercom platform (stub: payments simulated, rules real).

    Ledger commands act as one account (--as) on one ledger (--ledger); keys and images live beside
    it. A refusal names its rule and the seed it comes from and exits 1; bad arguments exit 2.
    """
    ctx.obj = Context(ledger_path, actor, as_json)


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
    from protocol import jws

    try:
        claims = json.loads(claims_file.read())
        key = load_private_key(key_file)
    except (ValueError, OSError) as exc:
        click.echo(f"smartplus-cloud: error: {exc}", err=True)
        sys.exit(2)
    if not isinstance(claims, dict):
        click.echo("smartplus-cloud: error: claims must be a JSON object", err=True)
        sys.exit(2)
    click.echo(jws.sign(key, typ, claims))


# -- the ledger's operations ------------------------------------------------------------------------
# Every command below works on one ledger (--ledger, or SMARTPLUS_CLOUD_LEDGER; default
# ./cloud-data/ledger.db) acting as one account (--as); keys and images live beside the ledger.
# A refusal prints the rule and the seed it comes from and exits 1; bad arguments exit 2.


def _run(ctx: click.Context, work: Any) -> None:
    """Open the ledger, run ``work(ledger)``, print its result (JSON or lines); map refusals to exit 1."""
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
        sys.exit(1)
    except (ValueError, sqlite3.IntegrityError) as exc:
        click.echo(f"smartplus-cloud: error: {exc}", err=True)
        sys.exit(2)
    finally:
        ledger.close()
    if state.as_json:
        click.echo(json.dumps({"ok": True, "result": result}, default=str))
    elif isinstance(result, list):
        for row in result:
            click.echo(json.dumps(row, default=str) if not isinstance(row, str) else row)
    elif result is not None:
        click.echo(result if isinstance(result, str) else json.dumps(result, indent=2, default=str))


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    from datetime import datetime

    from protocol.timefmt import epoch_of

    moment = datetime.fromisoformat(text if "T" in text else f"{text}T23:59:59+00:00")
    if moment.tzinfo is None:
        raise click.BadParameter(f"{text!r} needs a time zone (Z or +08:00)")
    return epoch_of(moment)


def _items(values: tuple[str, ...]) -> list[tuple[str, str, str]]:
    items = []
    for value in values:
        parts = value.split("/", 2)
        if len(parts) != 3:
            raise click.BadParameter(f"{value!r} is not PROJECT/SERVICE/SUBJECT (subject: project, door:ID, ...)")
        items.append((parts[0], parts[1], parts[2]))
    return items


@main.command("add-account")
@click.argument("ident")
@click.option(
    "--role", required=True, type=click.Choice(["distributor", "sub_distributor", "installer", "sub_installer", "pm"])
)
@click.option("--name", required=True)
@click.option("--parent")
@click.option("--permission", default="none", type=click.Choice(["none", "regular", "credit"]))
@click.pass_context
def add_account(ctx: click.Context, ident: str, role: str, name: str, parent: str | None, permission: str) -> None:
    """Add a distributor, sub-distributor, installer, sub-installer or property manager."""
    _run(ctx, lambda book: book.add_account(ident, role, name, parent=parent, permission=permission) or ident)


@main.command()
@click.argument("account")
@click.argument("permission", type=click.Choice(["none", "regular", "credit"]))
@click.pass_context
def grant(ctx: click.Context, account: str, permission: str) -> None:
    """Grant ACCOUNT (under --as) the permission to pay ("Pay by Installer" / "Pay by PM")."""
    who = ctx.obj.who()
    _run(ctx, lambda book: book.grant(who, account, permission) or f"{account}: {permission}")


@main.command("buy-credits")
@click.argument("amount", type=int)
@click.option("--source", default="stripe", type=click.Choice(["stripe", "paypal", "coupon"]))
@click.pass_context
def buy_credits(ctx: click.Context, amount: int, source: str) -> None:
    """A distributor (--as) buys credits from the vendor."""
    who = ctx.obj.who()
    _run(ctx, lambda book: {"remaining": book.buy_credits(who, amount, source, time.time())})


@main.command()
@click.argument("account")
@click.argument("amount", type=int)
@click.pass_context
def allocate(ctx: click.Context, account: str, amount: int) -> None:
    """Give ACCOUNT (directly under --as) credits."""
    who = ctx.obj.who()
    _run(ctx, lambda book: {"remaining": book.allocate(who, account, amount, time.time())})


@main.command("credit-log")
@click.argument("account", required=False)
@click.pass_context
def credit_log(ctx: click.Context, account: str | None) -> None:
    """Time, amount and remaining credit of each movement."""
    target = account or ctx.obj.who()
    _run(ctx, lambda book: book.credit_log(target))


@main.command("add-project")
@click.argument("ident")
@click.option("--type", "project_type", required=True, type=click.Choice(["community", "single_family", "commercial"]))
@click.option("--installer", required=True)
@click.option("--created", required=True, help="YYYY-MM-DD")
@click.option("--door", "doors", multiple=True, help="A door (commercial; the first is free). Repeat.")
@click.option("--timezone", default="UTC")
@click.option("--pm")
@click.pass_context
def add_project(
    ctx: click.Context,
    ident: str,
    project_type: str,
    installer: str,
    created: str,
    doors: tuple[str, ...],
    timezone: str,
    pm: str | None,
) -> None:
    """Add a site."""
    from datetime import date

    try:
        day = date.fromisoformat(created)
    except ValueError as exc:
        _fail_cloud(f"--created {created!r} is not a date (YYYY-MM-DD): {exc}")
    _run(
        ctx,
        lambda book: (
            book.add_project(ident, project_type, installer, day, doors=doors, timezone=timezone, pm=pm) or ident
        ),
    )


@main.command("add-device")
@click.argument("mac")
@click.option("--distributor", required=True, help="Whose MAC library it is in.")
@click.option("--model", required=True)
@click.option("--project")
@click.pass_context
def add_device(ctx: click.Context, mac: str, distributor: str, model: str, project: str | None) -> None:
    """Register a device's MAC, optionally in a site."""
    _run(ctx, lambda book: book.add_device(mac, distributor, model, project) or mac)


@main.command()
@click.argument("project")
@click.pass_context
def services(ctx: click.Context, project: str) -> None:
    """A site's services and their expiry."""
    _run(ctx, lambda book: book.services(project))


@main.command()
@click.argument("project")
@click.argument("service")
@click.option("--subject", default="project", help="project, or apartment:ID for apartment-level switches")
@click.option("--off", is_flag=True)
@click.pass_context
def switch(ctx: click.Context, project: str, service: str, subject: str, off: bool) -> None:
    """Service-based charging: switch a community's service on or off."""
    _run(ctx, lambda book: book.switch(project, service, subject, on=not off) or f"{service} {'off' if off else 'on'}")


def _length(months: int | None, renew_to: str | None) -> dict[str, Any]:
    if (months is None) == (renew_to is None):
        raise click.UsageError("give --months (regular payment) or --renew-to (credit payment)")
    return {"months": months} if months is not None else {"renew_to": _when(renew_to)}


@main.command("add-apartment")
@click.argument("project")
@click.argument("ident")
@click.option("--name", default="")
@click.pass_context
def add_apartment(ctx: click.Context, project: str, ident: str, name: str) -> None:
    """Add an apartment to a community."""
    _run(ctx, lambda book: book.add_apartment(project, ident, name or ident) or ident)


@main.command("add-app-account")
@click.argument("project")
@click.argument("ident")
@click.option("--role", required=True, type=click.Choice(["master", "family", "pm", "personnel", "admin"]))
@click.option("--name", default="")
@click.option("--apartment")
@click.pass_context
def add_app_account(ctx: click.Context, project: str, ident: str, role: str, name: str, apartment: str | None) -> None:
    """Add an app account; prints the service that pays for it."""
    _run(ctx, lambda book: book.add_app_account(project, ident, role, name or ident, apartment))


item_option = click.option(
    "--item", "items", multiple=True, help="PROJECT/SERVICE/SUBJECT, e.g. office/door/door:door-2. Repeat."
)
site_option = click.option("--site", "sites", multiple=True, help="Every service of this site (or --service). Repeat.")
service_option = click.option("--service", "service_types", multiple=True, help="With --site: only this type. Repeat.")


def _chosen(
    book: Any, items: tuple[str, ...], sites: tuple[str, ...], types: tuple[str, ...]
) -> list[tuple[str, str, str]]:
    if bool(items) == bool(sites):
        raise click.UsageError("give --item, or --site (with --service to narrow it)")
    chosen: list[tuple[str, str, str]] = _items(items) if items else book.select(list(sites), list(types) or None)
    return chosen


length_options = [
    click.option("--months", type=int, help="Manual renewal for this many months (regular payment)."),
    click.option("--renew-to", help="Credit renewal: renew to this date (YYYY-MM-DD)."),
]


def _selection(function: Any) -> Any:
    """--item, or --site with --service; and --months or --renew-to."""
    for option in reversed((item_option, site_option, service_option, *length_options)):
        function = option(function)
    return function


@main.command()
@_selection
@click.pass_context
def quote(
    ctx: click.Context,
    items: tuple[str, ...],
    sites: tuple[str, ...],
    service_types: tuple[str, ...],
    months: int | None,
    renew_to: str | None,
) -> None:
    """The price first: what activating or renewing the chosen services costs, and each new expiry."""
    who, length = ctx.obj.who(), _length(months, renew_to)
    _run(ctx, lambda book: book.quote(who, _chosen(book, items, sites, service_types), time.time(), **length))


@main.command()
@_selection
@click.option("--source", required=True, type=click.Choice(["stripe", "paypal", "coupon", "credit"]))
@click.option("--auto-renew", is_flag=True, help="Renew every 30 days from now on (not by coupon, not new commercial).")
@click.pass_context
def renew(
    ctx: click.Context,
    items: tuple[str, ...],
    sites: tuple[str, ...],
    service_types: tuple[str, ...],
    months: int | None,
    renew_to: str | None,
    source: str,
    auto_renew: bool,
) -> None:
    """Activate or renew the chosen services: quote, order and pay (payment simulated)."""
    who, length = ctx.obj.who(), _length(months, renew_to)

    def work(book: Any) -> Any:
        now = time.time()
        offer = book.quote(who, _chosen(book, items, sites, service_types), now, **length)
        return {"quote": offer, **book.pay(book.order(who, offer, source, now), now, auto_renew=auto_renew)}

    _run(ctx, work)


@main.command()
@click.pass_context
def notices(ctx: click.Context) -> None:
    """Raise the expiration notices due now (15, 5, 3, 1 days) and list them."""
    _run(ctx, lambda book: book.raise_notices(time.time()))


@main.command("add-firmware")
@click.argument("model")
@click.argument("version")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--log", "log_text", default="", help="The release notes.")
@click.pass_context
def add_firmware(ctx: click.Context, model: str, version: str, image: Path, log_text: str) -> None:
    """Add an image to the firmware list."""
    from cloud_stub import rollouts

    images = ctx.obj.home / "images"
    _run(ctx, lambda book: rollouts.add_firmware(book, images, model, version, image, log_text, time.time()))


@main.command("firmware-list")
@click.pass_context
def firmware_list(ctx: click.Context) -> None:
    """Version, model, log and created time of each image."""
    from cloud_stub import rollouts

    _run(ctx, rollouts.firmware_list)


@main.command()
@click.argument("ident")
@click.option("--project", required=True)
@click.option("--model", required=True)
@click.option("--version", required=True)
@click.option("--device", "devices", multiple=True, help="A MAC (default: every device of MODEL in the site).")
@click.option("--at", "at_text", help="When (ISO 8601 with a zone); default: right now.")
@click.option("--reset", is_flag=True, help="Reset After Upgrade (cannot be undone).")
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
) -> None:
    """Stage an upgrade of a site's devices of one model."""
    from cloud_stub import rollouts

    at = _when(at_text)
    _run(ctx, lambda book: rollouts.add_upgrade(
        book, ident, project, model, version, time.time(), devices=list(devices) or None, at=at, reset=reset
    ))  # fmt: skip


@main.command("upgrade-status")
@click.argument("ident")
@click.pass_context
def upgrade_status(ctx: click.Context, ident: str) -> None:
    """Each device's status: Pending, Processing, Executed, Failed."""
    from cloud_stub import rollouts

    _run(ctx, lambda book: rollouts.statuses(book, ident))


@main.command("delete-upgrade")
@click.argument("ident")
@click.pass_context
def delete_upgrade(ctx: click.Context, ident: str) -> None:
    """Delete an upgrade no device has started (the devices get a cancel)."""
    from cloud_stub import rollouts

    def work(book: Any) -> str:
        rollouts.delete_upgrade(book, ident)
        return f"{ident} deleted"

    _run(ctx, work)


@main.command()
@click.argument("project")
@click.pass_context
def alarms(ctx: click.Context, project: str) -> None:
    """Alarms and call alerts the site's devices reported, newest first."""
    from cloud_stub import ingest

    _run(ctx, lambda book: ingest.alarms(book, project))


PURPOSE = click.Choice(["billing", "releases", "commands"])


@main.command("rotate-key")
@click.option("--purpose", type=PURPOSE, help="The signer to rotate: billing (entitlements), releases (firmware"
              " jobs) or commands. Default: all three.")  # fmt: skip
@click.pass_context
def rotate_key(ctx: click.Context, purpose: str | None) -> None:
    """Bring in a new signer (listed beside the old one until retire-keys); prints the new kids."""
    from cloud_stub import trustkeys

    _run(ctx, lambda book: trustkeys.rotate(book, ctx.obj.home / "keys", time.time(), purpose))


@main.command("retire-keys")
@click.option("--purpose", type=PURPOSE, help="Only this signer's old keys (default: every one no longer signing).")
@click.pass_context
def retire_keys(ctx: click.Context, purpose: str | None) -> None:
    """Drop the signing keys no longer in use from the trust document."""
    from cloud_stub import trustkeys

    _run(ctx, lambda book: trustkeys.retire(book, purpose))


@main.command("rotate-root")
@click.pass_context
def rotate_root(ctx: click.Context) -> None:
    """Make a new root key: trust documents carry old and new (with the new one's proof), signed by the old."""
    from cloud_stub import trustkeys

    _run(ctx, lambda book: trustkeys.rotate_root(book, ctx.obj.home / "keys", time.time()))


@main.command("retire-root")
@click.pass_context
def retire_root(ctx: click.Context) -> None:
    """Drop the old root once every device has taken the rotation: the new root signs trust from now on."""
    from cloud_stub import trustkeys

    _run(ctx, trustkeys.retire_root)


@main.command()
@click.option("--broker", "brokers", type=BROKER, multiple=True,
              help="mqtt://HOST:PORT of a broker (default: start the embedded amqtt); repeated: the nodes of a"
                   " cluster, the next one tried when a connection is lost.")  # fmt: skip
@click.option("--user", default="cloud", show_default=True)
@click.option("--password", envvar="SMARTPLUS_CLOUD_PASSWORD", default="cloud", show_default=True)
@click.option("--port", default=1883, show_default=True, help="The embedded broker's port.")
@click.option("--images-port", default=8080, show_default=True, help="The image server's port (0: any free one).")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between passes (changes are seen at once).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Connect with TLS, verifying the broker against this CA (mqtts://).")  # fmt: skip
@click.option(
    "--cert-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The cloud's client certificate, for a broker that requires one (mutual TLS; with --key-file).",
)
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--image-base", help="Where devices fetch images: the URL firmware jobs name, up to the model's"
              " directory (default: the image server started here).")  # fmt: skip
@click.pass_context
def serve(
    ctx: click.Context,
    brokers: tuple[tuple[str, int], ...],
    user: str,
    password: str,
    port: int,
    images_port: int,
    interval: float,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    image_base: str | None,
) -> None:
    """Issue documents, take what devices send, serve images: until interrupted."""
    import asyncio
    import ssl
    from urllib.parse import urlsplit

    from cloud_stub.images import ImageServer
    from cloud_stub.service import CloudService
    from protocol import logs

    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert-file and --key-file go together (mutual TLS needs both)")
    if (cert_file is not None and ca_file is None) or (ca_file is not None and not brokers):
        raise click.UsageError("TLS needs --ca-file and a --broker (the embedded broker speaks plain MQTT)")
    if image_base is not None and (
        urlsplit(image_base).scheme not in ("http", "https") or not image_base.endswith("/")
    ):
        raise click.UsageError(f"--image-base must be an http(s) URL ending in '/', not {image_base!r}")
    tls = None
    if ca_file is not None:
        tls = ssl.create_default_context(cafile=str(ca_file))
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file is not None and key_file is not None:
            tls.load_cert_chain(str(cert_file), str(key_file))
    logs.configure("info")
    home: Path = ctx.obj.home

    async def run() -> None:
        embedded = None
        (host, mqtt_port), *fallbacks = brokers or [("127.0.0.1", port)]
        if not brokers:
            from cloud_stub.broker import start

            embedded = await start(host, port, None, None)
        (home / "images").mkdir(parents=True, exist_ok=True)
        images = ImageServer(home / "images", port=images_port)
        await images.start()
        base = image_base or images.url("")
        service = CloudService(
            ctx.obj.ledger(), home / "keys", host=host, port=mqtt_port, username=user, password=password,
            image_base=base, interval=interval, fallbacks=fallbacks, tls=tls,
        )  # fmt: skip
        scheme = "mqtts" if tls else "mqtt"
        click.echo(f"serving: broker {scheme}://{host}:{mqtt_port}, images {base}, ledger {ctx.obj.path}", err=True)
        try:
            await service.run()
        finally:
            await images.stop()
            if embedded is not None:
                await embedded.shutdown()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


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

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from cloud_stub.fleet import SimulatedDevice, raise_file_limit, run_fleet, summary

    limit = raise_file_limit()
    if count + 64 > limit:
        _fail_cloud(f"{count} devices need {count + 64} file descriptors; the limit is {limit}")
    macs = [f"0c11{i:08x}" for i in range(count)]
    if register:
        if project is None or distributor is None:
            raise click.UsageError("--register needs --project and --distributor")

        def work(book: Any) -> str:
            for mac in macs:
                book.db.execute(
                    "INSERT OR IGNORE INTO devices (mac, distributor, project, model) VALUES (?, ?, ?, 'R29')",
                    (mac, distributor, project),
                )
            return f"{count} devices in {project}"

        _run(ctx, work)
    root_path = root_file or ctx.obj.home / "keys" / "root.pub.pem"
    try:
        root = load_pem_public_key(root_path.read_bytes())
    except (OSError, ValueError) as exc:
        _fail_cloud(f"no root public key at {root_path} (serve makes the ledger's keys; or give --root): {exc}")
    if not isinstance(root, Ed25519PublicKey):
        _fail_cloud("the root key is not Ed25519")
    where = ", ".join(f"{host}:{port}" for host, port in brokers)
    click.echo(f"fleet: {count} devices against {where}", err=True)
    devices = [SimulatedDevice(mac) for mac in macs]

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop as on Ctrl-C
        with contextlib.suppress(asyncio.CancelledError):
            await run_fleet(devices, brokers, root, username=user, password=password)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    click.echo(summary(devices), err=True)


def _fail_cloud(message: str) -> NoReturn:
    click.echo(f"smartplus-cloud: error: {message}", err=True)
    sys.exit(2)


if __name__ == "__main__":  # python -m cloud_stub.cli (the demo starts `serve` this way)
    main()
