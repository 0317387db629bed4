"""Paying: quotes, orders with transaction numbers, payments (providers simulated), auto-renewal as recorded
orders, payment records, and the notices of renewals and expiries (DOMAIN.md Paying; seed 000, 001)."""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
from datetime import date
from typing import Any

from cloud_stub import rules
from cloud_stub.rules import Refused
from cloud_stub.sites import Sites


class Paying(Sites):
    """The ledger's payments (docs/cloud.md "The rules")."""

    # -- paying -------------------------------------------------------------------------------------
    def _payer_permission(self, role: str, permission: str, projects: dict[str, dict[str, Any]]) -> str:
        """A PM's permission is the "Pay by PM" of the sites it pays for (seed 002 row 8): all must allow it."""
        if role != "pm":
            return permission
        return "none" if any(p["pay_by_pm"] == "none" for p in projects.values()) else "regular"

    def quote(
        self,
        payer: str,
        items: list[tuple[str, str, str]],
        now: float,
        *,
        months: int | None = None,
        renew_to: float | date | None = None,
        plan: str | None = None,
    ) -> dict[str, Any]:
        """The price first (seed 000 lines 147-149): what paying for ``items`` (project, service, subject) costs,
        and the new expiry of each. Regular payment renews for ``months``; credit payment renews *to* a date
        (a ``date``: its 23:59:59 in each site's time zone). An item named twice is one item."""
        role, parent, permission = self.account(payer)
        if role == "sub_installer":  # it pays as its main account ("the data shown are the same")
            role, _, permission = self.account(str(parent))
        items = list(dict.fromkeys(items))
        if not items:
            raise Refused("nothing_selected", "name at least one service", "seed 000 lines 147-149")
        projects = {p: self.project(p) for p, _, _ in items}
        methods = {rules.payment_method(p["type"], p["created"]) for p in projects.values()}
        if len(methods) != 1:
            raise Refused("mixed_methods", "one order pays with one method", "seed 000 lines 115-133")
        method = methods.pop()
        if method == "none":
            raise Refused(
                "no_payment_needed", "commercial projects created before 2025-06-01 need no payment", "DOMAIN.md Paying"
            )
        # Whose money pays for whose site, checked after whether the payer may pay at all; but a PM's
        # permission is each site's "Pay by PM", so for a PM its own sites come first.
        if role == "pm":
            for p in projects.values():
                self.check_authority(payer, p)
        rules.check_permission(role, self._payer_permission(role, permission, projects), method)
        if role != "pm":
            for p in projects.values():
                self.check_authority(payer, p)
        accounts = {project: self.account_services(project) for project in projects}  # one read per site
        priced, amount = [], 0
        summary = {"doors": 0, "personnel_apps": 0, "admin_apps": 0, "premium_features": 0, "apps": 0}
        for project, service, subject in items:
            p = projects[project]
            monthly = self._price(p, service, subject, plan, accounts[project])
            current = self.db.execute(
                "SELECT expires FROM services WHERE project = ? AND service = ? AND subject = ?",
                (project, service, subject),
            ).fetchone()
            expires = current[0] if current else None
            if method == "credit":
                if renew_to is None:
                    raise Refused("renew_to_needed", "credit renewal names a 'renew to' date", "seed 001 line 220")
                new = rules.end_of_day(renew_to, p["timezone"]) if isinstance(renew_to, date) else renew_to
                if new <= max(expires or now, now):
                    raise Refused("renew_to_past", "'renew to' must be after the current expiry", "seed 001 line 220")
                periods = max(1, math.ceil((new - max(expires or now, now)) / (30 * rules.DAY)))
            else:
                if months is None:
                    raise Refused("length_needed", "manual renewal names a length", "seed 000 line 161")
                new = rules.renewed_expiry(expires, now, rules.months(months))
                periods = months
            amount += monthly * periods
            priced.append((project, service, subject, new, plan if service == "attendance" else None))
            key = {"door": "doors", "personnel_app": "personnel_apps", "admin_app": "admin_apps"}.get(service)
            if key is None:
                key = "apps" if service in ("app", "additional_app", "pm_app") else "premium_features"
            summary[key] += 1
        shown_to = renew_to.isoformat() if isinstance(renew_to, date) else renew_to
        return {"method": method, "amount": amount, "items": priced, "summary": summary, "renew_to": shown_to}

    def _price(
        self, p: dict[str, Any], service: str, subject: str, plan: str | None, accounts: dict[str, tuple[str, str]]
    ) -> int:
        """The monthly price of one item, refusing what the site does not have or has switched off;
        ``accounts`` are the site's (:meth:`account_services`)."""
        offer = rules.offer(p["type"], service)
        rules.check_switchable(service)
        rules.check_subject(offer, subject, p["doors"])
        level, _, ident = subject.partition(":")
        project = p["id"]
        monthly = offer.monthly
        if level == "account":
            found = accounts.get(ident)
            if found is None:
                raise Refused("unknown_account", f"{project} has no app account {ident}", "DOMAIN.md project types")
            rules.check_account_service(service, found[0], ident)
            if service == "app" and p["type"] == "community":  # seed 003: the App charge follows the monitor
                (apartment,) = self._one(
                    "SELECT apartment FROM app_accounts WHERE project = ? AND id = ?", (project, ident), ident
                )
                if not self.apartment_switch(project, apartment, "with_indoor_monitor"):
                    monthly = rules.APP_WITHOUT_MONITOR
        elif level == "apartment":
            if not self.db.execute(
                "SELECT 1 FROM apartments WHERE project = ? AND id = ?", (project, ident)
            ).fetchone():
                raise Refused("unknown_apartment", f"{project} has no apartment {ident}", "seed 003")
            if not self.apartment_switch(project, ident, service):
                raise Refused("switched_off", f"{service} is switched off for apartment {ident}", "seed 003")
        elif p["type"] == "community" and "apartment" in offer.levels and service != "with_indoor_monitor":
            raise Refused(
                "per_apartment", f"a community's {service} is charged per apartment (apartment:ID)", "seed 003"
            )
        elif p["type"] == "community" and level == "project" and not self._switched(project, service):
            raise Refused("switched_off", f"{service} is switched off for {project}", "seed 003")
        if service == "attendance":
            (personnel,) = self.db.execute(
                "SELECT COUNT(*) FROM app_accounts WHERE project = ? AND role = 'personnel'", (project,)
            ).fetchone()
            monthly = rules.attendance_price(plan, personnel)
        return monthly

    def order(self, payer: str, quote: dict[str, Any], source: str, now: float, *, kind: str = "manual") -> int:
        """A pending order for a quote, with its transaction number (:meth:`txn_of`); it must be paid within
        15 minutes."""
        rules.check_source(quote["method"], source)
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO orders (payer, items, method, source, amount, status, created, summary, txn, kind)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (payer, json.dumps(quote["items"]), quote["method"], source, quote["amount"], now,
                 json.dumps(quote["summary"]), self._txn(db), kind),
            )  # fmt: skip
            return int(cursor.lastrowid or 0)

    @staticmethod
    def _txn(db: sqlite3.Connection) -> str:
        """A 17-digit transaction number, as the seeds show them (seed 001 line 284)."""
        while True:
            txn = str(10**16 + secrets.randbelow(9 * 10**16))
            if db.execute("SELECT 1 FROM orders WHERE txn = ?", (txn,)).fetchone() is None:
                return txn

    def txn_of(self, order: int) -> str:
        (txn,) = self._one("SELECT txn FROM orders WHERE id = ?", (order,), f"order {order}")
        return str(txn)

    def order_of(self, txn: str) -> int:
        (ident,) = self._one("SELECT id FROM orders WHERE txn = ?", (txn,), f"order {txn}")
        return int(ident)

    def pay(self, order: int, now: float, *, auto_renew: bool = False, payer: str | None = None) -> dict[str, Any]:
        """Pay a pending order (providers simulated); the services are extended in the same transaction.
        ``payer``, when given, must be the account that placed the order."""
        owner, items, method, source, amount, status, created, txn = self._one(
            "SELECT payer, items, method, source, amount, status, created, txn FROM orders WHERE id = ?",
            (order,),
            f"order {order}",
        )
        if payer is not None and payer != owner:
            raise Refused("not_yours", f"order {txn} was placed by another account", "seed 002 line 186")
        if status == "pending" and rules.order_expired(created, now):
            with self.transaction() as db:
                db.execute("UPDATE orders SET status = 'expired' WHERE id = ?", (order,))
            raise Refused("order_expired", "a pending order must be paid within 15 minutes", "DOMAIN.md Paying")
        if status != "pending":
            raise Refused("not_pending", f"order {txn} is {status}", "DOMAIN.md Paying")
        entries = json.loads(items)
        if auto_renew:
            for project, *_ in entries:
                p = self.project(project)
                rules.check_auto_renew(p["type"], p["created"], source)
        with self.transaction() as db:
            if method == "credit":
                self._credit(db, owner, -amount, now, f"order {txn}")
            self._extend(db, entries, auto_source=source if auto_renew else None, payer=owner)
            db.execute("UPDATE orders SET status = 'paid', paid_at = ? WHERE id = ?", (now, order))
            self._renewal_notices(db, order, txn, entries, now)
        return {
            "order": order, "txn": txn, "paid": amount, "method": method,
            "projects": sorted({e[0] for e in entries}),
        }  # fmt: skip

    def _extend(
        self, db: sqlite3.Connection, entries: list[Any], *, auto_source: str | None, payer: str | None
    ) -> None:
        for project, service, subject, new, plan in entries:
            db.execute(
                "INSERT INTO services (project, service, subject, expires, plan, auto_renew, auto_source, auto_payer)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, service, subject) DO UPDATE SET"
                " expires = excluded.expires, plan = COALESCE(excluded.plan, services.plan),"
                " auto_renew = excluded.auto_renew, auto_source = excluded.auto_source,"
                " auto_payer = excluded.auto_payer",
                (project, service, subject, new, plan, int(auto_source is not None), auto_source,
                 payer if auto_source else None),
            )  # fmt: skip
            if service == "pm_app":  # seed 003 line 225: a PM App active forces the PM App option on
                db.execute(
                    "INSERT INTO services (project, service, subject) VALUES (?, 'pm_app', 'project')"
                    " ON CONFLICT DO NOTHING",
                    (project,),
                )

    def payments(self, payer: str) -> list[dict[str, Any]]:
        """The payment records of ``payer`` (seed 002 line 186), newest first: manual and automatic orders."""
        self.account(payer)
        rows = self.db.execute(
            "SELECT txn, kind, status, method, source, amount, created, paid_at, items FROM orders"
            " WHERE payer = ? ORDER BY id DESC",
            (payer,),
        )
        return [
            {"txn": txn, "kind": kind, "status": status, "method": method, "source": source, "amount": amount,
             "created": created, "paid_at": paid_at, "items": [e[:3] for e in json.loads(items)]}
            for txn, kind, status, method, source, amount, created, paid_at, items in rows
        ]  # fmt: skip

    def cancel_auto_renew(self, actor: str, items: list[tuple[str, str, str]]) -> int:
        """Stop auto-renewal of the chosen services; how many were auto-renewing."""
        for project in {p for p, _, _ in items}:
            self.check_authority(actor, self.project(project))
        with self.transaction() as db:
            return sum(
                db.execute(
                    "UPDATE services SET auto_renew = 0, auto_source = NULL, auto_payer = NULL"
                    " WHERE project = ? AND service = ? AND subject = ? AND auto_renew = 1",
                    item,
                ).rowcount
                for item in dict.fromkeys(items)
            )

    def auto_renew(self, now: float) -> list[tuple[str, str, str, float]]:
        """Seed 000 line 159: each auto-renewing service whose upcoming expiry is reached moves on by 30 days,
        once per cycle; each renewal is an order of its payer, paid from the chosen source and recorded
        (kind ``auto``). What was renewed."""
        due = self.db.execute(
            "SELECT project, service, subject, expires, plan, auto_payer, auto_source FROM services"
            " WHERE auto_renew = 1 AND expires <= ? ORDER BY project, service, subject",
            (now,),
        ).fetchall()
        renewed = []
        with self.transaction() as db:
            for project, service, subject, expires, plan, payer, source in due:
                new = rules.auto_renewal(expires, now)
                if new is None or payer is None:
                    continue
                try:
                    monthly = self._price(self.project(project), service, subject, plan, self.account_services(project))
                except Refused:
                    continue  # the account or apartment is gone, or the service switched off: not renewed
                entries, txn = [(project, service, subject, new, plan)], self._txn(db)
                cursor = db.execute(
                    "INSERT INTO orders (payer, items, method, source, amount, status, created, summary, txn, kind,"
                    " paid_at) VALUES (?, ?, 'regular', ?, ?, 'paid', ?, '{}', ?, 'auto', ?)",
                    (payer, json.dumps(entries), source, monthly, now, txn, now),
                )
                db.execute(
                    "UPDATE services SET expires = ? WHERE project = ? AND service = ? AND subject = ?",
                    (new, project, service, subject),
                )
                self._renewal_notices(db, int(cursor.lastrowid or 0), txn, entries, now)
                renewed.append((project, service, subject, new))
        return renewed

    # -- notices --------------------------------------------------------------------------------------
    def _renewal_notices(self, db: sqlite3.Connection, order: int, txn: str, entries: list[Any], now: float) -> None:
        """Seed 002 row 10: a renewal is told to the installer, to the PM when "Send Renew Email To PM" is on,
        and (single-family, the installer's email setting on) to the end users."""
        for project in sorted({e[0] for e in entries}):
            p = self.project(project)
            (end_user_email,) = self._one(
                "SELECT end_user_email FROM accounts WHERE id = ?", (p["installer"],), "installer"
            )
            count = sum(1 for e in entries if e[0] == project)
            for role in rules.renewal_recipients(p["type"], p["renew_notices"], bool(end_user_email)):
                recipient = {"installer": p["installer"], "pm": p["pm"], "end_user": "end users"}[role]
                if recipient is None:
                    continue
                db.execute(
                    "INSERT OR IGNORE INTO notices (key, at, project, stage, recipient_role, recipient, text)"
                    " VALUES (?, ?, ?, 0, ?, ?, ?)",
                    (f"renewed:{order}:{project}:{role}", now, project, role, recipient,
                     f"{count} service(s) of {project} renewed (order {txn})"),
                )  # fmt: skip

    def notices_of(self, project: str) -> list[dict[str, Any]]:
        """The notices raised for a site (stage 0: a renewal; 15, 5, 3, 1: days before an expiry)."""
        self.project(project)
        rows = self.db.execute(
            "SELECT at, stage, recipient_role, recipient, text FROM notices WHERE project = ? ORDER BY at, key",
            (project,),
        )
        return [{"at": at, "stage": st, "role": role, "recipient": r, "text": t} for at, st, role, r, t in rows]

    def raise_notices(self, now: float) -> list[dict[str, Any]]:
        """Expiration notices at 15, 5, 3 and 1 days to the right recipients, each once (DOMAIN.md)."""
        raised = []
        rows = self.db.execute(
            "SELECT s.project, s.service, s.subject, s.expires, p.installer, p.pm, p.pm_notices, p.type,"
            " a.end_user_email FROM services s JOIN projects p ON p.id = s.project"
            " JOIN accounts a ON a.id = p.installer WHERE s.expires > ?",
            (now,),
        ).fetchall()
        with self.transaction() as db:
            for project, service, subject, expires, installer, pm, pm_notices, kind, end_user_email in rows:
                left = expires - now
                stages = [d for d in rules.NOTICE_DAYS if left <= d * rules.DAY]
                if not stages:
                    continue
                stage = min(stages)
                for role in rules.expiry_recipients(stage, bool(pm_notices), kind, bool(end_user_email)):
                    recipient = {"installer": installer, "pm": pm, "end_user": subject}[role]
                    key = f"{stage}:{service}:{subject}:{expires}:{role}"
                    text = f"{service} for {subject} in {project} expires in {stage} day(s)"
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO notices (key, at, project, stage, recipient_role, recipient, text)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (key, now, project, stage, role, recipient, text),
                    )
                    if cursor.rowcount:
                        raised.append(
                            {"project": project, "stage": stage, "role": role, "recipient": recipient, "text": text}
                        )
        return raised
