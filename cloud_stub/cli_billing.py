"""``smartplus-cloud``'s ledger commands: accounts and credits, sites and what is in them, service switches,
quotes, orders and payments, notices. Each acts as ``--as`` where an account's authority matters; the rules
are the ledger's (cloud_stub/ledger.py, rules.py; docs/cloud.md)."""

from __future__ import annotations

from typing import Any

import click

from cloud_stub.cli_common import Context, assignments, day, fail, items, run


@click.command("add-account")
@click.argument("ident")
@click.option(
    "--role", required=True, type=click.Choice(["distributor", "sub_distributor", "installer", "sub_installer", "pm"])
)
@click.option("--name", required=True)
@click.option("--parent")
@click.option("--permission", default="none", type=click.Choice(["none", "regular", "credit"]),
              help='"Pay by Installer" (a PM\'s is its site\'s "Pay by PM": site-set).')  # fmt: skip
@click.pass_context
def add_account(ctx: click.Context, ident: str, role: str, name: str, parent: str | None, permission: str) -> None:
    """Add a distributor, sub-distributor, installer, sub-installer or property manager."""
    run(ctx, lambda book: book.add_account(ident, role, name, parent=parent, permission=permission) or ident)


@click.command()
@click.argument("account")
@click.argument("permission", type=click.Choice(["none", "regular", "credit"]))
@click.pass_context
def grant(ctx: click.Context, account: str, permission: str) -> None:
    """Grant an installer under --as "Pay by Installer" (a PM's is the site's "Pay by PM": site-set)."""
    who = ctx.obj.who()
    run(ctx, lambda book: book.grant(who, account, permission) or f"{account}: {permission}")


@click.command("email-setting")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def email_setting(ctx: click.Context, state: str) -> None:
    """The installer's (--as) Single-Family Email Setting: renewal and expiration emails to end users."""
    who = ctx.obj.who()
    run(ctx, lambda book: book.set_end_user_email(who, state == "on") or f"single-family email {state}")


@click.command("buy-credits")
@click.argument("amount", type=int)
@click.option("--source", default="stripe", type=click.Choice(["stripe", "paypal", "coupon"]))
@click.pass_context
def buy_credits(ctx: click.Context, amount: int, source: str) -> None:
    """A distributor (--as) buys credits from the vendor."""
    state: Context = ctx.obj
    who = state.who()
    run(ctx, lambda book: {"remaining": book.buy_credits(who, amount, source, state.now())})


@click.command()
@click.argument("account")
@click.argument("amount", type=int)
@click.pass_context
def allocate(ctx: click.Context, account: str, amount: int) -> None:
    """Give credits to a sub-distributor, installer or PM under --as."""
    state: Context = ctx.obj
    who = state.who()
    run(ctx, lambda book: {"remaining": book.allocate(who, account, amount, state.now())})


@click.command("credit-log")
@click.argument("account", required=False)
@click.pass_context
def credit_log(ctx: click.Context, account: str | None) -> None:
    """Available, total and used credit, and the time, amount and remaining credit of each movement."""
    target = account or ctx.obj.who()
    run(ctx, lambda book: {**book.credit_totals(target), "log": book.credit_log(target)})


# -- sites ----------------------------------------------------------------------------------------------------
@click.command("add-project")
@click.argument("ident")
@click.option("--type", "project_type", required=True, type=click.Choice(["community", "single_family", "commercial"]))
@click.option("--installer", required=True)
@click.option("--created", required=True, help="YYYY-MM-DD")
@click.option("--door", "doors", multiple=True, help="A door (commercial; the first is free). Repeat.")
@click.option("--timezone", default="UTC", help="IANA name, e.g. Asia/Shanghai.")
@click.option("--pm", help="A PM of the installer.")
@click.option("--name", default="")
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
    name: str,
) -> None:
    """Add a site."""
    when = day(created, "--created")
    run(ctx, lambda book: book.add_project(
        ident, project_type, installer, when, doors=doors, timezone=timezone, pm=pm, name=name
    ) or ident)  # fmt: skip


@click.command()
@click.pass_context
def sites(ctx: click.Context) -> None:
    """The sites --as acts for."""
    who = ctx.obj.who()
    run(ctx, lambda book: book.sites(who))


@click.command("site-set")
@click.argument("project")
@click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_context
def site_set(ctx: click.Context, project: str, changes: tuple[str, ...]) -> None:
    """Edit a site: name, timezone, pm, pay_by_pm (none|regular), pm_notices and renew_notices (true|false),
    and the settings that reach its devices (time_format, date_format, contact_display_order, landline,
    visitor_call_door_log, visitor_call_snapshot, remote_maintenance, auto_provisioning, transmission_type)."""
    who, wanted = ctx.obj.who(), assignments(changes)
    run(ctx, lambda book: book.set_site(who, project, wanted))


@click.command("delete-site")
@click.argument("project")
@click.pass_context
def delete_site(ctx: click.Context, project: str) -> None:
    """Delete a site; its devices go back to the MAC library."""
    who = ctx.obj.who()
    run(ctx, lambda book: book.delete_site(who, project))


@click.command()
@click.argument("project")
@click.option("--pms", help="The third-party PMS now integrated.")
@click.option("--off", is_flag=True, help="The integration was removed.")
@click.pass_context
def integrate(ctx: click.Context, project: str, pms: str | None, off: bool) -> None:
    """Record a third-party PMS integration: it sets the site's Integration service (never sold)."""
    if (pms is None) == (not off):
        raise click.UsageError("give --pms NAME or --off")
    who = ctx.obj.who()
    run(ctx, lambda book: book.integrate(who, project, pms) or f"integration {pms or 'off'}")


@click.command("add-device")
@click.argument("mac")
@click.option("--distributor", required=True, help="Whose MAC library it is in.")
@click.option("--model", required=True)
@click.option("--project", help="Put it in this site (acting as --as).")
@click.option("--name")
@click.pass_context
def add_device(
    ctx: click.Context, mac: str, distributor: str, model: str, project: str | None, name: str | None
) -> None:
    """Register a device's MAC in a distributor's library, optionally in a site --as acts for."""
    who = ctx.obj.who() if project is not None else None
    run(ctx, lambda book: book.add_device(mac, distributor, model, project, actor=who, name=name))


@click.command()
@click.argument("project")
@click.pass_context
def services(ctx: click.Context, project: str) -> None:
    """A site's services and their expiry."""
    run(ctx, lambda book: book.services(project))


@click.command()
@click.argument("project")
@click.pass_context
def apartments(ctx: click.Context, project: str) -> None:
    """A community's apartments and their services (With Indoor Monitor, Landline, Video Storage)."""
    run(ctx, lambda book: book.apartments(project))


@click.command("add-apartment")
@click.argument("project")
@click.argument("ident")
@click.option("--name", default="")
@click.option("--device-mac", help="Its indoor monitor (required while With Indoor Monitor is on).")
@click.option("--device-name")
@click.option("--service", "switches", multiple=True, metavar="SERVICE=on|off",
              help="with_indoor_monitor, landline or video_storage for this apartment. Repeat.")  # fmt: skip
@click.pass_context
def add_apartment(
    ctx: click.Context,
    project: str,
    ident: str,
    name: str,
    device_mac: str | None,
    device_name: str | None,
    switches: tuple[str, ...],
) -> None:
    """Add an apartment to a community."""
    who = ctx.obj.who()
    if (device_mac is None) != (device_name is None):
        raise click.UsageError("--device-mac and --device-name go together")
    device = (device_mac, device_name) if device_mac and device_name else None
    chosen = {}
    for key, value in assignments(switches).items():
        if value not in ("on", "off"):
            fail(f"--service {key}={value}: on or off")
        chosen[key] = value == "on"
    run(ctx, lambda book: book.add_apartment(
        project, ident, name or ident, actor=who, device=device, services=chosen
    ) or ident)  # fmt: skip


@click.command("add-app-account")
@click.argument("project")
@click.argument("ident")
@click.option("--role", required=True, type=click.Choice(["master", "family", "pm", "personnel", "admin"]))
@click.option("--name", default="")
@click.option("--apartment")
@click.pass_context
def add_app_account(ctx: click.Context, project: str, ident: str, role: str, name: str, apartment: str | None) -> None:
    """Add an app account; prints the service that pays for it."""
    who = ctx.obj.who()
    run(ctx, lambda book: book.add_app_account(project, ident, role, name or ident, apartment, actor=who))


@click.command()
@click.argument("project")
@click.argument("service")
@click.option("--apartment", help="Only this apartment (With Indoor Monitor, Landline, Video Storage).")
@click.option("--all-apartments", is_flag=True, help="Every apartment (With Indoor Monitor, Landline).")
@click.option("--off", is_flag=True)
@click.pass_context
def switch(
    ctx: click.Context, project: str, service: str, apartment: str | None, all_apartments: bool, off: bool
) -> None:
    """Service-based charging: switch a community's service on or off (seed 003)."""
    state: Context = ctx.obj
    who = state.who()
    if apartment and all_apartments:
        raise click.UsageError("--apartment or --all-apartments, not both")
    subject = "apartments" if all_apartments else f"apartment:{apartment}" if apartment else "project"
    run(ctx, lambda book: {"service": service, "on": not off, "changed": book.switch(
        project, service, subject, on=not off, actor=who, now=state.now()
    )})  # fmt: skip


# -- paying ---------------------------------------------------------------------------------------------------
def _selection(function: Any) -> Any:
    """--item, or --site with --service; --months or --renew-to; --plan."""
    options = (
        click.option("--item", "items_", multiple=True,
                     help="PROJECT/SERVICE/SUBJECT, e.g. office/door/door:door-2. Repeat."),
        click.option("--site", "sites_", multiple=True, help="What this site could pay for (or --service). Repeat."),
        click.option("--service", "service_types", multiple=True, help="With --site: only this type. Repeat."),
        click.option("--months", type=int, help="Manual renewal for this many months (regular payment)."),
        click.option("--renew-to", help="Credit renewal to this date (YYYY-MM-DD: 23:59:59 in the site's zone)."),
        click.option("--plan", type=click.Choice(["0-200", "201+"]), help="The attendance plan."),
    )  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def _quote(ctx: click.Context, book: Any, who: str, selection: dict[str, Any]) -> dict[str, Any]:
    chosen_items, chosen_sites = selection["items_"], selection["sites_"]
    if bool(chosen_items) == bool(chosen_sites):
        raise click.UsageError("give --item, or --site (with --service to narrow it)")
    if (selection["months"] is None) == (selection["renew_to"] is None):
        raise click.UsageError("give --months (regular payment) or --renew-to (credit payment)")
    chosen = (
        items(chosen_items)
        if chosen_items
        else book.select(list(chosen_sites), list(selection["service_types"]) or None)
    )
    length: dict[str, Any] = (
        {"months": selection["months"]}
        if selection["months"] is not None
        else {"renew_to": day(selection["renew_to"], "--renew-to")}
    )
    quoted: dict[str, Any] = book.quote(who, chosen, ctx.obj.now(), plan=selection["plan"], **length)
    return quoted


@click.command()
@_selection
@click.pass_context
def quote(ctx: click.Context, /, **selection: Any) -> None:
    """The price first: what activating or renewing the chosen services costs, and each new expiry."""
    who = ctx.obj.who()
    run(ctx, lambda book: _quote(ctx, book, who, selection))


SOURCE = click.Choice(["stripe", "paypal", "coupon", "credit"])


@click.command()
@_selection
@click.option("--source", required=True, type=SOURCE)
@click.pass_context
def order(ctx: click.Context, /, source: str, **selection: Any) -> None:
    """Place a pending order for the chosen services: its transaction number; pay it within 15 minutes."""
    state: Context = ctx.obj
    who = state.who()

    def work(book: Any) -> dict[str, Any]:
        offer = _quote(ctx, book, who, selection)
        ident = book.order(who, offer, source, state.now())
        txn = book.txn_of(ident)
        return {"txn": txn, "status": "pending", "amount": offer["amount"], "pay_by": state.now() + 15 * 60,
                "quote": offer}  # fmt: skip

    run(ctx, work)


@click.command()
@click.argument("txn")
@click.option("--auto-renew", is_flag=True, help="Renew every 30 days from the upcoming expiry on.")
@click.pass_context
def pay(ctx: click.Context, txn: str, auto_renew: bool) -> None:
    """Pay a pending order by its transaction number (payment simulated)."""
    state: Context = ctx.obj
    who = state.who()
    run(ctx, lambda book: book.pay(book.order_of(txn), state.now(), auto_renew=auto_renew, payer=who))


@click.command()
@_selection
@click.option("--source", required=True, type=SOURCE)
@click.option("--auto-renew", is_flag=True, help="Renew every 30 days from the upcoming expiry on.")
@click.pass_context
def renew(ctx: click.Context, /, source: str, auto_renew: bool, **selection: Any) -> None:
    """Quote, order and pay in one step (payment simulated)."""
    state: Context = ctx.obj
    who = state.who()

    def work(book: Any) -> Any:
        now = state.now()
        offer = _quote(ctx, book, who, selection)
        return {"quote": offer, **book.pay(book.order(who, offer, source, now), now, auto_renew=auto_renew)}

    run(ctx, work)


@click.command()
@click.pass_context
def payments(ctx: click.Context) -> None:
    """The payment records of --as, newest first: manual and automatic, paid, pending or expired."""
    who = ctx.obj.who()
    run(ctx, lambda book: book.payments(who))


@click.command("cancel-auto-renew")
@click.option("--item", "items_", multiple=True, required=True, help="PROJECT/SERVICE/SUBJECT. Repeat.")
@click.pass_context
def cancel_auto_renew(ctx: click.Context, items_: tuple[str, ...]) -> None:
    """Stop the auto-renewal of the chosen services."""
    who = ctx.obj.who()
    run(ctx, lambda book: {"cancelled": book.cancel_auto_renew(who, items(items_))})


@click.command("auto-renew")
@click.pass_context
def auto_renew(ctx: click.Context) -> None:
    """Run the auto-renewals due now (serve does this on every pass)."""
    state: Context = ctx.obj
    keys = ("project", "service", "subject", "expires")
    run(ctx, lambda book: [dict(zip(keys, row, strict=True)) for row in book.auto_renew(state.now())])


@click.command()
@click.option("--site", help="List the notices of this site (after raising those due).")
@click.pass_context
def notices(ctx: click.Context, site: str | None) -> None:
    """Raise the expiration notices due now (15, 5, 3, 1 days) and list them (or all of --site's)."""
    state: Context = ctx.obj

    def work(book: Any) -> Any:
        raised = book.raise_notices(state.now())
        return raised if site is None else book.notices_of(site)

    run(ctx, work)


COMMANDS = (
    add_account, grant, email_setting, buy_credits, allocate, credit_log, add_project, sites, site_set, delete_site,
    integrate, add_device, services, apartments, add_apartment, add_app_account, switch, quote, order, pay, renew,
    payments, cancel_auto_renew, auto_renew, notices,
)  # fmt: skip
