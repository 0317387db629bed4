"""What ``serve`` issues from the ledger (PROTOCOL.md "Signed documents"): the ``trust`` document, one
``entitlements`` document per device in a site, each device's ``firmware-job``, and commands.

A document is issued when what it says changed (the digest of its claims differs from the last one
issued under its key), or, for entitlements, when half the offline bound has passed since the last (a
device relies on a document offline until its ``exp``, by default 30 days). Each is signed with its
purpose's key, takes the next ``seq`` under its key by a conditional write (two ``serve`` processes on one
ledger never issue one ``seq`` twice), and waits in the ledger (``issued.token``) until the broker
acknowledged it: persist, then act.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cloud_stub import documents
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.sites import Site
from cloud_stub.operations import keys, upgrades
from protocol.topics import Topics

DAY: Final = 86_400.0
OFFLINE_DAYS: Final = 30.0
JOB_DAYS: Final = 30.0
COMMAND_TTL: Final = 600.0
TRUST_KEY: Final = "trust:*"


def _digest(claims: Any) -> str:
    return hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).hexdigest()


def site_claims(uow: UnitOfWork, site: Site) -> dict[str, Any]:
    """What the ledger grants a site's devices, without the time-dependent and per-device claims."""
    return {
        "project": {
            "id": site.id, "type": site.type, "created": site.created.isoformat(), "timezone": site.timezone,
            "doors": site.doors, "free_apps": site.free_apps,
        },
        "services": [
            documents.service_entry(h.service, h.subject, h.expires, h.plan)
            for h in uow.holdings.of(site.id)
            if h.expires is not None
        ],
        "settings": site.settings,
    }  # fmt: skip


def claims_for(uow: UnitOfWork, device: str) -> dict[str, Any]:
    """What the ledger grants ``device``'s site (``no_project`` for a device in none)."""
    found = uow.sites.device(device)
    if found is None or found.project is None:
        raise Refused("no_project", f"device {device} is in no project", "ledger")
    return site_claims(uow, uow.sites.require(found.project))


def issue_trust(uow: UnitOfWork, directory: Path, prefix: str) -> int | None:
    """Issue the trust document if what it lists changed; its ``seq``, or None."""
    listing = keys.listing(uow)
    last = uow.issued.last(TRUST_KEY)
    digest = _digest(listing)
    if last is not None and last.digest == digest:
        return None
    seq = uow.issued.take(TRUST_KEY, last, digest, uow.now)
    if seq is None:
        return None  # another process issued it
    uow.issued.hold(TRUST_KEY, seq, Topics(prefix, "*").trust, keys.trust_document(uow, directory, seq))
    return seq


@dataclass(frozen=True)
class Options:
    """How ``serve`` issues: the topic prefix, where images are fetched, the offline bound."""

    prefix: str
    image_base: str
    offline_days: float = OFFLINE_DAYS


def issue_devices(uow: UnitOfWork, directory: Path, options: Options) -> int:
    """Issue each device's entitlements and firmware job that must be (re)published; how many."""
    devices = uow.sites.devices(placed=True)
    if not devices:
        return 0
    billing = keys.signer(uow, directory, "billing")
    releases = keys.signer(uow, directory, "releases")
    jobs = upgrades.jobs(uow, options.image_base)
    last = uow.issued.every()
    bodies: dict[str, tuple[dict[str, Any], str]] = {}  # a site's claims and their digest, once per site
    stale_after, issued = options.offline_days * DAY / 2, 0
    now = uow.now
    for device in devices:
        assert device.project is not None
        if device.project not in bodies:
            body = site_claims(uow, uow.sites.require(device.project))
            bodies[device.project] = (body, _digest(body))
        body, digest = bodies[device.project]
        previous = last.get(device.mac)
        fresh = previous is not None and previous.digest == digest and now - previous.issued_at <= stale_after
        if not fresh:
            seq = uow.issued.take(device.mac, previous, digest, now)
            if seq is not None:
                token = documents.entitlements(billing, device.mac, body, iat=now, exp=now + options.offline_days * DAY,
                                               seq=seq)  # fmt: skip
                uow.issued.hold(device.mac, seq, Topics(options.prefix, device.mac).entitlements, token)
                issued += 1
        job = jobs.get(device.mac)
        if job is not None:
            issued += _issue_job(uow, releases, device.mac, job, last.get(f"fw:{device.mac}"), options.prefix)
    return issued


def _issue_job(uow: UnitOfWork, key: Any, mac: str, job: Mapping[str, Any], previous: Any, prefix: str) -> int:
    digest = _digest(job)
    if previous is not None and previous.digest == digest:
        return 0
    seq = uow.issued.take(f"fw:{mac}", previous, digest, uow.now)
    if seq is None:
        return 0
    token = documents.firmware_job(key, job, iat=uow.now, exp=uow.now + JOB_DAYS * DAY, seq=seq)
    uow.issued.hold(f"fw:{mac}", seq, Topics(prefix, mac).firmware, token)
    return 1


def sign_command(
    uow: UnitOfWork, directory: Path, mac: str, ident: str, op: str, args: Mapping[str, Any] | None = None
) -> str:
    """A command for ``mac``, signed by the commands signer with the next ``seq`` of ``cmd:<mac>``."""
    key = f"cmd:{mac}"
    for _ in range(16):  # another process may take the same seq between the read and the write
        seq = uow.issued.take(key, uow.issued.last(key), ident, uow.now)
        if seq is not None:
            signer = keys.signer(uow, directory, "commands")
            return documents.command(signer, mac, ident, op, args, iat=uow.now, exp=uow.now + COMMAND_TTL, seq=seq)
    raise Refused("busy", f"could not take a seq for {mac}'s command", "PROTOCOL.md commands")
