"""The ledger's schema revisions, oldest first: ``0001`` is the last schema from before Alembic (version 8
of ``cloud_stub/storage/legacy.py``)."""
