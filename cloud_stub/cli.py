"""``smartplus-cloud``: the cloud stub's command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO

import click

from cloud_stub.keys import load_private_key, write_keypair


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The cloud side of the intercom platform (stub: payments simulated, rules real)."""


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
    from agent.entitlements import jws

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
