"""The other end of real hardware links, run as processes of their own by the tests: an OSDP reader
(libosdp in peripheral-device mode) and a Modbus relay / I/O module (pymodbus's server). Each is driven
by JSON lines on stdin and says what it was told on stdout (tests/support/hardware.py)."""
