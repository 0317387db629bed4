"""Documentation generated from the code stays current."""

from __future__ import annotations

from tests.support.behaviour import DOC, FIRMWARE_DOC, firmware_rendered, rendered


def test_the_behaviour_table_in_docs_is_current() -> None:
    text = DOC.read_text()
    assert rendered(text) == text, "docs/drivers.md is stale: run python -m tests.support.behaviour --write"


def test_the_firmware_state_diagram_in_docs_is_current() -> None:
    text = FIRMWARE_DOC.read_text()
    assert "stateDiagram-v2" in text
    assert firmware_rendered(text) == text, "docs/firmware.md is stale: run python -m tests.support.behaviour --write"


def test_the_configuration_reference_is_the_models() -> None:
    """Every key, its default and its bounds, in docs/configuration.md and (the bounded ones) README.md."""
    from tests.support import configdoc

    doc, readme = configdoc.DOC.read_text(), configdoc.README.read_text()
    stale = "stale: run python -m tests.support.configdoc --write"
    assert configdoc.rendered(doc, configdoc.TABLE, configdoc.table()) == doc, f"docs/configuration.md is {stale}"
    assert configdoc.rendered(readme, configdoc.LIMITS, configdoc.limits()) == readme, f"README.md is {stale}"
    for prefix, page in configdoc.SECTIONS.items():
        text = page.read_text()
        assert configdoc.rendered(text, configdoc.LIMITS, configdoc.limits(prefix)) == text, f"{page} is {stale}"
    assert "| `drivers.held_open_seconds` | >= 5, <= 3,600 | `30` |" in readme
    assert "| `drivers.sensor_silence_seconds` | >= 10, <= 86,400 | `300` |" in readme


def test_the_event_shapes_table_tells_a_wrong_event_from_a_right_one() -> None:
    """The check every test's cloud runs (tests/support/cloud.py) can fail: a credential's value in a door
    log, a key missing, are found; the device's own shapes pass; an integrator's own kinds are left alone."""
    from tests.support.eventshapes import problem

    data = {"door": "door-1", "method": "card", "credential": "c-1"}
    granted: dict[str, object] = {"type": "door_log", "kind": "granted", "data": data}
    assert problem(granted) is None
    leaking = {**granted, "data": {**data, "value": "04A1B2C0"}}
    assert problem(leaking) is not None
    assert problem({"type": "alarm", "kind": "held_open", "data": {"door": "door-1"}}) is not None  # open_seconds
    assert problem({"type": "health", "kind": "telemetry", "data": {"anything": 1}}) is None
