"""The cloud's use cases: each is one function ``(uow, actor, request) -> result`` taking the unit of work
(``cloud_stub/ledger``), a required :class:`~cloud_stub.operations.authority.Actor` and a typed request
(pydantic), returning a typed result; authority is decided in ``authority.py`` before any write. The
adapters (the CLI, the HTTP API, ``serve``) translate to and from these and run them through
:meth:`cloud_stub.ledger.Ledger.run`; they hold no rule and run no SQL.

| module | use cases |
| --- | --- |
| ``accounts`` | accounts, "Pay by Installer", the Single-Family Email Setting, API tokens |
| ``credits`` | buying, allocating, credit logs |
| ``sites`` | sites and their settings, apartments, app accounts, devices, service switches |
| ``paying`` | quotes, orders, payments, auto-renewal, payment records, notices |
| ``pricing`` | the catalogue's price of an item (pure) |
| ``upgrades`` | the firmware list, upgrades, phased rollouts, the jobs devices should hold |
| ``remote`` | reboot and resync, their replies |
| ``keys`` ``issuing`` | the keys and their rotation; the documents ``serve`` issues |
| ``ingest`` | what devices send |
"""
