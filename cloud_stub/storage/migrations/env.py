"""Alembic's environment: always handed an open connection in a transaction by
``cloud_stub.storage.migrate`` (never a URL of its own); SQLite alters tables in batch mode."""

from __future__ import annotations

from alembic import context

import cloud_stub.ledger  # noqa: F401 -- every aggregate's tables join the metadata
from cloud_stub.storage.metadata import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
