"""``smartplus-cloud``'s ledger commands: accounts and credits, sites and what is in them, service switches,
quotes, orders and payments, notices. Each builds its operation's request and runs it as ``--as`` (the
platform operator without it); the rules are the operations' (cloud_stub/operations/; docs/cloud.md)."""

from __future__ import annotations

from typing import Any

import click

from cloud_stub.cli_common import assignments, day, fail, items, request, run, when
from cloud_stub.operations import accounts, credits, paying, sites


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
    """Add a distributor, sub-distributor, installer, sub-installer or property manager (the operator's)."""
    asked = request(ctx, accounts.AddAccount, id=ident, role=role, name=name, parent=parent, permission=permission)
    run(ctx, lambda book, actor: book.call(accounts.add_account, actor, asked).id)


@click.command()
@click.argument("account")
@click.argument("permission", type=click.Choice(["none", "regular", "credit"]))
@click.pass_context
def grant(ctx: click.Context, account: str, permission: str) -> None:
    """Grant an installer under --as "Pay by Installer" (a PM's is the site's "Pay by PM": site-set)."""
    ctx.obj.who()
    asked = request(ctx, accounts.Grant, account=account, permission=permission)
    run(ctx, lambda book, actor: f"{account}: {book.call(accounts.grant, actor, asked).permission}")


@click.command("email-setting")
@click.argument("state", type=click.Choice(["on", "off"]))
@click.pass_context
def email_setting(ctx: click.Context, state: str) -> None:
    """The installer's (--as) Single-Family Email Setting: renewal and expiration emails to end users."""
    ctx.obj.who()
    asked = accounts.EmailSetting(on=state == "on")
    run(ctx, lambda book, actor: book.call(accounts.email_setting, actor, asked))


@click.command("buy-credits")
@click.argument("amount", type=int)
@click.option("--source", default="stripe", type=click.Choice(["stripe", "paypal", "coupon"]))
@click.pass_context
def buy_credits(ctx: click.Context, amount: int, source: str) -> None:
    """A distributor (--as) buys credits from the vendor."""
    ctx.obj.who()
    asked = request(ctx, credits.BuyCredits, amount=amount, source=source)
    run(ctx, lambda book, actor: book.call(credits.buy, actor, asked))


@click.command()
@click.argument("account")
@click.argument("amount", type=int)
@click.pass_context
def allocate(ctx: click.Context, account: str, amount: int) -> None:
    """Give credits to a sub-distributor, installer or PM under --as."""
    ctx.obj.who()
    asked = request(ctx, credits.Allocate, account=account, amount=amount)
    run(ctx, lambda book, actor: book.call(credits.allocate, actor, asked))


def _credit_lines(log: dict[str, Any]) -> str:
    """A credit log for a person: the totals, then each movement with its date."""
    lines = [f"{log['account']}: available {log['available']}, total {log['total']}, used {log['used']}"]
    lines += [f"{when(m['at'])}  {m['amount']:+d}  remaining {m['remaining']}  {m['note']}" for m in log["log"]]
    return "\n".join(lines)


@click.command("credit-log")
@click.argument("account", required=False)
@click.pass_context
def credit_log(ctx: click.Context, account: str | None) -> None:
    """Available, total and used credit, and the time, amount and remaining credit of each movement (of
    --as, or of an account under it)."""
    asked = request(ctx, credits.CreditLogQuery, account=account)
    run(ctx, lambda book, actor: book.call(credits.credit_log, actor, asked), render=_credit_lines)


# -- sites ----------------------------------------------------------------------------------------------------
@click.command("add-project")
@click.argument("ident")
@click.option("--type", "project_type", required=True, type=click.Choice(["community", "single_family", "commercial"]))
@click.option("--installer", required=True)
@click.option("--created", required=True, help="YYYY-MM-DD")
@click.option("--door", "doors", multiple=True, help="A door (commercial; the first is free). Repeat.")
@click.option("--timezone", default="UTC", help="IANA name, e.g. Asia/Shanghai.")
@click.option("--pm", help="A PM of the installer (not for a single-family house).")
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
    """Add a site (the operator for any installer; an installer, as --as, for itself)."""
    asked = request(
        ctx, sites.AddSite, id=ident, type=project_type, installer=installer, created=day(created, "--created"),
        doors=list(doors), timezone=timezone, pm=pm, name=name,
    )  # fmt: skip
    run(ctx, lambda book, actor: book.call(sites.add_site, actor, asked).id)


@click.command("sites")
@click.pass_context
def list_sites(ctx: click.Context) -> None:
    """The sites --as acts for."""
    ctx.obj.who()
    run(ctx, lambda book, actor: book.read(lambda uow: sites.sites(uow, actor)))


@click.command("site-set")
@click.argument("project")
@click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.pass_context
def site_set(ctx: click.Context, project: str, changes: tuple[str, ...]) -> None:
    """Edit a site: name, timezone, pm, pay_by_pm (none|regular), pm_notices and renew_notices (true|false),
    and the settings that reach its devices (time_format, date_format, contact_display_order, landline,
    visitor_call_door_log, visitor_call_snapshot, remote_maintenance, auto_provisioning, transmission_type)."""
    ctx.obj.who()
    asked = request(ctx, sites.EditSite, project=project, changes=assignments(changes))
    run(ctx, lambda book, actor: book.call(sites.edit_site, actor, asked))


@click.command("delete-site")
@click.argument("project")
@click.pass_context
def delete_site(ctx: click.Context, project: str) -> None:
    """Delete a site; its devices go back to the MAC library."""
    ctx.obj.who()
    asked = request(ctx, sites.DeleteSite, project=project)
    run(ctx, lambda book, actor: book.call(sites.delete_site, actor, asked))


@click.command()
@click.argument("project")
@click.option("--pms", help="The third-party PMS now integrated.")
@click.option("--off", is_flag=True, help="The integration was removed.")
@click.pass_context
def integrate(ctx: click.Context, project: str, pms: str | None, off: bool) -> None:
    """Record a third-party PMS integration: it sets the site's Integration service (never sold)."""
    if (pms is None) == (not off):
        raise click.UsageError("give --pms NAME or --off")
    ctx.obj.who()
    asked = request(ctx, sites.Integrate, project=project, pms=pms)
    run(ctx, lambda book, actor: book.call(sites.integrate, actor, asked))


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
    """Register a device's MAC in a distributor's library (the operator's, or the distributor's), optionally
    in a site --as acts for."""
    if project is not None:
        ctx.obj.who()
    asked = request(ctx, sites.AddDevice, mac=mac, distributor=distributor, model=model, project=project, name=name)
    run(ctx, lambda book, actor: book.call(sites.add_device, actor, asked))


@click.command()
@click.argument("project")
@click.pass_context
def services(ctx: click.Context, project: str) -> None:
    """A site's services and their expiry."""
    run(ctx, lambda book, actor: book.read(lambda uow: sites.services(uow, actor, project)))


@click.command()
@click.argument("project")
@click.pass_context
def apartments(ctx: click.Context, project: str) -> None:
    """A community's apartments and their services (With Indoor Monitor, Landline, Video Storage)."""
    run(ctx, lambda book, actor: book.read(lambda uow: sites.apartments(uow, actor, project)))


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
    ctx.obj.who()
    if (device_mac is None) != (device_name is None):
        raise click.UsageError("--device-mac and --device-name go together")
    chosen: dict[str, bool] = {}
    for key, value in assignments(switches).items():
        if value not in ("on", "off"):
            fail(f"--service {key}={value}: on or off")
        chosen[key] = value == "on"
    asked = request(ctx, sites.AddApartment, project=project, id=ident, name=name, device_mac=device_mac,
                    device_name=device_name, services=chosen)  # fmt: skip
    run(ctx, lambda book, actor: book.call(sites.add_apartment, actor, asked))


@click.command("add-app-account")
@click.argument("project")
@click.argument("ident")
@click.option("--role", required=True, type=click.Choice(["master", "family", "pm", "personnel", "admin"]))
@click.option("--name", default="")
@click.option("--apartment")
@click.pass_context
def add_app_account(ctx: click.Context, project: str, ident: str, role: str, name: str, apartment: str | None) -> None:
    """Add an app account; prints the service that pays for it."""
    ctx.obj.who()
    asked = request(ctx, sites.AddAppAccount, project=project, id=ident, role=role, name=name, apartment=apartment)
    run(ctx, lambda book, actor: book.call(sites.add_app_account, actor, asked))


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
    ctx.obj.who()
    if apartment and all_apartments:
        raise click.UsageError("--apartment or --all-apartments, not both")
    asked = request(ctx, sites.Switch, project=project, service=service, on=not off, apartment=apartment,
                    all_apartments=all_apartments)  # fmt: skip
    run(ctx, lambda book, actor: book.call(sites.switch, actor, asked))


# -- paying ---------------------------------------------------------------------------------------------------
def _selection(function: Any) -> Any:
    """--item, or --site with --service; --months or --renew-to; --plan."""
    options = (
        click.option("--item", "items_", multiple=True,
                     help="SITE/SERVICE/SUBJECT, e.g. office/door/door:door-2. Repeat."),
        click.option("--site", "sites_", multiple=True, help="What this site could pay for (or --service). Repeat."),
        click.option("--service", "service_types", multiple=True, help="With --site: only this type. Repeat."),
        click.option("--months", type=int, help="Manual renewal for this many months (regular payment)."),
        click.option("--renew-to", help="Credit renewal to this date (YYYY-MM-DD: 23:59:59 in the site's zone)."),
        click.option("--plan", type=click.Choice(["0-200", "201+"]), help="The attendance plan."),
    )  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def _chosen(selection: dict[str, Any]) -> dict[str, Any]:
    """The selection's fields for an operation's request."""
    chosen_items, chosen_sites = selection["items_"], selection["sites_"]
    if bool(chosen_items) == bool(chosen_sites):
        raise click.UsageError("give --item, or --site (with --service to narrow it)")
    if (selection["months"] is None) == (selection["renew_to"] is None):
        raise click.UsageError("give --months (regular payment) or --renew-to (credit payment)")
    return {
        "items": items(chosen_items) if chosen_items else None,
        "sites": list(chosen_sites) or None,
        "services": list(selection["service_types"]),
        "months": selection["months"],
        "renew_to": None if selection["renew_to"] is None else day(selection["renew_to"], "--renew-to"),
        "plan": selection["plan"],
    }


@click.command()
@_selection
@click.pass_context
def quote(ctx: click.Context, /, **selection: Any) -> None:
    """The price first: what activating or renewing the chosen services costs, and each new expiry."""
    ctx.obj.who()
    asked = request(ctx, paying.Selection, **_chosen(selection))
    run(ctx, lambda book, actor: book.call(paying.quote, actor, asked))


SOURCE = click.Choice(["stripe", "paypal", "coupon", "credit"])


@click.command()
@_selection
@click.option("--source", required=True, type=SOURCE)
@click.pass_context
def order(ctx: click.Context, /, source: str, **selection: Any) -> None:
    """Place a pending order for the chosen services: its transaction number; pay it within 15 minutes."""
    ctx.obj.who()
    asked = request(ctx, paying.PlaceOrder, source=source, **_chosen(selection))
    run(ctx, lambda book, actor: book.call(paying.place, actor, asked))


@click.command()
@click.argument("txn")
@click.option("--auto-renew", is_flag=True, help="Renew every 30 days from the upcoming expiry on.")
@click.pass_context
def pay(ctx: click.Context, txn: str, auto_renew: bool) -> None:
    """Pay a pending order by its transaction number (payment simulated)."""
    ctx.obj.who()
    asked = request(ctx, paying.Pay, txn=txn, auto_renew=auto_renew)
    run(ctx, lambda book, actor: book.call(paying.pay, actor, asked))


@click.command()
@_selection
@click.option("--source", required=True, type=SOURCE)
@click.option("--auto-renew", is_flag=True, help="Renew every 30 days from the upcoming expiry on.")
@click.pass_context
def renew(ctx: click.Context, /, source: str, auto_renew: bool, **selection: Any) -> None:
    """Quote, order and pay in one step (payment simulated)."""
    ctx.obj.who()
    asked = request(ctx, paying.Renew, source=source, auto_renew=auto_renew, **_chosen(selection))
    run(ctx, lambda book, actor: book.call(paying.renew, actor, asked))


def _payment_lines(records: list[dict[str, Any]]) -> str:
    return (
        "\n".join(
            f"{r['txn']}  {r['kind']:6}  {r['status']:7}  {r['amount']:>8} {r['method']:7} {r['source']:6}"
            f"  {when(r['created'])}  {len(r['items'])} item(s)"
            for r in records
        )
        or "(no payments)"
    )


@click.command()
@click.pass_context
def payments(ctx: click.Context) -> None:
    """The payment records of --as, newest first: manual and automatic, paid, pending or expired."""
    ctx.obj.who()
    run(ctx, lambda book, actor: book.read(lambda uow: paying.payments(uow, actor)), render=_payment_lines)


@click.command("cancel-auto-renew")
@click.option("--item", "items_", multiple=True, required=True, help="SITE/SERVICE/SUBJECT. Repeat.")
@click.pass_context
def cancel_auto_renew(ctx: click.Context, items_: tuple[str, ...]) -> None:
    """Stop the auto-renewal of the chosen services."""
    ctx.obj.who()
    asked = request(ctx, paying.CancelAutoRenew, items=items(items_))
    run(ctx, lambda book, actor: book.call(paying.cancel_auto_renew, actor, asked))


@click.command("auto-renew")
@click.pass_context
def auto_renew(ctx: click.Context) -> None:
    """Run the auto-renewals due now (serve does this on every pass; the operator's)."""
    run(ctx, lambda book, actor: book.run(lambda uow: paying.auto_renew(uow, actor)))


@click.command()
@click.option("--site", help="List the notices of this site (after raising those due).")
@click.pass_context
def notices(ctx: click.Context, site: str | None) -> None:
    """Raise the expiration notices due now (15, 5, 3, 1 days) and list them (or all of --site's)."""

    def work(book: Any, actor: Any) -> Any:
        from cloud_stub.operations.authority import OPERATOR

        raised = book.run(lambda uow: paying.raise_notices(uow, OPERATOR))
        return raised if site is None else book.read(lambda uow: paying.notices_of(uow, actor, site))

    run(ctx, work)


COMMANDS = (
    add_account, grant, email_setting, buy_credits, allocate, credit_log, add_project, list_sites, site_set,
    delete_site, integrate, add_device, services, apartments, add_apartment, add_app_account, switch, quote, order,
    pay, renew, payments, cancel_auto_renew, auto_renew, notices,
)  # fmt: skip
