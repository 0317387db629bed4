"""The ledger: its aggregates, each owning its tables and their SQL, and the unit of work that runs one
operation in one transaction (the cloud's layers: adapters → operations → aggregates → storage;
docs/architecture.md).

| module | tables |
| --- | --- |
| ``accounts`` | accounts, api_tokens (who is who; the API's bearer tokens) |
| ``credits`` | credit_balances, credit_log |
| ``sites`` | projects, apartments, app_accounts, devices (the MAC library) |
| ``holdings`` | services (what a site holds, until when; auto-renewal; community switches) |
| ``orders`` | orders (pending → paid or expired, once) |
| ``notices`` | notices |
| ``upgrades`` | firmware, upgrades, device_upgrades, rollouts |
| ``documents`` | signing_keys, roots, issued |
| ``remote`` | commands |
| ``reports`` | events, device_state, replies |
| ``requests`` | idempotency (API writes by Idempotency-Key) |
| ``logins`` | logins, portal_sessions, login_codes, account_settings, portal_secrets (the portal's people) |
| ``mail`` | mail (queued in the transaction that tells it, sent after) |
| ``audit`` | audit (logins, money, authority) |
| ``coupons`` | coupons (a value to pay one order) |

The catalogue and its prices are data and pure functions (``cloud_stub/rules.py``,
``cloud_stub/operations/pricing.py``): they own no table.
"""

from __future__ import annotations

from cloud_stub.ledger.unit import Ledger, UnitOfWork

__all__ = ["Ledger", "UnitOfWork"]
