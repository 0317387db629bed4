"""The edge-agent command line, run as the installed console script: names, outputs, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config import Config, load_trust_roots
from tests.support.documents import DAY, Claims, Keys, commercial_project, forge, svc, write_config

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


def run(
    *args: str, stdin: str | bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run edge-agent with ``args``; logs go to stderr as JSON lines."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run([EDGE_AGENT, *args], input=data, capture_output=True, env=env, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


@pytest.fixture
def documents(tmp_path: Path, keys: Keys) -> dict[str, Path]:
    """Signed documents on disk: trust, entitlements with a missing door, and one with every door paid."""
    claims = Claims(iat=time.time())
    three = commercial_project(("door-1", "door-2", "door-3"))
    paid = [
        svc("door", "door:door-2", days=400),
        svc("door", "door:door-3", days=400),
        svc("app", "account:a-1", days=400),
    ]
    tokens = {
        "trust": forge(keys.root, claims.trust([keys.signing]), typ="trust"),
        "limited": forge(
            keys.signing, claims.entitlements(project=three, services=paid[:1], exp=int(claims.iat + 30 * DAY))
        ),
        "normal": forge(
            keys.signing, claims.entitlements(project=three, services=paid, exp=int(claims.iat + 30 * DAY))
        ),
        "forged": forge(keys.other, claims.entitlements(project=three, services=paid, seq=99)),
    }
    paths = {}
    for name, token in tokens.items():
        paths[name] = tmp_path / f"{name}.jws"
        paths[name].write_text(token + "\n")
    return paths


def test_accept_from_a_file_and_from_stdin(config_file: Path, documents: dict[str, Path]) -> None:
    """accept FILE and accept - both verify and store; exit 0 with what was accepted."""
    result = run("accept", str(documents["trust"]), "--config", str(config_file))
    assert (result.returncode, result.stdout) == (0, "accepted: trust seq 1\n")
    result = run("accept", "-", "--config", str(config_file), stdin=documents["limited"].read_text())
    assert (result.returncode, result.stdout) == (0, "accepted: entitlements seq 1\n")


def test_accept_again_is_quietly_fine(config_file: Path, documents: dict[str, Path]) -> None:
    """The same document twice: the second time exits 0 and says it is already in force."""
    run("accept", str(documents["trust"]), "--config", str(config_file))
    result = run("accept", str(documents["trust"]), "--config", str(config_file), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"result": "already_in_force", "typ": "trust", "seq": 1}


def test_accept_refuses_with_the_reason(config_file: Path, documents: dict[str, Path]) -> None:
    """A forged document exits 1 with its refusal reason, in text and in JSON."""
    result = run("accept", str(documents["forged"]), "--config", str(config_file))
    assert result.returncode == 1
    assert result.stdout.startswith("refused: unknown_kid: ")
    result = run("accept", str(documents["forged"]), "--config", str(config_file), "--json")
    assert (result.returncode, json.loads(result.stdout)["reason"]) == (1, "unknown_kid")


def test_accept_refuses_an_oversized_file_without_reading_it_all(config_file: Path, tmp_path: Path) -> None:
    """A 5 MB file is refused as oversized."""
    big = tmp_path / "big.jws"
    big.write_bytes(b"a" * 5_000_000)
    result = run("accept", str(big), "--config", str(config_file))
    assert (result.returncode, result.stdout.split(":")[0:2]) == (1, ["refused", " oversized"])


def test_accept_a_missing_file_is_an_error(config_file: Path, tmp_path: Path) -> None:
    """A file that cannot be read exits 2 with one line."""
    result = run("accept", str(tmp_path / "absent.jws"), "--config", str(config_file))
    assert result.returncode == 2
    assert result.stderr.startswith("edge-agent: error: cannot read")


def test_check_exit_codes_follow_the_decision(config_file: Path, documents: dict[str, Path]) -> None:
    """check exits 1 when denied (limited doors, unprovisioned), 0 when allowed, 2 on a bad request."""
    assert run("check", "issue_access", "door:door-1", "--config", str(config_file)).returncode == 1
    for name in ("trust", "limited"):
        run("accept", str(documents[name]), "--config", str(config_file))
    denied = run("check", "issue_access", "door:door-1", "--config", str(config_file))
    assert (denied.returncode, denied.stdout.split(":")[0]) == (1, "denied doors_limited")
    run("accept", str(documents["normal"]), "--config", str(config_file))
    allowed = run("check", "issue_access", "door:door-1", "--config", str(config_file))
    assert allowed.returncode == 0
    assert allowed.stdout.startswith("allowed active until ")
    bad = run("check", "teleport", "--config", str(config_file))
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("edge-agent: error: unknown action 'teleport'")
    assert run("check", "app_call", "door:door-1", "--config", str(config_file)).returncode == 2
    assert run("check", "attendance", "many", "--config", str(config_file)).returncode == 2
    huge = run("check", "attendance", "9" * 5000, "--config", str(config_file))
    assert (huge.returncode, huge.stderr.splitlines()[0][:50]) == (
        2,
        "edge-agent: error: attendance needs a count of per",
    )


def test_check_json_has_exactly_the_agreed_fields(config_file: Path, documents: dict[str, Path]) -> None:
    """check --json prints {action, subject, allowed, reason, expires, detail}."""
    for name in ("trust", "normal"):
        run("accept", str(documents[name]), "--config", str(config_file))
    result = run("check", "app_call", "account:a-1", "--config", str(config_file), "--json")
    out = json.loads(result.stdout)
    assert set(out) == {"action", "subject", "allowed", "reason", "expires", "detail"}
    assert (out["action"], out["subject"], out["allowed"], out["reason"]) == ("app_call", "account:a-1", True, "active")
    assert out["expires"].endswith("Z")
    denied = json.loads(run("check", "report_alarm", "--config", str(config_file), "--json").stdout)
    assert denied["subject"] is None


def test_status_reports_mode_document_services_and_time(config_file: Path, documents: dict[str, Path]) -> None:
    """status --json moves from unprovisioned to limited to normal as documents arrive."""
    status = json.loads(run("status", "--config", str(config_file), "--json").stdout)
    assert (status["mode"], status["document"], status["services"]) == ("unprovisioned", None, [])
    assert status["daemon"] is False  # read from the store: no daemon runs
    assert "drivers" not in status
    for name in ("trust", "limited"):
        run("accept", str(documents[name]), "--config", str(config_file))
    assert json.loads(run("status", "--config", str(config_file), "--json").stdout)["mode"] == "limited"
    run("accept", str(documents["normal"]), "--config", str(config_file))
    status = json.loads(run("status", "--config", str(config_file), "--json").stdout)
    assert status["mode"] == "normal"
    assert status["device_id"] == "0c110512ab34"
    assert status["document"]["seq"] == 2
    assert {s["subject"] for s in status["services"]} == {"door:door-2", "door:door-3", "account:a-1"}
    assert all(s["active"] for s in status["services"])
    assert status["trusted_time"].endswith("Z")
    assert status["next_expiry"] == status["document"]["exp"]
    text = run("status", "--config", str(config_file))
    assert "mode         normal" in text.stdout
    assert "daemon       not running" in text.stdout


def test_the_config_may_come_from_the_environment(config_file: Path) -> None:
    """EDGE_AGENT_CONFIG names the file when --config is absent."""
    result = run("status", "--json", env={**os.environ, "EDGE_AGENT_CONFIG": str(config_file)})
    assert json.loads(result.stdout)["mode"] == "unprovisioned"
    missing = run("status", env={k: v for k, v in os.environ.items() if k != "EDGE_AGENT_CONFIG"})
    assert missing.returncode == 2
    assert "EDGE_AGENT_CONFIG" in missing.stderr


def test_logs_carry_no_document_or_secret(config_file: Path, documents: dict[str, Path]) -> None:
    """Refusals are logged as structured events with reason codes, never the token itself."""
    result = run("accept", str(documents["forged"]), "--config", str(config_file))
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events] == ["document_refused"]
    assert events[0]["reason"] == "unknown_kid"
    assert documents["forged"].read_text().strip() not in result.stderr


def test_a_corrupt_store_is_one_line_and_exit_2(config_file: Path, config: Config) -> None:
    """A database that is not one stops the command with one line on stderr, no traceback."""
    config.data_dir.mkdir()
    (config.data_dir / "agent.db").write_bytes(b"garbage" * 1000)
    result = run("check", "issue_access", "--config", str(config_file))
    assert result.returncode == 2
    assert result.stderr.startswith("edge-agent: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_the_cloud_stub_cli_signs_what_the_device_accepts(tmp_path: Path, config: Config) -> None:
    """smartplus-cloud keygen + sign produce a document edge-agent accepts with that root."""
    cloud = str(Path(sys.executable).parent / "smartplus-cloud")
    keygen = subprocess.run([cloud, "keygen", str(tmp_path / "keys")], capture_output=True, text=True, check=False)
    assert keygen.returncode == 0, keygen.stderr
    assert oct((tmp_path / "keys" / "root.key.pem").stat().st_mode & 0o777) == "0o600"
    config_file = write_config(tmp_path / "device", [tmp_path / "keys" / "root.pub.pem"])
    claims = json.dumps(Claims(iat=time.time()).entitlements(exp=int(time.time() + DAY)))
    signed = subprocess.run(
        [cloud, "sign", "entitlements", "--key", str(tmp_path / "keys" / "root.key.pem"), "-"],
        input=claims,
        capture_output=True,
        text=True,
        check=False,
    )
    assert signed.returncode == 0, signed.stderr
    result = run("accept", "-", "--config", str(config_file), stdin=signed.stdout)
    assert (result.returncode, result.stdout) == (0, "accepted: entitlements seq 1\n")


def test_run_with_a_bad_config_says_so_in_one_line(tmp_path: Path) -> None:
    """edge-agent run on a broken config exits 2 with one line, before touching anything."""
    path = tmp_path / "agent.toml"
    path.write_text('device_id = "not-a-mac"\n')
    result = run("run", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("edge-agent: config error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_events_lists_what_is_queued_and_what_is_held(config_file: Path, config: Config) -> None:
    """edge-agent events shows the queue oldest first; --held only what waits behind a denied decision."""
    import asyncio

    from agent.clock import ClockSource
    from agent.device import Device
    from agent.outbox import Outbox
    from agent.outbox.events import NewEvent

    async def queue() -> None:
        device = await Device.open(config, load_trust_roots(config), ClockSource.system())
        outbox = await Outbox.open(
            device.store, config.device_id, device.clock, data_dir=config.data_dir, max_events=100
        )
        await outbox.set_denied(frozenset({"report_alarm", "sensor_call_alert"}))  # unprovisioned: both denied
        writer = asyncio.create_task(outbox.run())
        await outbox.add(NewEvent("sensor", "fall_detected", "mr01", {}, device.clock.now()))
        await outbox.add(NewEvent("alarm", "tamper", "door-1", {}, device.clock.now()))
        await outbox.close()
        await writer
        await device.close()

    asyncio.run(queue())
    everything = json.loads(run("events", "--config", str(config_file), "--json").stdout)
    assert [(e["seq"], e["type"], e["held"]) for e in everything] == [(1, "sensor", False), (2, "alarm", True)]
    held = json.loads(run("events", "--held", "--config", str(config_file), "--json").stdout)
    assert [e["seq"] for e in held] == [2]
    assert held[0]["held_since"].endswith("Z")
    text = run("events", "--config", str(config_file)).stdout
    assert "fall_detected" in text
    assert "tamper" in text


def test_check_reads_the_core_keys_and_status_the_whole_config(config_file: Path) -> None:
    """check needs who the device is and where its store and keys are (agent/core_config.py): a daemon's
    section it does not use is left to the daemon; status reads every section and refuses the same file.
    A core key that is wrong is refused by both."""
    odd = {**os.environ, "EDGE_AGENT_DRIVERS__KIND": "teleporter"}
    checked = run("check", "issue_access", "door:door-1", "--config", str(config_file), env=odd)
    assert checked.returncode in (0, 1), checked.stderr  # answered: allowed or denied
    status = run("status", "--config", str(config_file), env=odd)
    assert status.returncode == 2
    assert status.stderr.startswith("edge-agent: config error: drivers.kind (from EDGE_AGENT_DRIVERS__KIND)")
    env = {**os.environ, "EDGE_AGENT_DEVICE_ID": "not-a-mac"}
    bad = run("check", "issue_access", "door:door-1", "--config", str(config_file), env=env)
    assert bad.returncode == 2
    assert bad.stderr.startswith("edge-agent: config error: device_id (from EDGE_AGENT_DEVICE_ID)")


def test_a_cold_check_builds_no_model_it_does_not_use(config_file: Path, documents: dict[str, Path]) -> None:
    """edge-agent check opens the store and decides: it imports neither the daemon's section models
    (agent/config.py, the drivers' wiring) nor the documents' models (protocol/claims.py, loaded with the
    first document to verify), nor the parts' ports (agent/ports.py: the daemon's). What a later change
    pulls back into that path shows here."""
    assert run("accept", str(documents["trust"]), "--config", str(config_file)).returncode == 0
    assert run("accept", str(documents["normal"]), "--config", str(config_file)).returncode == 0
    result = subprocess.run(
        [sys.executable, "-X", "importtime", EDGE_AGENT, "check", "issue_access", "door:door-1", "--config",
         str(config_file)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "agent.core_config" in imported
    unused = {"agent.config", "agent.drivers.wiring", "protocol.claims", "agent.entitlements.intake", "agent.ports"}
    assert not imported & unused
