"""The ledger as the last schema from before Alembic left it (``legacy.py`` version 8), in portable types.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

T, Int, F = sa.Text, sa.Integer, sa.Float


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", T, primary_key=True),
        sa.Column("role", T, nullable=False),
        sa.Column("parent", T, sa.ForeignKey("accounts.id")),
        sa.Column("name", T, nullable=False),
        sa.Column("permission", T, nullable=False),
        sa.Column("credits", Int, nullable=False, server_default="0"),
        sa.Column("end_user_email", Int, nullable=False, server_default="1"),
    )
    op.create_table(
        "credit_log",
        sa.Column("id", Int, primary_key=True, autoincrement=True),
        sa.Column("account", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("at", F, nullable=False),
        sa.Column("amount", Int, nullable=False),
        sa.Column("remaining", Int, nullable=False),
        sa.Column("note", T, nullable=False),
    )
    op.create_table(
        "projects",
        sa.Column("id", T, primary_key=True),
        sa.Column("type", T, nullable=False),
        sa.Column("installer", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("pm", T, sa.ForeignKey("accounts.id")),
        sa.Column("created", T, nullable=False),
        sa.Column("timezone", T, nullable=False),
        sa.Column("free_apps", Int, nullable=False, server_default="0"),
        sa.Column("doors", T, nullable=False, server_default="[]"),
        sa.Column("settings", T, nullable=False, server_default="{}"),
        sa.Column("pm_notices", Int, nullable=False, server_default="1"),
        sa.Column("pay_by_pm", T, nullable=False, server_default="none"),
        sa.Column("renew_notices", Int, nullable=False, server_default="1"),
        sa.Column("name", T, nullable=False, server_default=""),
        sa.Column("integration", T),
    )
    op.create_table(
        "devices",
        sa.Column("mac", T, primary_key=True),
        sa.Column("distributor", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("project", T, sa.ForeignKey("projects.id")),
        sa.Column("model", T, nullable=False),
        sa.Column("apartment", T),
        sa.Column("name", T),
    )
    op.create_table(
        "services",
        sa.Column("project", T, sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("service", T, primary_key=True),
        sa.Column("subject", T, primary_key=True),
        sa.Column("expires", F),
        sa.Column("plan", T),
        sa.Column("auto_renew", Int, nullable=False, server_default="0"),
        sa.Column("auto_source", T),
        sa.Column("auto_payer", T, sa.ForeignKey("accounts.id")),
    )
    op.create_table(
        "orders",
        sa.Column("id", Int, primary_key=True, autoincrement=True),
        sa.Column("payer", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("items", T, nullable=False),
        sa.Column("method", T, nullable=False),
        sa.Column("source", T, nullable=False),
        sa.Column("amount", Int, nullable=False),
        sa.Column("status", T, nullable=False),
        sa.Column("created", F, nullable=False),
        sa.Column("summary", T, nullable=False),
        sa.Column("txn", T),
        sa.Column("kind", T, nullable=False, server_default="manual"),
        sa.Column("paid_at", F),
    )
    op.create_index("orders_txn", "orders", ["txn"], unique=True)
    op.create_index("orders_payer", "orders", ["payer", "id"])
    op.create_table(
        "notices",
        sa.Column("key", T, primary_key=True),
        sa.Column("at", F, nullable=False),
        sa.Column("project", T, nullable=False),
        sa.Column("stage", Int, nullable=False),
        sa.Column("recipient_role", T, nullable=False),
        sa.Column("recipient", T),
        sa.Column("text", T, nullable=False),
    )
    op.create_table(
        "issued",
        sa.Column("device", T, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("digest", T, nullable=False),
        sa.Column("issued_at", F, nullable=False, server_default="0"),
        sa.Column("topic", T),
        sa.Column("token", T),
    )
    op.create_table(
        "events",
        sa.Column("event_id", T, primary_key=True),
        sa.Column("device", T, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("type", T, nullable=False),
        sa.Column("kind", T, nullable=False),
        sa.Column("project", T),
        sa.Column("occurred_at", T, nullable=False),
        sa.Column("received_at", F, nullable=False),
        sa.Column("body", T, nullable=False),
    )
    op.create_index("events_device_seq", "events", ["device", "seq"])
    op.create_index("events_project_type", "events", ["project", "type"])
    op.create_table(
        "device_state",
        sa.Column("device", T, primary_key=True),
        sa.Column("body", T, nullable=False),
        sa.Column("at", F, nullable=False),
    )
    op.create_table(
        "replies",
        sa.Column("id", T, primary_key=True),
        sa.Column("device", T, nullable=False),
        sa.Column("body", T, nullable=False),
        sa.Column("at", F, nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", T, primary_key=True),
        sa.Column("file", T, nullable=False),
        sa.Column("created", F, nullable=False),
        sa.Column("not_after", F, nullable=False),
        sa.Column("state", T, nullable=False),
        sa.Column("purpose", T, nullable=False, server_default="any"),
    )
    op.create_table(
        "firmware",
        sa.Column("model", T, primary_key=True),
        sa.Column("version", T, primary_key=True),
        sa.Column("file", T, nullable=False),
        sa.Column("size", Int, nullable=False),
        sa.Column("sha256", T, nullable=False),
        sa.Column("log", T, nullable=False),
        sa.Column("created", F, nullable=False),
    )
    op.create_table(
        "upgrades",
        sa.Column("id", T, primary_key=True),
        sa.Column("project", T, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("model", T, nullable=False),
        sa.Column("version", T, nullable=False),
        sa.Column("devices", T, nullable=False),
        sa.Column("at", F),
        sa.Column("reset", Int, nullable=False),
        sa.Column("deleted", Int, nullable=False, server_default="0"),
        sa.Column("created", F, nullable=False),
    )
    op.create_table(
        "device_upgrades",
        sa.Column("device", T, primary_key=True),
        sa.Column("upgrade", T, primary_key=True),
        sa.Column("status", T, nullable=False),
        sa.Column("last_kind", T),
        sa.Column("at", F, nullable=False),
    )
    op.create_table(
        "apartments",
        sa.Column("project", T, sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("id", T, primary_key=True),
        sa.Column("name", T, nullable=False),
        sa.Column("with_indoor_monitor", Int),
        sa.Column("landline", Int),
        sa.Column("video_storage", Int),
    )
    op.create_table(
        "app_accounts",
        sa.Column("project", T, sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("id", T, primary_key=True),
        sa.Column("apartment", T),
        sa.Column("role", T, nullable=False),
        sa.Column("name", T, nullable=False),
    )
    op.create_table(
        "roots",
        sa.Column("kid", T, primary_key=True),
        sa.Column("file", T, nullable=False),
        sa.Column("created", F, nullable=False),
        sa.Column("state", T, nullable=False),
    )
    op.create_table(
        "commands",
        sa.Column("id", T, primary_key=True),
        sa.Column("device", T, nullable=False),
        sa.Column("op", T, nullable=False),
        sa.Column("args", T, nullable=False),
        sa.Column("by", T, nullable=False),
        sa.Column("created", F, nullable=False),
        sa.Column("sent", F),
    )
    op.create_table(
        "rollouts",
        sa.Column("upgrade", T, sa.ForeignKey("upgrades.id"), primary_key=True),
        sa.Column("wave_size", Int),
        sa.Column("wave_percent", F),
        sa.Column("wait", F, nullable=False),
        sa.Column("max_failures", F, nullable=False),
        sa.Column("state", T, nullable=False),
        sa.Column("released", Int, nullable=False),
        sa.Column("excused", Int, nullable=False),
        sa.Column("finished_at", F),
        sa.Column("reason", T),
    )
    op.create_table(
        "api_tokens",
        sa.Column("digest", T, primary_key=True),
        sa.Column("account", T, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("created", F, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the ledger's revisions are not undone: restore a copy instead")
