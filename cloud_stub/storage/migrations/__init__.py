"""Alembic's environment and the ledger's revisions (``versions/``); run by ``cloud_stub/storage/migrate.py``."""
