"""Where the ledger is kept: the database by URL (database.py), its schema's migrations (migrate.py, Alembic
under migrations/, legacy.py for ledgers older than Alembic), how ``serve`` hears of changes (changes.py),
and moving a ledger between back ends (copying.py)."""
