"""The portal: logins (argon2id passwords, Privacy Policy, email two-factor, lockout), browser sessions,
one-time codes and links, account settings, the portal's secret, mail queued after commit, the audit trail.
Coupons. A site's address (seed 002 row 3). Expiry notices' keys name their site (two sites' same service expiring
at the same moment were one notice).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

T, Int, F = sa.Text, sa.Integer, sa.Float


def upgrade() -> None:
    op.add_column("projects", sa.Column("address", T, nullable=False, server_default=""))
    op.create_table(
        "logins",
        sa.Column("account", T, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("email", T, nullable=False),
        sa.Column("email_confirmed", F),
        sa.Column("password", T),
        sa.Column("password_set", F),
        sa.Column("privacy_agreed", F),
        sa.Column("two_factor", Int, nullable=False, server_default="0"),
        sa.Column("failures", Int, nullable=False, server_default="0"),
        sa.Column("locked_until", F),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("digest", T, primary_key=True),
        sa.Column("account", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("acting_for", T, sa.ForeignKey("accounts.id")),
        sa.Column("stage", T, nullable=False),
        sa.Column("created", F, nullable=False),
        sa.Column("seen", F, nullable=False),
        sa.Column("expires", F, nullable=False),
    )
    op.create_index("ix_portal_sessions_account", "portal_sessions", ["account"])
    op.create_table(
        "login_codes",
        sa.Column("digest", T, primary_key=True),
        sa.Column("purpose", T, nullable=False),
        sa.Column("account", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("session", T),
        sa.Column("email", T),
        sa.Column("expires", F, nullable=False),
        sa.Column("used", F),
        sa.Column("tries", Int, nullable=False, server_default="0"),
    )
    op.create_index("ix_login_codes_session", "login_codes", ["session"])
    op.create_index("ix_login_codes_account", "login_codes", ["account"])
    op.create_table(
        "account_settings",
        sa.Column("account", T, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("name", T, primary_key=True),
        sa.Column("value", T, nullable=False),
    )
    op.create_table("portal_secrets", sa.Column("name", T, primary_key=True), sa.Column("value", T, nullable=False))
    op.create_table(
        "mail",
        sa.Column("id", Int, primary_key=True, autoincrement=True),
        sa.Column("kind", T, nullable=False),
        sa.Column("recipient", T, nullable=False),
        sa.Column("subject", T, nullable=False),
        sa.Column("body", T, nullable=False),
        sa.Column("created", F, nullable=False),
        sa.Column("next_try", F, nullable=False),
        sa.Column("attempts", Int, nullable=False, server_default="0"),
        sa.Column("claimed_until", F),
        sa.Column("sent", F),
        sa.Column("last_error", T),
    )
    op.create_index("ix_mail_waiting", "mail", ["sent", "next_try"])
    op.create_table(
        "audit",
        sa.Column("id", Int, primary_key=True, autoincrement=True),
        sa.Column("at", F, nullable=False),
        sa.Column("actor", T, nullable=False),
        sa.Column("acting_for", T),
        sa.Column("action", T, nullable=False),
        sa.Column("subject", T, nullable=False),
        sa.Column("detail", T, nullable=False),
    )
    op.create_index("ix_audit_actor", "audit", ["actor"])
    op.create_table(
        "coupons",
        sa.Column("code", T, primary_key=True),
        sa.Column("account", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("value", Int, nullable=False),
        sa.Column("created", F, nullable=False),
        sa.Column("expires", F, nullable=False),
        sa.Column("used", F),
        sa.Column("order_id", Int),
    )
    op.create_index("ix_coupons_account", "coupons", ["account"])
    # stage:service:subject:expires:role -> stage:project:service:subject:expires:role (renewals named theirs)
    cut = "instr(key, ':')" if op.get_bind().dialect.name == "sqlite" else "strpos(key, ':')"
    op.execute(
        f"UPDATE notices SET key = substr(key, 1, {cut}) || project || ':' || substr(key, {cut} + 1)"  # noqa: S608
        " WHERE key NOT LIKE 'renewed:%'"
    )
