"""The wire contract between the cloud and a device (``../shared/PROTOCOL.md``), in one package.

Both sides import it and nothing else of each other: the device (``agent/``, ``firmware/``) and the
cloud stub (``cloud_stub/``). What is here is what the contract names: compact JWS with EdDSA
(``jws``), the claims of the four document types (``claims``), the refusal reason codes
(``reasons``), the topics (``topics``), the time format (``timefmt``), and how JSON from the other
side is read without trusting its shape (``boundedjson``). ``errors`` holds the root of every error the
project raises on purpose, and the refusal of a document, which both sides speak of. ``logs`` is not
the contract but what both processes share about their logs (JSON lines, stable event names), kept
here so that the cloud imports nothing from the device.
"""
