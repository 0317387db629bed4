"""The one :class:`sqlalchemy.MetaData` every aggregate's tables join (``cloud_stub/ledger/``); Alembic
compares it with the migrated schema (tests/test_ledger_storage.py)."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

metadata: Final = sa.MetaData()
