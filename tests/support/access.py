"""What the local logic's tests hold: the paid services of a commercial site and the credentials at
its doors (tests/test_reactions.py, and the behaviour table of docs/drivers.md: behaviour.py)."""

from __future__ import annotations

from agent.local.credentials import CredentialIndex, Held, value_digest
from tests.support.documents import DAY, T0, svc

PAID = [
    svc("door", "door:door-2"),
    svc("personnel_app", "account:a-1"),
    svc("sensor_call_alert"),
    svc("elevator_control"),
    svc("dynamic_qr"),
]

CREDENTIALS = CredentialIndex.of(
    {
        ("door-1", "card", value_digest("04A1B2")): Held("c-1", "card", None, None, False, ()),
        ("door-1", "pin", value_digest("2468")): Held("p-1", "pin", None, T0 - DAY, False, ()),
        ("door-1", "qr", value_digest("dyn-qr")): Held("q-1", "qr", None, None, True, ()),
        ("door-2", "face", value_digest("face-7")): Held("f-7", "face", None, None, False, ("3", "4")),
    }
)
