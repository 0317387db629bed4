"""The cloud as a service: credits in their own table, tokens that expire and can be revoked, idempotent
API writes, explicit order columns (where SQLite's rowid stood in), and the indexes a fleet needs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TOKEN_DAYS = 90  # a token from before expiry dates lasts this long from its creation


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # Credits leave the accounts table: a balance each, debited by conditional writes.
    op.create_table(
        "credit_balances",
        sa.Column("account", sa.Text, sa.ForeignKey("accounts.id"), primary_key=True),
        sa.Column("balance", sa.Integer, nullable=False),
        sa.CheckConstraint("balance >= 0", name="ck_credit_balances_not_negative"),
    )
    op.execute("INSERT INTO credit_balances (account, balance) SELECT id, credits FROM accounts WHERE credits > 0")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("credits")
    op.create_index("ix_accounts_parent", "accounts", ["parent"])
    # Each debit names the order it paid (every charge has one paid order: an audit can check it).
    op.add_column("credit_log", sa.Column("order_id", sa.Integer))
    op.execute(
        "UPDATE credit_log SET order_id = (SELECT orders.id FROM orders WHERE 'order ' || orders.txn = credit_log.note)"
        " WHERE amount < 0"
    )
    op.create_index("ix_credit_log_account", "credit_log", ["account"])
    op.create_index("ix_credit_log_order_id", "credit_log", ["order_id"])
    # Explicit positions where rowid gave the order (portable; PostgreSQL has no rowid).
    for table in ("app_accounts", "upgrades"):
        op.add_column(table, sa.Column("position", sa.Integer))
        op.execute(f"UPDATE {table} SET position = {'rowid' if sqlite else '0'}")  # noqa: S608 -- our tables
        with op.batch_alter_table(table) as batch:
            batch.alter_column("position", existing_type=sa.Integer, nullable=False)
    # API tokens: a handle to list and revoke them by, an expiry, a revocation, a label.
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("id", sa.Text))
        batch.add_column(sa.Column("expires", sa.Float))
        batch.add_column(sa.Column("revoked", sa.Float))
        batch.add_column(sa.Column("label", sa.Text, nullable=False, server_default=""))
    seconds = TOKEN_DAYS * 86400
    op.execute(f"UPDATE api_tokens SET id = substr(digest, 1, 12), expires = created + {seconds}")  # noqa: S608
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("id", existing_type=sa.Text, nullable=False)
        batch.alter_column("expires", existing_type=sa.Float, nullable=False)
    op.create_index("ix_api_tokens_id", "api_tokens", ["id"], unique=True)
    op.create_index("ix_api_tokens_account", "api_tokens", ["account"])
    op.create_table(
        "idempotency",
        sa.Column("account", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("body", sa.Text),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_index("ix_idempotency_created", "idempotency", ["created"])
    # What a fleet of 10,000 sites and 100,000 devices is asked by.
    op.create_index("ix_projects_installer", "projects", ["installer"])
    op.create_index("ix_projects_pm", "projects", ["pm"])
    op.create_index("ix_devices_project", "devices", ["project"])
    op.create_index("ix_devices_distributor", "devices", ["distributor"])
    auto = sa.text("auto_renew = 1")
    op.create_index("ix_services_auto_expires", "services", ["expires"], sqlite_where=auto, postgresql_where=auto)
    op.create_index("ix_notices_project", "notices", ["project"])
    op.create_index("ix_upgrades_project", "upgrades", ["project"])
    op.create_index("ix_device_upgrades_upgrade", "device_upgrades", ["upgrade"])


def downgrade() -> None:
    raise NotImplementedError("the ledger's revisions are not undone: restore a copy instead")
