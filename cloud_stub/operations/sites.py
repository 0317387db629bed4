"""Sites and what is in them: projects and their settings, apartments with their own switches, app
accounts, devices from the MAC library, and service-based charging (seed 003). docs/cloud.md "The rules"
has each rule with its seed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from cloud_stub import rules
from cloud_stub.errors import Refused
from cloud_stub.ledger import UnitOfWork
from cloud_stub.ledger.sites import AppAccount, Site
from cloud_stub.operations import authority
from cloud_stub.operations.authority import Actor
from cloud_stub.operations.types import Ident, Mac, Request, Result, Text, WireId, check_text, given, not_both, refusal

ProjectType = Literal["community", "single_family", "commercial"]
ApartmentService = Literal["with_indoor_monitor", "landline", "video_storage"]
# Site fields an installer edits (seed 002 rows 1-11), beside the settings that reach the device.
SITE_FIELDS: Final = ("name", "timezone", "pm", "pay_by_pm", "pm_notices", "renew_notices", "address")


class SiteSummary(Result):
    id: str
    name: str
    type: str
    installer: str
    pm: str | None
    timezone: str


class SiteView(SiteSummary):
    created: date
    doors: list[str]
    free_apps: int
    settings: dict[str, Any]
    pm_notices: bool
    pay_by_pm: str
    renew_notices: bool
    integration: str | None
    address: str = ""


def summary(site: Site) -> SiteSummary:
    return SiteSummary(id=site.id, name=site.name, type=site.type, installer=site.installer, pm=site.pm,
                       timezone=site.timezone)  # fmt: skip


def view(site: Site) -> SiteView:
    return SiteView(
        id=site.id, name=site.name, type=site.type, installer=site.installer, pm=site.pm, timezone=site.timezone,
        created=site.created, doors=site.doors, free_apps=site.free_apps, settings=site.settings,
        pm_notices=site.pm_notices, pay_by_pm=site.pay_by_pm, renew_notices=site.renew_notices,
        integration=site.integration, address=site.address,
    )  # fmt: skip


# -- sites ----------------------------------------------------------------------------------------------
class AddSite(Request):
    id: WireId
    type: ProjectType
    installer: Ident
    created: date
    doors: Annotated[list[WireId], Field(max_length=500)] = Field(default_factory=list)
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    pm: Ident | None = None
    name: Text = ""
    free_apps: Annotated[int, Field(ge=0, le=100)] = 0
    address: Text = ""


def _check_pm(uow: UnitOfWork, pm: str, installer: str) -> None:
    """A site's PM is one of its installer's (seed 001 "Roles and Permissions")."""
    found = uow.accounts.require(pm)
    if found.role != "pm" or found.parent != installer:
        raise Refused("not_yours", f"{pm} is not a PM of {installer}", "seed 001 Roles and Permissions")


def add_site(uow: UnitOfWork, actor: Actor, request: AddSite) -> SiteView:
    """A new site: by the operator for any installer, or by an installer (or its sub-installer) for itself.
    A single-family house takes no property manager: its end users are the installer's (seed 001)."""
    if not actor.is_operator and not (actor.principal_role == "installer" and actor.principal == request.installer):
        raise Refused("not_yours", f"{actor.id} does not create sites for {request.installer}", "seed 002 sites")
    installer = uow.accounts.require(request.installer)
    if installer.role != "installer":
        raise Refused("bad_account", f"--installer {request.installer}: not an installer account", "DOMAIN.md")
    if request.pm is not None:
        if request.type == "single_family":
            raise Refused(
                "no_pm_here", "a single-family house has no property manager: its end users are the installer's",
                "seed 001 Roles and Permissions; seed 000 single-family services",
            )  # fmt: skip
        _check_pm(uow, request.pm, request.installer)
    rules.check_zone(request.timezone)
    if len(set(request.doors)) != len(request.doors):
        raise Refused("bad_doors", "a door is named once", "seed 002 doors")
    site = Site(
        id=request.id, type=request.type, installer=request.installer, pm=request.pm, created=request.created,
        timezone=request.timezone, free_apps=request.free_apps, doors=list(request.doors), settings={},
        pm_notices=True, pay_by_pm="none", renew_notices=True, name=request.name or request.id, integration=None,
        address=request.address,
    )  # fmt: skip
    if not uow.sites.add(site):
        raise Refused("already_exists", f"there is a site {request.id} already", "ledger")
    if request.type == "community":  # "With Indoor Monitor" is on by default (seed 003)
        uow.holdings.switch(request.id, "with_indoor_monitor", True)
    return view(site)


def sites(uow: UnitOfWork, actor: Actor) -> list[SiteSummary]:
    """The sites ``actor`` acts for."""
    return [summary(s) for s in authority.sites(uow, actor)]


def get_site(uow: UnitOfWork, actor: Actor, project: str) -> SiteView:
    return view(authority.site(uow, actor, project, read=True))


class SiteChanges(Request):
    """Any of the site's fields (name, timezone, pm, pay_by_pm, pm_notices, renew_notices) and the settings
    that reach its devices (``protocol/settings.py``)."""

    changes: Annotated[
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=200)] | bool | int | None],
        Field(min_length=1, max_length=32),
    ]


class EditSite(SiteChanges):
    project: WireId


def edit_site(uow: UnitOfWork, actor: Actor, request: EditSite) -> SiteView:
    """Edit a site: "Pay by PM", "Send Expiration Email to PM", "Send Renew Email To PM", the PM, the name,
    the time zone, and the settings that reach the device (DOMAIN.md "Site settings that reach the device")."""
    site = authority.site(uow, actor, request.project)
    changes = dict(request.changes)
    fields = {k: v for k, v in changes.items() if k in SITE_FIELDS}
    settings = rules.check_site_settings({k: v for k, v in changes.items() if k not in SITE_FIELDS})
    if "pay_by_pm" in fields and fields["pay_by_pm"] not in rules.PAY_BY_PM:
        raise Refused("bad_permission", f"'Pay by PM' is one of {rules.PAY_BY_PM}", "seed 002 row 8")
    if "pm" in fields:
        if fields["pm"] is not None and not isinstance(fields["pm"], str):
            raise Refused("bad_setting", "pm is an account id", "seed 002")
        if fields["pm"] is not None:
            if site.type == "single_family":
                raise Refused("no_pm_here", "a single-family house has no property manager", "seed 001")
            _check_pm(uow, fields["pm"], site.installer)
    for flag in ("pm_notices", "renew_notices"):
        if flag in fields and not isinstance(fields[flag], bool):
            raise Refused("bad_setting", f"{flag} is true or false", "seed 002 rows 9-10")
    for text, least in (("name", 1), ("address", 0)):
        if text in fields:
            value = fields[text]
            if not isinstance(value, str) or not least <= len(value) <= 200:
                raise Refused("bad_setting", f"{text} is text of {least} to 200 characters", "seed 002")
            try:
                check_text(value)
            except ValueError as exc:
                raise Refused("bad_setting", f"{text}: {exc}", "seed 002") from None
    zone = settings.get("timezone", fields.get("timezone"))
    if zone is not None:
        rules.check_zone(str(zone))
        fields["timezone"] = settings["timezone"] = str(zone)
    uow.sites.update(site.id, fields, settings)
    return view(uow.sites.require(site.id))


class DeleteSite(Request):
    project: WireId


class Deleted(Result):
    devices: int
    apartments: int
    app_accounts: int
    services: int
    notices: int
    upgrades: int


def delete_site(uow: UnitOfWork, actor: Actor, request: DeleteSite) -> Deleted:
    """Delete a site: its apartments, app accounts, services, notices and upgrades go; its devices go back
    to their distributor's MAC library. Refused while a device of it is installing an upgrade."""
    site = authority.site(uow, actor, request.project)
    if uow.upgrades.installing_in(site.id):
        raise Refused("upgrade_running", "a device of this site is installing an upgrade", "seed 002 line 751")
    upgrades = uow.upgrades.remove_site(site.id)
    services = uow.holdings.remove(site.id)
    notices = uow.notices.remove(site.id)
    counts = uow.sites.delete(site.id)
    return Deleted(upgrades=upgrades, services=services, notices=notices, **counts)


class Integrate(Request):
    project: WireId
    pms: Text | None  # None: the integration was removed


def integrate(uow: UnitOfWork, actor: Actor, request: Integrate) -> str:
    """A third-party PMS integrated (or removed): the site's Integration service follows it (seed 000
    line 47); it is never sold or switched by hand."""
    site = authority.site(uow, actor, request.project)
    rules.offer(site.type, "integration")
    uow.sites.set_integration(site.id, request.pms)
    if request.pms is None:
        uow.holdings.remove(site.id, "integration")
    else:
        uow.holdings.set_forever(site.id, "integration")
    return f"integration {request.pms or 'off'}"


# -- devices ----------------------------------------------------------------------------------------------
class DeviceFields(Request):
    """A MAC of a distributor's library, its model and (in a site) its name."""

    mac: Mac
    distributor: Ident
    model: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
    name: Text | None = None


class AddDevice(DeviceFields):
    """A MAC into a distributor's library, and into a site if ``project`` is named."""

    project: WireId | None = None


def add_device(uow: UnitOfWork, actor: Actor, request: AddDevice) -> str:
    """Register a MAC in ``distributor``'s library (the operator, the distributor itself, or an installer
    placing it in its own site) and put it in ``project``: only a site whose installer works under that
    distributor; a MAC already in another site is refused. The MAC as kept (12 lower-case hex digits)."""
    mac = request.mac  # normalised by the request
    library = uow.accounts.require(request.distributor)
    if library.role not in ("distributor", "sub_distributor"):
        raise Refused("not_distributor", f"{library.id} has no MAC library", "DOMAIN.md who is who")
    site = authority.site(uow, actor, request.project) if request.project is not None else None
    if site is None and not actor.is_operator and actor.principal != library.id:
        raise Refused("not_yours", f"{actor.id} does not keep {library.id}'s MAC library", "DOMAIN.md who is who")
    known = uow.sites.device(mac)
    if known is None:
        uow.sites.register(mac, library.id, request.model)
    elif known.distributor != library.id:
        raise Refused("not_yours", f"{mac} is in another distributor's MAC library", "DOMAIN.md who is who")
    if site is not None:
        _place(uow, mac, site, name=request.name)
    return mac


def _place(uow: UnitOfWork, mac: str, site: Site, *, apartment: str | None = None, name: str | None) -> None:
    found = uow.sites.device(mac)
    if found is None:
        raise Refused("not_in_library", f"{mac} is not in a MAC library (add-device first)", "DOMAIN.md")
    if found.distributor not in uow.accounts.chain(site.installer):
        raise Refused("not_yours", f"{mac} is in another distributor's MAC library", "DOMAIN.md who is who")
    if found.project is not None and found.project != site.id:
        raise Refused("device_taken", f"{mac} is already in site {found.project}", "DOMAIN.md who is who")
    uow.sites.place(mac, site.id, apartment=apartment, name=name)


class DeviceView(Result):
    mac: str
    model: str
    project: str | None
    apartment: str | None
    name: str | None


def site_devices(uow: UnitOfWork, actor: Actor, project: str) -> list[DeviceView]:
    site = authority.site(uow, actor, project, read=True)
    return [
        DeviceView(mac=d.mac, model=d.model, project=d.project, apartment=d.apartment, name=d.name)
        for d in uow.sites.devices(site.id)
    ]


# -- what a site holds ---------------------------------------------------------------------------------------
class HoldingView(Result):
    service: str
    subject: str
    expires: float | None
    plan: str | None
    auto_renew: bool


def services(uow: UnitOfWork, actor: Actor, project: str) -> list[HoldingView]:
    """A site's services and their expiry."""
    site = authority.site(uow, actor, project, read=True)
    return [
        HoldingView(service=h.service, subject=h.subject, expires=h.expires, plan=h.plan, auto_renew=h.auto_renew)
        for h in uow.holdings.of(site.id)
    ]


class ApartmentView(Result):
    id: str
    name: str
    with_indoor_monitor: bool
    landline: bool
    video_storage: bool


def apartment_switches(uow: UnitOfWork, site: Site, switched: frozenset[str] | None = None) -> list[ApartmentView]:
    """Each apartment's services: its own switch, else the community's (``switched``: the site-level
    services switched on, when the caller has read them already)."""
    if switched is None:
        switched = frozenset(s for s in rules.APARTMENT_SERVICES if uow.holdings.switched(site.id, s))
    return [
        ApartmentView(id=a.id, name=a.name, **{s: s in switched if v is None else v for s, v in a.switches.items()})
        for a in uow.sites.apartments(site.id)
    ]


def apartments(uow: UnitOfWork, actor: Actor, project: str) -> list[ApartmentView]:
    """A community's apartments and their services (With Indoor Monitor, Landline, Video Storage)."""
    return apartment_switches(uow, authority.site(uow, actor, project, read=True))


def _apartment_services(value: object) -> object:
    if isinstance(value, dict):
        for key in value:
            if key not in rules.APARTMENT_SERVICES:
                raise refusal(
                    "not_per_apartment",
                    "seed 003 Configure Services for Individual Apartments",
                    f"only {', '.join(rules.APARTMENT_SERVICES)} are set per apartment, not {key}",
                )
    return value


class ApartmentFields(Request):
    """An apartment; its indoor monitor (``device_mac`` with ``device_name``) while With Indoor Monitor is on."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"allOf": [given("device_mac"), given("device_name")]},
                                     {"properties": {"device_mac": {"type": "null"}, "device_name": {"type": "null"}}}]}
    )  # fmt: skip

    id: WireId
    name: Text = ""
    device_mac: Mac | None = None
    device_name: Text | None = None
    services: Annotated[dict[ApartmentService, bool], BeforeValidator(_apartment_services)] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _monitor_whole(self) -> ApartmentFields:
        if (self.device_mac is None) != (self.device_name is None):
            raise ValueError("device_mac and device_name go together")
        return self


class AddApartment(ApartmentFields):
    project: WireId


def add_apartment(uow: UnitOfWork, actor: Actor, request: AddApartment) -> str:
    """An apartment of a community; its indoor monitor is required while With Indoor Monitor is on for it
    (seed 003 line 263); ``services`` sets its own switches."""
    site = authority.site(uow, actor, request.project)
    if site.type != "community":
        raise Refused("not_community", "apartments belong to community projects", "seed 003")
    switches = {str(k): v for k, v in request.services.items()}
    monitor = switches.get("with_indoor_monitor", uow.holdings.switched(site.id, "with_indoor_monitor"))
    if monitor and request.device_mac is None:
        raise Refused(
            "indoor_monitor_needed",
            "With Indoor Monitor is on: give the apartment's indoor monitor (--device-mac, --device-name)",
            "seed 003 line 263",
        )
    if not uow.sites.add_apartment(site.id, request.id, request.name or request.id, switches):
        raise Refused("already_exists", f"{site.id} has an apartment {request.id} already", "seed 003")
    if request.device_mac is not None:
        _place(uow, request.device_mac, site, apartment=request.id, name=request.device_name)
    return request.id


AppRole = Literal["master", "family", "pm", "personnel", "admin"]
ROLES_BY_TYPE: Final = {
    "community": ("master", "family", "pm"),
    "single_family": ("master", "family"),
    "commercial": ("personnel", "admin"),
}


class AppAccountFields(Request):
    id: WireId
    role: AppRole
    name: Text = ""
    apartment: WireId | None = None


class AddAppAccount(AppAccountFields):
    project: WireId


def account_services(
    uow: UnitOfWork, site: Site, entries: Sequence[AppAccount] | None = None
) -> dict[str, tuple[str, str]]:
    """Each app account of a site: (role, the service that pays for it). Family members beyond the
    project's free number, in the order they were added, are Additional App (DOMAIN.md). ``entries``: the
    site's app accounts, when the caller has read them already."""
    shown, family = {}, 0
    for entry in uow.sites.app_accounts(site.id) if entries is None else entries:
        service = rules.ACCOUNT_SERVICES[entry.role][0]
        if entry.role == "family":
            service = "app" if family < site.free_apps else "additional_app"
            family += 1
        shown[entry.id] = (entry.role, service)
    return shown


class AppAccountView(Result):
    id: str
    role: str
    name: str
    apartment: str | None
    service: str  # what pays for it


def app_accounts(uow: UnitOfWork, actor: Actor, project: str) -> list[AppAccountView]:
    """A site's app accounts, in the order they were added, with the service that pays for each."""
    site = authority.site(uow, actor, project, read=True)
    entries = uow.sites.app_accounts(site.id)
    paid = account_services(uow, site, entries)
    return [AppAccountView(id=e.id, role=e.role, name=e.name, apartment=e.apartment, service=paid[e.id][1])
            for e in entries]  # fmt: skip


def add_app_account(uow: UnitOfWork, actor: Actor, request: AddAppAccount) -> str:
    """An app account; the service that pays for it (master: app; family beyond the project's free
    number: additional_app; pm: pm_app; personnel: personnel_app; admin: admin_app)."""
    site = authority.site(uow, actor, request.project)
    allowed = ROLES_BY_TYPE[site.type]
    if request.role not in allowed:
        raise Refused("bad_role", f"{site.type} projects have {', '.join(allowed)} accounts", "DOMAIN.md")
    if site.type == "community" and request.role in ("master", "family"):
        if request.apartment is None:
            raise Refused("apartment_needed", "a resident's account belongs to an apartment", "seed 003")
        if uow.sites.apartment(site.id, request.apartment) is None:
            raise Refused("not_found", f"no apartment {request.apartment} in {site.id}", "seed 003")
    if not uow.sites.add_app_account(site.id, request.id, request.role, request.name or request.id, request.apartment):
        raise Refused("already_exists", f"{site.id} has an app account {request.id} already", "DOMAIN.md")
    return account_services(uow, site)[request.id][1]


# -- service-based charging (seed 003) ------------------------------------------------------------------------
class SwitchFields(Request):
    """A service on or off: for the community, one ``apartment``, or ``all_apartments`` (not both)."""

    model_config = ConfigDict(
        json_schema_extra=not_both(given("apartment"), {"required": ["all_apartments"],
                                                        "properties": {"all_apartments": {"const": True}}})
    )  # fmt: skip

    service: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
    on: bool = True
    apartment: WireId | None = None
    all_apartments: bool = False

    @model_validator(mode="after")
    def _one_scope(self) -> SwitchFields:
        if self.apartment is not None and self.all_apartments:
            raise ValueError("apartment or all_apartments, not both")
        return self


class Switch(SwitchFields):
    project: WireId


class Switched(Result):
    service: str
    on: bool
    changed: int


def switch(uow: UnitOfWork, actor: Actor, request: Switch) -> Switched:
    """Switch a service at community level, for one apartment (With Indoor Monitor, Landline, Video
    Storage) or for every apartment (the bulk update of With Indoor Monitor and Landline). PM App is forced
    on and locked while any PM App account is active."""
    site = authority.site(uow, actor, request.project)
    service = request.service
    rules.offer(site.type, service)
    rules.check_switchable(service)
    if service == "pm_app" and not request.on and uow.holdings.any_active(site.id, "pm_app", uow.now):
        raise Refused("pm_app_locked", "PM App is forced on and locked while any PM App is active", "seed 003 line 225")
    if request.all_apartments:
        if service not in rules.BULK_SERVICES:
            raise Refused("not_bulk", f"the bulk update covers {', '.join(rules.BULK_SERVICES)}", "seed 003 line 229")
        changed = uow.sites.switch_apartments(site.id, service, request.on)
    elif request.apartment is not None:
        rules.check_apartment_service(service)
        if uow.sites.apartment(site.id, request.apartment) is None:
            raise Refused("not_found", f"no apartment {request.apartment} in {site.id}", "seed 003")
        changed = uow.sites.switch_apartments(site.id, service, request.on, request.apartment)
    else:
        changed = uow.holdings.switch(site.id, service, request.on)
    return Switched(service=service, on=request.on, changed=changed)


class RegisterFleet(Request):
    """Simulated devices registered in bulk in a distributor's library and a site (``smartplus-cloud fleet``)."""

    macs: Annotated[list[Mac], Field(max_length=100_000)]
    distributor: Ident
    project: WireId
    model: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")] = "R29"


def register_fleet(uow: UnitOfWork, actor: Actor, request: RegisterFleet) -> str:
    """The operator registers simulated devices (MACs already known are left as they are)."""
    authority.operator_only(actor, "registering a fleet")
    site = uow.sites.require(request.project)
    library = uow.accounts.require(request.distributor)
    if library.role not in ("distributor", "sub_distributor"):
        raise Refused("not_distributor", f"{library.id} has no MAC library", "DOMAIN.md who is who")
    uow.sites.register_many([(mac, library.id, request.model, site.id) for mac in request.macs])
    return f"{len(request.macs)} devices in {site.id}"
