"""The local control socket (docs/control.md): the server, framing and authorisation (``server.py``),
and the operations a daemon answers (``ops.py``).
"""
