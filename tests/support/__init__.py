"""Test helpers, in one place (no test module imports another).

``documents``  keys, the token forge, claims, configs, a settable clock: what a unit test signs with
``devices``    devices opened as successive runs of the agent would open them
``access``     the services and credentials of the local logic's tables
``brokers``    Mosquitto, NATS and amqtt started on free ports
``cloud``      the cloud's side of a broker: publish documents, collect events and state
``daemons``    the daemon in process, as a process, and under a supervisor that restarts it
``sync``       documents for the sync tests and waits on what a device reports
``ledger``     the ledger's command line, and a ledger set up for a site
``pki``        a private CA and certificates for mutual TLS
``partition``  network namespaces and nftables rules: a device cut off from its broker
``tmpfs``      a small tmpfs: a full disk
``behaviour``  the generated behaviour tables of docs/drivers.md and docs/firmware.md
``crash_child`` a process to SIGKILL while it stores documents (tests/test_crash.py)
"""
