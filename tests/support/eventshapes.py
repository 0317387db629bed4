"""The events' shapes as docs/sync.md "Event shapes" states them, read from that table, and the check every
test's cloud (tests/support/cloud.py) runs on the events it received: the table is what the program sends."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, NamedTuple

DOC = Path(__file__).resolve().parents[2] / "docs" / "sync.md"
MARKERS = ("<!-- event shapes: begin -->", "<!-- event shapes: end -->")
_NAME = re.compile(r"`([a-z0-9_]+\??)`")
_ASIDE = re.compile(r"\([^)]*\)")  # what a key's values are: not keys


class Shape(NamedTuple):
    types: frozenset[str]
    kinds: frozenset[str]
    required: frozenset[str]
    allowed: frozenset[str]


@functools.cache
def shapes() -> tuple[Shape, ...]:
    """The table's rows."""
    text = DOC.read_text()
    begin, end = MARKERS
    table = text.partition(begin)[2].partition(end)[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        types, kinds, data, _source = (cell.strip() for cell in line.strip().strip("|").split("|"))
        keys = _NAME.findall(_ASIDE.sub("", data))
        rows.append(Shape(
            frozenset(_NAME.findall(types)), frozenset(_NAME.findall(kinds)),
            frozenset(k for k in keys if not k.endswith("?")), frozenset(k.rstrip("?") for k in keys),
        ))  # fmt: skip
    assert rows, f"no event shapes between {begin} and {end} in {DOC}"
    return tuple(rows)


def problem(event: dict[str, Any]) -> str | None:
    """Why ``event`` is not as the table says (None: it is, or its type and kind are not in the table: an
    event an integrator raised through the control socket)."""
    rows = [s for s in shapes() if event.get("type") in s.types and event.get("kind") in s.kinds]
    if not rows:
        return None
    data = event.get("data")
    if not isinstance(data, dict):
        return f"{event.get('type')}/{event.get('kind')}: data is not an object"
    keys = set(data)
    if any(s.required <= keys <= s.allowed for s in rows):
        return None
    expected = " or ".join(f"{sorted(s.required)} of {sorted(s.allowed)}" for s in rows)
    return f"{event['type']}/{event['kind']} has data keys {sorted(keys)}, docs/sync.md says {expected}"
