"""The table of docs/drivers.md "What the device does, by state": each stimulus run through the real
local logic (agent/local/reactions.py) in each mode, so the documentation cannot drift from the code.

``python -m tests.support.behaviour --write`` rewrites the table in place; tests/test_docs.py checks that it
is current.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agent.config import DriversConfig
from agent.entitlements.policy import decide
from agent.local.reactions import Context, LocalState, react
from agent.local.stimuli import parse
from agent.outbox.events import GATES
from tests.support.access import CREDENTIALS, PAID
from tests.support.documents import DAY, T0, commercial_project, holdings, svc

DOC = Path(__file__).resolve().parents[2] / "docs" / "drivers.md"
BEGIN, END = "<!-- behaviour table: begin -->", "<!-- behaviour table: end -->"

# mode -> (services, days after T0); a commercial project with doors door-1 (free) and door-2
MODES: dict[str, tuple[list[dict[str, Any]] | None, float]] = {
    "normal": (PAID, 0),
    "limited (a door lapsed)": ([svc("door", "door:door-2", days=-1), *PAID[1:]], 0),
    "document expired": (PAID, 45),
    "unprovisioned": (None, 0),
}
STIMULI: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("card held for the door", "card", {"door": "door-1", "value": "04A1B2"}, None),
    ("card not held", "card", {"door": "door-1", "value": "FFFF"}, None),
    ("PIN past its valid_until", "pin", {"door": "door-1", "value": "2468"}, None),
    ("dynamic QR code", "qr", {"door": "door-1", "value": "dyn-qr"}, None),
    ("exit button", "exit_button", {"door": "door-1"}, None),
    ("fire release", "fire_release", {}, None),
    ("door opened without a release", "door_open", {"door": "door-1"}, None),
    ("tamper", "tamper", {"door": "door-1"}, None),
    ("reader or module losing power", "power_loss", {"door": "door-1", "device": "entry"}, "entry"),
    (
        "reader refused (Secure Channel failed)",
        "reader_refused",
        {"door": "door-1", "device": "entry", "reason": "wrong key"},
        "entry",
    ),
    ("reader or module stops answering", "hardware_offline", {"device": "io-1", "doors": ["door-1"]}, "io-1"),
    ("reader or module answers again", "hardware_online", {"device": "io-1", "doors": ["door-1"]}, "io-1"),
    ("emergency", "emergency", {}, None),
    ("visitor call to an app account", "call", {"door": "door-1", "accounts": ["a-1"]}, None),
    ("MR01 fall", "fall", {}, "mr01-a"),
    ("MR01 bed exit", "bed_exit", {}, "mr01-a"),
    ("MR01 low battery", "battery", {"percent": 9}, "mr01-a"),
    ("elevator call", "elevator", {"door": "door-1", "floors": ["5"]}, None),
]


def _cell(
    services: list[dict[str, Any]] | None, days: float, kind: str, data: dict[str, Any], source: str | None
) -> str:
    ents = holdings(commercial_project(), services) if services is not None else None
    now = T0 + days * DAY
    ctx = Context(
        decide=lambda action, subject: decide(ents, now, action, subject),
        credentials=CREDENTIALS,
        settings={},
        project_type=ents.project_type if ents else None,
        doors=ents.doors if ents else ("door-1", "door-2"),
        timing=DriversConfig(),
    )
    reaction = react(parse(kind, source, data, now), ctx, LocalState())
    parts = [f"{a.driver}.{a.op}" + (f" {a.args['pattern']}" if "pattern" in a.args else "") for a in reaction.actions]
    for event in reaction.events:
        gate = GATES.get(event.type)
        held = gate is not None and not decide(ents, now, gate).allowed
        text = f"{event.type} {event.kind}" + (" **held**" if held else "")
        if event.type == "door_log" and "reason" in event.data:
            text += f" ({event.data['reason']})"
        parts.append(text)
    return ", ".join(parts) or "nothing"


def table() -> str:
    lines = ["| stimulus | " + " | ".join(MODES) + " |", "| --- |" + " --- |" * len(MODES)]
    for label, kind, data, source in STIMULI:
        cells = [_cell(services, days, kind, data, source) for services, days in MODES.values()]
        lines.append(f"| {label} (`{kind}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rendered(text: str, begin: str = BEGIN, end: str = END, content: str | None = None) -> str:
    """``text`` with what stands between the markers replaced by the current table (or ``content``)."""
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{table() if content is None else content}\n{end}{tail}"


FIRMWARE_DOC = DOC.parent / "firmware.md"
DIAGRAM = ("<!-- firmware diagram: begin -->", "<!-- firmware diagram: end -->")


RESUMING = ("<!-- firmware resume: begin -->", "<!-- firmware resume: end -->")


def firmware_rendered(text: str) -> str:
    """docs/firmware.md with the state diagram and the resume table of firmware/machine.py."""
    from firmware.machine import diagram, resume_table

    text = rendered(text, *DIAGRAM, content=f"```mermaid\n{diagram()}\n```")
    return rendered(text, *RESUMING, content=resume_table())


if __name__ == "__main__":
    if "--write" in sys.argv:
        DOC.write_text(rendered(DOC.read_text()))
        FIRMWARE_DOC.write_text(firmware_rendered(FIRMWARE_DOC.read_text()))
    else:
        print(table())
