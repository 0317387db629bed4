"""``smartplus-cloud``: the cloud stub's command line."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import click

from cloud_stub import cli_billing, cli_common
from cloud_stub.cli_common import Context, fail, moment
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smartplus-edge", prog_name="smartplus-cloud", message="%(prog)s %(version)s")
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
@click.option(
    "--now",
    "now_text",
    envvar="SMARTPLUS_CLOUD_NOW",
    metavar="ISO-8601",
    help="Act as if it were this instant (with its zone): rehearse renewals, expiries and orders.",
)
@click.pass_context
def main(ctx: click.Context, ledger_path: Path, actor: str | None, as_json: bool, now_text: str | None) -> None:
    """The cloud side of the intercom platform (stub: payments simulated, rules real).

    Ledger commands act as one account (--as) on one ledger (--ledger); keys and images live beside
    it. A refusal names its rule and the seed it comes from and exits 1; bad arguments exit 2.
    """
    ctx.obj = Context(ledger_path, actor, as_json, None if now_text is None else moment(now_text, "--now"))


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
# A refusal prints the rule and the seed it comes from and exits 1; bad arguments and unknown ids exit 2.
# Accounts, sites, services and payments: cloud_stub/cli_billing.py.
for _command in cli_billing.COMMANDS:
    main.add_command(_command)


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
    cli_common.run(ctx, lambda book: rollouts.add_firmware(book, images, model, version, image, log_text, time.time()))


@main.command("firmware-list")
@click.pass_context
def firmware_list(ctx: click.Context) -> None:
    """Version, model, log and created time of each image."""
    from cloud_stub import rollouts

    cli_common.run(ctx, rollouts.firmware_list)


@main.command()
@click.argument("ident")
@click.option("--project", required=True)
@click.option("--model", required=True)
@click.option("--version", required=True)
@click.option("--device", "devices", multiple=True, help="A MAC (default: every device of MODEL in the site).")
@click.option("--at", "at_text", help="When (ISO 8601 with a zone); default: right now.")
@click.option("--reset", is_flag=True, help="Reset After Upgrade (cannot be undone).")
@click.option("--wave-size", type=click.IntRange(min=1), help="Phased: this many devices a wave.")
@click.option("--wave-percent", type=click.FloatRange(0, 100, min_open=True), help="Phased: this share a wave.")
@click.option("--wave-wait", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Phased: seconds between a wave finishing and the next.")  # fmt: skip
@click.option("--max-failures", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Phased: the share of a wave failed (or rolled back) that pauses the rollout.")  # fmt: skip
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
    from cloud_stub import rollouts, waves

    state: Context = ctx.obj
    who = state.who()
    at = None if at_text is None else moment(at_text, "--at")
    if wave_size is not None and wave_percent is not None:
        raise click.UsageError("--wave-size or --wave-percent, not both")
    phased = None
    if wave_size is not None or wave_percent is not None:
        phased = waves.Plan(wave_size, wave_percent, wave_wait, max_failures)

    def work(book: Any) -> Any:
        book.check_authority(who, book.project(project))
        return rollouts.add_upgrade(
            book, ident, project, model, version, state.now(), devices=list(devices) or None, at=at, reset=reset,
            phased=phased,
        )  # fmt: skip

    cli_common.run(ctx, work)


@main.command("api-token")
@click.argument("account")
@click.pass_context
def api_token(ctx: click.Context, account: str) -> None:
    """A new HTTP API token for ACCOUNT (the platform operator's; shown once, kept as its SHA-256)."""
    from cloud_stub.api import make_token

    cli_common.run(ctx, lambda book: make_token(book, account, ctx.obj.now()))


def _rollout_command(name: str, action: Callable[[Any, str], None] | None, doc: str) -> None:
    """``name IDENT``: (do ``action`` to the rollout, then) show the rollout, under --as's authority."""

    @main.command(name, help=doc)
    @click.argument("ident")
    @click.pass_context
    def command(ctx: click.Context, ident: str) -> None:
        from cloud_stub import rollouts

        who = ctx.obj.who()

        def work(book: Any) -> Any:
            book.check_authority(who, book.project(rollouts.project_of(book, ident)))
            if action is not None:
                action(book, ident)
            return rollouts.rollout_status(book, ident)

        cli_common.run(ctx, work)


def _resume(book: Any, ident: str) -> None:
    from cloud_stub import rollouts

    rollouts.resume_rollout(book, ident)


def _cancel(book: Any, ident: str) -> None:
    from cloud_stub import rollouts

    rollouts.cancel_rollout(book, ident)


_rollout_command(
    "rollout",
    None,
    "A phased rollout: its state (running, paused and why, cancelled, completed) and each wave's devices.",
)
_rollout_command("rollout-resume", _resume, "Resume a paused rollout (the waves that paused it are excused).")
_rollout_command(
    "rollout-cancel", _cancel, "Cancel a rollout: no more waves; its devices that have not started get a cancel."
)


@main.command()
@click.option("--project", "projects", multiple=True, help="Only this site (default: every site --as acts for).")
@click.option("--status", type=click.Choice(["Pending", "Processing", "Executed"]))
@click.pass_context
def upgrades(ctx: click.Context, projects: tuple[str, ...], status: str | None) -> None:
    """The upgrades of the sites --as acts for, newest first, with their status and each device's."""
    from cloud_stub import rollouts

    who = ctx.obj.who()

    def work(book: Any) -> Any:
        mine = [s["id"] for s in book.sites(who)]
        for project in projects:
            book.check_authority(who, book.project(project))
        return rollouts.upgrades(book, list(projects) or mine, status)

    cli_common.run(ctx, work)


@main.command("edit-upgrade")
@click.argument("ident")
@click.option("--at", "at_text", help="The new time (ISO 8601 with a zone).")
@click.option("--right-now", is_flag=True, help="Start it right now instead.")
@click.option("--version", help="Another version of the same model.")
@click.pass_context
def edit_upgrade(ctx: click.Context, ident: str, at_text: str | None, right_now: bool, version: str | None) -> None:
    """Edit an upgrade no device has started: its time or its version."""
    from cloud_stub import rollouts

    if at_text is not None and right_now:
        raise click.UsageError("--at or --right-now, not both")
    who = ctx.obj.who()
    at = None if at_text is None else moment(at_text, "--at")

    def work(book: Any) -> Any:
        book.check_authority(who, book.project(rollouts.project_of(book, ident)))
        current = book.db.execute("SELECT at FROM upgrades WHERE id = ?", (ident,)).fetchone()[0]
        rollouts.edit_upgrade(book, ident, at=None if right_now else at if at is not None else current, version=version)
        return next(u for u in rollouts.upgrades(book, [rollouts.project_of(book, ident)]) if u["id"] == ident)

    cli_common.run(ctx, work)


@main.command("upgrade-status")
@click.argument("ident")
@click.pass_context
def upgrade_status(ctx: click.Context, ident: str) -> None:
    """Each device's status: Pending, Processing, Executed, Failed."""
    from cloud_stub import rollouts

    cli_common.run(ctx, lambda book: rollouts.statuses(book, ident))


@main.command("delete-upgrade")
@click.argument("ident")
@click.pass_context
def delete_upgrade(ctx: click.Context, ident: str) -> None:
    """Delete an upgrade no device has started (the devices get a cancel)."""
    from cloud_stub import rollouts

    who = ctx.obj.who()

    def work(book: Any) -> str:
        book.check_authority(who, book.project(rollouts.project_of(book, ident)))
        rollouts.delete_upgrade(book, ident)
        return f"{ident} deleted"

    cli_common.run(ctx, work)


def _remote(ctx: click.Context, mac: str, op: str, wait: float) -> None:
    """Queue ``op`` for ``mac``; ``serve`` signs and publishes it; wait for the device's reply and show it."""
    state: Context = ctx.obj
    who = state.who()

    def work(book: Any) -> Any:
        ident = book.ask_device(who, mac, op, time.time())
        deadline = time.monotonic() + wait
        while True:
            reply = book.reply(ident)
            if reply is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if reply is None:
            return {"id": ident, "reply": None, "note": f"no reply within {wait:g} s (is serve running?)"}
        return {"id": ident, "reply": reply}

    cli_common.run(ctx, work)


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
    from cloud_stub import ingest

    cli_common.run(ctx, lambda book: ingest.alarms(book, project))


PURPOSE = click.Choice(["billing", "releases", "commands"])


@main.command("rotate-key")
@click.option("--purpose", type=PURPOSE, help="The signer to rotate: billing (entitlements), releases (firmware"
              " jobs) or commands. Default: all three.")  # fmt: skip
@click.pass_context
def rotate_key(ctx: click.Context, purpose: str | None) -> None:
    """Bring in a new signer (listed beside the old one until retire-keys); prints the new kids."""
    from cloud_stub import trustkeys

    cli_common.run(ctx, lambda book: trustkeys.rotate(book, ctx.obj.home / "keys", time.time(), purpose))


@main.command("retire-keys")
@click.option("--purpose", type=PURPOSE, help="Only this signer's old keys (default: every one no longer signing).")
@click.pass_context
def retire_keys(ctx: click.Context, purpose: str | None) -> None:
    """Drop the signing keys no longer in use from the trust document."""
    from cloud_stub import trustkeys

    cli_common.run(ctx, lambda book: trustkeys.retire(book, purpose))


@main.command("rotate-root")
@click.pass_context
def rotate_root(ctx: click.Context) -> None:
    """Make a new root key: trust documents carry old and new (with the new one's proof), signed by the old."""
    from cloud_stub import trustkeys

    cli_common.run(ctx, lambda book: trustkeys.rotate_root(book, ctx.obj.home / "keys", time.time()))


@main.command("retire-root")
@click.pass_context
def retire_root(ctx: click.Context) -> None:
    """Drop the old root once every device has taken the rotation: the new root signs trust from now on."""
    from cloud_stub import trustkeys

    cli_common.run(ctx, trustkeys.retire_root)


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
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve the HTTP API for the ledger and rollouts on this port (0: any free one; default: off).",
)
@click.option("--api-host", default="127.0.0.1", show_default=True, help="Where the HTTP API listens.")
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
    api_port: int | None,
    api_host: str,
) -> None:
    """Issue documents, take what devices send, serve images (and the HTTP API): until interrupted."""
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
            start = _embedded_broker()
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
        api = None
        if api_port is not None:
            from cloud_stub.api import Api

            api = await Api(ctx.obj.ledger(), ctx.obj.now).start(api_host, api_port)
        where = f", API http://{api_host}:{api.port}/v1/" if api is not None else ""
        click.echo(f"serving: broker {scheme}://{host}:{mqtt_port}, images {base}{where}, ledger {ctx.obj.path}",
                   err=True)  # fmt: skip
        try:
            await service.run()
        finally:
            if api is not None:
                await api.close()
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
        fail(f"{count} devices need {count + 64} file descriptors; the limit is {limit}")
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

        cli_common.run(ctx, work)
    root_path = root_file or ctx.obj.home / "keys" / "root.pub.pem"
    try:
        root = load_pem_public_key(root_path.read_bytes())
    except (OSError, ValueError) as exc:
        fail(f"no root public key at {root_path} (serve makes the ledger's keys; or give --root): {exc}")
    if not isinstance(root, Ed25519PublicKey):
        fail("the root key is not Ed25519")
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


def _embedded_broker() -> Any:
    """The embedded broker's start, or a clear word on what to install (it is an optional extra)."""
    try:
        from cloud_stub.broker import start
    except ImportError as exc:
        fail(
            f"the embedded broker needs amqtt ({exc.name or exc}): pip install 'smartplus-edge[embedded]',"
            " or give --broker mqtt://HOST:PORT"
        )
    return start


if __name__ == "__main__":  # python -m cloud_stub.cli (the demo starts `serve` this way)
    main()
