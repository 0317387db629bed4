"""The subscription ledger in SQLite: who is who, sites and what they hold, orders, credits, notices.

One class over three modules, each holding its tables' SQL: ``store.py`` (schema, accounts, credits, a site's
row and whose it is, remote operations), ``sites.py`` (sites, apartments, app accounts, devices, switches),
``paying.py`` (quotes, orders, payments, auto-renewal, notices). Each operation is one transaction; a refusal
(:class:`cloud_stub.rules.Refused`) changes nothing. Payment providers are simulated (an order is paid when
asked to be); the rules are the vendor's (``cloud_stub/rules.py``). Times are epoch seconds, passed in by the
caller (the CLI passes the clock, or ``--now``; the tests pass what they need).
"""

from __future__ import annotations

from cloud_stub.paying import Paying
from cloud_stub.store import MIGRATIONS

__all__ = ["MIGRATIONS", "Ledger"]


class Ledger(Paying):
    """The ledger of one cloud."""
