"""Where a msgspec refusal points and what it says, for a one-line message naming the key or member.

msgspec says ``Expected `int` >= 5 - at `$.mqtt.keepalive``; a structure's own check (its
``__post_init__``) that concerns one member says so first (``timezone: 'Mars' is not ...``), and msgspec
adds where the structure is. :func:`locate` reads both into one dotted path. Used by the wire models
(``protocol/claims.py``) and the device's configuration (``agent/core_config.py``).
"""

from __future__ import annotations

import re
from typing import Final, Literal

_AT: Final = re.compile(r"^(?P<msg>.*?)(?: - at (?P<key>`key` in )?`\$(?P<where>[^`]*)`)?$", re.DOTALL)
# A structure's own check that concerns one of its members names it first: "timezone: 'Mars' is not ...".
_MEMBER: Final = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]-]*): (.*)$", re.DOTALL)

Kind = Literal["unknown", "missing", "invalid"]
_NAMED: Final[tuple[tuple[re.Pattern[str], Kind, str], ...]] = (
    (re.compile(r"^Object contains unknown field `([^`]*)`$"), "unknown", "unknown field"),
    (re.compile(r"^Object missing required field `([^`]*)`$"), "missing", "is required"),
)


def member(name: str, problem: str) -> ValueError:
    """The error a structure's own check raises about its member ``name`` (read back by :func:`locate`)."""
    return ValueError(f"{name}: {problem}")


def locate(message: str) -> tuple[str, str, Kind]:
    """Where a refusal's ``message`` points (``services[2].expires``; ``""``: the whole value; a key of a
    table is ``[...]``, as msgspec writes it), what is wrong there, and whether the member is ``unknown``,
    ``missing`` or ``invalid``."""
    found = _AT.match(message)
    assert found is not None  # the pattern matches any text
    where, problem = (found["where"] or "").removeprefix("."), found["msg"]
    if found["key"]:  # a key of a table, not its value, is refused
        return where, f"a key: {problem}", "invalid"
    for pattern, kind, text in _NAMED:
        if named := pattern.match(problem):
            return (f"{where}.{named[1]}" if where else named[1]), text, kind
    if own := _MEMBER.match(problem):
        where, problem = (f"{where}.{own[1]}" if where else own[1]), own[2]
    return where, problem, "invalid"
