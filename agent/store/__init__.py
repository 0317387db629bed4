"""What the device keeps on disk: the SQLite database (``database.py``) and its schema
(``migrations.py``), the sidecar file that outlives a lost database (``sidecar.py``), the quarantine of a
corrupt one (``quarantine.py``), the ballast that lets alarms in on a full disk (``reserve.py``), and the
reset after an upgrade that wipes the agent's tables (``reset.py``). Each table's SQL lives with the
module that owns the table (docs/architecture.md "Who owns which table").
"""
